"""Experiments that read the scores table: comparison with CIs, calibration, ROC
curves, AUROC by input length, the probe -> LLM cascade and the compute summary."""

from __future__ import annotations

import numpy as np
import polars as pl
from sklearn.metrics import roc_curve

from mup_core.evaluation.metrics import (
    expected_calibration_error,
    metrics_with_ci,
    reliability_curve,
    safe_auroc,
)
from mup_core.experiments.scores import VAL
from mup_core.defaults import N_BOOT


def _eval_only(scores: pl.DataFrame) -> pl.DataFrame:
    out = scores.filter(pl.col("dataset") != VAL)
    if out.height == 0:
        raise ValueError("the scores table has no evaluation rows (only the validation split)")
    return out


# -- 1. comparison --------------------------------------------------------------
def comparison_table(scores: pl.DataFrame, n_boot: int = N_BOOT) -> pl.DataFrame:
    """Metrics with 95% bootstrap CIs per method x dataset x seed, then mean and std
    over seeds (``auroc_std`` is 0 where a method has one seed). CIs are averaged over
    seeds."""
    rows = []
    for (method, family, dataset, seed), part in scores.group_by(["method", "family", "dataset", "seed"]):
        y, s = part["label"].to_numpy(), part["score"].to_numpy()
        if len(np.unique(y)) < 2:
            continue
        m = metrics_with_ci(y, s, n_boot=n_boot, seed=int(seed))
        rows.append({"method": method, "family": family, "dataset": dataset, "seed": int(seed),
                     "mean_flops": float(part["flops"].mean()), **m})
    per_seed = pl.DataFrame(rows)
    metric_cols = [c for c in per_seed.columns if c not in ("method", "family", "dataset", "seed", "n", "positives")]
    return (
        per_seed.group_by(["method", "family", "dataset"])
        .agg(
            [pl.col("seed").n_unique().alias("seeds"), pl.col("n").first(), pl.col("auroc").std(ddof=1).fill_null(0.0).alias("auroc_std")]
            + [pl.col(c).mean() for c in metric_cols]
        )
        .sort(["dataset", "auroc"], descending=[False, True])
    )


IN_DISTRIBUTION_SETS = ("corpus-test",)  # the corpus's own held-out split: the training distribution


def method_summary(comparison: pl.DataFrame, in_distribution: tuple[str, ...] = IN_DISTRIBUTION_SETS) -> pl.DataFrame:
    """Per method, TPR at 1 % FPR first (a monitor lives at a low false-positive rate), then
    AUROC and FLOPs: means over all evaluation sets, and over the out-of-distribution ones
    (every evaluation set but the corpus's own test split; ``ood_*``, null where there are
    none). Sorted by the out-of-distribution TPR where there is one, else the overall TPR."""
    ev = comparison.filter(pl.col("dataset") != VAL)
    ood = (
        ev.filter(~pl.col("dataset").is_in(list(in_distribution)))
        .group_by(["method", "family"])
        .agg(pl.col("tpr_at_1pct_fpr").mean().alias("ood_mean_tpr_at_1pct_fpr"), pl.col("auroc").mean().alias("ood_mean_auroc"),
             pl.col("dataset").n_unique().alias("ood_datasets"))
    )
    summary = (
        ev.group_by(["method", "family"])
        .agg(
            pl.col("tpr_at_1pct_fpr").mean().alias("mean_tpr_at_1pct_fpr"),
            pl.col("auroc").mean().alias("mean_auroc"),
            pl.col("mean_flops").mean().alias("mean_flops"),
            pl.col("dataset").n_unique().alias("datasets"),
        )
        .join(ood, on=["method", "family"], how="left")
    )
    return summary.sort(["ood_mean_tpr_at_1pct_fpr", "mean_tpr_at_1pct_fpr", "mean_auroc"], descending=True, nulls_last=True)


# -- 6. AUROC by input length -------------------------------------------------------
def auroc_by_length(scores: pl.DataFrame, bins: int = 4) -> pl.DataFrame:
    """Examples pooled over evaluation sets, cut into ``bins`` token-length quantile
    bins; AUROC of every method (seed 0) per bin."""
    ev = _eval_only(scores).filter(pl.col("seed") == pl.col("seed").min().over("method"))
    lengths = ev.unique(["dataset", "id"]).select("dataset", "id", "tokens")
    edges = np.unique(np.quantile(lengths["tokens"].to_numpy(), np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        edges = np.array([lengths["tokens"].min(), lengths["tokens"].max() + 1])
    ev = ev.with_columns(
        pl.Series("bin", np.clip(np.searchsorted(edges, ev["tokens"].to_numpy(), side="right") - 1, 0, len(edges) - 2))
    )
    rows = []
    for (method, b), part in ev.group_by(["method", "bin"]):
        y = part["label"].to_numpy()
        rows.append({"method": method, "bin": int(b), "tokens_lo": int(edges[b]), "tokens_hi": int(edges[b + 1]),
                     "n": part.height, "positives": int(y.sum()), "auroc": safe_auroc(y, part["score"].to_numpy())})
    return pl.DataFrame(rows).sort("method", "bin")


# -- 7. calibration --------------------------------------------------------------
def calibration(scores: pl.DataFrame, bins: int = 10) -> tuple[pl.DataFrame, dict[str, dict]]:
    """Per method (seed 0, evaluation sets pooled): Brier, ECE and the reliability curve."""
    ev = _eval_only(scores).filter(pl.col("seed") == pl.col("seed").min().over("method"))
    rows, curves = [], {}
    for (method,), part in ev.group_by(["method"]):
        y, p = part["label"].to_numpy(), part["score"].to_numpy()
        curves[method] = reliability_curve(y, p, bins)
        rows.append({"method": method, "n": len(y), "brier": float(np.mean((p - y) ** 2)),
                     "ece": expected_calibration_error(y, p, bins), "mean_score": float(p.mean()), "base_rate": float(y.mean())})
    return pl.DataFrame(rows).sort("ece"), curves


# -- 8. ROC curves ------------------------------------------------------------------
def roc_points(scores: pl.DataFrame) -> dict[str, dict[str, tuple[list, list, float]]]:
    """{dataset: {method: (fpr, tpr, auroc)}} for seed 0 of every method."""
    ev = _eval_only(scores).filter(pl.col("seed") == pl.col("seed").min().over("method"))
    out: dict[str, dict] = {}
    for (dataset, method), part in ev.group_by(["dataset", "method"]):
        y, s = part["label"].to_numpy(), part["score"].to_numpy()
        if len(np.unique(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, s)
        out.setdefault(dataset, {})[method] = (fpr.tolist(), tpr.tolist(), safe_auroc(y, s))
    return out


# -- 9. cascade -------------------------------------------------------------------
def cascade(
    scores: pl.DataFrame,
    probe_method: str,
    llm_methods: list[str],
    fractions: list[float],
    combine: str = "average",
) -> pl.DataFrame:
    """Probe first; the ``fraction`` of examples on which the probe is least certain
    (score closest to 0.5) also go to an LLM monitor.

    ``combine="average"``: a deferred example's score is the mean of the probe's and
    the LLM's; ``"replace"``: the LLM's alone. Every example pays the probe's FLOPs;
    deferred ones also pay the LLM's. Returns mean AUROC over evaluation sets and mean
    FLOPs per example for each (LLM, fraction)."""
    if combine not in ("average", "replace"):
        raise ValueError(f"cascade: combine must be 'average' or 'replace', got {combine!r}")
    ev = _eval_only(scores).filter(pl.col("seed") == pl.col("seed").min().over("method"))
    have = set(ev["method"].unique().to_list())
    missing = [m for m in [probe_method, *llm_methods] if m not in have]
    if missing:
        raise ValueError(f"cascade: no scores for {missing}; have {sorted(have)}")
    rows = []
    probe = ev.filter(pl.col("method") == probe_method).select("dataset", "id", "label", pl.col("score").alias("p"), pl.col("flops").alias("pf"))
    for llm in llm_methods:
        other = ev.filter(pl.col("method") == llm).select("dataset", "id", pl.col("score").alias("q"), pl.col("flops").alias("qf"))
        both = probe.join(other, on=["dataset", "id"], how="inner")
        for f in fractions:
            aurocs, flops = [], []
            for (_,), part in both.group_by(["dataset"]):
                y, p, q = part["label"].to_numpy(), part["p"].to_numpy(), part["q"].to_numpy()
                k = int(round(f * len(p)))
                deferred = np.argsort(np.abs(p - 0.5), kind="stable")[:k]
                s = p.copy()
                s[deferred] = (p[deferred] + q[deferred]) / 2 if combine == "average" else q[deferred]
                aurocs.append(safe_auroc(y, s))
                cost = part["pf"].to_numpy().copy()
                cost[deferred] += part["qf"].to_numpy()[deferred]
                flops.append(cost.mean())
            rows.append({"probe": probe_method, "llm": llm, "fraction": float(f), "combine": combine,
                         "mean_auroc": float(np.nanmean(aurocs)), "mean_flops": float(np.mean(flops))})
    return pl.DataFrame(rows)


def top_tokens(token_scores, tokens: list[str], k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` tokens a probe scores highest in one example (for inspecting what it reads)."""
    import numpy as np

    scores = np.asarray(token_scores, dtype=float)
    if len(scores) != len(tokens):
        raise ValueError(f"{len(scores)} token scores for {len(tokens)} tokens")
    order = np.argsort(-scores)[:k]
    return [(tokens[i], round(float(scores[i]), 3)) for i in order]
