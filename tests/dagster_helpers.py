"""Helpers to materialise the probe graph on ``tiny`` in tests."""

import dagster as dg

from mup_dagster import assets_probes
from mup_dagster.resources import ArtifactStoreResource

ASSETS = dg.load_assets_from_modules([assets_probes])


def materialize(instance, root, selection, partition_key=None, run_config=None, raise_on_error=True):
    return dg.materialize(
        ASSETS,
        selection=selection,
        partition_key=partition_key,
        resources={"artifact_store": ArtifactStoreResource(root=str(root))},
        instance=instance,
        run_config=run_config or {},
        raise_on_error=raise_on_error,
    )


def materialize_graph(instance, root, model="tiny", layers=(1, 2, 3), eval_files=()):
    config = {"ops": {"eval_datasets": {"config": {"files": [str(f) for f in eval_files]}}}}
    results = {"datasets": materialize(instance, root, ["stakes_corpus", "corpus_splits", "eval_datasets"], run_config=config)}
    results["activations"] = materialize(instance, root, ["activations"], model)
    for layer in layers:
        results[layer] = materialize(instance, root, ["probes", "probe_metrics"], f"{layer}|{model}")
    results["report"] = materialize(instance, root, ["probe_report"], model)
    return results
