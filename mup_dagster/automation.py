"""Declarative automation: re-run an asset when an upstream's *data version* changes.

Data versions are content hashes: dataset assets version inputs and labels together,
``dataset_texts`` versions the input text alone, ``activations`` versions its cache
keys. So relabelling a dataset changes ``corpus_splits`` (-> probes, metrics, report
re-run) but not ``dataset_texts`` (-> activations stay); editing text changes both.
A re-materialisation with an unchanged version triggers nothing.

Only partitions that have been materialised before are re-run (``~missing()``): a
label change refreshes what exists; it does not start every (layer, model) pair.
"""

import dagster as dg

# The concurrency pool of every step that runs a model forward or trains one (activations,
# LLM baselines, judges, policies). The instance's `concurrency: pools: default_limit`
# (dagster.yaml: 1) caps how many run at once across all runs: one per GPU. On a cluster
# with N GPUs: `dagster instance concurrency set mup-gpu N`.
GPU_POOL = "mup-gpu"

AC = dg.AutomationCondition

_changed = (
    AC.any_deps_match(AC.data_version_changed()).since_last_handled()
    & ~AC.missing()
    & ~AC.any_deps_in_progress()
    & ~AC.in_progress()
)

on_upstream_version_change = (_changed & ~AC.any_deps_missing()).with_label("upstream data version changed")

# For the per-model report over a model's (layer, model) partitions: a user may have
# materialised only some layers, so missing ones must not block it, and any new metrics
# partition (which only appears when something changed) refreshes it.
on_any_upstream_partition_update = (
    AC.any_deps_updated().since_last_handled() & ~AC.missing() & ~AC.any_deps_in_progress() & ~AC.in_progress()
).with_label("an upstream partition was updated")


def automation_sensor() -> dg.AutomationConditionSensorDefinition:
    """Evaluates every asset's automation condition (and observes ``dataset_sources``) every
    30 s (``MUP_AUTOMATION_INTERVAL``) while the daemon runs (``make ui``). On by default, so an edited label re-runs what it
    touches without a user finding a switch; ``MUP_AUTOMATION=off`` starts it stopped (it can
    also be turned off in the UI: Automation -> mup_automation)."""
    import os

    on = os.environ.get("MUP_AUTOMATION", "on").lower() not in ("off", "0", "false", "no")
    return dg.AutomationConditionSensorDefinition(
        "mup_automation",
        target=dg.AssetSelection.all(include_sources=True),
        default_status=dg.DefaultSensorStatus.RUNNING if on else dg.DefaultSensorStatus.STOPPED,
        minimum_interval_seconds=int(os.environ.get("MUP_AUTOMATION_INTERVAL", "30")),
        description="re-runs what a changed dataset, label or upstream version touches (automation conditions)",
    )
