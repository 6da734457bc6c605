"""Declarative automation: re-run an asset when an upstream's *data version* changes.

Data versions are content hashes: dataset assets version inputs and labels together,
``dataset_texts`` versions the input text alone, ``activations`` versions its cache
keys. So relabelling a dataset changes ``corpus_splits`` (-> probes, metrics, report
re-run) but not ``dataset_texts`` (-> activations stay); editing text changes both.
A re-materialisation with an unchanged version triggers nothing.

Only partitions that have been materialised before are re-run (``~missing()``): a
label change refreshes what exists; it does not start every model x layer.
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

# For the per-model report over layer x model partitions: most layer keys of a model never
# exist (the layer dimension is the union over models), so missing ones must not block it,
# and any new metrics partition (which only appears when something changed) refreshes it.
on_any_upstream_partition_update = (
    AC.any_deps_updated().since_last_handled() & ~AC.missing() & ~AC.any_deps_in_progress() & ~AC.in_progress()
).with_label("an upstream partition was updated")
