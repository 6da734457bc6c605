"""The production-like stack of `make up` on 127.0.0.1: PostgreSQL instance, SeaweedFS
bucket, RabbitMQ broker, two Celery workers, the Dagster webserver and daemon.

One stack for the module (its own database, bucket, RabbitMQ vhost, ports and directory,
so a developer's own `make up` is left alone); skipped with the reason where a server
cannot be reached."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import REPO, free_port_block

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECRET = "stack-secret-" + uuid.uuid4().hex
PROBES_CONFIG = {"ops": {"probes": {"config": {"probe_types": ["logistic_regression"]}}}}


def _rabbitmq_vhost(name: str) -> str:
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        pytest.skip("rabbitmqctl not found: cannot give the test stack its own RabbitMQ vhost")
    for args in (["add_vhost", name], ["set_permissions", "-p", name, "guest", ".*", ".*", ".*"]):
        done = subprocess.run([ctl, *args], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            pytest.skip(f"RabbitMQ not usable (rabbitmqctl {args[0]}: {done.stderr.strip()[:200]})")
    return name


def _postgres(cfg):
    import psycopg2

    return psycopg2.connect(host=cfg.pg_host, port=cfg.pg_port, user=cfg.pg_user, dbname="postgres",
                            password=os.environ.get("MUP_PG_PASSWORD", ""), connect_timeout=3)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    psycopg2 = pytest.importorskip("psycopg2")
    pytest.importorskip("dagster_celery")
    from mup_dagster import stack as st

    cfg = st.StackConfig(
        root=tmp_path_factory.mktemp("stack"), webserver_port=free_port_block(1), s3_port=free_port_block(5),
        bucket="mup-stack-test", pg_db=f"mup_stack_{uuid.uuid4().hex[:8]}", mup_home=REPO / ".mup",
        extra_env={"AWS_ACCESS_KEY_ID": "mupstack", "AWS_SECRET_ACCESS_KEY": SECRET, "MUP_WANDB_MODE": "disabled",
                   "MUP_MODEL_CACHE": os.environ.get("MUP_MODEL_CACHE", str(REPO / ".mup" / "models"))},
    )
    # what the machine must offer; anything else that keeps the stack from starting is a failure
    try:
        _postgres(cfg).close()
    except psycopg2.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {cfg.pg_host}:{cfg.pg_port}: {exc}")
    vhost = _rabbitmq_vhost(f"mup_test_{uuid.uuid4().hex[:8]}")
    cfg.broker = f"pyamqp://guest:guest@127.0.0.1:5672/{vhost}"
    saved = dict(os.environ)
    entries = []
    try:
        entries = st.up(cfg, echo=lambda *_: None)
        env = st.stack_env(cfg)
        os.environ.update({k: v for k, v in env.items() if k.startswith(("MUP_", "DAGSTER_", "AWS_"))})
        yield cfg, entries, env
    finally:
        os.environ.clear()
        os.environ.update(saved)
        recorded = st.read_pids(cfg) or entries
        st.down(cfg, echo=lambda *_: None)
        subprocess.run(["rabbitmqctl", "delete_vhost", vhost], capture_output=True, timeout=60)
        _drop_database(cfg)
    left = st._family(recorded)
    assert not left, f"make down left processes of the stack running: {left}"


def _drop_database(cfg):
    from psycopg2 import sql

    admin = _postgres(cfg)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(cfg.pg_db)))
    admin.close()


def _materialize(env, selection, partition=None):
    """`dagster asset materialize` from a shell with the stack's environment: its steps run
    on the Celery workers."""
    cmd = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "mup_dagster.definitions",
           "--select", selection]
    if partition:
        cmd += ["--partition", partition]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def _bucket_keys(cfg):
    from mup_core.storage import s3_client

    client = s3_client(cfg.s3_endpoint, "us-east-1")
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=cfg.bucket, Prefix="mup/"):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def test_a_backfill_of_every_tiny_layer_runs_on_two_workers_into_the_bucket_and_postgres(stack):
    import dagster as dg
    import psycopg2

    from mup_dagster import stack as st

    cfg, entries, env = stack
    _materialize(env, "stakes_corpus,corpus_splits,imported_datasets,eval_datasets,dataset_texts")
    # two GPUs' worth of slots: the forward passes fan out, one step per dataset, over both workers
    with dg.DagsterInstance.get() as instance:
        instance.event_log_storage.set_concurrency_slots("mup-gpu", 2)
    activations = st.wait_for_run(st.launch_run(cfg, ["activations"], "tiny"))  # as the UI's Materialize button
    assert activations.status == dg.DagsterRunStatus.SUCCESS, st.run_errors(activations.run_id)
    pieces = {k: v for k, v in st.step_workers(activations.run_id).items() if k.startswith("activations.activation_piece[")}
    assert len(pieces) == 3, pieces  # train, val, corpus-test
    assert {w for names in pieces.values() for w in names} == set(st.worker_names(cfg)), pieces
    # with a run config as the UI's launchpad gives one: a single probe type, to stay quick
    backfill_id = st.launch_backfill(cfg, ["probes", "probe_metrics"], ["1|tiny", "2|tiny", "3|tiny"],
                                     run_config=PROBES_CONFIG)
    runs = st.wait_for_backfill(backfill_id, timeout=600, echo=lambda *_: None, expected=3)
    assert sorted(r.tags["dagster/partition"] for r in runs) == ["1|tiny", "2|tiny", "3|tiny"]
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), [st.run_errors(r.run_id) for r in runs]

    workers = {w for r in runs for names in st.step_workers(r.run_id).values() for w in names}
    assert workers == set(st.worker_names(cfg)), workers  # both workers took steps

    keys = set(_bucket_keys(cfg))
    assert any(k.startswith("mup/activations/tiny/") for k in keys)
    with dg.DagsterInstance.get() as instance:
        for layer in (1, 2, 3):
            assert f"mup/dagster/probes/{layer}|tiny.pkl" in keys  # the values passed between steps
            record = instance.fetch_materializations(dg.AssetRecordsFilter(
                asset_key=dg.AssetKey("probes"), asset_partitions=[f"{layer}|tiny"]), limit=1).records[0]
            probe_keys = record.asset_materialization.metadata["keys"].value
            assert set(probe_keys) == {"logistic_regression"} and all(f"mup/{k}" in keys for k in probe_keys.values())

    with psycopg2.connect(host=cfg.pg_host, port=cfg.pg_port, user=cfg.pg_user, dbname=cfg.pg_db,
                          password=os.environ.get("MUP_PG_PASSWORD", "")) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT run_id, status FROM runs WHERE run_id = ANY(%s)", ([r.run_id for r in runs],))
            stored = dict(cur.fetchall())
            cur.execute("SELECT count(*) FROM event_logs WHERE run_id = ANY(%s)", ([r.run_id for r in runs],))
            (events,) = cur.fetchone()
    assert stored == {r.run_id: "SUCCESS" for r in runs} and events > 30

    # the S3 secret is in the environment only: not in any log of the stack, nor in metadata
    for log in cfg.logs.glob("*.log"):
        assert SECRET not in log.read_text(errors="replace"), log
    with dg.DagsterInstance.get() as instance:
        for key in ("probes", "probe_metrics", "activations", "stakes_corpus"):
            for record in instance.fetch_materializations(dg.AssetKey(key), limit=10).records:
                assert SECRET not in json.dumps({k: str(v.value) for k, v in
                                                 record.asset_materialization.metadata.items()})


def test_a_step_whose_worker_is_killed_runs_again_on_the_other_worker(stack):
    import dagster as dg

    from mup_dagster import stack as st

    cfg, entries, env = stack
    by_name = {f"mup-{e['name']}@{st.socket.gethostname()}": e for e in entries if e["name"].startswith("worker-")}
    before = {k for k in _bucket_keys(cfg) if k.startswith("mup/probes/")}
    run_id = st.launch_run(cfg, ["probes"], "2|tiny")  # every probe type: a step of several seconds
    victim = None
    deadline = time.time() + 300
    while victim is None and time.time() < deadline:
        names = st.step_workers(run_id).get("probes", [])
        victim = by_name[names[0]] if names else None
        time.sleep(0.2)
    assert victim is not None, "the probes step never started on a worker"
    # SIGKILL the worker (its main process and its pool process), by PID
    for pid in [victim["pid"], *st._descendants(victim["pid"])]:
        os.kill(pid, signal.SIGKILL)
    run = st.wait_for_run(run_id)
    assert run.status == dg.DagsterRunStatus.SUCCESS, st.run_errors(run.run_id)
    names = st.step_workers(run.run_id)["probes"]
    survivor = next(n for n in by_name if by_name[n] is not victim)
    assert names[0] != survivor and names[-1] == survivor, names
    # what was stored before is still there, and the new probes are whole
    after = set(_bucket_keys(cfg))
    assert before <= after
    with dg.DagsterInstance.get() as instance:
        record = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("probes"), asset_partitions=["2|tiny"]), limit=1).records[0]
    assert record.run_id == run.run_id
    from mup_core.probes import load_probe
    from mup_core.storage import store_from_env

    store = store_from_env()
    for probe_type, key in record.asset_materialization.metadata["keys"].value.items():
        assert load_probe(store.local_path(key)).info.layer == 2, probe_type


def test_a_run_waits_out_an_object_server_restart(stack):
    """SeaweedFS stops (SIGTERM, by PID) before a run and comes back 3 s after its step began: the run's
    step reads and writes the bucket through the outage (retries with backoff) and succeeds."""
    import dagster as dg

    from mup_dagster import stack as st

    cfg, entries, env = stack
    pids = st.read_pids(cfg)
    weed = next(e for e in pids if e["name"] == "seaweedfs")
    st.stop_processes([weed])
    down_since = time.time()
    run_id = st.launch_run(cfg, ["probes"], "1|tiny", run_config=PROBES_CONFIG)
    deadline = time.time() + 120
    while not st.step_workers(run_id) and time.time() < deadline:  # down until the step has begun
        time.sleep(0.3)
    time.sleep(3)
    back = st._spawn("seaweedfs", st.seaweed_command(cfg.root / "s3", cfg.s3_port, cfg.bucket), env, cfg)
    st._write_pids(cfg, [back if e is weed else e for e in pids])
    back_at = time.time()
    st._wait("SeaweedFS, restarted", lambda: st.s3_ready(cfg.s3_endpoint, cfg.bucket, env), 60, back, cfg)
    run = st.wait_for_run(run_id)
    assert run.status == dg.DagsterRunStatus.SUCCESS, st.run_errors(run_id)
    with dg.DagsterInstance.get() as instance:
        (start,) = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)
        record = instance.fetch_materializations(dg.AssetRecordsFilter(
            asset_key=dg.AssetKey("probes"), asset_partitions=["1|tiny"]), limit=1).records[0]
    assert down_since < start.timestamp < back_at, "the step did not start while the object server was down"
    assert record.run_id == run_id
    from mup_core.probes import load_probe
    from mup_core.storage import store_from_env

    (key,) = record.asset_materialization.metadata["keys"].value.values()
    assert load_probe(store_from_env().local_path(key)).info.layer == 1
