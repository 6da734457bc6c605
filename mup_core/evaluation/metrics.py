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
from sklearn.metrics import roc_auc_score
from mup_core.defaults import N_BOOT


def safe_auroc(y: np.ndarray, scores: np.ndarray) -> float:
    """AUROC, or NaN when only one class is present."""
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, scores))


def roc_curve_points(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) at every distinct threshold, from (0, 0) to (1, 1), sorted by FPR —
    ``sklearn.metrics.roc_curve(drop_intermediate=False)`` without its input checks
    (this runs thousands of times in bootstraps)."""
    y = np.asarray(y).astype(bool)
    scores = np.asarray(scores, dtype=float)
    order = np.argsort(-scores, kind="mergesort")
    s, t = scores[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(t)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    return np.r_[0.0, fps / max(1, (~y).sum())], np.r_[0.0, tps / max(1, y.sum())]


def tpr_at_fpr(y: np.ndarray, scores: np.ndarray, max_fpr: float = 0.01) -> float:
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return float("nan")
    fpr, tpr = roc_curve_points(y, scores)
    # points are sorted by increasing FPR (and TPR within ties).
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


def reliability_curve(y: np.ndarray, probs: np.ndarray, bins: int = 10) -> dict[str, list]:
    """Calibration: for equal-width probability bins, the mean predicted probability,
    the observed fraction of positives and the count (empty bins are left out)."""
    y, probs = np.asarray(y, dtype=float), np.asarray(probs, dtype=float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(probs, edges[1:-1]), 0, bins - 1)
    out: dict[str, list] = {"mean_predicted": [], "fraction_positive": [], "count": [], "bin_lo": [], "bin_hi": []}
    for b in range(bins):
        sel = which == b
        if sel.any():
            out["mean_predicted"].append(float(probs[sel].mean()))
            out["fraction_positive"].append(float(y[sel].mean()))
            out["count"].append(int(sel.sum()))
            out["bin_lo"].append(float(edges[b]))
            out["bin_hi"].append(float(edges[b + 1]))
    return out


METRIC_FUNCTIONS = {
    "auroc": safe_auroc,
    "accuracy": lambda y, p: float(np.mean((np.asarray(p) >= 0.5).astype(int) == np.asarray(y))),
    "tpr_at_1pct_fpr": lambda y, p: tpr_at_fpr(y, p, 0.01),
    "brier": brier,
}


def bootstrap_ci(
    y: np.ndarray,
    scores: np.ndarray,
    metric: str = "auroc",
    n_boot: int = N_BOOT,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric`` over examples (resampled with
    replacement, ``n_boot`` times, seeded). Resamples with one class only are skipped."""
    fn = METRIC_FUNCTIONS[metric]
    y, scores = np.asarray(y).astype(int), np.asarray(scores, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y), (n_boot, len(y)))
    yb, sb = y[idx], scores[idx]
    if metric == "auroc":  # Mann-Whitney on average ranks, all resamples at once
        from scipy.stats import rankdata

        npos = yb.sum(1)
        nneg = len(y) - npos
        with np.errstate(invalid="ignore", divide="ignore"):
            values = ((rankdata(sb, axis=1) * yb).sum(1) - npos * (npos + 1) / 2) / (npos * nneg)
        values = values[(npos > 0) & (nneg > 0)]
    elif metric == "accuracy":
        values = ((sb >= 0.5).astype(int) == yb).mean(1)
    elif metric == "brier":
        values = ((sb - yb) ** 2).mean(1)
    else:
        values = np.array([fn(a, b) for a, b in zip(yb, sb) if 0 < a.sum() < len(a)])
    if len(values) == 0:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def metrics_with_ci(
    y: np.ndarray, probs: np.ndarray, n_boot: int = N_BOOT, seed: int = 0, metrics: tuple[str, ...] = ("auroc", "accuracy", "tpr_at_1pct_fpr", "brier")
) -> dict:
    """``compute_metrics`` plus ``<metric>_lo`` / ``<metric>_hi`` 95% bootstrap bounds."""
    out = compute_metrics(y, probs).as_dict()
    for m in metrics:
        lo, hi = bootstrap_ci(y, probs, m, n_boot=n_boot, seed=seed)
        out[f"{m}_lo"], out[f"{m}_hi"] = lo, hi
    return out


def mean_std_over_seeds(table, by: list[str], metrics: tuple[str, ...] = ("auroc",)):
    """Collapse a polars table with a ``seed`` column to mean and std per group
    (``<metric>_mean``, ``<metric>_std``, ``seeds``)."""
    import polars as pl

    aggs = [pl.col("seed").n_unique().alias("seeds")]
    for m in metrics:
        aggs += [pl.col(m).mean().alias(f"{m}_mean"), pl.col(m).std(ddof=1).fill_null(0.0).alias(f"{m}_std")]
    return table.group_by(by).agg(aggs).sort(by)
