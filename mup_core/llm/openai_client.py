"""Any OpenAI-compatible chat-completions endpoint (OpenAI, OpenRouter, vLLM, Ollama, `mup serve`).

Retries with exponential backoff (and jitter) on 429, 5xx, timeouts and connection
errors; gives up with an ``LLMError`` that names the endpoint, model and last error.
Answers that must be JSON are parsed and validated; a malformed answer is retried
``json_retries`` times, then reported as ``invalid``. Valid answers are cached, so a
re-run pays nothing twice.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from typing import Sequence

from mup_core.llm.base import ChatResult, LLMClient, LLMError, Message, parse_json_answer
from mup_core.llm.cache import ResponseCache, cache_key

log = logging.getLogger(__name__)


class OpenAIChatClient(LLMClient):
    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        *,
        max_concurrency: int = 8,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        timeout: float = 60.0,
        json_retries: int = 1,
        cache: ResponseCache | None = None,
    ):
        import openai

        self.model = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        api_key = os.environ.get(api_key_env)
        if not api_key:
            if "api.openai.com" in self.base_url:
                raise LLMError(f"set {api_key_env} to use {self.base_url}")
            api_key = "not-needed"  # local servers (vLLM, Ollama, mup serve) accept any key
        self._client = openai.OpenAI(base_url=self.base_url, api_key=api_key, max_retries=0, timeout=timeout)
        self._openai = openai
        self.name = f"openai:{model}"
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.json_retries = json_retries
        self.cache = cache
        self.stats = {"requests": 0, "retries": 0, "cache_hits": 0}
        self._lock = threading.Lock()

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    def _retryable(self, exc: Exception) -> bool:
        o = self._openai
        if isinstance(exc, (o.RateLimitError, o.APITimeoutError, o.APIConnectionError, o.InternalServerError)):
            return True
        return isinstance(exc, o.APIStatusError) and exc.status_code >= 500

    def _request(self, messages: Sequence[Message], params: dict) -> tuple[str, int]:
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            try:
                self._count("requests")
                response = self._client.chat.completions.create(model=self.model, messages=list(messages), **params)
                text = response.choices[0].message.content or ""
                return text, attempt + 1
            except Exception as exc:  # noqa: BLE001 - classified below
                if not self._retryable(exc):
                    raise LLMError(f"{self.base_url} model {self.model}: {exc.__class__.__name__}: {exc}") from None
                last = exc
                if attempt == self.max_retries:
                    break
                self._count("retries")
                delay = min(self.backoff_max, self.backoff_base * 2**attempt) * (0.5 + random.random() / 2)
                log.info("retrying %s after %s (attempt %d, sleeping %.2fs)", self.base_url, exc.__class__.__name__, attempt + 1, delay)
                time.sleep(delay)
        raise LLMError(
            f"{self.base_url} model {self.model}: gave up after {self.max_retries + 1} attempts; "
            f"last error {last.__class__.__name__}: {last}"
        )

    def complete(self, messages, *, schema=None, max_tokens=256, temperature=0.0):
        params = {"max_tokens": max_tokens, "temperature": temperature}
        if schema is not None:
            # OpenAI structured outputs; also understood by vLLM, Ollama and `mup serve`
            params["response_format"] = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
        key = cache_key(self.base_url, self.model, list(messages), {**params, "schema": schema})
        if self.cache is not None and (hit := self.cache.get(key)):
            self._count("cache_hits")
            text, model = hit
            return ChatResult(text, parse_json_answer(text, schema) if schema else None, model, cached=True, attempts=0)
        attempts = 0
        for json_try in range(self.json_retries + 1):
            text, n = self._request(messages, params)
            attempts += n
            try:
                parsed = parse_json_answer(text, schema) if schema else None
            except LLMError as exc:
                if json_try == self.json_retries:
                    raise LLMError(f"{exc.reason} (after {json_try + 1} answers)", kind="invalid") from None
                continue
            if self.cache is not None:
                self.cache.put(key, text, self.model)
            return ChatResult(text, parsed, self.model, attempts=attempts)
        raise AssertionError("unreachable")
