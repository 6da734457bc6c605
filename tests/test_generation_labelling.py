"""Synthetic generation and LLM labelling, with the local backend and over HTTP."""

import json

import dagster as dg
import polars as pl
import pytest

from dagster_helpers import materialize
from mup_core.data import Dataset
from mup_core.generation import generate_prompts, generate_situations, load_factors, load_variations, sample_combinations
from mup_core.labelling import Thresholds, label_agreement, label_dataset, rubric
from mup_core.llm.local_client import LocalChatClient
from mup_core.llm.openai_client import OpenAIChatClient
from mup_core.llm.server import ChatServer


@pytest.fixture(scope="module")
def tiny_llm():
    return LocalChatClient("tiny")


def test_thresholds_follow_the_research_convention():
    t = Thresholds()
    assert t.label(3, 7) == "low-stakes" and t.label(8, 7) == "high-stakes"
    assert t.label(8, 6) == "ambiguous" and t.label(5, 10) == "ambiguous"
    assert Thresholds(low_max=4, high_min=6, min_confidence=5).label(6, 5) == "high-stakes"
    assert "stakes" in rubric() and "confidence" in rubric()


def test_combinations_are_seeded_without_python_hash():
    factors = load_factors()
    a, b = sample_combinations(factors, 5, seed=1), sample_combinations(factors, 5, seed=1)
    assert a == b and a != sample_combinations(factors, 5, seed=2)
    assert len({c["situation_pair_id"] for c in a}) == 5


def test_research_factor_and_variation_files_load(shared_data):
    factors = load_factors(shared_data / "mup" / "inputs" / "situation_factors.json")
    assert len(factors["topic"]) == 24
    variations = load_variations(shared_data / "mup" / "inputs" / "prompt_variations.json")
    assert set(variations["language"]) == {"English", "Hindi", "German", "French"}


def test_generate_then_label_with_the_local_backend(tiny_llm):
    combos = sample_combinations(load_factors(), 2, seed=0)
    situations = generate_situations(tiny_llm, combos)
    assert situations.height == 4 and set(situations["intended_stakes"]) == {"high", "low"}
    report = generate_prompts(tiny_llm, situations, load_variations(), per_situation=1, seed=0)
    ds = report.dataset
    assert report.requested == 4 and len(ds) + report.failed == 4
    assert {"pair_id", "tone", "language", "situation", "generator", "role_of_user"} <= set(ds.df.columns)
    pairs = ds.df.group_by("pair_id").agg(pl.col("tone").n_unique().alias("tones"), pl.len())
    assert (pairs["tones"] == 1).all()  # both sides of a pair share the variation
    labelled = label_dataset(ds, tiny_llm)
    df = labelled.dataset.df
    assert df["scale_labels"].is_between(1, 10).all() and (df["label_status"] == "ok").all()
    assert set(df["labels"]) <= {"high-stakes", "low-stakes", "ambiguous"}


def test_failed_and_invalid_answers_are_recorded_not_dropped(tiny_llm):
    server = ChatServer(tiny_llm, "tiny", port=0).start()
    try:
        client = OpenAIChatClient("tiny", base_url=server.url, max_retries=1, backoff_base=0.01, json_retries=0, max_concurrency=1)
        ds = Dataset.from_records([{"ids": str(i), "inputs": f"question {i}", "labels": "low-stakes"} for i in range(4)])
        server.add_faults(["500", "500", "malformed"])  # row 0 fails twice (gives up), row 1 malformed
        report = label_dataset(ds, client)
    finally:
        server.stop()
    status = report.dataset.df["label_status"].to_list()
    assert status[0].startswith("failed: ") and "gave up after 2 attempts" in status[0]
    assert status[1].startswith("invalid: malformed JSON")
    assert status[2:] == ["ok", "ok"] and len(report.dataset) == 4
    assert report.failed == 1 and report.invalid == 1
    assert report.dataset.labels[:2] == ["ambiguous", "ambiguous"]
    assert report.dataset.df["previous_labels"].to_list() == ["low-stakes"] * 4 and report.agreement is not None


def test_agreement_and_kappa():
    assert label_agreement(["a", "b", "a", "b"], ["a", "b", "a", "b"]) == (1.0, 1.0)
    agree, kappa = label_agreement(["a", "a", "b", "b"], ["a", "b", "a", "b"])
    assert agree == 0.5 and kappa == pytest.approx(0.0)


def test_synthetic_assets_and_relabelled_import(tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    root = tmp_path / "artifacts"
    config = {"ops": {"synthetic_situations": {"config": {"n_pairs": 2}}}}
    result = materialize(instance, root, ["synthetic_situations", "synthetic_prompts", "synthetic_labelled"], run_config=config,
                         llm_cache=tmp_path / "llm.sqlite")
    meta = result.asset_materializations_for_node("synthetic_labelled")[0].metadata
    assert meta["rows"].value >= 2 and "agreement_with_intended" in meta
    checks = [e for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert checks and checks[0].event_specific_data.asset_check_key.name == "labelled_quality"

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps({"pair_id": f"p{i}", "high_stakes": f"my child is choking {i}", "low_stakes": f"my child likes crayons {i}"}) for i in range(3)) + "\n")
    sources = {"sources": [{"kind": "deployment_pairs", "uri": str(pairs), "name": "pairs", "relabel": False}]}
    imported = materialize(instance, root, ["imported_datasets"], run_config={"ops": {"imported_datasets": {"config": sources}}})
    out = imported.output_for_node("imported_datasets")
    assert out["pairs"].balanced.label_counts == {"high-stakes": 3, "low-stakes": 3}
    assert out["pairs"].raw.rows == 6
