"""The single Definitions object of mup (``dagster ... -m mup_dagster.definitions``).

How steps execute (subprocesses of the run, Celery workers, Kubernetes jobs) is
configuration: ``MUP_EXECUTOR`` (mup_dagster.execution). Where artifacts and the values
passed between steps live is configuration too: ``MUP_S3_BUCKET`` (mup_dagster.resources).
"""

import time

import dagster as dg

from mup_dagster import assets_datasets, assets_deception, assets_probes, study
from mup_dagster.automation import automation_sensor
from mup_dagster.execution import default_executor
from mup_dagster.orphans import orphaned_runs_sensor
from mup_dagster.resources import (
    ArtifactIOManager,
    default_artifact_store,
    default_dataset_sources,
    default_llm,
    default_tracking,
)
from mup_dagster.schedules import probe_backfill_job, probe_backfill_schedule

# the one list of assets and checks: the UI, the CLI, the demos and the tests all take theirs from here
ASSETS = [*dg.load_assets_from_modules([assets_probes, assets_datasets, assets_deception]),
          *dg.load_assets_from_package_module(study)]
CHECKS = dg.load_asset_checks_from_modules([assets_datasets])
# the unpartitioned dataset assets, materialised together before anything per model
DATASET_ASSETS = ["stakes_corpus", "corpus_splits", "imported_datasets", "eval_datasets", "dataset_texts"]

_store = default_artifact_store()

defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=CHECKS,
    executor=default_executor(),
    jobs=[probe_backfill_job],
    schedules=[probe_backfill_schedule],
    sensors=[orphaned_runs_sensor, automation_sensor()],
    resources={
        "artifact_store": _store,
        "sources": default_dataset_sources(),
        "llm": default_llm(),
        "tracking": default_tracking(),
        "io_manager": ArtifactIOManager(artifact_store=_store),
    },
)


def run_assets(instance, selection, partition_key=None, run_config=None, *, resources=None, raise_on_error=True,
               echo=False):
    """Materialise ``selection`` (one partition) in this process with the definitions' assets
    and, unless given, resources: what the demos and the tests run. ``echo`` prints the time."""
    started = time.perf_counter()
    result = dg.materialize(
        [*ASSETS, *CHECKS], selection=selection, partition_key=partition_key, resources=resources or defs.resources,
        instance=instance, run_config=run_config or {}, raise_on_error=raise_on_error,
    )
    if echo:
        label = ",".join(selection) + (f" [{partition_key}]" if partition_key else "")
        print(f"  materialised {label} in {time.perf_counter() - started:.1f}s", flush=True)
    return result
