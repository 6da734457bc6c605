"""Train a probe of a given type on one layer's activations, recording provenance."""

from __future__ import annotations

from typing import Any

import numpy as np

from mup_core.activations.ragged import RaggedActivations
from mup_core.probes.base import Probe, ProbeInfo, make_probe

from mup_core.probe_types import ALL_PROBE_TYPES

DEFAULT_PROBE_TYPES = ALL_PROBE_TYPES


def train_probe(
    probe_type: str,
    train: tuple[RaggedActivations, np.ndarray],
    val: tuple[RaggedActivations, np.ndarray] | None,
    *,
    model: str,
    layer: int,
    train_inputs_hash: str = "",
    train_labels_hash: str = "",
    hyperparameters: dict[str, Any] | None = None,
    sample_weight: np.ndarray | None = None,
) -> Probe:
    probe = make_probe(probe_type, **(hyperparameters or {}))
    probe.info = ProbeInfo(
        model=model,
        layer=int(layer),
        train_inputs_hash=train_inputs_hash,
        train_labels_hash=train_labels_hash,
        train_examples=len(train[0]),
    )
    probe.fit(train[0], train[1], val=val, sample_weight=sample_weight)
    return probe
