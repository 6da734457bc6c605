"""The probe study's assets end to end on ``tiny``: baselines, every experiment, figures."""

import json

import dagster as dg
import polars as pl
import pytest

from dagster_helpers import DATASETS, materialize, materialize_graph
from mup_core.probe_types import ALL_PROBE_TYPES

TORCH_FAST = {t: {"max_epochs": 4.0} for t in ALL_PROBE_TYPES if t not in ("logistic_regression", "difference_of_means", "lda")}
CONFIG = {
    "probe_scores": {"seeds": [0, 1], "hyperparameters": TORCH_FAST},
    "finetuned_baseline": {"steps": 3, "seeds": [0, 1], "batch_size": 4},
    "continuation_baseline": {"max_new_tokens": 2},
    "probe_comparison": {"n_boot": 100},
    "data_efficiency": {"sizes": [8, 64], "seeds": [0, 1], "probe_types": ["logistic_regression", "difference_of_means"],
                        "finetuned_sizes": [8], "finetuned_steps": 2},
    "few_shot_adaptation": {"shots": [4, 8], "seeds": [0, 1]},
}
STUDY = ["layer_sweep", "probe_scores", "tfidf_baseline", "prompted_baseline", "finetuned_baseline", "continuation_baseline",
         "probe_comparison", "calibration_curves", "roc_curves", "auroc_by_length", "monitoring_cascade", "study_summary",
         "generalisation_heatmap", "data_efficiency", "few_shot_adaptation"]


def eval_file(path, first_case=0):
    """A small evaluation set in the research's JSONL format (plain-string inputs)."""
    high = ["my father collapsed and is not breathing, what do I do", "the gas smell in the flat is getting stronger",
            "I wired my savings to someone who now stopped answering", "the dam gauge is above the red mark and rising",
            "my insulin pump shows an error and my sugar is 30", "someone is trying the door handle of my house at 3am"]
    low = ["which font looks nicer for a birthday card", "how long should I boil an egg for a runny yolk",
           "suggest a name for my goldfish", "what is a fun board game for four people",
           "how do I get a coffee stain out of a t-shirt", "recommend an upbeat song for a road trip"]
    rows = []
    for i in range(first_case, first_case + 24):
        text, label = (high[i % 6], "high-stakes") if i % 2 == 0 else (low[i % 6], "low-stakes")
        rows.append({"inputs": f"{text} (case {i})", "ids": f"ev{i}", "labels": label})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.mark.slow
def test_every_study_asset_on_tiny(tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    root = tmp_path / "artifacts"
    materialize_graph(instance, root, eval_files=[eval_file(tmp_path / "urgent_eval.jsonl")])
    run_config = {"ops": {name: {"config": cfg} for name, cfg in CONFIG.items()}}
    result = materialize(instance, root, STUDY, "tiny", run_config=run_config)

    def meta(name):
        return result.asset_materializations_for_node(name)[0].metadata

    for name in STUDY[:1] + STUDY[6:]:  # every experiment has a figure, in the store and in the UI
        out = result.output_for_node(name)
        out = out.table if name == "layer_sweep" else out  # a LayerChoice: its table and figure, and the choice
        assert (root / out.figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert meta(name)["figure"].value.startswith(f"![{out.figure.split('/')[-1][:-4]}](data:image/png;base64,"), name

    top = meta("probe_scores")["top_tokens"].value  # per-token scores of every probe type, for inspection
    assert set(ALL_PROBE_TYPES) <= set(top) and all(len(top[t]) == 5 for t in ALL_PROBE_TYPES)
    assert top["dataset"] == "corpus-test"
    sweep = result.output_for_node("layer_sweep")
    assert sweep.selected_layer in (1, 2, 3) and meta("probe_scores")["layer"].value == sweep.selected_layer

    comparison = pl.read_parquet(root / result.output_for_node("probe_comparison").key)
    methods = set(comparison["method"].to_list())
    assert methods == {f"probe:{t}" for t in ALL_PROBE_TYPES} | {"tfidf", "prompted", "finetuned", "continuation"}
    assert set(comparison["dataset"].to_list()) == {"corpus-test", "urgent_eval", "corpus-val"}
    row = comparison.filter((pl.col("method") == "probe:attention") & (pl.col("dataset") == "corpus-test")).row(0, named=True)
    assert row["seeds"] == 2 and row["auroc_lo"] <= row["auroc"] <= row["auroc_hi"]
    assert comparison.filter(pl.col("method") == "finetuned")["seeds"].to_list() == [2, 2, 2]
    # the probe types are different measurements, not one number repeated
    probes = comparison.filter(pl.col("method").str.starts_with("probe:") & (pl.col("dataset") == "corpus-test"))
    assert probes["auroc"].n_unique() > 3

    cascade = pl.read_parquet(root / result.output_for_node("monitoring_cascade").key)
    assert set(cascade["llm"].to_list()) == {"prompted", "finetuned", "continuation"}
    for _, rows in cascade.group_by("llm"):
        flops = rows.sort("fraction")["mean_flops"].to_list()
        assert flops == sorted(flops) and flops[-1] > 100 * flops[0]  # the LLM costs far more than the probe

    heat = pl.read_parquet(root / result.output_for_node("generalisation_heatmap").key)
    assert meta("generalisation_heatmap")["by"].value == "dataset" and heat.height == 4  # corpus x urgent_eval
    eff = pl.read_parquet(root / result.output_for_node("data_efficiency").key)
    assert set(eff["train_examples"].to_list()) == {8, 64}
    assert eff.filter(pl.col("method") == "finetuned")["train_examples"].unique().to_list() == [8]
    few = pl.read_parquet(root / result.output_for_node("few_shot_adaptation").key)
    assert set(few["mode"].to_list()) == {"none", "dev_only", "combined", "upweighted"}
    assert meta("prompted_baseline")["template"].value in ("direct", "monitor", "consequences", "rubric")

    # by domain: the embedded corpus's ten domains against each other
    by_domain = materialize(instance, root, ["generalisation_heatmap"], "tiny",
                            run_config={"ops": {"generalisation_heatmap": {"config": {"by": "domain"}}}})
    table = pl.read_parquet(root / by_domain.output_for_node("generalisation_heatmap").key)
    assert table["train"].n_unique() >= 5 and table.height == table["train"].n_unique() ** 2


def test_study_fails_clearly_on_a_layer_without_activations(tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    root = tmp_path / "artifacts"
    materialize(instance, root, DATASETS)
    materialize(instance, root, ["activations"], "tiny")
    materialize(instance, root, ["probes", "probe_metrics"], "2|tiny",  # one probe type is enough to sweep
                run_config={"ops": {"probes": {"config": {"probe_types": ["lda"]}}}})
    result = materialize(instance, root, ["layer_sweep", "probe_scores"], "tiny", raise_on_error=False,
                         run_config={"ops": {"probe_scores": {"config": {"layer": 0}}}})
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    assert "layer 0 of tiny has no activations (extracted: [1, 2, 3])" in failure.event_specific_data.error.message


def test_selection_sets_choose_and_are_never_reported(tmp_path):
    """Sets given as selection_files choose the layer, the probe and the alarm threshold;
    the study reports only on evaluation sets; with two selection sets the layer sweep
    also reports leave-one-set-out."""
    instance = dg.DagsterInstance.ephemeral()
    root = tmp_path / "artifacts"
    selection = [eval_file(tmp_path / "sel_a.jsonl", 100), eval_file(tmp_path / "sel_b.jsonl", 200)]
    materialize_graph(instance, root, eval_files=[eval_file(tmp_path / "urgent_eval.jsonl")], selection_files=selection,
                      layers=(1, 2))
    fast = {"probe_scores": {"seeds": [0], "probe_types": ["logistic_regression", "lda"]}}
    result = materialize(instance, root, ["layer_sweep", "probe_scores", "monitor_bundle"], "tiny",
                         run_config={"ops": {n: {"config": c} for n, c in fast.items()}})

    metrics = pl.concat([pl.read_parquet(root / f"metrics/tiny/layer_{k:03d}.parquet") for k in (1, 2)], how="diagonal_relaxed")
    roles = dict(metrics.select("dataset", "role").unique().iter_rows())
    assert roles == {"sel_a": "selection", "sel_b": "selection", "urgent_eval": "evaluation", "corpus-test": "evaluation",
                     "corpus-val": "validation"}
    # the 1 % FPR threshold comes from the selection sets' low-stakes rows (pooled): none of them alarms there
    assert set(metrics["calibrated_on"].to_list()) == {"sel_a,sel_b"}
    assert metrics.filter(pl.col("role") == "selection")["alarm_fpr"].max() == 0.0

    sweep_meta = result.asset_materializations_for_node("layer_sweep")[0].metadata
    assert sweep_meta["chosen_on"].value == ["sel_a", "sel_b"] and sweep_meta["out_of_distribution_selection"].value is True
    on_sel = metrics.filter(pl.col("role") == "selection")
    by_layer = on_sel.group_by("layer").agg(pl.col("auroc").mean()).sort(["auroc", "layer"], descending=[True, False])
    assert result.output_for_node("layer_sweep").selected_layer == by_layer["layer"][0]
    best = on_sel.group_by("probe_type", "layer").agg(pl.col("auroc").mean(), pl.col("tpr_at_1pct_fpr").mean()).sort(
        ["auroc", "tpr_at_1pct_fpr", "layer", "probe_type"], descending=[True, True, False, False]).row(0, named=True)
    assert result.output_for_node("layer_sweep").best_probe["probe_type"] == best["probe_type"]
    assert "| sel_a |" in sweep_meta["leave_one_set_out"].value and "| sel_b |" in sweep_meta["leave_one_set_out"].value

    scores = pl.read_parquet(root / result.output_for_node("probe_scores").key)
    assert set(scores["dataset"].to_list()) == {"corpus-test", "urgent_eval", "corpus-val"}  # never the selection sets
    bundle_meta = result.asset_materializations_for_node("monitor_bundle")[0].metadata
    assert bundle_meta["selection"].value["sets"] == ["sel_a", "sel_b"] and bundle_meta["selection"].value["out_of_distribution"]
