"""The probe interface, metadata and save/load.

A probe maps per-token activations of one layer (``RaggedActivations``) to
P(high-stakes) per example. Every probe saves to a single safetensors file whose
header holds its metadata (model, layer, probe type, hyper-parameters, training data
version, training history), so nothing goes through pickle.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mup_core.activations.ragged import RaggedActivations
from mup_core.extraction_defaults import DEFAULT_BATCH_TOKENS
from mup_core.storage import replaced_atomically


@dataclass
class ProbeInfo:
    """Provenance of a trained probe."""

    model: str = ""
    layer: int = -1
    train_inputs_hash: str = ""
    train_labels_hash: str = ""
    train_examples: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Probe(ABC):
    probe_type: ClassVar[str]
    hyperparameters: dict[str, Any]

    def __init__(self, **hyperparameters: Any) -> None:
        defaults = self.default_hyperparameters()
        unknown = set(hyperparameters) - set(defaults)
        if unknown:
            raise ValueError(
                f"{self.probe_type}: unknown hyper-parameters {sorted(unknown)}; known: {sorted(defaults)}"
            )
        for k, v in hyperparameters.items():  # configs deliver numbers as floats: 40.0 epochs means 40
            if isinstance(defaults[k], int) and not isinstance(defaults[k], bool) and isinstance(v, float):
                if not v.is_integer():
                    raise ValueError(f"{self.probe_type}: hyper-parameter {k} must be a whole number, got {v}")
                hyperparameters[k] = int(v)
        self.hyperparameters = {**defaults, **hyperparameters}
        self.info = ProbeInfo()
        self.history: list[dict[str, float]] = []

    @classmethod
    def default_hyperparameters(cls) -> dict[str, Any]:
        return {}

    def validate(self) -> None:
        """Raise ValueError for hyper-parameter values this probe cannot train with, before
        any training (values only the data or the optimiser can judge fail in ``fit``)."""

    # -- learning -------------------------------------------------------------
    @abstractmethod
    def fit(
        self,
        acts: RaggedActivations,
        labels: np.ndarray,
        val: tuple[RaggedActivations, np.ndarray] | None = None,
        sample_weight: np.ndarray | None = None,
    ) -> "Probe":
        """Learn from per-example labels; ``sample_weight`` (one non-negative number per
        example) up- or down-weights examples; ``val`` is used for early stopping where
        the probe has epochs."""

    @abstractmethod
    def predict_proba(self, acts: RaggedActivations) -> np.ndarray:
        """P(high-stakes) per example, float64 ``(n,)``. Does not depend on how examples
        are batched or padded."""

    @abstractmethod
    def token_scores(self, acts: RaggedActivations, i: int) -> np.ndarray:
        """Per-token scores (logit scale) of example ``i``, for inspection: what the probe
        reads at each token before it pools them."""

    # -- streaming ------------------------------------------------------------
    @abstractmethod
    def stream_terms(self, x: torch.Tensor) -> np.ndarray:
        """Per-token quantities ``(T, k)`` float64 of one example's activations ``(T, H)``;
        each row depends on its own token only, so a stream computes each once."""

    @abstractmethod
    def aggregate_prefixes(self, terms: np.ndarray) -> np.ndarray:
        """Logits ``(T,)`` after each prefix: entry ``t`` is the logit the probe gives the
        example cut after token ``t`` (causal). The last entry is the offline logit."""

    def prefix_proba(self, x: torch.Tensor) -> np.ndarray:
        """P(high-stakes) after every token of one example (``(T, H)`` activations)."""
        return _sigmoid(self.aggregate_prefixes(self.stream_terms(x)))

    # -- persistence ----------------------------------------------------------
    @abstractmethod
    def state_tensors(self) -> dict[str, torch.Tensor]: ...

    @abstractmethod
    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None: ...

    def metadata(self) -> dict[str, Any]:
        return {
            "probe_type": self.probe_type,
            "hyperparameters": self.hyperparameters,
            "info": asdict(self.info),
            "history": self.history,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically to ``path`` (a ``.safetensors`` file)."""
        path = Path(path)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_tensors().items()}
        with replaced_atomically(path) as tmp:
            save_file(tensors, str(tmp), metadata={"mup_probe": json.dumps(self.metadata())})
        return path

    # -- end to end -------------------------------------------------------------
    def score(self, texts: Sequence[Any], lm=None, batch_tokens: int = DEFAULT_BATCH_TOKENS) -> np.ndarray:
        """Score raw texts or dialogues: runs the probe's model, then the probe."""
        from mup_core.activations.extract import extract_activations
        from mup_core.models.loading import load_model_cached

        if not self.info.model or self.info.layer < 0:
            raise ValueError("this probe does not know its model and layer; set probe.info before score()")
        lm = lm or load_model_cached(self.info.model)
        result = extract_activations(lm, list(texts), [self.info.layer], batch_tokens=batch_tokens, progress=False)
        return self.predict_proba(result.layer(self.info.layer))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


class ProbeStream:
    """A probe following one conversation token by token: ``push`` the new tokens'
    activations, get P(high-stakes) after each. Per-token terms are computed once; the
    aggregation over the prefix is O(T) numpy."""

    def __init__(self, probe: "Probe"):
        self.probe = probe
        self.terms: np.ndarray | None = None

    def push(self, x: torch.Tensor) -> np.ndarray:
        if len(x) == 0:
            return np.zeros(0)
        new = self.probe.stream_terms(x)
        self.terms = new if self.terms is None else np.concatenate([self.terms, new])
        return _sigmoid(self.probe.aggregate_prefixes(self.terms)[-len(new):])

    @property
    def tokens(self) -> int:
        return 0 if self.terms is None else len(self.terms)


def tokens_until_alarm(proba: np.ndarray, threshold: float) -> int | None:
    """1-based index of the first token whose prefix score reaches ``threshold``."""
    hit = np.flatnonzero(proba >= threshold)
    return int(hit[0]) + 1 if hit.size else None


PROBE_TYPES: dict[str, type[Probe]] = {}


def register(cls: type[Probe]) -> type[Probe]:
    PROBE_TYPES[cls.probe_type] = cls
    return cls


def make_probe(probe_type: str, **hyperparameters: Any) -> Probe:
    try:
        cls = PROBE_TYPES[probe_type]
    except KeyError:
        raise ValueError(f"unknown probe type {probe_type!r}; known: {', '.join(PROBE_TYPES)}") from None
    return cls(**hyperparameters)


def load_probe(path: str | os.PathLike) -> Probe:
    path = Path(path)
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["mup_probe"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    probe = make_probe(meta["probe_type"], **meta["hyperparameters"])
    probe.info = ProbeInfo(**meta["info"])
    probe.history = meta.get("history", [])
    probe.load_state_tensors(tensors)
    return probe
