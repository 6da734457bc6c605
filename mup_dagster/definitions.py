"""The single Definitions object of mup (``dagster ... -m mup_dagster.definitions``).

Steps of one run execute one at a time by default: nearly every step is a torch job
that already uses every core, and two at once on a small CPU machine only thrash.
``MUP_MAX_CONCURRENT_STEPS`` raises the limit on a host with many cores (or set
``execution.config.multiprocess.max_concurrent`` in a run's config).
"""

import os

import dagster as dg

from mup_dagster import assets_datasets, assets_deception, assets_probes, assets_study
from mup_dagster.orphans import orphaned_runs_sensor
from mup_dagster.resources import (
    StepOutputIOManager,
    default_artifact_store,
    default_dataset_sources,
    default_llm,
    default_tracking,
)
from mup_dagster.schedules import probe_backfill_job, probe_backfill_schedule

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([assets_probes, assets_datasets, assets_deception, assets_study]),
    asset_checks=dg.load_asset_checks_from_modules([assets_datasets]),
    executor=dg.multiprocess_executor.configured({"max_concurrent": int(os.environ.get("MUP_MAX_CONCURRENT_STEPS", "1"))}),
    jobs=[probe_backfill_job],
    schedules=[probe_backfill_schedule],
    sensors=[orphaned_runs_sensor],
    resources={
        "artifact_store": default_artifact_store(),
        "sources": default_dataset_sources(),
        "llm": default_llm(),
        "tracking": default_tracking(),
        "io_manager": StepOutputIOManager(),
    },
)
