import datetime
import json

import dagster as dg

from dagster_helpers import DATASETS, materialize
from mup_core.corpus import load_embedded_corpus
from mup_core.data import save_jsonl
from mup_dagster.schedules import missing_probe_partitions, probe_backfill_schedule


def test_overlap_check_blocks_a_leaky_split(tmp_path):
    ds = load_embedded_corpus()
    small = ds.filter(ds.df["domain"] == "finance")
    path = tmp_path / "leaky.jsonl"
    save_jsonl(small, path)
    # the same text under another pair id: it lands in another split half the time
    lines = path.read_text().splitlines()
    extra = []
    for i, line in enumerate(lines[:40]):
        rec = json.loads(line)
        rec.update(ids=f"dup-{i}", pair_id=f"dup-pair-{i}")
        extra.append(json.dumps(rec))
    path.write_text("\n".join(lines + extra) + "\n")
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(instance, tmp_path / "a", ["stakes_corpus", "corpus_splits", "imported_datasets", "eval_datasets"],
                         corpus_path=path, raise_on_error=False)
    evaluations = {e.event_specific_data.asset_check_key.name: e.event_specific_data for e in result.all_events
                   if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert evaluations["splits_do_not_overlap"].passed is False
    assert evaluations["split_ids_unique"].passed is True
    assert not result.success  # blocking: eval_datasets did not run on leaky splits
    assert instance.get_latest_materialization_event(dg.AssetKey("eval_datasets")) is None


def test_backfill_schedule_requests_missing_probe_partitions(tmp_path):
    root = tmp_path / "artifacts"
    with dg.instance_for_test() as instance:
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=datetime.datetime(2026, 11, 23, 3)) as context:
            assert isinstance(probe_backfill_schedule(context), dg.SkipReason)  # no activations yet: nothing to fill
        materialize(instance, root, DATASETS)
        materialize(instance, root, ["activations"], "tiny")
        materialize(instance, root, ["probes", "probe_metrics"], "2|tiny")
        assert missing_probe_partitions(instance) == ["1|tiny", "3|tiny"]
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=datetime.datetime(2026, 11, 23, 3)) as context:
            requests = probe_backfill_schedule(context)
        assert sorted(r.partition_key for r in requests) == ["1|tiny", "3|tiny"]


def test_definitions_include_checks_schedule_and_automation():
    from mup_dagster.definitions import defs

    graph = defs.resolve_asset_graph()
    for key in ("stakes_corpus", "corpus_splits", "dataset_texts", "activations", "probes", "probe_metrics", "probe_report"):
        assert graph.get(dg.AssetKey(key)).automation_condition is not None, key
    assert defs.resolve_schedule_def("probe_backfill_schedule").cron_schedule == "0 3 * * *"
    check_names = {k.name for k in graph.asset_check_keys}
    assert {"splits_do_not_overlap", "split_ids_unique", "split_label_balance", "labelled_quality"} <= check_names
