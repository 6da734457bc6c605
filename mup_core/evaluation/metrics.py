"""Classification metrics for monitors.

TPR at 1% FPR — the one definition used everywhere in mup
--------------------------------------------------------
The ROC curve is the set of (FPR, TPR) points of every threshold, joined by
straight lines (a segment is achievable by randomising between its two thresholds).
``tpr_at_fpr(y, s, 0.01)`` is the largest TPR on that curve whose FPR does not
exceed 0.01: the curve's value at FPR = 0.01, interpolated linearly between the
last point at or below 1% and the first point above it. With fewer than 100
negatives the first step of the curve is wider than 1%, so the value is an
interpolation and worth reading with that in mind (the metadata records counts).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


def safe_auroc(y: np.ndarray, scores: np.ndarray) -> float:
    """AUROC, or NaN when only one class is present."""
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, scores))


def tpr_at_fpr(y: np.ndarray, scores: np.ndarray, max_fpr: float = 0.01) -> float:
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return float("nan")
    fpr, tpr, _ = roc_curve(y, scores, drop_intermediate=False)
    # roc_curve returns points sorted by increasing FPR (and TPR within ties).
    below = np.flatnonzero(fpr <= max_fpr)
    i = below[-1]
    best = tpr[i]
    if i + 1 < len(fpr) and fpr[i] < max_fpr:
        f0, f1, t0, t1 = fpr[i], fpr[i + 1], tpr[i], tpr[i + 1]
        best = max(best, t0 + (max_fpr - f0) / (f1 - f0) * (t1 - t0))
    return float(best)


def brier(y: np.ndarray, probs: np.ndarray) -> float:
    return float(np.mean((np.asarray(probs, dtype=float) - np.asarray(y, dtype=float)) ** 2))


def expected_calibration_error(y: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    y, probs = np.asarray(y, dtype=float), np.asarray(probs, dtype=float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(probs, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            ece += sel.mean() * abs(probs[sel].mean() - y[sel].mean())
    return float(ece)


@dataclass
class ProbeMetrics:
    n: int
    positives: int
    auroc: float
    accuracy: float
    tpr_at_1pct_fpr: float
    brier: float
    ece: float

    def as_dict(self) -> dict:
        return asdict(self)


def compute_metrics(y: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> ProbeMetrics:
    y = np.asarray(y).astype(int)
    probs = np.asarray(probs, dtype=float)
    if y.shape != probs.shape:
        raise ValueError(f"{len(y)} labels but {len(probs)} scores")
    return ProbeMetrics(
        n=int(len(y)),
        positives=int(y.sum()),
        auroc=safe_auroc(y, probs),
        accuracy=float(np.mean((probs >= threshold).astype(int) == y)),
        tpr_at_1pct_fpr=tpr_at_fpr(y, probs, 0.01),
        brier=brier(y, probs),
        ece=expected_calibration_error(y, probs),
    )
