"""The single Definitions object of mup (``dagster ... -m mup_dagster.definitions``)."""

import dagster as dg

from mup_dagster import assets_datasets, assets_deception, assets_probes, assets_study
from mup_dagster.resources import default_artifact_store, default_dataset_sources, default_llm, default_tracking
from mup_dagster.schedules import probe_backfill_job, probe_backfill_schedule

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([assets_probes, assets_datasets, assets_deception, assets_study]),
    asset_checks=dg.load_asset_checks_from_modules([assets_datasets]),
    jobs=[probe_backfill_job],
    schedules=[probe_backfill_schedule],
    resources={
        "artifact_store": default_artifact_store(),
        "sources": default_dataset_sources(),
        "llm": default_llm(),
        "tracking": default_tracking(),
    },
)
