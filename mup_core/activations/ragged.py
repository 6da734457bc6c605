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

    def __post_init__(self) -> None:
        self.offsets = np.asarray(self.offsets, dtype=np.int64)
        if self.offsets[0] != 0 or self.offsets[-1] != self.values.shape[0]:
            raise ValueError(
                f"offsets do not match values: offsets span 0..{self.offsets[-1]}, "
                f"values have {self.values.shape[0]} rows"
            )
        if np.any(np.diff(self.offsets) <= 0):
            raise ValueError("every example needs at least one token (offsets must increase)")

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
        return RaggedActivations(torch.cat(parts), np.concatenate([[0], np.cumsum(lengths)]), self.model, self.layer)

    @staticmethod
    def concat(parts: Sequence["RaggedActivations"]) -> "RaggedActivations":
        """The examples of ``parts`` one after another (values in the first part's dtype)."""
        values = torch.cat([p.values.to(parts[0].values.dtype) for p in parts])
        ends = np.cumsum([0] + [int(p.offsets[-1]) for p in parts[:-1]])
        offsets = np.concatenate([parts[0].offsets[:1], *[p.offsets[1:] + end for p, end in zip(parts, ends)]])
        model = parts[0].model if all(p.model == parts[0].model for p in parts) else None
        layer = parts[0].layer if all(p.layer == parts[0].layer for p in parts) else None
        return RaggedActivations(values, offsets.astype(np.int64), model, layer)

    def mean_pool(self) -> np.ndarray:
        """Per-example mean over tokens, float32 ``(n, hidden)`` (no padding involved)."""
        x = self.values.float()
        sums = torch.zeros(len(self), x.shape[1], dtype=torch.float32)
        idx = torch.from_numpy(np.repeat(np.arange(len(self)), self.lengths))
        sums.index_add_(0, idx, x)
        return (sums / torch.from_numpy(self.lengths).float()[:, None]).numpy()

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
