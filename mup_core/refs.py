"""Typed references: what one asset hands to the next.

An asset stores its artifacts (datasets, activation shards, probes, tables, figures,
models) in the artifact store and returns one of these small frozen values, which the
IO manager pickles beside them; the next asset reads fields, never string keys of a
dict. A mapping of several (``{split: DatasetRef}``, ``{probe_type: ProbeRef}``) is a
plain ``dict`` of refs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from mup_core.evaluation.selection import SELECTION


@dataclass(frozen=True)
class DatasetRef:
    """A stored dataset (``datasets/<name>/<inputs>-<labels>.parquet``)."""

    name: str
    key: str
    rows: int
    inputs_hash: str
    labels_hash: str
    label_counts: dict
    role: str = ""  # in eval_datasets: EVALUATION or SELECTION; "" for a corpus split

    def with_(self, **changes) -> "DatasetRef":
        return dataclasses.replace(self, **changes)

    @property
    def is_selection(self) -> bool:
        return self.role == SELECTION


@dataclass(frozen=True)
class ActivationRef:
    """One model's activations of one dataset (shards under ``prefix``)."""

    model: str
    dataset: str
    prefix: str
    layers: tuple[int, ...]
    inputs_hash: str
    tokens: int
    reused: bool = False


@dataclass(frozen=True)
class ActivationPiece:
    """What one forward-pass step of ``activations`` computed (the fan-in gathers them)."""

    refs: dict  # dataset name -> ActivationRef
    stats: dict  # dataset name -> extraction stats (tokens/s, shards, padding, truncation)
    layers: tuple[int, ...]
    precision: dict  # the compute dtype and why (mup_core.models.precision)
    config: dict  # the ActivationsConfig the step ran with


@dataclass(frozen=True)
class ProbeRef:
    """One trained probe (``key``: its safetensors file)."""

    model: str
    layer: int
    probe_type: str
    key: str
    train_examples: int
    val_auroc: float = float("nan")  # on the corpus validation split (nan without one)


@dataclass(frozen=True)
class TableRef:
    """A stored table (parquet) and, where one was drawn, its figure (PNG)."""

    key: str
    rows: int
    figure: Optional[str] = None


@dataclass(frozen=True)
class LayerChoice:
    """The layer sweep: its table and what was chosen on the selection sets."""

    table: TableRef
    selected_layer: int
    best_layer_by_probe: dict
    best_probe: dict
    chosen_on: tuple[str, ...]


@dataclass(frozen=True)
class ModelRef:
    """A model stored as a versioned directory: ``version`` is its full key,
    ``<prefix>/<content hash>`` (``ArtifactStore.put_versioned_dir``)."""

    prefix: str
    version: str
    details: dict = field(default_factory=dict)  # e.g. a judge's held-out report, an RL recipe


@dataclass(frozen=True)
class ImportedRef:
    """An imported source: its (labelled) raw version and the balanced one evaluated on."""

    raw: DatasetRef
    balanced: DatasetRef


@dataclass(frozen=True)
class BundleRef:
    """The monitor bundle (``mup monitor``): where it is and what it deploys."""

    prefix: str
    probe_type: str
    layer: int
    threshold: float


@dataclass(frozen=True)
class DeceptionEvalRef:
    """One policy partition's lying metrics and the per-question answers behind them."""

    metrics: TableRef
    answers: TableRef


@dataclass(frozen=True)
class DeceptionResultsRef:
    """The result table over every evaluated partition and the scaling table beside the research's."""

    results: TableRef
    scaling: TableRef
    figures: dict = field(default_factory=dict)  # name -> PNG key
