"""Backfills: a nightly schedule that fills missing probe partitions.

For every (layer, model) pair of the registry whose model already has activations and
whose probes are missing, it requests one run of ``probes`` + ``probe_metrics`` for
that ``layer|model`` partition. Pairs of models without activations are left alone
(start those with an ``activations`` run or a backfill from the UI).
"""

import dagster as dg

from mup_core.models.registry import valid_probe_partitions
from mup_dagster.partitions import layer_model_key

probe_backfill_job = dg.define_asset_job("probe_backfill", selection=["probes", "probe_metrics"])


def missing_probe_partitions(instance: dg.DagsterInstance) -> list[str]:
    have_acts = instance.get_materialized_partitions(dg.AssetKey("activations"))
    have_probes = instance.get_materialized_partitions(dg.AssetKey("probe_metrics"))
    keys = [layer_model_key(layer, model) for layer, model in valid_probe_partitions() if model in have_acts]
    return [k for k in keys if k not in have_probes]


@dg.schedule(job=probe_backfill_job, cron_schedule="0 3 * * *", default_status=dg.DefaultScheduleStatus.STOPPED)
def probe_backfill_schedule(context: dg.ScheduleEvaluationContext):
    missing = missing_probe_partitions(context.instance)
    if not missing:
        return dg.SkipReason("every probe partition of every extracted model is materialised")
    return [dg.RunRequest(run_key=f"{key}-{context.scheduled_execution_time:%Y%m%d}", partition_key=key) for key in missing]
