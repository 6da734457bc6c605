"""The layer the study looks at and every probe type's scores there."""

from typing import Optional

import dagster as dg
from pydantic import Field

from mup_core.probe_types import ALL_PROBE_TYPES
from mup_core.refs import LayerChoice, TableRef
from mup_dagster.automation import on_any_upstream_partition_update
from mup_dagster.partitions import model_partitions, of_model
from mup_dagster.resources import ArtifactStoreResource
from mup_dagster.study.common import GROUP, chosen_layer, labelled_sets, publish, study_asset

# -- layer sweep ---------------------------------------------------------------------------
@dg.asset(
    group_name=GROUP,
    partitions_def=model_partitions,
    deps=[dg.AssetDep("probe_metrics", partition_mapping=of_model)],
    kinds={"matplotlib"},
    automation_condition=on_any_upstream_partition_update,
)
def layer_sweep(context: dg.AssetExecutionContext, artifact_store: ArtifactStoreResource) -> dg.Output[LayerChoice]:
    """AUROC by layer for every probe type, and the layer the study uses: the one with the
    best mean AUROC over probe types on the *selection sets* (eval_datasets' role
    ``selection``: data from outside the training distribution), or on the corpus
    validation split when there are none. Evaluation sets never choose anything."""
    from mup_core.evaluation.selection import SelectionError
    from mup_core.evaluation.selection import layer_sweep as sweep
    from mup_core.figures import study as figs
    from mup_core.workflows import collect_metrics, metrics_markdown

    model = context.partition_key
    store = artifact_store.get_store()
    try:
        found = sweep(collect_metrics(store, model))
    except SelectionError as exc:
        raise dg.Failure(f"layer_sweep of {model}: {exc}") from None
    selected, on = found["selected_layer"], ", ".join(found["chosen_on"])
    png = figs.layer_sweep(found["table"], selected, f"{model}: AUROC by layer (chosen on {on})")
    extra = {"selected_layer": dg.MetadataValue.int(selected), "chosen_on": dg.MetadataValue.json(found["chosen_on"]),
             "out_of_distribution_selection": found["out_of_distribution"],
             "best_probe": dg.MetadataValue.json(found["best_probe"]),
             "best_layer_by_probe": dg.MetadataValue.json(found["best_layer_by_probe"])}
    if found["leave_one_out"] is not None:
        loo = found["leave_one_out"]
        extra["leave_one_set_out"] = dg.MetadataValue.md(metrics_markdown(
            loo, ("held_out", "probe_type", "layer", "selection_auroc", "auroc", "tpr_at_1pct_fpr")))
        extra["leave_one_set_out_mean_auroc"] = dg.MetadataValue.float(float(loo["auroc"].mean()))
        extra["leave_one_set_out_mean_tpr_at_1pct_fpr"] = dg.MetadataValue.float(float(loo["tpr_at_1pct_fpr"].mean()))
    out = publish(context, store, "layer_sweep", found["table"], png, extra)
    choice = LayerChoice(out.value, selected, found["best_layer_by_probe"], found["best_probe"], tuple(found["chosen_on"]))
    return dg.Output(choice, metadata=out.metadata, data_version=out.data_version)


# -- probe scores at the study layer -----------------------------------------------------------
class ProbeScoresConfig(dg.Config):
    layer: Optional[int] = Field(default=None, description="layer to study; default: layer_sweep's selection")
    probe_types: list[str] = Field(default_factory=lambda: list(ALL_PROBE_TYPES))
    hyperparameters: dict[str, dict[str, float]] = Field(default_factory=dict, description="per probe type overrides")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], description="seeds of the torch probes (linear ones are deterministic)")


@study_asset(kinds={"pytorch", "polars"})
def probe_scores(
    context: dg.AssetExecutionContext,
    config: ProbeScoresConfig,
    artifact_store: ArtifactStoreResource,
    corpus_splits: dict,
    eval_datasets: dict,
    activations: dict,
    layer_sweep: LayerChoice,
) -> dg.Output[TableRef]:
    """Every probe type (x seeds) at the study layer, trained on the corpus train split
    (early stopping on its validation split), scored on the validation split and every
    evaluation set."""
    from functools import partial

    from mup_core.activations.extract import token_strings
    from mup_core.experiments import score_probe_types
    from mup_core.probes import configured_probes

    try:
        configured_probes(config.probe_types, config.hyperparameters)
    except ValueError as exc:
        raise dg.Failure(f"probe_scores: bad configuration: {exc}") from None
    layer = chosen_layer(context, config.layer, layer_sweep, activations)
    store = artifact_store.get_store()
    sets = labelled_sets(context, store, corpus_splits, eval_datasets, activations, layer)
    scores, highlights = score_probe_types(sets, config.probe_types, config.seeds, config.hyperparameters,
                                           model=context.partition_key, layer=layer,
                                           token_strings=partial(token_strings, context.partition_key),
                                           log=lambda m: context.log.info(f"probe_scores: {m}"))
    return publish(context, store, "scores/probes", scores, extra={"layer": dg.MetadataValue.int(layer),
                                                                   "top_tokens": dg.MetadataValue.json(highlights)},
                   columns=["method", "dataset", "seed", "id", "label", "score"])

