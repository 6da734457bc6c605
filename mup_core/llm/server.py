"""`mup serve`: an OpenAI-compatible chat-completions server for a registry model.

A FastAPI app on uvicorn (``mup_core.web``). Serves ``POST /v1/chat/completions`` (with
``response_format`` ``json_schema`` structured outputs, decoded under the schema;
``stream: true`` as server-sent events, a chunk per piece of text as it is generated, and
with ``stream_options: {"include_usage": true}`` a last chunk with the usage; ``logprobs``
with ``top_logprobs`` for every generated token; ``usage`` and ``finish_reason``, "length"
when ``max_tokens`` cut the reply off) and ``GET /v1/models``. Useful on its
own to put the local model behind the same API as a hosted one, and used by the
tests of the OpenAI backend, with failures injected on purpose:

- ``429`` / ``500`` / ``503``: answer with that status
- ``slow:SECONDS``: wait before answering (to trigger client time-outs)
- ``malformed``: answer with text that is not JSON

Faults are consumed one per request, in order, from ``--fault`` flags or
``POST /v1/admin/faults {"faults": [...]}``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from typing import Any, Iterable, Literal, Optional

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool
from pydantic import BaseModel, Field

from mup_core.llm.base import LLMClient, LLMError
from mup_core.web import APIError, AppServer, install_error_handlers

log = logging.getLogger(__name__)

FAULT_KINDS = {"429": "rate_limit_exceeded", "500": "server_error", "502": "bad_gateway", "503": "overloaded"}


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str


class ChatRequest(BaseModel):
    """The fields of OpenAI's chat-completions request that mup's servers read."""

    model: Optional[str] = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: Optional[int] = Field(default=None, ge=1, le=4096)
    max_completion_tokens: Optional[int] = Field(default=None, ge=1, le=4096)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    seed: Optional[int] = None
    stream: bool = False
    logprobs: bool = False
    top_logprobs: Optional[int] = None
    response_format: Optional[dict[str, Any]] = None
    stream_options: Optional[dict[str, Any]] = None
    bundle: Optional[str] = Field(default=None, description="mup monitor only: the monitor bundle to score with "
                                  "(monitors/MODEL/DIGEST in the store); default: the one the server started with")

    @property
    def token_limit(self) -> Optional[int]:
        return self.max_completion_tokens or self.max_tokens

    @property
    def include_usage(self) -> bool:
        """A streamed reply ends with a chunk carrying the usage (``stream_options``)."""
        return bool((self.stream_options or {}).get("include_usage"))

    def dicts(self) -> list[dict]:
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.content} for m in self.messages]


NO_USAGE = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def completion(model: str, text: str, finish: str = "stop", usage: Optional[dict] = None, **extra) -> dict:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish, **extra}],
        "usage": dict(usage or NO_USAGE),
    }


def chunk(model: str, cid: str, delta: dict, finish: Optional[str] = None, **extra) -> str:
    """One server-sent event of a streamed completion."""
    body = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
    return f"data: {json.dumps(body)}\n\n"


def usage_chunk(model: str, cid: str, usage: Optional[dict]) -> str:
    """OpenAI's last chunk of a stream asked with ``stream_options.include_usage``: no choices, the usage."""
    body = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [], "usage": dict(usage or NO_USAGE)}
    return f"data: {json.dumps(body)}\n\n"


def chat_app(server: "ChatServer") -> FastAPI:
    app = FastAPI(title="mup serve", version="1")
    install_error_handlers(app)

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": server.model_name, "object": "model", "owned_by": "mup"}]}

    @app.post("/v1/admin/faults")
    def add_faults(body: dict):
        server.add_faults(body.get("faults", []))
        return {"faults": list(server.faults)}

    @app.post("/v1/chat/completions")
    def chat(request: ChatRequest):
        fault = server._next_fault()
        if fault in FAULT_KINDS:
            raise APIError(int(fault), f"injected {fault}", FAULT_KINDS[fault])
        if fault and fault.startswith("slow:"):
            time.sleep(float(fault.split(":", 1)[1]))
        messages = request.dicts()
        schema = None
        fmt = request.response_format or {}
        if fmt.get("type") == "json_schema":
            schema = (fmt.get("json_schema") or {}).get("schema")
        limit = request.token_limit or 256
        if request.logprobs:
            return logprobs(request, messages, schema, limit)
        if request.stream and schema is None and fault != "malformed" and hasattr(server.client, "stream"):
            return StreamingResponse(streamed(request, messages, limit), media_type="text/event-stream")
        try:
            result = server.client.complete(messages, schema=schema, max_tokens=limit, temperature=request.temperature)
        except LLMError as exc:
            raise APIError(422, exc.reason) from None
        text = result.text
        if fault == "malformed":
            text = text[: max(1, len(text) // 2)] + " <<truncated"
        if request.stream:  # structured output (or a backend that cannot stream): the answer in one chunk
            cid = f"chatcmpl-{uuid.uuid4().hex[:12]}"
            events = [chunk(server.model_name, cid, {"role": "assistant", "content": text}),
                      chunk(server.model_name, cid, {}, result.finish_reason or "stop"),
                      *([usage_chunk(server.model_name, cid, result.usage)] if request.include_usage else []),
                      "data: [DONE]\n\n"]
            return StreamingResponse(iter(events), media_type="text/event-stream")
        return completion(server.model_name, text, result.finish_reason or "stop", result.usage)

    async def streamed(request: ChatRequest, messages: list[dict], limit: int):
        """The reply's chunks as the model writes them. When the client goes away, the
        server closes this generator and ``stop`` ends the generation at its next token,
        so the model is not kept busy for a reader that left."""
        cid = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        stop = threading.Event()
        pieces = server.client.stream(messages, max_tokens=limit, temperature=request.temperature, stop=stop)
        try:
            yield chunk(server.model_name, cid, {"role": "assistant", "content": ""})
            async for piece in iterate_in_threadpool(pieces):
                if isinstance(piece, str):
                    yield chunk(server.model_name, cid, {"content": piece})
                else:
                    yield chunk(server.model_name, cid, {}, piece.finish_reason or "stop")
                    if request.include_usage:
                        yield usage_chunk(server.model_name, cid, piece.usage)
        except Exception as exc:  # the status line is sent: the error goes in the stream, as OpenAI's does
            log.exception("mup serve: the stream failed")
            kind = exc.kind if isinstance(exc, LLMError) else "server_error"
            reason = exc.reason if isinstance(exc, LLMError) else f"{type(exc).__name__}: {exc}"
            yield f"data: {json.dumps({'error': {'message': reason, 'type': kind}})}\n\n"
        finally:
            stop.set()
        yield "data: [DONE]\n\n"

    def logprobs(request: ChatRequest, messages: list[dict], schema, limit: int):
        if not hasattr(server.client, "token_logprobs"):
            raise APIError(400, "this backend does not return log-probabilities")
        if schema is not None or request.stream:
            raise APIError(400, "logprobs are served for plain, non-streamed completions: leave out "
                                "response_format and stream, or logprobs")
        top_k = 0 if request.top_logprobs is None else int(request.top_logprobs)
        if not 0 <= top_k <= 20:
            raise APIError(400, "top_logprobs must be between 0 and 20")
        try:
            result = server.client.token_logprobs(messages, max_tokens=limit, temperature=request.temperature, top_k=top_k)
        except LLMError as exc:
            raise APIError(422, exc.reason) from None
        return completion(server.model_name, result.text, result.finish_reason, result.usage,
                          logprobs={"content": result.logprobs})

    return app


class ChatServer:
    """The app for one client, with failures to inject; ``start()`` serves it from a
    background thread, ``serve_forever()`` until SIGINT/SIGTERM."""

    def __init__(self, client: LLMClient, model_name: str, host: str = "127.0.0.1", port: int = 8000, faults: Iterable[str] = ()):
        self.client = client
        self.model_name = model_name
        self.faults: deque[str] = deque(faults)
        self.requests_seen = 0
        self._lock = threading.Lock()
        self.app = chat_app(self)
        self.http = AppServer(self.app, host, port)

    @property
    def url(self) -> str:
        return f"{self.http.base}/v1"

    def add_faults(self, faults: Iterable[str]) -> None:
        with self._lock:
            self.faults.extend(faults)

    def _next_fault(self) -> str | None:
        with self._lock:
            self.requests_seen += 1
            return self.faults.popleft() if self.faults else None

    def start(self) -> "ChatServer":
        self.http.start()
        return self

    def serve_forever(self) -> None:
        self.http.start().wait()

    def stop(self) -> None:
        self.http.stop()
