"""What every study asset shares: the group, partitions, and how a result is published."""

from typing import Optional

import dagster as dg

from mup_core.refs import LayerChoice, TableRef
from mup_dagster.automation import on_upstream_version_change
from mup_dagster.metadata import publish_table
from mup_dagster.partitions import model_partitions

GROUP = "probe_study"
BASELINES = ("tfidf_baseline", "prompted_baseline", "finetuned_baseline", "continuation_baseline")


def study_asset(**kw):
    return dg.asset(group_name=GROUP, partitions_def=model_partitions, automation_condition=on_upstream_version_change, **kw)


def publish(context, store, name: str, table, png: Optional[bytes] = None, extra: Optional[dict] = None,
             columns: Optional[list] = None) -> dg.Output[TableRef]:
    """Publish a study result: ``table`` at study/<model>/<name>.parquet, ``png`` at
    figures/<model>/<name>.png (see ``publish_table``)."""
    model = context.partition_key
    return publish_table(store, table, f"study/{model}/{name}.parquet", png=png, figure_key=f"figures/{model}/{name}.png",
                         figure_alt=name, columns=columns, extra=extra)


def read_ref(store, ref: TableRef):
    return store.get_table(ref.key)


def chosen_layer(context, configured: Optional[int], layer_sweep: LayerChoice, activations: dict) -> int:
    layer = configured if configured is not None else layer_sweep.selected_layer
    have = sorted(set.intersection(*(set(r.layers) for r in activations.values())))
    if layer not in have:
        raise dg.Failure(f"{context.asset_key.to_user_string()}: layer {layer} of {context.partition_key} has no "
                         f"activations (extracted: {have}); set `layer` to one of them or re-materialise `activations`")
    return layer


def labelled_sets(context, store, corpus_splits, eval_datasets, activations, layer):
    from mup_core.activations.store import MissingActivations
    from mup_core.experiments.data import study_sets

    try:
        return study_sets(store, corpus_splits, eval_datasets, activations, layer)
    except MissingActivations as exc:
        raise dg.Failure(f"{context.asset_key.to_user_string()}: {exc.args[0]}") from exc
