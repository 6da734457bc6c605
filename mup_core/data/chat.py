"""Render inputs through a model's chat template.

Plain text is treated as one user message, as in the research, so every input is
seen by the model in the form it would see it when deployed.
"""

from __future__ import annotations

from typing import Sequence

from mup_core.data.dataset import Input, Message


def as_dialogue(value: Input) -> list[Message]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    return [{"role": m["role"], "content": m["content"]} for m in value]


def with_question(value: Input, question: str) -> list[Message]:
    """``value`` with ``question`` appended as a last user turn (prompted probing: the model
    is asked about the conversation, and a probe reads the question's tokens too)."""
    return [*as_dialogue(value), {"role": "user", "content": question}]


def render(value: Input, tokenizer, add_generation_prompt: bool = False) -> str:
    """The exact text the model reads for this input (special tokens included)."""
    return tokenizer.apply_chat_template(
        as_dialogue(value), tokenize=False, add_generation_prompt=add_generation_prompt
    )


def render_all(values: Sequence[Input], tokenizer) -> list[str]:
    return [render(v, tokenizer) for v in values]
