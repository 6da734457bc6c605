"""`mup monitor`: the live monitor behind an OpenAI-compatible API and a web page.

- ``POST /v1/chat/completions``: the model answers; with ``stream: true`` every
  server-sent chunk carries, beside the token, ``mup.score`` (the probe's score of the
  conversation so far; null for a prompted probe, which scores at message ends) and
  ``mup.verdict``. The first chunk scores the user's messages
  (``mup.prompt``), the last one gives the final verdict, which monitor decided (the
  probe, or the LLM judge for scores in the uncertain band) and what the judge cost.
- ``GET /``: a page to type a conversation and watch the reply stream with every token
  coloured by its score (``mup_core/monitor/page.html``, plain HTML and JavaScript).
- ``GET /v1/monitor``: the bundle (probe, layer, threshold, band, how it was chosen);
  ``?bundle=<prefix>`` describes another bundle of the store, as a request's ``bundle``
  field names it (the page shows that one at ``/?bundle=<prefix>``).
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Query
from fastapi.responses import HTMLResponse, StreamingResponse

from mup_core.llm.base import usage_of
from mup_core.llm.server import ChatRequest, chunk, completion, usage_chunk
from mup_core.monitor.live import LiveMonitor, MonitorInputError
from mup_core.web import APIError, install_error_handlers

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 64


def page_html() -> str:
    return (resources.files("mup_core.monitor") / "page.html").read_text(encoding="utf-8")


def monitor_app(monitor: LiveMonitor, store=None) -> FastAPI:
    """``store``: where other bundles named by a request's ``bundle`` field are looked up."""
    app = FastAPI(title="mup monitor", version="1")
    install_error_handlers(app)
    lock = threading.Lock()  # one forward pass at a time: it already uses every core
    bundle = monitor.bundle
    monitors: dict[str, LiveMonitor] = {}
    loading = threading.Lock()  # requests run in a thread pool: one bundle loads once

    def monitor_for(name: str | None) -> LiveMonitor:
        if not name:
            return monitor
        key = name.rstrip("/")
        with loading:
            if key not in monitors:
                from mup_core.monitor.bundle import BundleError, load_bundle

                if store is None or Path(key).is_absolute() or not store.dir_complete(key):
                    raise APIError(404, f"no monitor bundle {name!r} in this server's store; GET /v1/monitor shows the "
                                        "one it serves", "not_found")
                try:
                    other, probe = load_bundle(store, key)
                except BundleError as exc:
                    raise APIError(400, str(exc)) from None
                if other.model != bundle.model:
                    raise APIError(400, f"bundle {name!r} monitors {other.model!r}, but this server runs {bundle.model!r}; "
                                        f"start `mup monitor --bundle {name}` for it", "model_not_found")
                monitors[key] = LiveMonitor(monitor.lm, other, probe, monitor.judge)
            return monitors[key]

    def info_of(mon: LiveMonitor) -> dict:
        """What a monitor serves: its bundle's probe, threshold and selection, and its judge."""
        b = mon.bundle
        return {
            "model": b.model, "probe_type": b.probe_type, "layer": b.layer, "threshold": b.threshold,
            "uncertain_band": list(b.uncertain_band), "target_fpr": b.target_fpr,
            "selection_sets": b.selection_sets, "out_of_distribution": b.out_of_distribution,
            "judge": getattr(mon.judge, "name", None), "question": b.question, "streaming": b.streaming,
        }

    @app.get("/", response_class=HTMLResponse)
    def page():
        return page_html()

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": bundle.model, "object": "model", "owned_by": "mup"}]}

    @app.get("/v1/monitor")
    def monitor_info(name: str | None = Query(None, alias="bundle")):
        """The served bundle, or (``?bundle=``) another one of the store, as requests name it."""
        return info_of(monitor_for(name))

    @app.post("/v1/chat/completions")
    def chat(request: ChatRequest):
        if request.model not in (None, "", bundle.model):
            raise APIError(400, f"this monitor serves {bundle.model!r} (its bundle's model); the request asked for "
                                f"{request.model!r}", "model_not_found")
        unsupported = ["logprobs"] if request.logprobs else []
        if (request.response_format or {}).get("type", "text") != "text":
            unsupported.append("response_format")
        if unsupported:
            raise APIError(400, f"mup monitor does not serve {' or '.join(unsupported)}: its replies are free text, "
                                "scored by the probe (`mup serve` serves both)")
        max_tokens = request.token_limit or DEFAULT_MAX_TOKENS
        mon = monitor_for(request.bundle)
        try:
            messages, _, _ = mon.check(request.dicts(), max_tokens)
        except MonitorInputError as exc:
            raise APIError(400, str(exc)) from None
        events = _locked(lock, mon.stream(messages, max_tokens, request.temperature, request.seed or 0))
        if request.stream:
            return StreamingResponse(_sse(events, bundle.model, request.include_usage), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        prompt, tokens, final = None, [], None
        for ev in events:
            if ev["type"] == "prompt":
                prompt = ev
            elif ev["type"] == "token":
                tokens.append(ev)
            else:
                final = ev
        body = completion(bundle.model, "".join(t["token"] for t in tokens), final["finish_reason"],
                          _usage(prompt, len(tokens)))
        body["mup"] = {"prompt": _public(prompt), "tokens": [_public(t) for t in tokens], "final": _public(final), "monitor": info_of(mon)}
        return body

    return app


def _locked(lock: threading.Lock, events):
    with lock:
        yield from events


def _public(event: dict) -> dict:
    return {k: v for k, v in event.items() if k != "type"}


def _usage(prompt: dict, completion_tokens: int) -> dict:
    return usage_of(len(prompt["tokens"]), completion_tokens)


def _sse(events, model: str, include_usage: bool = False):
    cid = f"chatcmpl-{uuid.uuid4().hex[:12]}"
    prompt, generated = None, 0
    try:
        for ev in events:
            if ev["type"] == "prompt":
                prompt = ev
                yield chunk(model, cid, {"role": "assistant", "content": ""}, mup={"prompt": _public(ev)})
            elif ev["type"] == "token":
                generated += 1
                yield chunk(model, cid, {"content": ev["token"]}, mup=_public(ev))
            else:
                yield chunk(model, cid, {}, ev["finish_reason"], mup={"final": _public(ev)})
                if include_usage:
                    yield usage_chunk(model, cid, _usage(prompt, generated))
    except Exception as exc:  # after the headers went out, an error can only be an event
        log.exception("mup monitor: the stream failed")
        yield f"data: {json.dumps({'error': {'message': f'{type(exc).__name__}: {exc}', 'type': 'server_error'}})}\n\n"
    yield "data: [DONE]\n\n"
