"""Ragged (unpadded) per-token activations: one ``(total_tokens, hidden)`` tensor
plus ``offsets`` so that example ``i`` owns rows ``offsets[i]:offsets[i+1]``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch


@dataclass
class RaggedActivations:
    values: torch.Tensor  # (total_tokens, hidden), bf16/fp16/fp32
    offsets: np.ndarray  # (n + 1,), int64, offsets[0] == 0
    model: str | None = None  # where they come from, when known: a probe refuses another model's
    layer: int | None = None  # or another layer's activations
    # prompted probing: the last question_tokens[i] tokens of example i are a question appended
    # to the conversation (ActivationsConfig.question); None when there is none
    question_tokens: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.offsets = np.asarray(self.offsets, dtype=np.int64)
        if self.offsets[0] != 0 or self.offsets[-1] != self.values.shape[0]:
            raise ValueError(
                f"offsets do not match values: offsets span 0..{self.offsets[-1]}, "
                f"values have {self.values.shape[0]} rows"
            )
        if np.any(np.diff(self.offsets) <= 0):
            raise ValueError("every example needs at least one token (offsets must increase)")
        if self.question_tokens is not None:
            self.question_tokens = np.asarray(self.question_tokens, dtype=np.int64)
            if self.question_tokens.shape != (len(self),) or np.any(self.question_tokens < 1) or np.any(
                    self.question_tokens >= np.diff(self.offsets)):
                raise ValueError("question_tokens needs one count per example, each at least 1 and shorter than the example")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def hidden_size(self) -> int:
        return int(self.values.shape[1])

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def example(self, i: int) -> torch.Tensor:
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def subset(self, indices: Sequence[int]) -> "RaggedActivations":
        indices = list(indices)
        if not indices:
            raise ValueError("cannot take an empty subset of activations")
        parts = [self.example(i) for i in indices]
        lengths = [p.shape[0] for p in parts]
        question = self.question_tokens[indices] if self.question_tokens is not None else None
        return RaggedActivations(torch.cat(parts), np.concatenate([[0], np.cumsum(lengths)]), self.model, self.layer, question)

    @staticmethod
    def concat(parts: Sequence["RaggedActivations"]) -> "RaggedActivations":
        """The examples of ``parts`` one after another (values in the first part's dtype)."""
        values = torch.cat([p.values.to(parts[0].values.dtype) for p in parts])
        ends = np.cumsum([0] + [int(p.offsets[-1]) for p in parts[:-1]])
        offsets = np.concatenate([parts[0].offsets[:1], *[p.offsets[1:] + end for p, end in zip(parts, ends)]])
        model = parts[0].model if all(p.model == parts[0].model for p in parts) else None
        layer = parts[0].layer if all(p.layer == parts[0].layer for p in parts) else None
        asked = {p.question_tokens is not None for p in parts}
        if len(asked) > 1:
            raise ValueError("cannot put activations with and without a question (prompted probing) together")
        question = np.concatenate([p.question_tokens for p in parts]) if asked == {True} else None
        return RaggedActivations(values, offsets.astype(np.int64), model, layer, question)

    def mean_pool(self) -> np.ndarray:
        """Per-example mean over tokens, float32 ``(n, hidden)`` (no padding involved). With a
        question appended (prompted probing): the conversation's mean and the question's mean
        side by side, ``(n, 2 * hidden)`` — the readout that generalised best to the research's
        dev sets (docs/RESULTS.md)."""
        if self.question_tokens is None:
            return self._means(np.repeat(np.arange(len(self)), self.lengths), len(self), self.lengths)
        lengths, asked = self.lengths, self.question_tokens
        # token j of example i belongs to group i (conversation) or n + i (question)
        group = np.repeat(np.arange(len(self)), lengths)
        position = np.arange(int(self.offsets[-1])) - np.repeat(self.offsets[:-1], lengths)
        group = np.where(position >= np.repeat(lengths - asked, lengths), group + len(self), group)
        means = self._means(group, 2 * len(self), np.concatenate([lengths - asked, asked]))
        return np.concatenate([means[: len(self)], means[len(self):]], axis=1)

    def _means(self, group: np.ndarray, groups: int, counts: np.ndarray) -> np.ndarray:
        x = self.values.float()
        sums = torch.zeros(groups, x.shape[1], dtype=torch.float32)
        sums.index_add_(0, torch.from_numpy(group), x)
        return (sums / torch.from_numpy(counts).float()[:, None]).numpy()

    def padded(self, indices: Sequence[int], dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """A padded batch ``(B, L, H)`` and its boolean mask ``(B, L)`` for torch probes."""
        indices = list(indices)
        lengths = self.lengths[indices]
        max_len = int(lengths.max())
        x = torch.zeros(len(indices), max_len, self.hidden_size, dtype=dtype)
        mask = torch.zeros(len(indices), max_len, dtype=torch.bool)
        for row, i in enumerate(indices):
            n = int(lengths[row])
            x[row, :n] = self.example(i).to(dtype)
            mask[row, :n] = True
        return x, mask
