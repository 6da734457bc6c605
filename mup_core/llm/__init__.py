"""LLM clients behind one interface: an OpenAI-compatible endpoint or a local registry model."""

from mup_core.llm.base import ChatResult, LLMClient, LLMError, parse_json_answer, validate
from mup_core.llm.cache import ResponseCache


def make_client(backend: str, model: str, *, base_url: str | None = None, cache_path: str | None = None, **kwargs) -> LLMClient:
    """``backend``: ``openai`` (any OpenAI-compatible endpoint) or ``local`` (a registry model)."""
    cache = ResponseCache(cache_path) if cache_path else None
    if backend == "openai":
        from mup_core.llm.openai_client import OpenAIChatClient

        return OpenAIChatClient(model, base_url, cache=cache, **kwargs)
    if backend == "local":
        from mup_core.llm.local_client import LocalChatClient

        return LocalChatClient(model, cache=cache, **kwargs)
    raise ValueError(f"unknown LLM backend {backend!r}; use 'openai' or 'local'")


__all__ = ["ChatResult", "LLMClient", "LLMError", "ResponseCache", "make_client", "parse_json_answer", "validate"]
