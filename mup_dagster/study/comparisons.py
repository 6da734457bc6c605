"""The paper's experiments on the scores tables: comparison, calibration, ROC, length, cascade, summary."""

from typing import Optional

import dagster as dg
from pydantic import Field

from mup_core.defaults import N_BOOT
from mup_core.refs import LayerChoice, TableRef
from mup_dagster.resources import ArtifactStoreResource
from mup_dagster.study.common import publish, read_ref, study_asset

# -- experiments on the scores ---------------------------------------------------------------
def _all_scores(store, *refs):
    from mup_core.experiments import concat_scores

    return concat_scores([read_ref(store, r) for r in refs])


class ComparisonConfig(dg.Config):
    n_boot: int = Field(default=N_BOOT, description="bootstrap resamples for the 95% intervals")


@study_asset(kinds={"matplotlib"})
def probe_comparison(
    context: dg.AssetExecutionContext, config: ComparisonConfig, artifact_store: ArtifactStoreResource,
    probe_scores: TableRef, tfidf_baseline: TableRef, prompted_baseline: TableRef, finetuned_baseline: TableRef,
    continuation_baseline: TableRef,
) -> dg.Output[TableRef]:
    """Every probe type and baseline on every evaluation set: TPR at 1 % FPR first, then AUROC,
    accuracy and Brier, with 95% bootstrap intervals, mean and std over seeds; the metadata
    leads with the mean TPR over the out-of-distribution sets."""
    import polars as pl

    from mup_core.experiments import VAL, comparison_table, method_summary
    from mup_core.figures import study as figs

    store = artifact_store.get_store()
    scores = _all_scores(store, probe_scores, tfidf_baseline, prompted_baseline, finetuned_baseline, continuation_baseline)
    table = comparison_table(scores, n_boot=config.n_boot)
    ev = table.filter(pl.col("dataset") != VAL)
    png = figs.comparison_bars(ev, f"{context.partition_key}: monitors by evaluation set (95% bootstrap CI)")
    summary = method_summary(table)
    def by_method(col):
        return dg.MetadataValue.json({r["method"]: None if r[col] is None else round(r[col], 4) for r in summary.iter_rows(named=True)})

    return publish(context, store, "probe_comparison", table, png, {
        "ood_mean_tpr_at_1pct_fpr_by_method": by_method("ood_mean_tpr_at_1pct_fpr"),
        "mean_tpr_at_1pct_fpr_by_method": by_method("mean_tpr_at_1pct_fpr"),
        "mean_auroc_by_method": by_method("mean_auroc"),
    }, columns=["dataset", "method", "seeds", "tpr_at_1pct_fpr", "tpr_at_1pct_fpr_lo", "tpr_at_1pct_fpr_hi",
                "auroc", "auroc_lo", "auroc_hi", "auroc_std", "brier"])


@study_asset(kinds={"matplotlib"})
def calibration_curves(
    context: dg.AssetExecutionContext, artifact_store: ArtifactStoreResource,
    probe_scores: TableRef, tfidf_baseline: TableRef, prompted_baseline: TableRef, finetuned_baseline: TableRef,
    continuation_baseline: TableRef,
) -> dg.Output[TableRef]:
    """Reliability diagrams, Brier score and expected calibration error per method."""
    from mup_core.experiments import calibration
    from mup_core.figures import study as figs

    store = artifact_store.get_store()
    table, curves = calibration(_all_scores(store, probe_scores, tfidf_baseline, prompted_baseline, finetuned_baseline, continuation_baseline))
    png = figs.reliability_diagrams(curves, f"{context.partition_key}: reliability (evaluation sets pooled)")
    return publish(context, store, "calibration", table, png, {"curves": dg.MetadataValue.json(curves)})


@study_asset(kinds={"matplotlib"})
def roc_curves(
    context: dg.AssetExecutionContext, artifact_store: ArtifactStoreResource,
    probe_scores: TableRef, tfidf_baseline: TableRef, prompted_baseline: TableRef, finetuned_baseline: TableRef,
    continuation_baseline: TableRef,
) -> dg.Output[TableRef]:
    """ROC curves of every method on every evaluation set (the 1% FPR line marked)."""
    import polars as pl

    from mup_core.experiments import roc_points
    from mup_core.figures import study as figs

    store = artifact_store.get_store()
    pts = roc_points(_all_scores(store, probe_scores, tfidf_baseline, prompted_baseline, finetuned_baseline, continuation_baseline))
    table = pl.DataFrame([{"dataset": d, "method": m, "auroc": v[2], "points": len(v[0])} for d, by in pts.items() for m, v in by.items()])
    png = figs.roc_curves(pts, f"{context.partition_key}: ROC curves")
    return publish(context, store, "roc_curves", table.sort("dataset", "auroc", descending=[False, True]), png)


class LengthConfig(dg.Config):
    bins: int = 4


@study_asset(kinds={"matplotlib"})
def auroc_by_length(
    context: dg.AssetExecutionContext, config: LengthConfig, artifact_store: ArtifactStoreResource,
    probe_scores: TableRef, tfidf_baseline: TableRef, prompted_baseline: TableRef, finetuned_baseline: TableRef,
    continuation_baseline: TableRef,
) -> dg.Output[TableRef]:
    """AUROC of every method in token-length quantile bins (evaluation sets pooled)."""
    from mup_core.experiments import auroc_by_length as by_length
    from mup_core.figures import study as figs

    store = artifact_store.get_store()
    table = by_length(_all_scores(store, probe_scores, tfidf_baseline, prompted_baseline, finetuned_baseline, continuation_baseline), config.bins)
    return publish(context, store, "auroc_by_length", table, figs.auroc_by_length(table, f"{context.partition_key}: AUROC by input length"))


class CascadeConfig(dg.Config):
    probe_method: Optional[str] = Field(default=None, description="e.g. probe:attention; default: the probe layer_sweep chose on the selection sets (else the best on corpus validation)")
    llm_methods: Optional[list[str]] = Field(default=None, description="default: every non-TF-IDF baseline")
    fractions: list[float] = Field(default_factory=lambda: [0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0])
    combine: str = Field(default="average", description="average or replace the probe's score on deferred examples")


@study_asset(kinds={"matplotlib"})
def monitoring_cascade(
    context: dg.AssetExecutionContext, config: CascadeConfig, artifact_store: ArtifactStoreResource,
    probe_scores: TableRef, tfidf_baseline: TableRef, prompted_baseline: TableRef, finetuned_baseline: TableRef,
    continuation_baseline: TableRef, layer_sweep: LayerChoice,
) -> dg.Output[TableRef]:
    """Probe first, the most uncertain fraction to an LLM monitor: mean AUROC against mean
    FLOPs per example (probes reuse the monitored model's activations)."""
    import polars as pl

    from mup_core.experiments import VAL, cascade, comparison_table, method_summary
    from mup_core.figures import study as figs

    store = artifact_store.get_store()
    scores = _all_scores(store, probe_scores, tfidf_baseline, prompted_baseline, finetuned_baseline, continuation_baseline)
    metrics = comparison_table(scores, n_boot=0)  # point estimates: the choice of probe and the summary
    # the probe layer_sweep chose on the selection sets, else the best on corpus validation
    chosen = f"probe:{layer_sweep.best_probe['probe_type']}"
    probe = config.probe_method or (chosen if chosen in set(scores["method"].to_list()) else None)
    if probe is None:
        val = metrics.filter((pl.col("dataset") == VAL) & (pl.col("family") == "probe"))
        probe = val.sort("auroc", descending=True)["method"][0]
    llms = config.llm_methods or sorted(m for m in scores.filter(pl.col("family") == "baseline")["method"].unique().to_list() if m != "tfidf")
    try:
        table = cascade(scores, probe, llms, config.fractions, config.combine)
    except ValueError as exc:
        raise dg.Failure(f"monitoring_cascade: {exc}") from exc
    summary = method_summary(metrics)
    png = figs.compute_frontier(summary, table, f"{context.partition_key}: {probe} → LLM cascade")
    return publish(context, store, "monitoring_cascade", table, png, {"probe": probe})


@study_asset(kinds={"matplotlib"})
def study_summary(
    context: dg.AssetExecutionContext, artifact_store: ArtifactStoreResource, probe_comparison: TableRef, monitoring_cascade: TableRef,
) -> dg.Output[TableRef]:
    """One figure: AUROC per method, and AUROC against compute with the cascades."""
    from mup_core.experiments import method_summary
    from mup_core.figures import study as figs

    store = artifact_store.get_store()
    summary = method_summary(read_ref(store, probe_comparison))
    png = figs.summary(summary, read_ref(store, monitoring_cascade), f"{context.partition_key}: monitors compared on accuracy and compute")
    return publish(context, store, "summary", summary, png)
