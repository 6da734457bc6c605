"""The monitor bundle: which probe watches a model, at which layer, with which threshold.

A bundle is chosen from the stored probe metrics of one model: the (probe type, layer)
with the best mean AUROC over the *selection sets* (configured evaluation sets from
outside the training distribution when there are any; the corpus validation split
otherwise, recorded as in-distribution). Its threshold is calibrated on the selection
sets' low-stakes examples so that at most ``target_fpr`` of them alarm. Stored as
``monitors/<model>/<digest>/{bundle.json, probe.safetensors, _COMPLETE}``, with
``monitors/<model>/LATEST`` naming the newest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import polars as pl

from mup_core.evaluation.selection import VALIDATION_SET, SelectionError, choose

from mup_core.storage import ArtifactStore, scratch_dir

IN_DISTRIBUTION = VALIDATION_SET


class BundleError(ValueError):
    """A bundle cannot be chosen, found or used; the message says why and what to do."""


@dataclass
class MonitorBundle:
    model: str
    layer: int
    probe_type: str
    threshold: float
    target_fpr: float
    selection_sets: list[str]
    out_of_distribution: bool
    selection_auroc: float
    realised_fpr: float
    tpr_at_threshold: float
    uncertain_band: tuple[float, float]
    probe_source: str
    streaming: str = "causal prefix score: the probe's score of the conversation so far, after every token"
    storage_dtype: str = "bfloat16"  # of the activations the probe was trained on
    candidates: list[dict] = field(default_factory=list)
    # prompted probing: the probe was trained with this question appended as a last user turn
    # (activations config `question`); the live monitor then scores at message ends
    question: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "MonitorBundle":
        data = json.loads(text)
        data["uncertain_band"] = tuple(data["uncertain_band"])
        return cls(**data)


def choose_probe(metrics: pl.DataFrame, selection_sets: Sequence[str],
                 probe_types: Sequence[str] | None = None) -> tuple[dict, list[dict]]:
    """The (probe type, layer) with the best mean AUROC over ``selection_sets`` (ties to
    the better mean TPR at 1 % FPR; ``mup_core.evaluation.selection``), among
    ``probe_types`` only when given (fewer candidates choose better on a few small
    selection sets: docs/RESULTS.md). Returns the winner and the ranked candidates."""
    if probe_types:
        have = sorted(set(metrics["probe_type"].to_list())) if "probe_type" in metrics.columns else []
        unknown = [t for t in probe_types if t not in have]
        if unknown:
            raise BundleError(f"probe types {unknown} have no stored metrics (have {have}); train them "
                              "(probes config probe_types) and materialise probe_metrics, or choose among those "
                              "(monitor_bundle config probe_types; [] = every type)")
        metrics = metrics.filter(pl.col("probe_type").is_in(list(probe_types)))
    try:
        return choose(metrics, selection_sets)
    except SelectionError as exc:
        raise BundleError(str(exc)) from None


PROMPTED_STREAMING = ("message ends: after the user's messages and after the reply, the probe reads the conversation "
                      "and the question appended to it (run on a branch of the key-value cache)")


def calibrate_threshold(negative_scores: np.ndarray, target_fpr: float, positive_scores: np.ndarray = ()) -> float:
    """A threshold at which at most ``target_fpr`` of the negatives score at or above it (a
    negative alarms when score >= threshold), placed midway between the highest negative that
    must not alarm and the next score above it (of the negatives or ``positive_scores``): the
    same alarms on these scores as the lowest such threshold, but a score a few bits off — the
    live monitor's forward pass against the batched one, another machine — does not cross it.
    With nothing above, just above that negative."""
    if not 0.0 < target_fpr < 1.0:
        raise BundleError(f"target_fpr must be in (0, 1), got {target_fpr}")
    neg = np.sort(np.asarray(negative_scores, dtype=np.float64))[::-1]
    if neg.size == 0:
        raise BundleError("no low-stakes examples to calibrate the threshold on")
    k = int(np.floor(target_fpr * neg.size))  # negatives allowed to alarm
    if k >= neg.size:
        return float(neg[-1])
    scores = np.concatenate([neg, np.asarray(positive_scores, dtype=np.float64)])
    above = scores[scores > neg[k]]
    return float((neg[k] + above.min()) / 2) if above.size else float(np.nextafter(neg[k], np.inf))


def uncertain_band(threshold: float, width: float) -> tuple[float, float]:
    """Scores in ``[threshold * (1 - width), threshold)`` are escalated to the LLM judge."""
    return (float(threshold * (1 - width)), float(threshold))


def save_bundle(store: ArtifactStore, bundle: MonitorBundle, probe_path: str | Path) -> str:
    """Publish the bundle with a copy of its probe; returns the bundle's prefix."""
    probe_bytes = Path(probe_path).read_bytes()
    digest = hashlib.sha256(bundle.to_json().encode() + probe_bytes).hexdigest()[:16]
    prefix = f"monitors/{bundle.model}/{digest}"
    if not store.dir_complete(prefix):
        with scratch_dir("bundle") as tmp:
            (tmp / "bundle.json").write_text(bundle.to_json())
            (tmp / "probe.safetensors").write_bytes(probe_bytes)
            store.put_dir(prefix, tmp)
    store.put_bytes(f"monitors/{bundle.model}/LATEST", prefix.encode())
    return prefix


def find_bundle(store: ArtifactStore, bundle: str | None = None, model: str | None = None) -> str:
    """A bundle's prefix: ``bundle`` as given (a prefix in the store or a local directory),
    or the newest of ``model``."""
    if bundle:
        if Path(bundle).is_dir():
            return str(Path(bundle).resolve())
        if store.dir_complete(bundle.rstrip("/")):
            return bundle.rstrip("/")
        raise BundleError(f"no monitor bundle at {bundle!r} (neither a directory nor a complete bundle in {store.uri('')})")
    if not model:
        raise BundleError("name a bundle or a model")
    try:
        return store.get_bytes(f"monitors/{model}/LATEST").decode().strip()
    except FileNotFoundError:
        raise BundleError(f"no monitor bundle for {model} in {store.uri('monitors')}; materialise monitor_bundle "
                          f"for partition {model} first (make demo does)") from None


def load_bundle(store: ArtifactStore, prefix: str):
    """The bundle and its probe (from a store prefix or a local directory)."""
    from mup_core.probes import load_probe

    if Path(prefix).is_dir():
        directory = Path(prefix)
        bundle = MonitorBundle.from_json((directory / "bundle.json").read_text())
        probe = load_probe(directory / "probe.safetensors")
    else:
        bundle = MonitorBundle.from_json(store.get_bytes(f"{prefix}/bundle.json").decode())
        probe = load_probe(store.local_path(f"{prefix}/probe.safetensors"))
    if probe.info.model and probe.info.model != bundle.model:
        raise BundleError(f"bundle {prefix}: its probe was trained on {probe.info.model}, the bundle says {bundle.model}")
    return bundle, probe
