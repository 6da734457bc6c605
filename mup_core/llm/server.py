"""`mup serve`: an OpenAI-compatible chat-completions server for a registry model.

Serves ``POST /v1/chat/completions`` (with ``response_format`` ``json_schema``
structured outputs, decoded under the schema) and ``GET /v1/models``. Useful on its
own to put the local model behind the same API as a hosted one, and used by the
tests of the OpenAI backend, with failures injected on purpose:

- ``429`` / ``500`` / ``503``: answer with that status
- ``slow:SECONDS``: wait before answering (to trigger client time-outs)
- ``malformed``: answer with text that is not JSON

Faults are consumed one per request, in order, from ``--fault`` flags or
``POST /admin/faults {"faults": [...]}``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterable

from mup_core.llm.base import LLMClient, LLMError

log = logging.getLogger(__name__)


class ChatServer:
    def __init__(self, client: LLMClient, model_name: str, host: str = "127.0.0.1", port: int = 8000, faults: Iterable[str] = ()):
        self.client = client
        self.model_name = model_name
        self.faults: deque[str] = deque(faults)
        self.requests_seen = 0
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer((host, port), self._handler())
        self.httpd.daemon_threads = True

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def add_faults(self, faults: Iterable[str]) -> None:
        with self._lock:
            self.faults.extend(faults)

    def _next_fault(self) -> str | None:
        with self._lock:
            self.requests_seen += 1
            return self.faults.popleft() if self.faults else None

    def start(self) -> "ChatServer":
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt, *args):  # quiet by default
                log.debug(fmt, *args)

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, message: str, kind: str) -> None:
                self._send(status, {"error": {"message": message, "type": kind, "code": status}})

            def do_GET(self):
                if self.path.rstrip("/").endswith("/v1/models"):
                    self._send(200, {"object": "list", "data": [{"id": server.model_name, "object": "model", "owned_by": "mup"}]})
                else:
                    self._error(404, f"no route {self.path}", "not_found")

            def _logprobs(self, body, messages):
                top_k = int(body.get("top_logprobs") or 1)
                if not hasattr(server.client, "next_token_logprobs"):
                    return self._error(400, "this backend does not return log-probabilities", "invalid_request_error")
                if not 0 <= top_k <= 20:
                    return self._error(400, "top_logprobs must be between 0 and 20", "invalid_request_error")
                top = server.client.next_token_logprobs(messages, max(1, top_k))
                entries = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top]
                self._send(200, {
                    "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": server.model_name,
                    "choices": [{
                        "index": 0,
                        "message": {"role": "assistant", "content": top[0][0]},
                        "logprobs": {"content": [{**entries[0], "top_logprobs": entries[:top_k]}]},
                        "finish_reason": "length",
                    }],
                    "usage": {"prompt_tokens": 0, "completion_tokens": 1, "total_tokens": 0},
                })

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    return self._error(400, "request body is not JSON", "invalid_request_error")
                if self.path.rstrip("/").endswith("/admin/faults"):
                    server.add_faults(body.get("faults", []))
                    return self._send(200, {"faults": list(server.faults)})
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    return self._error(404, f"no route {self.path}", "not_found")
                fault = server._next_fault()
                if fault in ("429", "500", "502", "503"):
                    kinds = {"429": "rate_limit_exceeded", "500": "server_error", "502": "bad_gateway", "503": "overloaded"}
                    return self._error(int(fault), f"injected {fault}", kinds[fault])
                if fault and fault.startswith("slow:"):
                    time.sleep(float(fault.split(":", 1)[1]))
                messages = body.get("messages")
                if not isinstance(messages, list) or not messages:
                    return self._error(400, "'messages' must be a non-empty list", "invalid_request_error")
                if body.get("logprobs"):
                    return self._logprobs(body, messages)
                schema = None
                fmt = body.get("response_format") or {}
                if fmt.get("type") == "json_schema":
                    schema = (fmt.get("json_schema") or {}).get("schema")
                try:
                    result = server.client.complete(
                        messages, schema=schema, max_tokens=int(body.get("max_tokens") or 256),
                        temperature=float(body.get("temperature") or 0.0),
                    )
                    text = result.text
                except LLMError as exc:
                    return self._error(422, exc.reason, "invalid_request_error")
                if fault == "malformed":
                    text = text[: max(1, len(text) // 2)] + " <<truncated"
                self._send(200, {
                    "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": server.model_name,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                })

        return Handler
