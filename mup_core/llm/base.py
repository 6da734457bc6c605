"""One chat interface for every LLM backend.

``LLMClient.complete(messages, schema=...)`` returns a ``ChatResult``; with a JSON
schema the answer is parsed and validated, and a ``LLMError`` says why it was not.
``complete_many`` runs requests with bounded concurrency and returns, per request,
either a result or the error (never dropping one).
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

Message = dict[str, str]


class LLMError(RuntimeError):
    """A request that failed for good (after retries), with the reason."""

    def __init__(self, reason: str, kind: str = "failed"):
        super().__init__(reason)
        self.reason = reason
        self.kind = kind  # "failed" (transport/API) or "invalid" (answer did not fit the schema)


# share of an asset's LLM requests that may fail (after retries) before the run fails
DEFAULT_MAX_FAILED_SHARE = 0.2


class TooManyFailures(RuntimeError):
    """More LLM requests failed for good than the configured share allows."""


def check_failure_share(failed: int, total: int, max_share: float, what: str, reasons: Sequence[str] = ()) -> None:
    """Raise ``TooManyFailures`` when more than ``max_share`` of ``total`` requests failed;
    the message gives the share, the commonest reasons and what to do."""
    if total == 0 or failed / total <= max_share:
        return
    common: dict[str, int] = {}
    for r in reasons:
        common[r] = common.get(r, 0) + 1
    top = "; ".join(f"{n}x {r[:160]}" for r, n in sorted(common.items(), key=lambda kv: -kv[1])[:3])
    raise TooManyFailures(
        f"{what}: {failed} of {total} LLM requests failed ({failed / total:.0%}, more than the allowed "
        f"{max_share:.0%}){': ' + top if top else ''}. Check the endpoint (base_url, model, API key) and re-run; "
        "answers that succeeded are cached. Raise max_failed_share to accept more failures."
    )


def usage_of(prompt_tokens: int, completion_tokens: int) -> dict:
    """OpenAI's ``usage`` of one reply."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


@dataclass
class ChatResult:
    text: str
    parsed: Any = None
    model: str = ""
    cached: bool = False
    attempts: int = 1
    usage: dict = field(default_factory=dict)  # prompt_tokens, completion_tokens, total_tokens, where known
    # "stop": the model ended its turn; "length": max_tokens (or the model's context) cut it off;
    # None: not known (a reply from the response cache)
    finish_reason: str | None = "stop"
    logprobs: list[dict] | None = None  # per generated token, as OpenAI's `choices[0].logprobs.content`


class LLMClient(ABC):
    """Common behaviour: schema validation and bounded-concurrency fan-out."""

    name: str = "llm"
    max_concurrency: int = 1

    @abstractmethod
    def complete(
        self,
        messages: Sequence[Message],
        *,
        schema: dict | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
    ) -> ChatResult: ...

    def complete_many(
        self,
        requests: Sequence[Sequence[Message]],
        *,
        schema: dict | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
        on_done: Callable[[int, int], None] | None = None,
    ) -> list[ChatResult | LLMError]:
        results: list[ChatResult | LLMError | None] = [None] * len(requests)
        done = 0

        def run(i: int) -> None:
            nonlocal done
            try:
                results[i] = self.complete(requests[i], schema=schema, max_tokens=max_tokens, temperature=temperature)
            except LLMError as exc:
                results[i] = exc
            done += 1
            if on_done:
                on_done(done, len(requests))

        if self.max_concurrency <= 1:
            for i in range(len(requests)):
                run(i)
        else:
            with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
                list(pool.map(run, range(len(requests))))
        return results  # type: ignore[return-value]


_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.MULTILINE)


def parse_json_answer(text: str, schema: dict) -> Any:
    """Parse a JSON object out of ``text`` (tolerating code fences) and validate it."""
    cleaned = _FENCE.sub("", text.strip())
    start, end = cleaned.find("{"), cleaned.rfind("}")
    if start < 0 or end < start:
        raise LLMError(f"malformed JSON: no object in answer {text[:120]!r}", kind="invalid")
    try:
        value = json.loads(cleaned[start : end + 1])
    except json.JSONDecodeError as exc:
        raise LLMError(f"malformed JSON ({exc.msg}) in answer {text[:120]!r}", kind="invalid") from None
    validate(value, schema)
    return value


def validate(value: Any, schema: dict, path: str = "$") -> None:
    """A small JSON-schema subset: object/properties/required, integer/number with
    minimum/maximum, string, boolean, array of items, enum."""
    kind = schema.get("type")
    checks = {
        "object": lambda v: isinstance(v, dict),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "string": lambda v: isinstance(v, str),
        "boolean": lambda v: isinstance(v, bool),
        "array": lambda v: isinstance(v, list),
    }
    if kind == "integer" and isinstance(value, float) and value.is_integer():
        value = int(value)
    if kind and not checks[kind](value):
        raise LLMError(f"{path}: expected {kind}, got {type(value).__name__} {value!r}", kind="invalid")
    if "enum" in schema and value not in schema["enum"]:
        raise LLMError(f"{path}: {value!r} not one of {schema['enum']}", kind="invalid")
    if kind in ("integer", "number"):
        if "minimum" in schema and value < schema["minimum"]:
            raise LLMError(f"{path}: {value} below minimum {schema['minimum']}", kind="invalid")
        if "maximum" in schema and value > schema["maximum"]:
            raise LLMError(f"{path}: {value} above maximum {schema['maximum']}", kind="invalid")
    if kind == "object":
        for key in schema.get("required", []):
            if key not in value:
                raise LLMError(f"{path}: missing required field {key!r}", kind="invalid")
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                validate(value[key], sub, f"{path}.{key}")
    if kind == "array" and "items" in schema:
        for i, item in enumerate(value):
            validate(item, schema["items"], f"{path}[{i}]")
