"""The layer the study looks at and every probe type's scores there."""

from typing import Optional

import dagster as dg
from pydantic import Field

from mup_core.models.registry import get_spec
from mup_core.probe_types import ALL_PROBE_TYPES, LINEAR_PROBE_TYPES
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
def layer_sweep(context: dg.AssetExecutionContext, artifact_store: ArtifactStoreResource) -> dg.Output[dict]:
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
    return dg.Output({**out.value, "selected_layer": selected, "best_layer_by_probe": found["best_layer_by_probe"],
                      "best_probe": found["best_probe"], "chosen_on": found["chosen_on"]},
                     metadata=out.metadata, data_version=out.data_version)


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
    layer_sweep: dict,
) -> dg.Output[dict]:
    """Every probe type (x seeds) at the study layer, trained on the corpus train split
    (early stopping on its validation split), scored on the validation split and every
    evaluation set."""
    from mup_core.baselines.compute import probe_flops
    from mup_core.experiments import VAL, concat_scores, score_rows
    from mup_core.experiments.analysis import top_tokens
    from mup_core.probes import configured_probes, train_probe

    model = context.partition_key
    try:
        configured_probes(config.probe_types, config.hyperparameters)
    except ValueError as exc:
        raise dg.Failure(f"probe_scores: bad configuration: {exc}") from None
    layer = chosen_layer(context, config.layer, layer_sweep, activations)
    store = artifact_store.get_store()
    sets = labelled_sets(context, store, corpus_splits, eval_datasets, activations, layer)
    train_ds, train = sets["train"]
    val = sets[VAL][1]
    hidden = train.acts.hidden_size
    tables = []
    # per-token scores, for inspection: what each probe reads in the first high-stakes evaluation example
    inspect_name = next(n for n in sets if n not in ("train", VAL)) if len(sets) > 2 else VAL
    inspect_ds, inspect_part = sets[inspect_name]
    inspect_i = int(next(i for i, y in enumerate(inspect_part.labels) if y == 1)) if inspect_part.labels.any() else 0
    inspect_tokens = _token_strings(model, inspect_ds.input_at(inspect_i))
    highlights = {"dataset": inspect_name, "id": inspect_ds.ids[inspect_i]}
    for probe_type in config.probe_types:
        seeds = [0] if probe_type in LINEAR_PROBE_TYPES else config.seeds
        for seed in seeds:
            hp = dict(config.hyperparameters.get(probe_type, {}))
            if probe_type not in LINEAR_PROBE_TYPES:
                hp["seed"] = seed
            probe = train_probe(probe_type, train.pair(), val.pair(), model=model, layer=layer, sample_weight=train_ds.sample_weights(),
                                train_inputs_hash=train_ds.inputs_hash, train_labels_hash=train_ds.labels_hash, hyperparameters=hp)
            if seed == seeds[0] and len(inspect_tokens) == inspect_part.acts.lengths[inspect_i]:
                highlights[probe_type] = top_tokens(probe.token_scores(inspect_part.acts, inspect_i), inspect_tokens)
            for name, (ds, part) in sets.items():
                if name == "train":
                    continue
                tokens = part.acts.lengths
                tables.append(score_rows(f"probe:{probe_type}", "probe", name, ds.ids, part.labels, probe.predict_proba(part.acts)[:, 1],
                                         tokens, probe_flops(probe_type, hidden, tokens), seed=seed))
        context.log.info(f"probe_scores: {probe_type} done ({len(seeds)} seed(s))")
    scores = concat_scores(tables)
    chosen = layer_sweep.get("best_probe", {}).get("probe_type")  # chosen on the selection sets
    out = publish(context, store, "scores/probes", scores, extra={"layer": dg.MetadataValue.int(layer),
                                                                   "top_tokens": dg.MetadataValue.json(highlights)},
                   columns=["method", "dataset", "seed", "id", "label", "score"])
    if chosen in config.probe_types:
        out = dg.Output({**out.value, "chosen_method": f"probe:{chosen}", "chosen_on": layer_sweep.get("chosen_on")},
                        metadata=out.metadata, data_version=out.data_version)
    return out


def _token_strings(slug: str, value) -> list[str]:
    """The tokens the model reads for one input (chat template, truncation), as text."""
    from types import SimpleNamespace

    from mup_core.activations.extract import tokenize_inputs
    from mup_core.models.loading import load_tokenizer

    tok = load_tokenizer(slug)
    ids, _ = tokenize_inputs(SimpleNamespace(tokenizer=tok, spec=get_spec(slug)), [value])
    return [tok.decode([i]) for i in ids[0]]
