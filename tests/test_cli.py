"""The README's commands, run as a user would: `dagster asset materialize` in a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

REPO = Path(__file__).resolve().parents[1]
DAGSTER = str(Path(sys.executable).parent / "dagster")


@pytest.mark.slow
def test_dagster_asset_materialize_cli(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    env = {**os.environ, "DAGSTER_HOME": str(home), "MUP_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
           "MUP_HOME": str(tmp_path / "mup_home"), "MUP_LLM_BACKEND": "local", "MUP_LLM_MODEL": "tiny",
           # steps in the CLI's process: the engine is configuration (the multiprocess default is what
           # test_reliability's kill -9 of the CLI runs)
           "MUP_EXECUTOR": "in_process"}

    def run(*args):
        proc = subprocess.run(
            [DAGSTER, "asset", "materialize", "-m", "mup_dagster.definitions", *args],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc

    run("--select", "stakes_corpus,corpus_splits,imported_datasets,eval_datasets,dataset_texts")
    run("--select", "activations", "--partition", "tiny")
    # two probe types (a linear and a torch one) keep it quick; every type is trained in test_dagster_graph
    run("--select", "probes,probe_metrics", "--partition", "2|tiny",
        "--config-json", '{"ops": {"probes": {"config": {"probe_types": ["logistic_regression", "attention"]}}}}')

    # generate and label a small synthetic dataset with the local backend
    run("--select", "synthetic_situations,synthetic_prompts,synthetic_labelled",
        "--config-json", '{"ops": {"synthetic_situations": {"config": {"n_pairs": 2}}}}')

    # a wrong key (order, layer) is refused by the same CLI with a hint: test_reliability.py case 7

    instance = dg.DagsterInstance.from_config(str(home))
    latest = instance.get_latest_materialization_event(dg.AssetKey("probe_metrics"))
    assert latest.dagster_event.partition == "2|tiny"
    assert (tmp_path / "artifacts" / "metrics" / "tiny" / "layer_002.parquet").exists()
    (probe_set,) = (tmp_path / "artifacts" / "probes" / "tiny" / "layer_002").iterdir()  # one content-keyed set
    assert (probe_set / "attention.safetensors").exists() and (probe_set / "_COMPLETE").exists()
    labelled = instance.get_latest_materialization_event(dg.AssetKey("synthetic_labelled"))
    assert labelled.asset_materialization.metadata["rows"].value >= 2
    assert (tmp_path / "mup_home" / "llm_cache.sqlite").exists()

