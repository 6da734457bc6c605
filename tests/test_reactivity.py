"""Automation: a label change re-runs probes, metrics, the report and the study but not activations;
a text change re-runs activations too; an unchanged source triggers nothing.

The test plays the automation daemon: it evaluates the declarative automation
conditions of the real definitions and executes the runs they request, until quiet.
"""

import json

import dagster as dg
import pytest

from dagster_helpers import ASSETS, materialize, materialize_graph, resources
from mup_core.corpus import load_embedded_corpus
from mup_core.data import save_jsonl


def run_daemon(instance, root, cursor, **kw):
    defs = dg.Definitions(assets=ASSETS, resources=resources(root, **kw))
    asset_keys = defs.resolve_asset_graph().get_all_asset_keys()
    requested = set()
    for _ in range(15):
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        cursor = result.cursor
        if result.total_requested == 0:
            break
        by_partition: dict = {}
        for key in asset_keys:
            for partition in result.get_requested_partitions(key):
                by_partition.setdefault(partition, []).append(key.to_user_string())
                requested.add((key.to_user_string(), partition))
        for partition, keys in by_partition.items():  # one run per partition key, as the daemon launches them
            materialize(instance, root, sorted(keys), partition, **kw)
    else:
        pytest.fail("automation did not settle")
    return cursor, requested


def observe(instance, root, **kw):
    return materialize(instance, root, ["dataset_sources"], **kw)


@pytest.fixture
def corpus_file(tmp_path):
    ds = load_embedded_corpus()
    small = ds.filter(ds.df["domain"].is_in(["medicine", "finance", "law"]))
    path = tmp_path / "corpus.jsonl"
    save_jsonl(small, path)
    return path


def _edit(path, row, **changes):
    lines = path.read_text(encoding="utf-8").splitlines()
    rec = json.loads(lines[row])
    rec.update(changes)
    lines[row] = json.dumps(rec, ensure_ascii=False)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


STUDY = ["layer_sweep", "probe_scores", "tfidf_baseline", "generalisation_heatmap"]


def _assets(requested):
    return {asset for asset, _ in requested} - {"dataset_sources"}


@pytest.mark.slow
def test_labels_and_inputs_changes_rerun_exactly_what_depends_on_them(tmp_path, corpus_file):
    instance = dg.DagsterInstance.ephemeral()
    root = tmp_path / "artifacts"
    kw = {"corpus_path": corpus_file}
    materialize_graph(instance, root, layers=(1, 2), **kw)
    materialize(instance, root, ["monitor_bundle"], "tiny", **kw)
    # the study's experiments sit downstream of probes and baselines: a relabel re-runs them too
    materialize(instance, root, STUDY, "tiny", run_config={"ops": {"probe_scores": {"config": {"seeds": [0]}}}}, **kw)
    observe(instance, root, **kw)
    cursor, requested = run_daemon(instance, root, None, **kw)
    assert _assets(requested) == set()  # nothing changed since the graph was built

    # 1. relabel one row: probes, metrics and report re-run for every materialised partition; activations do not
    first = json.loads(corpus_file.read_text(encoding="utf-8").splitlines()[0])
    flipped = "low-stakes" if first["labels"] == "high-stakes" else "high-stakes"
    _edit(corpus_file, 0, labels=flipped)
    observe(instance, root, **kw)
    cursor, requested = run_daemon(instance, root, cursor, **kw)
    assets = _assets(requested)
    assert {"stakes_corpus", "corpus_splits", "probes", "probe_metrics", "probe_report"} <= assets
    assert set(STUDY) <= assets and ("probe_scores", "tiny") in requested  # with the daemon runs' configuration
    assert "activations" not in assets
    assert {("probes", "1|tiny"), ("probes", "2|tiny"), ("probe_report", "tiny"), ("monitor_bundle", "tiny")} <= requested
    assert not any(a == "probes" and p not in ("1|tiny", "2|tiny") for a, p in requested)  # only what existed
    probes_event = instance.get_latest_materialization_event(dg.AssetKey("probes"))
    assert probes_event.asset_materialization.metadata["train_labels_hash"].value  # retrained on the new labels

    # 2. an unchanged source (observed again) triggers nothing
    observe(instance, root, **kw)
    cursor, requested = run_daemon(instance, root, cursor, **kw)
    assert _assets(requested) == set()

    # 3. edit the text of a held-out test row: activations re-run too, then everything downstream
    #    (a test row, so that the metrics table surely changes and the report re-runs)
    from mup_core.data import load_dataset, split_dataset

    test_id = split_dataset(load_dataset(corpus_file))["test"].ids[0]
    row = next(i for i, line in enumerate(corpus_file.read_text(encoding="utf-8").splitlines()) if json.loads(line)["ids"] == test_id)
    _edit(corpus_file, row, inputs="My grandfather collapsed in the garden and is not breathing. What do I do?")
    observe(instance, root, **kw)
    cursor, requested = run_daemon(instance, root, cursor, **kw)
    assets = _assets(requested)
    assert {"stakes_corpus", "corpus_splits", "dataset_texts", "activations", "probes", "probe_metrics", "probe_report"} <= assets
    assert ("activations", "tiny") in requested and not any(a == "activations" and p != "tiny" for a, p in requested)


@pytest.mark.slow
def test_the_daemon_started_as_make_ui_does_reruns_probes_after_a_relabel(tmp_path, corpus_file):
    """No evaluator played here: `dagster dev` (what `make ui` runs) with the project's
    dagster.yaml, its automation sensor on by default, sees an edited label and re-runs the
    probes by itself."""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO, _free_port, stop_process
    from dagster_helpers import DATASETS

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "MUP_HOME": str(tmp_path / "mup"), "MUP_CORPUS_PATH": str(corpus_file),
           "MUP_SOURCES_CRON": "* * * * *", "MUP_AUTOMATION_INTERVAL": "5", "MUP_LLM_MODEL": "tiny",
           # the launched runs' steps in their run process (no subprocess start per step): the engine is
           # configuration, what is tested here is that the daemon sees the relabel and re-runs the probes
           "MUP_EXECUTOR": "in_process"}
    root = tmp_path / "mup" / "artifacts"
    instance = dg.DagsterInstance.from_config(str(home))
    kw = {"corpus_path": corpus_file}
    materialize(instance, root, DATASETS, **kw)
    materialize(instance, root, ["activations"], "tiny", **kw)
    materialize(instance, root, ["probes"], "1|tiny", **kw)
    observe(instance, root, **kw)
    def latest_probes():
        return instance.fetch_materializations(dg.AssetKey("probes"), limit=1).records[0]

    before = latest_probes().storage_id

    # exactly what `make ui` runs, from a parent that ignores SIGTERM (the child must not inherit that)
    proc = subprocess.Popen([sys.executable, "-m", "mup_dagster.ui", "-h", "127.0.0.1", "-p", str(_free_port()), "-w", "workspace.yaml"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN))
    try:
        first = json.loads(corpus_file.read_text(encoding="utf-8").splitlines()[0])
        _edit(corpus_file, 0, labels="low-stakes" if first["labels"] == "high-stakes" else "high-stakes")
        deadline = time.time() + 300
        record = latest_probes()
        while time.time() < deadline and record.storage_id == before:
            time.sleep(3)
            record = latest_probes()
        assert record.storage_id != before, "the daemon did not re-run the probes within 5 minutes of the relabel"
        assert record.partition_key == "1|tiny"
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": "mup_automation"}))
        assert runs, "the re-run was not launched by automation"
        # the README's backfill command, as written there, for another partition: the daemon runs it
        import re

        readme = (REPO / "README.md").read_text()
        command = re.search(r"^dagster job backfill (.*?) \\\n\s*--partitions", readme, re.M).group(1).split()
        launched = subprocess.run([sys.executable, "-m", "dagster", "job", "backfill", *command, "--partitions", "2|tiny"],
                                  cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert launched.returncode == 0, launched.stdout[-2000:] + launched.stderr[-2000:]
        deadline = time.time() + 240
        while time.time() < deadline:
            backfilled = [r for r in instance.get_runs() if "dagster/backfill" in r.tags]
            if backfilled and all(r.is_finished for r in backfilled):
                break
            time.sleep(3)
        assert [r.status for r in backfilled] == [dg.DagsterRunStatus.SUCCESS], \
            [(r.status, instance.all_logs(r.run_id)[-3:]) for r in backfilled]
        assert instance.fetch_materializations(dg.AssetKey("probes"), limit=1).records[0].partition_key == "2|tiny"
        # SIGTERM stops the UI, the daemon, the code server and their runs, and leaves nothing of its session
        dev = [p for p in _processes() if _stat(p)[1] == proc.pid]  # dagster dev: the wrapper's child, a session leader
        session = [p for p in _processes() if dev and _stat(p)[2] == dev[0]]
        assert len(session) >= 3, f"dagster dev's session (webserver, daemon, code server) not found: {session}"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        left = [p for p in session if _alive(p)]
        assert not left, f"processes of `make ui` left after SIGTERM: {left}"
    finally:
        stop_process(proc, timeout=30)



def _processes() -> list[int]:
    import os

    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _stat(pid: int) -> tuple[str, int, int]:
    """(state, parent pid, session id) of a process; ("", -1, -1) once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[1]), int(fields[3])
    except OSError:
        return "", -1, -1


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent counts as stopped)."""
    return _stat(pid)[0] not in ("", "Z")
