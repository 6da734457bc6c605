"""Experiments that train probes: generalisation across sources, data efficiency, few-shot adaptation."""

from typing import Optional

import dagster as dg
from pydantic import Field

from mup_dagster.config import Seeded
from mup_core.refs import LayerChoice, TableRef
from mup_dagster.resources import ArtifactStoreResource
from mup_dagster.study.common import chosen_layer, labelled_sets, publish, study_asset

# -- experiments that train probes -------------------------------------------------------------
class GeneralisationConfig(Seeded):
    layer: Optional[int] = None
    probe_type: str = "logistic_regression"
    by: str = Field(default="auto", description="dataset: corpus and each evaluation set (split in halves); domain: corpus "
                    "domains; auto: dataset when there are evaluation sets besides corpus-test, else domain")


@study_asset(kinds={"matplotlib"})
def generalisation_heatmap(
    context: dg.AssetExecutionContext, config: GeneralisationConfig, artifact_store: ArtifactStoreResource,
    corpus_splits: dict, eval_datasets: dict, activations: dict, layer_sweep: LayerChoice,
) -> dg.Output[TableRef]:
    """Train a probe on one source, evaluate on every other: the transfer matrix."""
    from mup_core.experiments import generalisation, transfer_sources
    from mup_core.figures import study as figs

    layer = chosen_layer(context, config.layer, layer_sweep, activations)
    store = artifact_store.get_store()
    sets = labelled_sets(context, store, corpus_splits, eval_datasets, activations, layer)
    try:
        by, sources = transfer_sources(sets, config.by, config.seed, warn=lambda m: context.log.warning(f"generalisation_heatmap: {m}"))
    except ValueError as exc:
        raise dg.Failure(f"generalisation_heatmap: {exc}") from None
    table = generalisation(sources, config.probe_type, seed=config.seed, progress=lambda n: context.log.info(f"training on {n}"))
    png = figs.heatmap(table, f"{context.partition_key} layer {layer}: {config.probe_type} trained on rows, tested on columns")
    return publish(context, store, "generalisation", table, png, {"layer": dg.MetadataValue.int(layer), "by": by})


class DataEfficiencyConfig(dg.Config):
    layer: Optional[int] = None
    sizes: list[int] = Field(default_factory=lambda: [8, 16, 32, 64, 128, 256, 100_000], description="training set sizes (capped at the train split)")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    probe_types: list[str] = Field(default_factory=lambda: ["logistic_regression", "difference_of_means", "lda", "attention"])
    finetuned_sizes: list[int] = Field(default_factory=lambda: [16, 64, 256], description="sizes at which the finetuned baseline is trained too (empty: none)")
    finetuned_steps: int = 20
    finetuned_seeds: list[int] = Field(default_factory=lambda: [0])


@study_asset(kinds={"matplotlib"})
def data_efficiency(
    context: dg.AssetExecutionContext, config: DataEfficiencyConfig, artifact_store: ArtifactStoreResource,
    corpus_splits: dict, eval_datasets: dict, activations: dict, layer_sweep: LayerChoice,
) -> dg.Output[TableRef]:
    """AUROC on the evaluation sets against the number of training examples, for probes and
    the finetuned baseline (mean and std over seeds)."""
    import polars as pl

    from mup_core.baselines import FinetuneConfig, FinetunedClassifier
    from mup_core.experiments import VAL, data_efficiency as efficiency
    from mup_core.figures import study as figs

    layer = chosen_layer(context, config.layer, layer_sweep, activations)
    store = artifact_store.get_store()
    sets = labelled_sets(context, store, corpus_splits, eval_datasets, activations, layer)
    train_ds, train = sets["train"]
    tests = {n: p for n, (_, p) in sets.items() if n not in ("train", VAL)}
    test_inputs = {n: sets[n][0].inputs for n in tests}
    capped_ft = {min(s, len(train.labels)) for s in config.finetuned_sizes}

    def finetuned(idx, seed):
        if len(idx) not in capped_ft or seed not in config.finetuned_seeds:
            return {}
        clf = FinetunedClassifier(context.partition_key, FinetuneConfig(steps=config.finetuned_steps, seed=seed))
        clf.fit([train_ds.inputs[i] for i in idx], train.labels[idx])
        return {n: clf.predict_proba(x) for n, x in test_inputs.items()}

    table = efficiency(train, sets[VAL][1], tests, config.sizes, config.seeds, config.probe_types,
                       extra_methods={"finetuned": finetuned} if config.finetuned_sizes else None,
                       progress=lambda m: context.log.info(f"data_efficiency: {m}"))
    table = table.filter(pl.col("auroc").is_not_nan()) if table.height else table
    png = figs.mean_std_lines(table, "train_examples", "method", f"{context.partition_key} layer {layer}: data efficiency",
                              "training examples", log_x=True)
    return publish(context, store, "data_efficiency", table.sort("method", "train_examples", "seed"), png,
                    {"layer": dg.MetadataValue.int(layer), "max_examples": dg.MetadataValue.int(int(table["train_examples"].max()))})


class FewShotConfig(dg.Config):
    layer: Optional[int] = None
    probe_type: str = "logistic_regression"
    shots: list[int] = Field(default_factory=lambda: [4, 8, 16, 32])
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    modes: list[str] = Field(default_factory=lambda: ["dev_only", "combined", "upweighted"])
    dev_fraction: float = Field(default=0.5, description="share of each evaluation set used as its dev pool (pairs kept together)")
    upweight: Optional[float] = Field(default=None, description="weight of dev examples in 'upweighted'; default: train size / shots")


@study_asset(kinds={"matplotlib"})
def few_shot_adaptation(
    context: dg.AssetExecutionContext, config: FewShotConfig, artifact_store: ArtifactStoreResource,
    corpus_splits: dict, eval_datasets: dict, activations: dict, layer_sweep: LayerChoice,
) -> dg.Output[TableRef]:
    """Adapting a probe to each evaluation set with k labelled dev examples, in the research's
    three modes (dev only, dev added to training, dev upweighted)."""
    from mup_core.experiments import VAL, few_shot, split_part
    from mup_core.figures import study as figs

    layer = chosen_layer(context, config.layer, layer_sweep, activations)
    store = artifact_store.get_store()
    sets = labelled_sets(context, store, corpus_splits, eval_datasets, activations, layer)
    targets = {}
    for name, (_, part) in sets.items():
        if name in ("train", VAL):
            continue
        try:
            dev, test = split_part(part, config.dev_fraction, seed=0)
        except ValueError as exc:
            context.log.warning(f"few_shot_adaptation: skipping {name}: {exc}")
            continue
        if len(set(dev.labels)) == 2 and len(set(test.labels)) == 2:
            targets[name] = (dev, test)
    if not targets:
        raise dg.Failure("few_shot_adaptation: no evaluation set has both labels in its dev and test halves")
    try:
        table = few_shot(sets["train"][1], targets, config.shots, config.seeds, config.probe_type, config.modes, config.upweight,
                         progress=lambda m: context.log.info(f"few_shot: {m}"))
    except ValueError as exc:
        raise dg.Failure(f"few_shot_adaptation: {exc}") from exc
    base = {f"no adaptation ({n})": v for n, v in zip(table.filter(table["mode"] == "none")["dataset"], table.filter(table["mode"] == "none")["auroc"])}
    png = figs.mean_std_lines(table.filter(table["mode"] != "none"), "shots", "mode",
                              f"{context.partition_key} layer {layer}: few-shot adaptation ({config.probe_type})", "dev examples (k)",
                              log_x=True, reference=base)
    return publish(context, store, "few_shot", table, png, {"layer": dg.MetadataValue.int(layer)})
