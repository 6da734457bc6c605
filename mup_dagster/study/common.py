"""What every study asset shares: the group, partitions, and how a result is published."""

from typing import Optional

import dagster as dg

from mup_core.refs import LayerChoice, TableRef
from mup_core.storage import table_bytes
from mup_dagster.automation import on_upstream_version_change
from mup_dagster.metadata import data_version, image_markdown
from mup_dagster.partitions import model_partitions

GROUP = "probe_study"
BASELINES = ("tfidf_baseline", "prompted_baseline", "finetuned_baseline", "continuation_baseline")


def study_asset(**kw):
    return dg.asset(group_name=GROUP, partitions_def=model_partitions, automation_condition=on_upstream_version_change, **kw)


def publish(context, store, name: str, table, png: Optional[bytes] = None, extra: Optional[dict] = None,
             columns: Optional[list] = None) -> dg.Output[TableRef]:
    """Store ``table`` (and ``png``) under study/<model>/ and return the asset's output."""
    from mup_core.workflows import metrics_markdown

    model = context.partition_key
    data = table_bytes(table)
    key = f"study/{model}/{name}.parquet"
    store.put_bytes(key, data)
    meta = {"rows": dg.MetadataValue.int(table.height), "table_path": dg.MetadataValue.path(store.uri(key))}
    cols = columns or table.columns
    meta["table"] = dg.MetadataValue.md(metrics_markdown(table.head(60), [c for c in cols if c in table.columns]))
    if png is not None:
        fig_key = f"figures/{model}/{name}.png"
        store.put_bytes(fig_key, png)
        meta["figure"] = image_markdown(png, name)
        meta["figure_path"] = dg.MetadataValue.path(store.uri(fig_key))
    meta.update(extra or {})
    ref = TableRef(key, table.height, fig_key if png is not None else None)
    return dg.Output(ref, metadata=meta, data_version=data_version([data, png or b""]))


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
    from mup_core.experiments.data import study_sets

    try:
        return study_sets(store, corpus_splits, eval_datasets, activations, layer)
    except KeyError as exc:
        raise dg.Failure(f"{context.asset_key.to_user_string()}: {exc.args[0]}") from exc
