"""Inputs as the plain text a monitor reads."""

from __future__ import annotations

from typing import Sequence

from mup_core.data.chat import as_dialogue
from mup_core.data.dataset import Input


def transcript(value: Input) -> str:
    """A plain string stays as it is; a dialogue becomes ``role: content`` lines."""
    if isinstance(value, str):
        return value
    return "\n".join(f"{m['role']}: {m['content']}" for m in as_dialogue(value))


def truncate_tokens(tokenizer, texts: Sequence[str], max_tokens: int) -> list[str]:
    """Cut each text to at most ``max_tokens`` tokens (keeping the start), so that a
    prompt around it fits the model's context."""
    out = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        out.append(text if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens]) + " [...]")
    return out
