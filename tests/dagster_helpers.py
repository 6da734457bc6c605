"""Helpers to materialise the graph on ``tiny`` in tests, and to play the automation daemon."""

import dagster as dg

from mup_dagster import assets_datasets, assets_deception, assets_probes, assets_study
from mup_dagster.resources import ArtifactStoreResource, DatasetSourcesResource, LLMResource, StepOutputIOManager, TrackingResource

ASSETS = [
    *dg.load_assets_from_modules([assets_probes, assets_datasets, assets_deception, assets_study]),
    *dg.load_asset_checks_from_modules([assets_datasets]),
]
DATASETS = ["stakes_corpus", "corpus_splits", "imported_datasets", "eval_datasets", "dataset_texts"]


def resources(root, corpus_path=None, eval_files=(), llm_cache=None, tracking_mode="disabled", tracking_dir=None, llm=None):
    return {
        "tracking": TrackingResource(mode=tracking_mode, directory=str(tracking_dir) if tracking_dir else None),
        "artifact_store": ArtifactStoreResource(root=str(root)),
        "sources": DatasetSourcesResource(corpus_path=str(corpus_path) if corpus_path else None, eval_files=[str(f) for f in eval_files]),
        "llm": llm or LLMResource(backend="local", model="tiny", cache_path=str(llm_cache) if llm_cache else None),
        "io_manager": StepOutputIOManager(),
    }


def materialize(instance, root, selection, partition_key=None, run_config=None, raise_on_error=True, **resource_kw):
    return dg.materialize(
        ASSETS,
        selection=selection,
        partition_key=partition_key,
        resources=resources(root, **resource_kw),
        instance=instance,
        run_config=run_config or {},
        raise_on_error=raise_on_error,
    )


def materialize_graph(instance, root, model="tiny", layers=(1, 2, 3), eval_files=(), **resource_kw):
    config = {"ops": {"eval_datasets": {"config": {"files": [str(f) for f in eval_files]}}}}
    results = {"datasets": materialize(instance, root, DATASETS, run_config=config, **resource_kw)}
    results["activations"] = materialize(instance, root, ["activations"], model, **resource_kw)
    for layer in layers:
        results[layer] = materialize(instance, root, ["probes", "probe_metrics"], f"{layer}|{model}", **resource_kw)
    results["report"] = materialize(instance, root, ["probe_report"], model, **resource_kw)
    return results
