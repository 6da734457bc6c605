"""Helpers to materialise the graph on ``tiny`` in tests, and to play the automation daemon."""

from mup_dagster.definitions import ASSETS, CHECKS, DATASET_ASSETS, run_assets
from mup_dagster.resources import ArtifactStoreResource, DatasetSourcesResource, LLMResource, ArtifactIOManager, TrackingResource

DATASETS = DATASET_ASSETS
ASSETS = [*ASSETS, *CHECKS]


def resources(root, corpus_path=None, eval_files=(), llm_cache=None, tracking_mode="disabled", tracking_dir=None, llm=None):
    store = ArtifactStoreResource(root=str(root))
    return {
        "tracking": TrackingResource(mode=tracking_mode, directory=str(tracking_dir) if tracking_dir else None),
        "artifact_store": store,
        "sources": DatasetSourcesResource(corpus_path=str(corpus_path) if corpus_path else None, eval_files=[str(f) for f in eval_files]),
        "llm": llm or LLMResource(backend="local", model="tiny", cache_path=str(llm_cache) if llm_cache else None),
        "io_manager": ArtifactIOManager(artifact_store=store),
    }


def materialize(instance, root, selection, partition_key=None, run_config=None, raise_on_error=True, **resource_kw):
    return run_assets(instance, selection, partition_key, run_config, resources=resources(root, **resource_kw),
                      raise_on_error=raise_on_error)


def materialize_graph(instance, root, model="tiny", layers=(1, 2, 3), eval_files=(), selection_files=(), **resource_kw):
    config = {"ops": {"eval_datasets": {"config": {"files": [str(f) for f in eval_files],
                                                   "selection_files": [str(f) for f in selection_files]}}}}
    results = {"datasets": materialize(instance, root, DATASETS, run_config=config, **resource_kw)}
    results["activations"] = materialize(instance, root, ["activations"], model, **resource_kw)
    for layer in layers:
        results[layer] = materialize(instance, root, ["probes", "probe_metrics"], f"{layer}|{model}", **resource_kw)
    results["report"] = materialize(instance, root, ["probe_report"], model, **resource_kw)
    return results
