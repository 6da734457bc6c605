"""LLM clients: the real `openai` client against `mup serve`'s server on 127.0.0.1."""

import os
import socket
import signal
import subprocess
import sys
import time

import pytest

from mup_core.llm import LLMError, ResponseCache, parse_json_answer, validate
from mup_core.llm.local_client import LocalChatClient
from mup_core.llm.openai_client import OpenAIChatClient
from mup_core.llm.server import ChatServer

SCHEMA = {
    "type": "object",
    "properties": {
        "stakes": {"type": "integer", "minimum": 1, "maximum": 10},
        "confidence": {"type": "integer", "minimum": 1, "maximum": 10},
        "explanation": {"type": "string"},
    },
    "required": ["stakes", "confidence", "explanation"],
}
ASK = [{"role": "user", "content": "Rate the stakes of: my house is on fire."}]


def test_json_parsing_and_validation():
    assert parse_json_answer('```json\n{"stakes": 9, "confidence": 8, "explanation": "fire"}\n```', SCHEMA)["stakes"] == 9
    with pytest.raises(LLMError, match="malformed JSON"):
        parse_json_answer('{"stakes": 9, "confid', SCHEMA)
    with pytest.raises(LLMError, match=r"\$.stakes: 11 above maximum 10"):
        validate({"stakes": 11, "confidence": 1, "explanation": ""}, SCHEMA)
    with pytest.raises(LLMError, match="missing required field 'explanation'"):
        validate({"stakes": 1, "confidence": 1}, SCHEMA)
    with pytest.raises(LLMError, match="expected integer"):
        validate({"stakes": "high", "confidence": 1, "explanation": ""}, SCHEMA)


def test_response_cache_persists(tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    cache.put("k", "text", "m")
    assert ResponseCache(tmp_path / "c.sqlite").get("k") == ("text", "m") and len(cache) == 1


@pytest.fixture(scope="module")
def local_tiny():
    return LocalChatClient("tiny")


def test_local_backend_constrained_json_is_always_valid(local_tiny):
    result = local_tiny.complete(ASK, schema=SCHEMA, max_tokens=30)
    validate(result.parsed, SCHEMA)
    assert 1 <= result.parsed["stakes"] <= 10
    text = local_tiny.complete(ASK, max_tokens=8)
    assert isinstance(text.text, str) and text.parsed is None
    again = local_tiny.complete(ASK, schema=SCHEMA, max_tokens=30)
    assert again.parsed == result.parsed  # greedy: deterministic


@pytest.fixture(scope="module")
def server(local_tiny):
    srv = ChatServer(local_tiny, "tiny", port=0).start()
    yield srv
    srv.stop()


def client(server, tmp_path=None, **kw):
    kw.setdefault("backoff_base", 0.01)
    cache = ResponseCache(tmp_path / "cache.sqlite") if tmp_path else None
    return OpenAIChatClient("tiny", base_url=server.url, cache=cache, **kw)


def test_openai_backend_plain_and_structured(server):
    c = client(server)
    assert isinstance(c.complete(ASK, max_tokens=5).text, str)
    result = c.complete(ASK, schema=SCHEMA, max_tokens=30)
    validate(result.parsed, SCHEMA)


def _api(server):
    import openai

    return openai.OpenAI(base_url=server.url, api_key="x", max_retries=0, timeout=60)


def _first_greedy_token(local_tiny) -> int:
    import torch

    ids = local_tiny.lm.tokenizer(local_tiny._prompt(ASK), add_special_tokens=False, return_tensors="pt")
    with torch.inference_mode():
        return int(local_tiny.lm.model(**ids).logits[0, -1].argmax())


def test_openai_api_usage_finish_reason_and_streaming(server, local_tiny):
    """What an OpenAI client reads besides the text: token usage, why the reply ended, a
    stream of several chunks that adds up to the same reply, and the usage chunk."""
    api = _api(server)
    cut = api.chat.completions.create(model="tiny", messages=ASK, max_tokens=6)
    n_prompt = len(local_tiny.lm.tokenizer(local_tiny._prompt(ASK), add_special_tokens=False)["input_ids"])
    assert (cut.usage.prompt_tokens, cut.usage.completion_tokens, cut.usage.total_tokens) == (n_prompt, 6, n_prompt + 6)
    assert cut.choices[0].finish_reason == "length"  # the random tiny model never ends its turn in 6 tokens

    # sampled (seeded by the request: the same request, the same reply), so the random model writes words
    sampled = api.chat.completions.create(model="tiny", messages=ASK, max_tokens=6, temperature=1.0)
    chunks = list(api.chat.completions.create(model="tiny", messages=ASK, max_tokens=6, temperature=1.0, stream=True,
                                              stream_options={"include_usage": True}))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1  # streamed as it is generated, not the whole reply in one chunk
    assert "".join(pieces) == sampled.choices[0].message.content != ""  # the same text, to the character
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6

    # a reply that ends its turn says "stop", streamed or not: make the first greedy token the end of turn
    config = local_tiny.lm.model.generation_config
    saved, config.eos_token_id = config.eos_token_id, _first_greedy_token(local_tiny)
    try:
        ended = api.chat.completions.create(model="tiny", messages=ASK, max_tokens=6)
        streamed = list(api.chat.completions.create(model="tiny", messages=ASK, max_tokens=6, stream=True))
        scored = api.chat.completions.create(model="tiny", messages=ASK, max_tokens=6, logprobs=True, top_logprobs=2)
    finally:
        config.eos_token_id = saved
    assert ended.choices[0].finish_reason == "stop" and ended.usage.completion_tokens == 1
    assert [c.choices[0].finish_reason for c in streamed if c.choices[0].finish_reason] == ["stop"]
    # the end of turn is counted, not listed (the reply's text leaves it out)
    assert scored.choices[0].logprobs.content == [] and scored.usage.completion_tokens == 1


def test_openai_api_logprobs_of_every_generated_token(server):
    api = _api(server)
    reply = api.chat.completions.create(model="tiny", messages=ASK, max_tokens=4, logprobs=True, top_logprobs=3)
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens == 4
    for entry in content:
        tops = [t.logprob for t in entry.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True) and all(lp <= 0 for lp in tops)
        # greedy: the chosen token is the most likely one
        assert entry.token == entry.top_logprobs[0].token and entry.logprob == pytest.approx(tops[0])
    assert "".join(e.token for e in content).strip() == reply.choices[0].message.content
    # sampled: the tokens' raw bytes spell the reply
    sampled = api.chat.completions.create(model="tiny", messages=ASK, max_tokens=8, temperature=1.0, logprobs=True)
    spelled = b"".join(bytes(e.bytes) for e in sampled.choices[0].logprobs.content).decode()
    assert spelled.strip() == sampled.choices[0].message.content != ""
    assert all(e.top_logprobs == [] for e in sampled.choices[0].logprobs.content)  # no top_logprobs asked
    import openai

    with pytest.raises(openai.BadRequestError, match="non-streamed"):
        api.chat.completions.create(model="tiny", messages=ASK, max_tokens=2, logprobs=True, stream=True)


def test_a_stream_whose_reader_left_stops_generating(local_tiny):
    """A client that closes a stream after its first chunk must not keep the model busy
    until max_tokens: the generation stops, and the next request is served."""
    generated = []

    class Observed(LocalChatClient):  # the real client; records what each generation produced
        def __init__(self):
            self.__dict__.update(local_tiny.__dict__)

        def _generate(self, *args, **kwargs):
            result = super()._generate(*args, **kwargs)
            generated.append(result.usage["completion_tokens"])
            return result

    srv = ChatServer(Observed(), "tiny", port=0).start()
    try:
        api = _api(srv)
        stream = api.chat.completions.create(model="tiny", messages=ASK, max_tokens=400, temperature=1.0, stream=True)
        next(iter(stream))
        stream.close()
        after = api.chat.completions.create(model="tiny", messages=ASK, max_tokens=2)
        assert after.usage.completion_tokens == 2
    finally:
        srv.stop()
    assert len(generated) == 2 and generated[0] < 400, generated


@pytest.mark.parametrize("faults, retries", [(["429"], 1), (["500", "503"], 2), (["429", "500", "429"], 3)])
def test_retries_on_rate_limits_and_server_errors(server, faults, retries):
    c = client(server)
    server.add_faults(faults)
    result = c.complete(ASK, schema=SCHEMA, max_tokens=20)
    validate(result.parsed, SCHEMA)
    assert c.stats["retries"] == retries and result.attempts == retries + 1


def test_time_out_is_retried(server):
    c = client(server, timeout=0.5)
    server.add_faults(["slow:2"])
    result = c.complete(ASK, max_tokens=5)
    assert c.stats["retries"] == 1 and isinstance(result.text, str)


def test_malformed_json_is_asked_again_then_reported(server):
    c = client(server, json_retries=1)
    server.add_faults(["malformed"])
    assert c.complete(ASK, schema=SCHEMA, max_tokens=20).attempts == 2
    server.add_faults(["malformed", "malformed"])
    with pytest.raises(LLMError, match="malformed JSON.*after 2 answers") as info:
        c.complete(ASK, schema=SCHEMA, max_tokens=20)
    assert info.value.kind == "invalid"


def test_gives_up_with_a_clear_error(server):
    c = client(server, max_retries=2)
    server.add_faults(["500", "500", "500"])
    with pytest.raises(LLMError, match=r"127\.0\.0\.1.*model tiny: gave up after 3 attempts; last error InternalServerError"):
        c.complete(ASK, max_tokens=5)


def test_cache_means_a_rerun_pays_nothing(server, tmp_path):
    first = client(server, tmp_path).complete(ASK, schema=SCHEMA, max_tokens=20)
    seen = server.requests_seen
    again = client(server, tmp_path).complete(ASK, schema=SCHEMA, max_tokens=20)  # a new process would do the same
    assert server.requests_seen == seen and again.cached and again.parsed == first.parsed
    client(server, tmp_path).complete(ASK, schema=SCHEMA, max_tokens=21)  # other parameters: a new request
    assert server.requests_seen == seen + 1


def test_bounded_concurrency_keeps_every_answer(server):
    c = client(server, max_concurrency=4)
    server.add_faults(["429", "500"])
    asks = [[{"role": "user", "content": f"question {i}"}] for i in range(6)]
    results = c.complete_many(asks, schema=SCHEMA, max_tokens=10)
    assert len(results) == 6 and all(not isinstance(r, LLMError) for r in results)


def _ignore_stop_signals():  # what a parent that ignores SIGTERM/SIGINT hands its children
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_mup_serve_cli(tmp_path):
    """`mup serve` answers the real openai client and stops on SIGTERM, even when it was
    started by a process that ignores SIGTERM (ignored dispositions survive exec)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "mup_core.cli", "serve", "--model", "tiny", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ.copy(),
                            preexec_fn=_ignore_stop_signals)
    try:
        import openai

        api = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=5)
        deadline = time.time() + 120
        while True:
            try:
                models = api.models.list()
                break
            except openai.APIConnectionError:
                if time.time() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.5)
        assert [m.id for m in models.data] == ["tiny"]
        reply = api.chat.completions.create(model="tiny", messages=ASK, max_tokens=4)
        assert reply.choices[0].message.role == "assistant"
        proc.terminate()
        assert proc.wait(timeout=30) == 0
        out = proc.stdout.read().decode()
        assert "float32" in out or "bfloat16" in out  # the start line says what it computes in, and why
        assert "stopping (SIGTERM)" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
