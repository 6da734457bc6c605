"""Choosing a probe (type, layer, hyper-parameters) on data from elsewhere.

A probe that scores 0.97 AUROC on its own training distribution can fall to chance on
real traffic (docs/RESULTS.md), so what the study, the layer sweep and the monitor
use is chosen on *selection sets*: sets that are neither the training distribution
nor an evaluation set. ``choose`` ranks candidates on them; ``leave_one_out`` is the
honest report when the selection sets are also the only out-of-distribution data:
choose on all but one, report the held-out one, rotate.

Every function works on a metrics table with one row per candidate and dataset
(columns ``dataset``, the candidate columns and the metrics), as ``probe_metrics``
stores it, so it is tested without a model.
"""

from __future__ import annotations

from typing import Sequence

import polars as pl

CANDIDATE = ("probe_type", "layer")
VALIDATION_SET = "corpus-val"  # the corpus's own validation split: in distribution
# the role of a set in a metrics table (column ``role``): reported on, chosen on, or the
# corpus's validation split (early stopping, and the fallback when nothing else can choose)
EVALUATION, SELECTION, VALIDATION = "evaluation", "selection", "validation"
# ranked on the mean over the selection sets: AUROC first, then TPR at 1 % FPR
RANK_METRICS = ("auroc", "tpr_at_1pct_fpr")


class SelectionError(ValueError):
    """The metrics cannot support the requested selection."""


def _check(metrics: pl.DataFrame, sets: Sequence[str], by: Sequence[str]) -> None:
    if metrics.height == 0:
        raise SelectionError("no probe metrics stored; materialise probes and probe_metrics first")
    missing_cols = [c for c in (*by, "dataset", *RANK_METRICS) if c not in metrics.columns]
    if missing_cols:
        raise SelectionError(f"probe metrics lack columns {missing_cols}; re-materialise probe_metrics")
    if not sets:
        raise SelectionError("no selection sets given")
    have = set(metrics["dataset"].unique().to_list())
    missing = [s for s in sets if s not in have]
    if missing:
        raise SelectionError(f"selection sets {missing} have no probe metrics (have {sorted(have)}); "
                             "add them to eval_datasets and re-materialise activations and probe_metrics")


def rank(metrics: pl.DataFrame, sets: Sequence[str], by: Sequence[str] = CANDIDATE) -> pl.DataFrame:
    """Candidates evaluated on every one of ``sets``, best first: mean AUROC over the sets,
    ties to the better mean TPR at 1 % FPR, then the lower layer and the name."""
    by = list(by)
    _check(metrics, sets, by)
    extra = [pl.col(c).first() for c in ("probe_key",) if c in metrics.columns and c not in by]
    ranked = (
        metrics.filter(pl.col("dataset").is_in(list(sets)))
        .group_by(by)
        .agg(*[pl.col(m).mean() for m in RANK_METRICS], pl.col("auroc").min().alias("worst_auroc"),
             *extra, pl.col("dataset").n_unique().alias("sets"))
        .filter(pl.col("sets") == len(set(sets)))
    )
    order = [*RANK_METRICS, *[c for c in ("layer", "probe_type") if c in by], *[c for c in by if c not in ("layer", "probe_type")]]
    ranked = ranked.sort(order, descending=[True] * len(RANK_METRICS) + [False] * (len(order) - len(RANK_METRICS)))
    if ranked.height == 0:
        raise SelectionError(f"no candidate was evaluated on all of {list(sets)}")
    return ranked


def choose(metrics: pl.DataFrame, sets: Sequence[str], by: Sequence[str] = CANDIDATE) -> tuple[dict, list[dict]]:
    """The best candidate on ``sets`` and the ten best, rounded for metadata."""
    rows = rank(metrics, sets, by).to_dicts()
    return rows[0], [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows[:10]]


def leave_one_out(
    metrics: pl.DataFrame, sets: Sequence[str], by: Sequence[str] = CANDIDATE,
    report: Sequence[str] = ("auroc", "tpr_at_1pct_fpr"),
) -> pl.DataFrame:
    """For each of ``sets``: the candidate chosen on the others, and its metrics on it.

    One row per held-out set with the chosen candidate, its selection score and the
    ``report`` metrics (and their ``*_lo``/``*_hi`` intervals where the table has them)
    on the held-out set. The mean of these rows is an out-of-distribution estimate in
    which no set ever chose what it reports."""
    if len(set(sets)) < 2:
        raise SelectionError(f"leave-one-out needs at least two sets, got {list(sets)}")
    complete = rank(metrics, sets, by).select(by)  # only candidates evaluated on every set
    metrics = metrics.join(complete, on=list(by), how="semi")
    rows = []
    for held in sets:
        others = [s for s in sets if s != held]
        best, _ = choose(metrics, others, by)
        key = pl.lit(True)
        for c in by:
            key = key & (pl.col(c) == best[c])
        hit = metrics.filter(key & (pl.col("dataset") == held))
        if hit.height == 0:
            raise SelectionError(f"the candidate chosen without {held} ({ {c: best[c] for c in by} }) has no metrics on {held}")
        got = hit.row(0, named=True)
        row = {"held_out": held, **{c: best[c] for c in by}, "selection_auroc": best["auroc"]}
        for m in report:
            for suffix in ("", "_lo", "_hi"):
                if f"{m}{suffix}" in got:
                    row[f"{m}{suffix}"] = got[f"{m}{suffix}"]
        rows.append(row)
    return pl.DataFrame(rows)


def selection_sets_of(metrics: pl.DataFrame) -> list[str]:
    """The sets a metrics table marks ``role == "selection"``, else the corpus validation split."""
    if "role" in metrics.columns:
        sets = sorted(metrics.filter(pl.col("role") == SELECTION)["dataset"].unique().to_list())
        if sets:
            return sets
    return [VALIDATION_SET]


def layer_sweep(metrics: pl.DataFrame) -> dict:
    """AUROC by layer and probe type on the selection sets and on the evaluation sets, and
    the choices made on the selection sets only: the layer (best mean selection AUROC over
    probe types), each type's best layer, and the best (type, layer) overall. With two or
    more selection sets, also the leave-one-set-out estimate of the chosen probe.

    Returns ``{"table", "selected_layer", "best_layer_by_probe", "best_probe", "chosen_on",
    "out_of_distribution", "leave_one_out"}``."""
    chosen_on = selection_sets_of(metrics)
    _check(metrics, chosen_on, CANDIDATE)
    on_sel = pl.col("dataset").is_in(chosen_on)
    is_eval = (pl.col("role") == EVALUATION) if "role" in metrics.columns else (pl.col("dataset") != VALIDATION_SET)
    sel = metrics.filter(on_sel).group_by("layer", "probe_type").agg(
        pl.col("auroc").mean().alias("selection_auroc"), pl.col("tpr_at_1pct_fpr").mean().alias("selection_tpr_at_1pct_fpr"))
    ev = metrics.filter(is_eval & ~on_sel).group_by("layer", "probe_type").agg(
        pl.col("auroc").mean().alias("eval_auroc"), pl.col("tpr_at_1pct_fpr").mean().alias("eval_tpr_at_1pct_fpr"))
    table = sel.join(ev, on=["layer", "probe_type"], how="full", coalesce=True).sort("probe_type", "layer")
    by_layer = (table.group_by("layer").agg(pl.col("selection_auroc").mean())
                .sort(["selection_auroc", "layer"], descending=[True, False], nulls_last=True))
    best_by_probe = {
        t: int(rows.sort(["selection_auroc", "layer"], descending=[True, False], nulls_last=True)["layer"][0])
        for (t,), rows in table.group_by(["probe_type"])
    }
    best, _ = choose(metrics, chosen_on)
    loo = leave_one_out(metrics, chosen_on) if len(chosen_on) >= 2 else None
    return {
        "table": table,
        "selected_layer": int(by_layer["layer"][0]),
        "best_layer_by_probe": best_by_probe,
        "best_probe": {"probe_type": best["probe_type"], "layer": int(best["layer"]), "auroc": best["auroc"],
                       "tpr_at_1pct_fpr": best["tpr_at_1pct_fpr"]},
        "chosen_on": chosen_on,
        "out_of_distribution": chosen_on != [VALIDATION_SET],
        "leave_one_out": loo,
    }
