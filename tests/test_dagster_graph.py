import json

import dagster as dg
import polars as pl
import pytest

from dagster_helpers import DATASETS, materialize, materialize_graph
from mup_core.models.registry import model_slugs, valid_probe_partitions


def test_definitions_load_with_expected_assets_and_partitions():
    from mup_dagster.definitions import defs

    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"stakes_corpus", "corpus_splits", "eval_datasets", "activations", "probes", "probe_metrics", "probe_report"} <= keys
    acts = graph.get(dg.AssetKey("activations")).partitions_def
    assert acts.get_partition_keys() == model_slugs()
    probes = graph.get(dg.AssetKey("probes")).partitions_def
    assert set(probes.get_partition_keys()) == {f"{layer}|{model}" for layer, model in valid_probe_partitions()}


def test_whole_graph_on_tiny(tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    root = tmp_path / "artifacts"
    results = materialize_graph(instance, root)
    acts = results["activations"].output_for_node("activations")
    assert set(acts) == {"train", "val", "corpus-test"} and acts["train"].layers == (1, 2, 3)
    meta = results["activations"].asset_materializations_for_node("activations")[0].metadata
    assert meta["tokens"].value > 10_000 and meta["bytes"].value > 0
    assert meta["path"].value == str(root.resolve() / "activations" / "tiny")  # the safetensors, not a pickle
    assert meta["step_output"].value == str(root.resolve() / "dagster" / "activations" / "tiny.pkl")

    probes = results[2].output_for_node("probes")
    from mup_core.probe_types import ALL_PROBE_TYPES

    assert set(probes) == set(ALL_PROBE_TYPES)
    for summary in probes.values():
        assert (root / summary.key).exists()
    metrics_meta = results[2].asset_materializations_for_node("probe_metrics")[0].metadata
    assert "| layer | probe_type | dataset | auroc |" in metrics_meta["table"].value

    report = results["report"].output_for_node("probe_report")
    assert (root / report.figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report_meta = results["report"].asset_materializations_for_node("probe_report")[0].metadata
    assert report_meta["figure"].value.startswith("![AUROC by layer](data:image/png;base64,")
    assert report_meta["layers"].value == [1, 2, 3]
    assert " at layer " in report_meta["best"].value and "on corpus-test: AUROC 0." in report_meta["best"].value
    assert report_meta["table"].value.count("\n") == 11  # header, rule, the ten best rows

    # the probe deployed as a live monitor: chosen on corpus-val (no selection sets configured),
    # its threshold keeps the false-positive rate there at or under 1 %
    from mup_core.monitor import load_bundle
    from mup_core.storage import LocalStore

    out = materialize(instance, root, ["monitor_bundle"], "tiny").output_for_node("monitor_bundle")
    bundle, probe = load_bundle(LocalStore(root), out.prefix)
    assert (bundle.model, bundle.layer, bundle.probe_type) == ("tiny", out.layer, out.probe_type)
    assert probe.info.layer == bundle.layer and bundle.selection_sets == ["corpus-val"] and not bundle.out_of_distribution
    assert bundle.realised_fpr <= 0.01 and bundle.uncertain_band[1] == bundle.threshold
    # the same bundle watching the model reply to 2 + 2 selection conversations
    replied = materialize(instance, root, ["monitor_bundle"], "tiny", run_config={
        "ops": {"monitor_bundle": {"config": {"reply_check": 2, "reply_tokens": 3}}}})
    with_replies = replied.asset_materializations_for_node("monitor_bundle")[0].metadata["with_replies"].value
    assert (with_replies["n_low"], with_replies["n_high"], with_replies["max_tokens"]) == (2, 2, 3)
    assert all(0.0 <= with_replies[f"{k}_{m}"] <= 1.0 for k in ("fpr", "tpr") for m in ("before_reply", "after_reply", "any_time"))
    metrics = pl.read_parquet(root / results[2].output_for_node("probe_metrics").key)
    assert {"probe_key", "alarm_threshold", "stream_fpr", "stream_tpr", "median_tokens_to_alarm"} <= set(metrics.columns)
    val = metrics.filter(pl.col("dataset") == "corpus-val")
    assert (val["alarm_fpr"] <= 0.01).all()  # calibrated there
    # selected on an evaluation set instead: recorded as out of distribution
    ood = materialize(instance, root, ["monitor_bundle"], "tiny",
                      run_config={"ops": {"monitor_bundle": {"config": {"selection_datasets": ["corpus-test"]}}}})
    bundle, _ = load_bundle(LocalStore(root), ood.output_for_node("monitor_bundle").prefix)
    assert bundle.selection_sets == ["corpus-test"] and bundle.out_of_distribution
    # chosen among the named probe types only (the layer still chosen); an untrained type is refused
    lda = materialize(instance, root, ["monitor_bundle"], "tiny",
                      run_config={"ops": {"monitor_bundle": {"config": {"probe_types": ["lda"]}}}}).output_for_node("monitor_bundle")
    assert lda.probe_type == "lda" and load_bundle(LocalStore(root), lda.prefix)[0].layer == lda.layer
    bad = materialize(instance, root, ["monitor_bundle"], "tiny", raise_on_error=False,
                      run_config={"ops": {"monitor_bundle": {"config": {"probe_types": ["no_such_probe"]}}}})
    error = next(e for e in bad.all_events if e.event_type_value == "STEP_FAILURE").step_failure_data.error.to_string()
    assert "probe types ['no_such_probe'] have no stored metrics" in error

    # materialisations are recorded per partition in the instance
    mats = instance.fetch_materializations(dg.AssetKey("probes"), limit=10).records
    assert {m.partition_key for m in mats} == {"1|tiny", "2|tiny", "3|tiny"}

    # a second activations run reuses the stored files (same model, text and layers)
    again = materialize(instance, root, ["activations"], "tiny")
    assert again.asset_materializations_for_node("activations")[0].metadata["reused"].value is True
    assert again.asset_materializations_for_node("activations")[0].metadata["throughput"].value.startswith("nothing computed")
    first = instance.fetch_materializations(dg.AssetKey("activations"), limit=2).records[-1].asset_materialization
    share = [d["share_of_floor"] for d in first.metadata["datasets"].value.values()]
    assert all(0 < s for s in share) and "of this machine's floor" in first.metadata["throughput"].value


def test_probe_partitions_are_the_layers_each_model_has():
    from mup_core.models.registry import get_spec, model_slugs
    from mup_dagster.definitions import defs

    graph = defs.resolve_asset_graph()
    keys = graph.get(dg.AssetKey("probes")).partitions_def.get_partition_keys()
    expected = [f"{layer}|{slug}" for slug in model_slugs() for layer in get_spec(slug).default_layers]
    assert sorted(keys) == sorted(expected) and len(keys) == len(set(keys))  # 176 before: every layer x model
    assert "8|tiny" not in keys
    # probes of a layer read their model's activations; a model's report reads all its layers
    probes_in = graph.get(dg.AssetKey("probes")).partition_mappings[dg.AssetKey("activations")]
    assert set(probes_in.downstream_partition_keys_by_upstream_partition_key["tiny"]) == {"1|tiny", "2|tiny", "3|tiny"}


def test_probe_partition_for_a_layer_the_model_lacks_is_refused_with_its_layers(tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    with pytest.raises(Exception, match=r"tiny's probe layers are \[1, 2, 3\]"):
        materialize(instance, tmp_path / "artifacts", ["probes"], "8|tiny")


def test_bad_eval_file_fails_without_damaging_stored_results(tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    root = tmp_path / "artifacts"
    good = materialize(instance, root, DATASETS)
    before = good.output_for_node("eval_datasets")
    stored = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"inputs": "fine", "ids": "1", "labels": "low-stakes"}) + "\n" + '{"inputs": "oops", "ids": "2", "labels": "urgent"}\n')
    config = {"ops": {"eval_datasets": {"config": {"files": [str(bad)]}}}}
    result = materialize(instance, root, ["eval_datasets"], run_config=config, raise_on_error=False)
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    assert "bad.jsonl:2: field 'labels' has unknown value 'urgent'" in str(failure.event_specific_data.error)

    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == stored
    latest = instance.get_latest_materialization_event(dg.AssetKey("eval_datasets"))
    assert latest.run_id == good.run_id  # the failed run recorded nothing
    from mup_core.storage import LocalStore
    from mup_core.workflows import load_stored_dataset

    assert len(load_stored_dataset(LocalStore(root), before["corpus-test"])) == before["corpus-test"].rows


def test_a_value_stored_by_an_older_mup_fails_with_the_command_that_remakes_it(tmp_path):
    """Before the references were typed, assets handed each other plain dicts; such a stored
    value is refused with the command that re-materialises it, not an AttributeError."""
    import pickle

    instance = dg.DagsterInstance.ephemeral()
    root = tmp_path / "artifacts"
    materialize(instance, root, DATASETS)
    stored = root / "dagster" / "corpus_splits.pkl"
    assert pickle.loads(stored.read_bytes())["value"]["train"].rows > 0  # typed refs, with the format marker
    stored.write_bytes(pickle.dumps({"train": {"key": "datasets/x.parquet", "rows": 3}}))  # the old form
    result = materialize(instance, root, ["dataset_texts"], raise_on_error=False)
    assert not result.success
    error = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE").step_failure_data.error.to_string()
    assert "written by an older mup" in error
    assert "dagster asset materialize -m mup_dagster.definitions --select corpus_splits" in error


def test_prompted_probing_reads_the_question_beside_the_conversation(tmp_path):
    """activations config ``question``: every input gets the question as a last user turn (a
    set of its own in the store, the plain one untouched); linear probes read the
    conversation's and the question's means side by side; streamed alarm rates, which need
    per-token scores, are left empty; the monitor bundle carries the question (the live
    monitor scores it at message ends: tests/test_monitor.py)."""
    import numpy as np

    from mup_core.activations.extract import question_token_counts, tokenizer_only
    from mup_core.storage import LocalStore
    from mup_core.workflows import load_activations, load_stored_dataset

    instance = dg.DagsterInstance.ephemeral()
    root = tmp_path / "artifacts"
    datasets = materialize(instance, root, DATASETS)
    plain = materialize(instance, root, ["activations"], "tiny").output_for_node("activations")
    question = "Are the stakes of the situation above high or low?"
    config = {"ops": {"activations": {"ops": {"activation_piece": {"config": {"question": question}}}}}}
    asked = materialize(instance, root, ["activations"], "tiny", run_config=config).output_for_node("activations")
    assert asked["val"].prefix != plain["val"].prefix
    store = LocalStore(root)
    val = load_stored_dataset(store, datasets.output_for_node("corpus_splits")["val"])
    counts = np.array(question_token_counts(tokenizer_only("tiny"), val.inputs, question))
    with_q, without = load_activations(store, asked["val"], 2), load_activations(store, plain["val"], 2)
    assert (with_q.question_tokens == counts).all() and (with_q.lengths == without.lengths + counts).all()
    # the model is causal: the conversation's tokens are the plain set's, the question's come after
    pooled = with_q.mean_pool()
    assert pooled.shape == (len(val), 2 * with_q.hidden_size)
    np.testing.assert_allclose(pooled[:, : with_q.hidden_size], without.mean_pool(), atol=0.05)

    probes = {"ops": {"probes": {"config": {"probe_types": ["logistic_regression", "attention"],
                                                "hyperparameters": {"attention": {"max_epochs": 2.0}}}}}}
    result = materialize(instance, root, ["probes", "probe_metrics"], "2|tiny", run_config=probes)
    metrics = pl.read_parquet(root / result.output_for_node("probe_metrics").key)
    assert set(metrics["probe_type"]) == {"logistic_regression", "attention"} and metrics["auroc"].is_not_null().all()
    assert metrics["alarm_threshold"].is_not_null().all() and metrics["stream_fpr"].is_null().all()
    # the monitor deploys the prompted probe, scored at message ends with the same question
    from mup_core.monitor import load_bundle
    from mup_core.monitor.bundle import PROMPTED_STREAMING

    bundle_ref = materialize(instance, root, ["monitor_bundle"], "tiny").output_for_node("monitor_bundle")
    bundle, probe = load_bundle(store, bundle_ref.prefix)
    assert bundle.question == question and bundle.streaming == PROMPTED_STREAMING
    # its threshold was calibrated on the asked activations' scores (the selection set: corpus validation)
    from mup_core.workflows import load_labelled

    clear, acts = load_labelled(store, val, asked["val"], bundle.layer)
    scores, y = probe.predict_proba(acts)[:, 1], clear.label_array()
    assert bundle.realised_fpr == pytest.approx(float(np.mean(scores[y == 0] >= bundle.threshold)))


@pytest.mark.integration
def test_graph_on_reference_dev_sets(tmp_path, shared_data):
    files = [shared_data / "mup" / "dev" / "mt_dev_balanced.jsonl", shared_data / "mup" / "dev" / "toolace_dev_balanced.jsonl"]
    instance = dg.DagsterInstance.ephemeral()
    results = materialize_graph(instance, tmp_path / "artifacts", layers=(2,), eval_files=files)
    evals = results["datasets"].output_for_node("eval_datasets")
    assert evals["mt_dev_balanced"].rows == 192 and evals["toolace_dev_balanced"].rows == 236
    from mup_core.storage import LocalStore
    from mup_core.workflows import collect_metrics

    table = collect_metrics(LocalStore(tmp_path / "artifacts"), "tiny")
    assert set(table["dataset"]) == {"corpus-test", "corpus-val", "mt_dev_balanced", "toolace_dev_balanced"}
    assert table["auroc"].is_between(0, 1).all()
