"""The failures a user met when trying to break mup, reproduced through its own entry
points (``dagster asset materialize`` and ``materialize``); docs/RELIABILITY.md lists them.

Numbers in the test names refer to the cases of that document.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from conftest import REPO, stop_process, write_jsonl
from dagster_helpers import DATASETS, materialize
from mup_core.storage import LocalStore, pid_alive

KEY = "1|tiny"


# -- a Dagster home as `make` sets one up, shared by the tests of this module -------------
def make_home(base: Path) -> dict:
    home = base / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "MUP_HOME": str(base / "mup"),
        "TMPDIR": str(base),  # the runs' scratch directories, where the test can see them
        "MUP_LLM_MODEL": "tiny",
    }
    return {"home": home, "root": base / "mup" / "artifacts", "env": env, "base": base}


def instance_of(h) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(h["home"]))


def cli(h, *args, config=None, timeout=300, background=False):
    cmd = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "mup_dagster.definitions", *args]
    if config is not None:
        path = h["base"] / f"config-{time.monotonic_ns()}.yaml"
        path.write_text(yaml.safe_dump(config))
        cmd += ["-c", str(path)]
    if background:
        return subprocess.Popen(cmd, env=h["env"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, env=h["env"], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def failure_text(result) -> str:
    assert not result.success
    return "\n".join(
        ev.step_failure_data.error.to_string() for ev in result.all_events if ev.event_type_value == "STEP_FAILURE"
    )


def probes_config(types, hyperparameters):
    return {"ops": {"probes": {"config": {"probe_types": types, "hyperparameters": hyperparameters}}}}


@pytest.fixture(scope="module")
def h(tmp_path_factory):
    """Datasets and the activations of `tiny`, materialised once (in process, same instance
    and store as the CLI of these tests uses)."""
    h = make_home(tmp_path_factory.mktemp("rel"))
    instance = instance_of(h)
    materialize(instance, h["root"], DATASETS)
    materialize(instance, h["root"], ["activations"], "tiny")
    return h


def probe_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "probes").rglob("*")) if p.is_file()}


# -- 1. a failed probes run leaves the last good probes, and metrics agree with them --------
def test_1_failed_probe_runs_leave_the_last_good_probes_in_place(h):
    instance, root = instance_of(h), h["root"]
    good = probes_config(["logistic_regression", "difference_of_means"], {})
    first = materialize(instance, root, ["probes", "probe_metrics"], KEY, run_config=good)
    keys = first.output_for_node("probes")
    before = probe_files(root)
    val_auroc = first.asset_materializations_for_node("probes")[0].metadata["val_auroc"].value

    # an unknown hyper-parameter: refused before anything trains
    bad = probes_config(["logistic_regression", "difference_of_means"],
                        {"logistic_regression": {"C": 100.0}, "difference_of_means": {"bogus": 1.0}})
    result = materialize(instance, root, ["probes"], KEY, run_config=bad, raise_on_error=False)
    assert "bad configuration: difference_of_means: unknown hyper-parameters ['bogus']" in failure_text(result)
    assert probe_files(root) == before

    # a failure during training (the second type's optimiser refuses lr < 0) after the
    # first type was trained with C=100: nothing of that run is published
    mid = probes_config(["logistic_regression", "attention"], {"logistic_regression": {"C": 100.0}, "attention": {"lr": -1.0}})
    result = materialize(instance, root, ["probes"], KEY, run_config=mid, raise_on_error=False)
    assert "learning rate" in failure_text(result).lower()
    assert probe_files(root) == before

    # probe_metrics alone evaluates the probes of the last successful run
    again = materialize(instance, root, ["probe_metrics"], KEY)
    assert again.success
    import polars as pl

    table = pl.read_parquet(root / again.output_for_node("probe_metrics").key)
    val = table.filter(pl.col("dataset") == "corpus-val")
    for probe_type, summary in keys.items():
        assert (root / summary.key).exists()
        row = val.filter(pl.col("probe_type") == probe_type)
        assert row["auroc"][0] == pytest.approx(val_auroc[probe_type], abs=1e-4)


# -- 2. evaluation sets never take a split's place ----------------------------------------
@pytest.mark.parametrize("name", ["train", "val", "corpus-val"])
def test_2_eval_set_named_like_a_split_is_refused(h, tmp_path, name):
    f = write_jsonl(tmp_path / f"{name}.jsonl", [json.dumps({"ids": str(i), "inputs": f"text {i}", "labels": lab})
                                                for i, lab in enumerate(["high-stakes", "low-stakes"])])
    config = {"ops": {"eval_datasets": {"config": {"files": [str(f)]}}}}
    result = materialize(dg.DagsterInstance.ephemeral(), tmp_path / "a", DATASETS, run_config=config, raise_on_error=False)
    text = failure_text(result)
    assert f"evaluation set name {name!r} is reserved for the corpus's {name} split" in text
    assert f"{name}-eval.jsonl" in text  # what to do


def test_2_two_eval_sets_with_one_name_are_refused(tmp_path):
    files = []
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        files.append(str(write_jsonl(tmp_path / d / "mt.jsonl", [json.dumps({"ids": "1", "inputs": "x", "labels": "low-stakes"})])))
    config = {"ops": {"eval_datasets": {"config": {"files": files}}}}
    result = materialize(dg.DagsterInstance.ephemeral(), tmp_path / "s", DATASETS, run_config=config, raise_on_error=False)
    assert f"{files[1]}: two evaluation sets are named 'mt'; rename this one" in failure_text(result)


# -- 3. two runs of one partition at once ----------------------------------------------------
@pytest.mark.slow
def test_3_concurrent_runs_of_one_partition_publish_consistent_sets(h):
    from mup_core.probes import load_probe

    runs = [cli(h, "--select", "probes", "--partition", KEY, background=True,
                config=probes_config(["logistic_regression"], {"logistic_regression": {"C": c}})) for c in (0.5, 2.0)]
    outputs = []
    for proc in runs:
        out, _ = proc.communicate(timeout=300)
        outputs.append(out)
        assert proc.returncode == 0, out[-3000:]
    store = LocalStore(h["root"])
    instance = instance_of(h)
    mats = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("probes"), asset_partitions=[KEY]), limit=2
    ).records
    published = {}
    for m in mats:
        key = m.asset_materialization.metadata["keys"].value["logistic_regression"]
        prefix = key.rsplit("/", 1)[0]
        assert store.dir_complete(prefix)
        published[load_probe(store.local_path(key)).C] = prefix
    assert set(published) == {0.5, 2.0} and len(set(published.values())) == 2


# -- 4-6. bad dataset files get errors naming file, line and field -----------------------
BAD_FILES = {
    "latin1.jsonl": (b'{"ids": "1", "inputs": "caf\xe9", "labels": "high-stakes"}\n', r"latin1.jsonl:1: byte b'\xe9' at column 28 is not UTF-8"),
    "wizard.jsonl": (b'{"ids": "1", "inputs": [{"role": "wizard", "content": 5}], "labels": "high-stakes"}\n',
                     "wizard.jsonl:1: field 'inputs[0].role' is 'wizard'; expected one of system, user, assistant, tool"),
    "number.jsonl": (b'{"ids": "1", "inputs": [{"role": "user", "content": 5}], "labels": "high-stakes"}\n',
                     "number.jsonl:1: field 'inputs[0].content' must be text, got int"),
    "columns.csv": (b"id,text,labels\n1,hello,high-stakes\n",
                    "columns.csv:1: missing columns 'ids', 'inputs'; columns found: ['id', 'text', 'labels']"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_4_5_6_bad_files_are_refused_at_load_with_file_line_and_field(tmp_path, name):
    data, message = BAD_FILES[name]
    (tmp_path / name).write_bytes(data)
    config = {"ops": {"eval_datasets": {"config": {"files": [str(tmp_path / name)]}}}}
    result = materialize(dg.DagsterInstance.ephemeral(), tmp_path / "a", DATASETS, run_config=config, raise_on_error=False)
    text = failure_text(result)
    assert message in text
    assert "UnicodeDecodeError" not in text and "TypeError" not in text


def test_6_csv_with_a_byte_order_mark_loads(tmp_path):
    f = tmp_path / "excel.csv"
    f.write_bytes("\ufeffids,inputs,labels\n1,my house is on fire,high-stakes\n2,what is 2+2,low-stakes\n".encode())
    config = {"ops": {"eval_datasets": {"config": {"files": [str(f)]}}}}
    result = materialize(dg.DagsterInstance.ephemeral(), tmp_path / "a", DATASETS, run_config=config)
    assert result.output_for_node("eval_datasets")["excel"].rows == 2


# -- 7. partition keys and missing upstreams -------------------------------------------------
def test_7_wrong_partition_keys_say_what_the_keys_are(h):
    swapped = cli(h, "--select", "probes", "--partition", "tiny|1")
    assert swapped.returncode != 0
    assert "keys are LAYER|MODEL" in swapped.stderr and "did you mean `1|tiny` (layer first)?" in swapped.stderr
    no_layer = cli(h, "--select", "probes", "--partition", "5|tiny")
    assert no_layer.returncode != 0 and "e.g. `1|tiny`; tiny's probe layers are [1, 2, 3], e.g. `1|tiny`" in no_layer.stderr
    no_model = cli(h, "--select", "activations", "--partition", "tinny")
    assert no_model.returncode != 0 and "`tinny` is not a model partition; did you mean `tiny`? (models: " in no_model.stderr


def test_7_probes_before_activations_name_the_missing_asset_and_the_command(tmp_path):
    h2 = make_home(tmp_path)
    instance = instance_of(h2)
    materialize(instance, h2["root"], DATASETS)
    result = materialize(instance, h2["root"], ["probes"], KEY, raise_on_error=False)
    text = failure_text(result)
    assert "needs asset 'activations' for partition tiny, which has not been materialised" in text
    assert "dagster asset materialize -m mup_dagster.definitions --select activations --partition 'tiny'" in text
    assert "FileNotFoundError" not in text


# -- 8. over-long inputs ---------------------------------------------------------------------
def test_8_overlong_inputs_are_counted_shown_and_refusable(tmp_path):
    long = write_jsonl(tmp_path / "long.jsonl", [
        json.dumps({"ids": "essay", "inputs": "word " * 40_000, "labels": "high-stakes"}),
        json.dumps({"ids": "short", "inputs": "what is 2+2?", "labels": "low-stakes"}),
    ])
    instance = dg.DagsterInstance.ephemeral()
    root = tmp_path / "a"
    materialize(instance, root, DATASETS, run_config={"ops": {"eval_datasets": {"config": {"files": [str(long)]}}}})
    result = materialize(instance, root, ["activations"], "tiny")
    meta = result.asset_materializations_for_node("activations")[0].metadata
    assert meta["truncated_examples"].value == 1 and meta["datasets"].value["long"]["truncated"] == 1
    assert meta["overlong"].value == "truncate" and meta["max_length"].value == 512
    warnings = [r.user_message for r in instance.all_logs(result.run_id) if r.level >= 30]
    assert any("long: 1 of 2 inputs are longer than 512 tokens; kept their first 512" in w for w in warnings), warnings

    refuse = {"ops": {"activations": {"ops": {"activation_piece": {"config": {"overlong": "refuse"}}}}}}
    result = materialize(instance, root, ["activations"], "tiny", run_config=refuse, raise_on_error=False)
    assert "dataset long: 1 inputs are longer than tiny's 512 tokens (ids 'essay' (" in failure_text(result)

    keep_end = {"ops": {"activations": {"ops": {"activation_piece": {"config": {"overlong": "keep_end"}}}}}}
    result = materialize(instance, root, ["activations"], "tiny", run_config=keep_end)
    assert result.asset_materializations_for_node("activations")[0].metadata["truncated_examples"].value == 1


# -- 9-10. LLM failures ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def chat_server():
    from mup_core.llm.local_client import LocalChatClient
    from mup_core.llm.server import ChatServer

    srv = ChatServer(LocalChatClient("tiny"), "tiny", port=0).start()
    yield srv
    srv.stop()


def unlabelled_source(path: Path, n: int) -> Path:
    return write_jsonl(path, [json.dumps({"ids": f"q{i}", "inputs": f"question number {i}: is this urgent?"}) for i in range(n)])


def test_9_an_llm_that_fails_every_request_fails_the_run_and_its_retries_are_logged(h, tmp_path, chat_server):
    from mup_dagster.resources import LLMResource

    source = unlabelled_source(tmp_path / "pool.jsonl", 40)
    chat_server.add_faults(["500"] * 80)  # every request and its one retry
    llm = LLMResource(backend="openai", model="tiny", base_url=chat_server.url, max_retries=1,
                      cache_path=str(tmp_path / "cache.sqlite"))
    config = {"ops": {"imported_datasets": {"config": {"sources": [{"kind": "mt", "uri": str(source), "relabel": True}]}}}}
    instance = instance_of(make_home(tmp_path / "h"))  # the project's dagster.yaml: python logs managed
    result = materialize(instance, tmp_path / "a", ["imported_datasets"], run_config=config, raise_on_error=False, llm=llm)
    text = failure_text(result)
    assert "source " in text and "labelling: 40 of 40 LLM requests failed (100%, more than the allowed 20%)" in text
    assert "InternalServerError" in text and "Raise max_failed_share" in text
    messages = [r.user_message for r in instance.all_logs(result.run_id)]
    assert sum("retrying" in m and "InternalServerError" in m for m in messages) == 40
    assert any("the LLM endpoint needed 40 retries" in m for m in messages)
    # the labelled raw version (all rows 'failed') was stored before the run failed
    raw = [k for k in LocalStore(tmp_path / "a").list("datasets/") if "pool-raw" in k]
    assert len(raw) == 1


def test_10_relabel_whose_balancing_fails_keeps_the_paid_for_labels(tmp_path):
    source = unlabelled_source(tmp_path / "pool.jsonl", 12)
    # low_max 0: no answer can be low-stakes, so balancing must fail
    config = {"ops": {"imported_datasets": {"config": {"low_max": 0, "sources": [{"kind": "mt", "uri": str(source), "relabel": True}]}}}}
    root = tmp_path / "a"
    result = materialize(dg.DagsterInstance.ephemeral(), root, ["imported_datasets"], run_config=config,
                         raise_on_error=False, llm_cache=tmp_path / "cache.sqlite")
    text = failure_text(result)
    assert "source " in text and "cannot balance: counts are" in text
    stored = [k for k in LocalStore(root).list("datasets/") if "pool-raw" in k]
    assert len(stored) == 1 and str(root / stored[0]) in text
    from mup_core.workflows import load_stored_dataset

    raw = LocalStore(root).get_bytes(stored[0])
    assert raw and load_stored_dataset  # a readable parquet of all 12 labelled rows
    import io

    import polars as pl

    df = pl.read_parquet(io.BytesIO(raw))
    assert df.height == 12 and set(df["label_status"]) == {"ok"}


# -- 11. a killed run ---------------------------------------------------------------------
@pytest.mark.slow
def test_11_kill_9_of_the_cli_stops_its_step_marks_the_run_failed_and_cleans_up(h):
    long_training = probes_config(["attention"], {"attention": {"max_epochs": 100_000, "patience": 100_000}})
    proc = cli(h, "--select", "probes", "--partition", KEY, config=long_training, background=True)
    step_pid = None
    try:
        deadline = time.time() + 180
        scratch = []
        while time.time() < deadline and not scratch:
            scratch = list(h["base"].glob("mup*~probes-*"))
            time.sleep(0.5)
        assert scratch, "the probes step never started training"
        step_pid = int(scratch[0].name[3:].split("~")[0].split("-")[0])
        assert step_pid != proc.pid and pid_alive(step_pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.time() + 30
        while time.time() < deadline and pid_alive(step_pid):
            time.sleep(0.5)
        assert not pid_alive(step_pid), "the step outlived its run worker"
        assert not scratch[0].exists(), "the step's scratch directory was left behind"
    finally:
        stop_process(proc)
        if step_pid and pid_alive(step_pid):  # never leave a runaway step behind, even when the test fails
            os.kill(step_pid, signal.SIGKILL)
    instance = instance_of(h)
    killed = instance.get_runs(limit=1)[0]
    assert killed.status == dg.DagsterRunStatus.STARTED  # what Dagster alone would leave forever

    # what a killed writer leaves in the store: a hidden temp file of a dead process
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    from mup_core.storage import pid_namespace

    leftover = h["root"] / "activations" / f".layer_001.safetensors.mup{dead.pid}-{pid_namespace()}~abc123"
    alien = h["root"] / "activations" / f".layer_002.safetensors.mup{dead.pid}-{pid_namespace() + 1}~abc123"
    alien.write_bytes(b"another container's file: its pid means nothing here")
    leftover.write_bytes(b"half a file")
    nxt = cli(h, "--select", "stakes_corpus")
    assert nxt.returncode == 0, nxt.stderr[-3000:]
    run = instance_of(h).get_run_by_id(killed.run_id)
    assert run.status == dg.DagsterRunStatus.FAILURE
    messages = [(r.dagster_event.message if r.dagster_event else "") or r.user_message for r in instance_of(h).all_logs(killed.run_id)]
    assert any("worker process" in m and "is gone" in m for m in messages)
    assert not leftover.exists() and alien.exists()


def test_11_the_sensor_marks_orphaned_runs_failed(h):
    from mup_dagster.orphans import WORKER_TAG, orphaned_runs_sensor

    instance = instance_of(h)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    from dagster._core.storage.dagster_run import DagsterRun

    from mup_core.storage import pid_namespace

    run = instance.add_run(DagsterRun(job_name="orphan", status=dg.DagsterRunStatus.STARTED,
                                      tags={WORKER_TAG: f"{socket.gethostname()}:{pid_namespace()}:{dead.pid}:"}))
    elsewhere = instance.add_run(DagsterRun(job_name="orphan", status=dg.DagsterRunStatus.STARTED,
                                            tags={WORKER_TAG: f"{socket.gethostname()}:{pid_namespace() + 1}:{dead.pid}:"}))
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
    result = orphaned_runs_sensor(dg.build_sensor_context(instance=instance))
    assert "marked 1 orphaned runs failed" in result.skip_message
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(elsewhere.run_id).status == dg.DagsterRunStatus.STARTED  # another container's


# -- 12. one forward pass per GPU ----------------------------------------------------------
def test_12_model_steps_share_one_pool_limited_to_one_slot_per_gpu(h):
    from mup_dagster.automation import GPU_POOL
    from mup_dagster.definitions import defs

    graph = defs.resolve_asset_graph()
    pooled = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).pools == {GPU_POOL}}
    assert {"activations", "prompted_baseline", "finetuned_baseline", "continuation_baseline",
            "judges", "sft_policies", "rl_policies", "deception_eval", "lie_detector"} <= pooled
    assert "probes" not in pooled and "probe_metrics" not in pooled
    for path in (REPO / "dagster.yaml", REPO / "deploy" / "dagster.yaml"):
        config = yaml.safe_load(path.read_text())
        assert config["concurrency"]["pools"]["default_limit"] == 1, path
        assert "mup/gpu" not in path.read_text()
    assert instance_of(h).get_concurrency_config().pool_config.default_pool_limit == 1


def test_make_down_never_signals_the_session_of_a_pid_it_no_longer_owns():
    """A stale pid file (a reboot, a recycled pid): the recorded pid now belongs to another
    process, whose session is not the stack's; `make down` must find nothing to stop there.
    A recorded leader that is gone still names its session (the kernel reuses no pid while
    that session has members), so its orphaned children are still found."""
    from mup_dagster import stack as st

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        entry = st.session_entry("sleeper", child, ["sleeper"])
        assert set(st._family([entry])) == {child.pid}
        stale = {**entry, "start": "a start time this pid never had"}
        assert st._family([stale]) == {}  # not ours: neither it nor anything of its session
        init = {"name": "init", "pid": 1, "start": "not init's start", "cmd": "init"}
        assert st._family([init]) == {}  # session 1 holds the machine's daemons
    finally:
        child.kill()
        child.wait()
