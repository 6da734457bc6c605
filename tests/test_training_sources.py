"""Training sources combined with per-source weights (stakes_corpus config)."""

import json

import dagster as dg
import numpy as np
import pytest

from dagster_helpers import DATASETS, materialize
from mup_core.corpus import load_embedded_corpus
from mup_core.data.dataset import DatasetError


def research_file(path, n=40, prefix="ext"):
    rows = [{"inputs": f"{'the bridge cable just snapped, people are on it' if i % 2 == 0 else 'pick a colour for the kitchen wall'} "
                       f"(variant {i})", "ids": f"{prefix}{i}", "labels": "high-stakes" if i % 2 == 0 else "low-stakes"}
            for i in range(n)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _sources(*pairs):
    return {"ops": {"stakes_corpus": {"config": {"sources": [{"path": str(p), "weight": w} for p, w in pairs]}}}}


def test_weights_are_supervision():
    ds = load_embedded_corpus()
    heavy = ds.weighted(3.0, "embedded")
    assert heavy.inputs_hash == ds.inputs_hash  # no new forward passes for a new weight
    assert heavy.labels_hash != ds.labels_hash != ds.weighted(1.0, "embedded").labels_hash
    assert np.all(heavy.sample_weights() == 3.0) and ds.sample_weights() is None
    with pytest.raises(DatasetError, match="embedded: training weight must be a positive number, got 0"):
        ds.weighted(0, "embedded")


def test_sources_combine_with_weights_that_reach_the_probes(tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    root = tmp_path / "artifacts"
    extra = research_file(tmp_path / "bridges.jsonl")
    digests = {}
    for weight in (1.0, 4.0):
        result = materialize(instance, root, DATASETS, run_config=_sources(("embedded", 1.0), (extra, weight)))
        meta = result.asset_materializations_for_node("stakes_corpus")[0].metadata
        assert meta["by_source"].value == {"embedded": len(load_embedded_corpus()), str(extra): 40}
        materialize(instance, root, ["activations"], "tiny")
        probes = materialize(instance, root, ["probes"], "1|tiny",
                             run_config={"ops": {"probes": {"config": {"probe_types": ["logistic_regression"]}}}})
        digests[weight] = probes.output_for_node("probes")["logistic_regression"].key
    assert digests[1.0] != digests[4.0]  # the weight changed what was trained, nothing else did


def test_bad_sources_fail_naming_the_file(tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    root = tmp_path / "artifacts"
    a, b = research_file(tmp_path / "a.jsonl"), research_file(tmp_path / "b.jsonl")
    for config, message in [
        (_sources(("embedded", 1.0), (a, 1.0), (b, 1.0)), f"{b}: id 'ext0' is also in {a}"),
        (_sources(("embedded", 1.0), (a, -2.0)), f"{a}: training weight must be a positive number, got -2.0"),
    ]:
        result = materialize(instance, root, ["stakes_corpus"], run_config=config, raise_on_error=False)
        assert not result.success
        failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
        assert message in failure.event_specific_data.error.message
