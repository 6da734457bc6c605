"""Train a probe of a given type on one layer's activations, recording provenance."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from mup_core.activations.ragged import RaggedActivations
from mup_core.probe_types import ALL_PROBE_TYPES, PROBE_CLASSES
from mup_core.probes.base import Probe, ProbeInfo, make_probe

DEFAULT_PROBE_TYPES = ALL_PROBE_TYPES


def train_probe(
    probe_type: str,
    train: tuple[RaggedActivations, np.ndarray],
    val: tuple[RaggedActivations, np.ndarray] | None,
    *,
    model: str | None = None,
    layer: int | None = None,
    train_inputs_hash: str = "",
    train_labels_hash: str = "",
    hyperparameters: dict[str, Any] | None = None,
    sample_weight: np.ndarray | None = None,
) -> Probe:
    """A probe of ``probe_type`` fitted on ``train`` (early stopping on ``val``), knowing the
    model and layer it reads: given, or those the training activations come from."""
    acts = train[0]
    model = model or acts.model
    layer = acts.layer if layer is None else layer
    if not model or layer is None:
        raise ValueError(f"{probe_type}: say which model and layer the training activations are of (model=, layer=)")
    for what, given, known in (("model", model, acts.model), ("layer", int(layer), acts.layer)):
        if known is not None and given != known:
            raise ValueError(f"{probe_type}: the training activations are of {what} {known}, not {given}")
    info = ProbeInfo(model=model, layer=int(layer), train_inputs_hash=train_inputs_hash,
                     train_labels_hash=train_labels_hash, train_examples=len(acts))
    probe = make_probe(probe_type, **(hyperparameters or {}))
    probe.fit(acts, train[1], val=val, sample_weight=sample_weight)
    info.extra.update(probe.fitted_summary())
    probe.info = info
    return probe


def configured_probes(
    probe_types: Sequence[str], hyperparameters: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Probe]:
    """Untrained probes for a configuration, or one ValueError listing every problem
    (unknown types, hyper-parameters for a type not being trained, unknown or ill-typed
    hyper-parameters). Call it before any training so a bad configuration costs nothing
    and publishes nothing."""
    hyperparameters = hyperparameters or {}
    problems: list[str] = []
    unknown = [t for t in probe_types if t not in PROBE_CLASSES]
    if unknown:
        problems.append(f"unknown probe types {unknown}; known: {', '.join(PROBE_CLASSES)}")
    if not probe_types:
        problems.append("no probe types to train")
    if len(set(probe_types)) != len(probe_types):
        problems.append(f"probe types listed twice: {sorted({t for t in probe_types if list(probe_types).count(t) > 1})}")
    orphans = [t for t in hyperparameters if t not in probe_types]
    if orphans:
        problems.append(f"hyperparameters for {orphans}, which are not in probe_types {list(probe_types)}")
    probes: dict[str, Probe] = {}
    for probe_type in probe_types:
        if probe_type in unknown:
            continue
        try:
            probes[probe_type] = make_probe(probe_type, **dict(hyperparameters.get(probe_type, {})))
            probes[probe_type].validate()
        except (ValueError, TypeError) as exc:
            problems.append(str(exc))
    if problems:
        raise ValueError("; ".join(problems))
    return probes
