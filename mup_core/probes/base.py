"""The probe interface, metadata and save/load.

A probe maps per-token activations of one layer (``RaggedActivations``) to
P(high-stakes) per example. Every probe saves to a single safetensors file whose
header holds its metadata (model, layer, probe type, hyper-parameters, training data
version, training history), so nothing goes through pickle.
"""

from __future__ import annotations

import inspect
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
from mup_core.defaults import DEFAULT_BATCH_TOKENS
from mup_core.storage import replaced_atomically


CLASS_NAMES = ("low-stakes", "high-stakes")
# the labels every probe learns: `fit` refuses anything but 0 (low-stakes) and 1 (high-stakes)
_CLASSES = np.array([0, 1])
_CLASSES.flags.writeable = False


@dataclass
class ProbeInfo:
    """Provenance of a trained probe: the model and layer whose activations it reads, its
    classes, and the version of the data it was trained on."""

    model: str
    layer: int
    train_inputs_hash: str = ""
    train_labels_hash: str = ""
    train_examples: int = 0
    class_names: tuple[str, ...] = CLASS_NAMES
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.model or int(self.layer) < 0:
            raise ValueError(f"a probe must know its model and layer, got model={self.model!r} layer={self.layer}")
        self.layer = int(self.layer)
        self.class_names = tuple(self.class_names)


class Probe(ABC):
    """The estimator contract of scikit-learn: hyper-parameters are named constructor
    arguments (``get_params``), ``fit`` returns the probe, what ``fit`` learns ends in
    ``_``, ``predict_proba`` returns ``(n, 2)`` probabilities of ``classes_`` (0 =
    low-stakes, 1 = high-stakes), ``decision_function`` the high-stakes logit ``(n,)``.
    A trained probe knows its model and layer (``info``) and refuses activations of
    another model or layer."""

    probe_type: ClassVar[str]
    classes_: ClassVar[np.ndarray] = _CLASSES  # fixed, so not state that fit learns
    info: ProbeInfo | None = None

    @classmethod
    def param_defaults(cls) -> dict[str, Any]:
        """Every hyper-parameter with its default: the named arguments of ``__init__``
        along the class hierarchy (a subclass adds its own and passes the rest on)."""
        params: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            init = klass.__dict__.get("__init__")
            if init is None or klass is object:
                continue
            for name, p in inspect.signature(init).parameters.items():
                if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                    params[name] = p.default
        return params

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.param_defaults()}

    def fitted_summary(self) -> dict[str, Any]:
        """Scalars ``fit`` learnt that a reader of the saved probe wants (kept in ``info.extra``)."""
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
        """Learn from per-example labels (0/1); ``sample_weight`` (one non-negative number
        per example) up- or down-weights examples; ``val`` is used for early stopping
        where the probe has epochs. Sets the fitted state; returns self."""

    @abstractmethod
    def _decision(self, acts: RaggedActivations) -> np.ndarray:
        """The high-stakes logit per example, float64 ``(n,)``."""

    def decision_function(self, acts: RaggedActivations) -> np.ndarray:
        """The high-stakes logit per example, float64 ``(n,)``. Does not depend on how
        examples are batched or padded."""
        self.check_activations(acts)
        return self._decision(acts)

    def predict_proba(self, acts: RaggedActivations) -> np.ndarray:
        """Probabilities of ``classes_`` per example, float64 ``(n, 2)``; column 1 is
        P(high-stakes)."""
        p = _sigmoid(self.decision_function(acts))
        return np.column_stack([1.0 - p, p])

    def predict(self, acts: RaggedActivations) -> np.ndarray:
        """The more probable class per example (threshold 0.5)."""
        return (self.decision_function(acts) > 0).astype(np.int64)

    def check_activations(self, acts: RaggedActivations) -> None:
        """Refuse activations of another model or layer than the probe was trained on."""
        if self.info is None:
            return
        for what, mine, theirs in (("model", self.info.model, acts.model), ("layer", self.info.layer, acts.layer)):
            if theirs is not None and theirs != mine:
                raise ValueError(
                    f"this {self.probe_type} probe reads {self.info.model} layer {self.info.layer}; these activations "
                    f"are of {acts.model or '?'} layer {acts.layer if acts.layer is not None else '?'} ({what} differs)"
                )

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
            "hyperparameters": self.get_params(),
            "info": asdict(self.info),
            "history": getattr(self, "history_", []),
        }

    def _require_provenance(self) -> ProbeInfo:
        if self.info is None:
            raise ValueError(f"this {self.probe_type} probe does not know its model and layer; train it with train_probe")
        return self.info

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically to ``path`` (a ``.safetensors`` file): state and provenance."""
        self._require_provenance()
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

        info = self._require_provenance()
        lm = lm or load_model_cached(info.model)
        result = extract_activations(lm, list(texts), [info.layer], batch_tokens=batch_tokens, progress=False)
        return self.predict_proba(result.layer(info.layer))[:, 1]


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


def probe_class(probe_type: str) -> type[Probe]:
    """The class of a probe type, from the one registry (``mup_core.probe_types.PROBE_CLASSES``)."""
    import importlib

    from mup_core.probe_types import PROBE_CLASSES

    try:
        module, name = PROBE_CLASSES[probe_type].split(":")
    except KeyError:
        raise ValueError(f"unknown probe type {probe_type!r}; known: {', '.join(PROBE_CLASSES)}") from None
    return getattr(importlib.import_module(module), name)


def make_probe(probe_type: str, **hyperparameters: Any) -> Probe:
    """An untrained probe; unknown hyper-parameters fail naming the known ones, and whole
    numbers given as floats (configs deliver numbers as floats: 40.0 epochs) become ints."""
    cls = probe_class(probe_type)
    defaults = cls.param_defaults()
    unknown = set(hyperparameters) - set(defaults)
    if unknown:
        raise ValueError(f"{probe_type}: unknown hyper-parameters {sorted(unknown)}; known: {sorted(defaults)}")
    for k, v in list(hyperparameters.items()):
        if isinstance(defaults[k], int) and not isinstance(defaults[k], bool) and isinstance(v, float):
            if not v.is_integer():
                raise ValueError(f"{probe_type}: hyper-parameter {k} must be a whole number, got {v}")
            hyperparameters[k] = int(v)
    return cls(**hyperparameters)


def load_probe(path: str | os.PathLike) -> Probe:
    path = Path(path)
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["mup_probe"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    probe = make_probe(meta["probe_type"], **meta["hyperparameters"])
    probe.info = ProbeInfo(**meta["info"])
    probe.history_ = meta.get("history", [])
    probe.load_state_tensors(tensors)
    return probe
