"""Compute per example, in FLOPs, for the monitoring cascade and the summary figure.

A forward pass of a dense transformer costs about ``2 * N`` FLOPs per token for its
``N`` non-embedding parameters (Kaplan et al. 2020), plus ``2 * hidden * vocab`` for
each position whose logits are computed. A probe reuses the activations the monitored
model computes anyway, so its marginal cost is its own arithmetic per token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ModelCompute:
    slug: str
    non_embedding_params: int
    hidden_size: int
    vocab_size: int

    def forward_flops(self, tokens: np.ndarray | int, logits_positions: np.ndarray | int = 1) -> np.ndarray:
        tokens = np.asarray(tokens, dtype=float)
        return 2.0 * self.non_embedding_params * tokens + 2.0 * self.hidden_size * self.vocab_size * np.asarray(logits_positions, dtype=float)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def model_compute(lm) -> ModelCompute:
    """Counts from a loaded model (``LoadedModel``): parameters outside the embedding
    and the LM head."""
    model = lm.model
    skip = {id(p) for p in model.get_input_embeddings().parameters()}
    head = model.get_output_embeddings()
    if head is not None:
        skip |= {id(p) for p in head.parameters()}
    n = sum(p.numel() for p in model.parameters() if id(p) not in skip)
    cfg = model.config
    return ModelCompute(lm.slug, int(n), int(cfg.hidden_size), int(cfg.vocab_size))


PROBE_FLOPS_PER_TOKEN = {
    # per token, in units of the hidden size: a dot product is 2*hidden
    "logistic_regression": 2,
    "difference_of_means": 2,
    "lda": 2,
    "max": 2,
    "last_token": 2,  # only the last token is read; counted per token for simplicity
    "rolling_max": 2,
    "per_token": 2,
    "softmax": 2,
    "attention": 4,  # query and value
}


def probe_flops(probe_type: str, hidden_size: int, tokens: np.ndarray) -> np.ndarray:
    return PROBE_FLOPS_PER_TOKEN.get(probe_type, 4) * hidden_size * np.asarray(tokens, dtype=float)
