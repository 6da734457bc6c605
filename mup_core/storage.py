"""The artifact store: a local directory or an S3-compatible bucket, one interface.

Keys are ``/``-separated paths (``activations/smollm2-135m/val-ab12/shard_00000/layer_008.safetensors``).
Local writes go to a temp file and are renamed into place; S3 writes are one PUT, or a
multipart upload above 8 MB that becomes visible only when complete, so a reader never
sees half an object (set an AbortIncompleteMultipartUpload lifecycle rule on the bucket
for uploads a killed process left open). ``local_path(key)`` returns a local file for
reading (the file itself for a local store, a cached download for S3) so that
safetensors can be memory-mapped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Iterable, Iterator


# -- temporaries -----------------------------------------------------------------
# Every temporary file or directory mup makes carries its process id, so that the next
# run can remove what a killed process left behind (and nothing a live one is using).
def pid_namespace() -> int:
    """The inode of this process's pid namespace (0 where /proc is not there): a pid means
    this process only inside one namespace; containers sharing a volume each have their own."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def temp_tag() -> str:
    """What every temporary's name carries: ``mup<pid>-<pid namespace>~``."""
    return f"mup{os.getpid()}-{pid_namespace()}~"


_TAG = re.compile(r"mup(\d+)-(\d+)~")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _stale(name: str) -> bool:
    """Whether a temporary's name says its process is gone: made in this pid namespace
    (another container's pids mean nothing here) by a process that no longer exists."""
    tags = _TAG.findall(name)
    if not tags:
        return False
    pid, namespace = (int(v) for v in tags[-1])
    return namespace == pid_namespace() and not pid_alive(pid)


@contextlib.contextmanager
def scratch_dir(kind: str = "work") -> Iterator[Path]:
    """A private temporary directory, removed when the block ends (or by
    ``clean_stale_temps`` after a kill)."""
    path = Path(tempfile.mkdtemp(prefix=f"{temp_tag()}{kind}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _temporary_file(prefix: str, dir: str | os.PathLike | None = None) -> Iterator[Path]:
    """An empty temporary file named with this process's ``temp_tag`` (so a killed
    process's leftovers can be cleaned), removed when the block ends unless the block
    moved it away."""
    fd, tmp = tempfile.mkstemp(prefix=prefix, dir=dir)
    os.close(fd)
    try:
        yield Path(tmp)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def replaced_atomically(path: str | os.PathLike) -> Iterator[Path]:
    """A hidden temporary beside ``path`` to write to; renamed onto ``path`` when the block
    ends without an error, removed otherwise, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _temporary_file(f".{path.name}.{temp_tag()}", path.parent) as tmp:
        yield tmp
        os.replace(tmp, path)


def clean_stale_temps(*roots: str | os.PathLike) -> list[str]:
    """Remove the temporaries of dead processes: scratch directories in the system's
    temp directory, and hidden temp files under ``roots`` (a local store's root). Returns
    what was removed."""
    removed: list[str] = []
    tmp_root = Path(tempfile.gettempdir())
    for entry in tmp_root.glob("mup*~*"):
        if _stale(entry.name):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(str(entry))
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            for f in files:
                if f.startswith(".") and "~" in f and _stale(f):
                    Path(dirpath, f).unlink(missing_ok=True)
                    removed.append(os.path.join(dirpath, f))
    return removed


def content_digest(parts: Iterable[bytes | str], length: int = 24) -> str:
    """The sha256 (hex, first ``length`` digits) of ``parts`` in order: the one content hash
    behind data versions, cache keys and versioned prefixes. ``parts`` is consumed one at a
    time, so a generator over large files holds one file in memory, not all."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
    return h.hexdigest()[:length]


def table_bytes(df) -> bytes:
    """A polars DataFrame as parquet bytes: what ``put_table`` stores (and a data version hashes)."""
    import io

    buf = io.BytesIO()
    df.write_parquet(buf)
    return buf.getvalue()


def json_digest(value, length: int = 16, sort_keys: bool = True) -> str:
    """``content_digest`` of ``value`` as JSON: a cache key of settings and ids."""
    return content_digest([json.dumps(value, sort_keys=sort_keys)], length=length)


class ArtifactStore(ABC):
    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` if it is there."""

    @abstractmethod
    def list(self, prefix: str) -> list[str]: ...

    @abstractmethod
    def local_path(self, key: str) -> Path: ...

    @abstractmethod
    def size(self, key: str) -> int: ...

    @abstractmethod
    def uri(self, key: str) -> str: ...

    def put_file(self, key: str, path: str | os.PathLike) -> None:
        self.put_bytes(key, Path(path).read_bytes())

    @contextlib.contextmanager
    def writing(self, key: str) -> Iterator[Path]:
        """A local path to write ``key``'s content to; published atomically when the block
        ends without an error, dropped otherwise (large files never pass through memory)."""
        with _temporary_file(f"{temp_tag()}upload-") as tmp:
            yield tmp
            self.put_file(key, tmp)

    def clean_stale_temps(self) -> list[str]:
        """Remove the scratch directories of killed processes (a local store also removes
        the temp files they left in it)."""
        return clean_stale_temps()

    def put_dir(self, prefix: str, directory: str | os.PathLike) -> list[str]:
        """Upload every file of ``directory`` under ``prefix``; the marker file goes last
        (``_COMPLETE``), so a reader that checks it never trusts a partial upload."""
        directory = Path(directory)
        keys = []
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            key = f"{prefix}/{path.relative_to(directory).as_posix()}"
            self.put_file(key, path)
            keys.append(key)
        self.put_bytes(f"{prefix}/_COMPLETE", b"\n".join(k.encode() for k in keys))
        return keys

    def dir_complete(self, prefix: str) -> bool:
        return self.exists(f"{prefix}/_COMPLETE")

    # -- typed artifacts: tables and versioned directories (models) ----------------------
    def put_table(self, key: str, df) -> str:
        """Store a polars DataFrame as parquet at ``key`` (atomically); returns ``key``."""
        self.put_bytes(key, table_bytes(df))
        return key

    def get_table(self, key: str):
        """The polars DataFrame stored at ``key``."""
        import io

        import polars as pl

        return pl.read_parquet(io.BytesIO(self.get_bytes(key)))

    def put_versioned_dir(self, prefix: str, directory: str | os.PathLike) -> str:
        """Upload ``directory`` (a model: weights, tokenizer, ``mup_model.json``) under
        ``prefix/<content hash>`` unless that version is already complete, then point
        ``prefix/latest.json`` at it. Returns the versioned prefix."""
        files = [p for p in sorted(Path(directory).rglob("*")) if p.is_file()]
        versioned = f"{prefix}/{content_digest((part for p in files for part in (p.name, p.read_bytes())), length=16)}"
        if not self.dir_complete(versioned):
            self.put_dir(versioned, directory)
        self.put_bytes(f"{prefix}/latest.json", json.dumps({"version": versioned}).encode())
        return versioned

    def latest_version(self, prefix: str) -> str | None:
        """The versioned prefix ``prefix/latest.json`` points at, or None when there is none."""
        try:
            return json.loads(self.get_bytes(f"{prefix}/latest.json"))["version"]
        except FileNotFoundError:
            return None

    def get_versioned_dir(self, prefix: str, dest: str | os.PathLike) -> Path:
        """Download the latest version under ``prefix`` into ``dest/<version>``; a missing
        one fails with what to materialise."""
        versioned = self.latest_version(prefix)
        if versioned is None:
            raise FileNotFoundError(f"no model at {prefix}; materialise it first")
        out = Path(dest) / Path(versioned).name
        for key in self.list(versioned + "/"):
            if key.endswith("_COMPLETE"):
                continue
            target = out / key[len(versioned) + 1:]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self.get_bytes(key))
        return out


class LocalStore(ArtifactStore):
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents and path != self.root:
            raise ValueError(f"artifact key {key!r} escapes the store root {self.root}")
        return path

    def put_bytes(self, key, data):
        with self.writing(key) as tmp:
            tmp.write_bytes(data)

    def put_file(self, key, path):
        with self.writing(key) as tmp:
            shutil.copyfile(path, tmp)

    def writing(self, key):
        return replaced_atomically(self._path(key))

    def get_bytes(self, key):
        path = self._path(key)
        if not path.exists():
            raise FileNotFoundError(f"artifact {key!r} not found in {self.root}")
        return path.read_bytes()

    def exists(self, key):
        return self._path(key).exists()

    def delete(self, key):
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix):
        base = self._path(prefix)
        if not base.exists():
            return []
        return sorted(
            p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file() and not p.name.startswith(".")
        )

    def local_path(self, key):
        path = self._path(key)
        if not path.exists():
            raise FileNotFoundError(f"artifact {key!r} not found in {self.root}")
        return path

    def size(self, key):
        return self.local_path(key).stat().st_size

    def uri(self, key):
        return str(self._path(key))

    def clean_stale_temps(self) -> list[str]:
        """Remove temp files that killed processes left in the store (and their scratch
        directories)."""
        return clean_stale_temps(self.root) if self.root.exists() else clean_stale_temps()


class S3Store(ArtifactStore):
    """An S3-compatible bucket (AWS, Cloudflare R2, MinIO) through a boto3 client."""

    def __init__(self, client, bucket: str, prefix: str = "", cache_dir: str | os.PathLike | None = None):
        from mup_core.paths import mup_home

        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.cache_dir = Path(cache_dir or mup_home() / "s3-cache")

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_bytes(self, key, data):
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def put_file(self, key, path):
        # boto3's transfer manager: one PUT for small files, a multipart upload (parts
        # retried, object visible only when complete) above its 8 MB threshold
        self.client.upload_file(str(path), self.bucket, self._key(key))

    def get_bytes(self, key):
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            raise FileNotFoundError(f"artifact {self.uri(key)} not found") from None

    def exists(self, key):
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def delete(self, key):
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def list(self, prefix):
        keys = []
        strip = len(self.prefix) + 1 if self.prefix else 0
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        return sorted(keys)

    def local_path(self, key):
        head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        tag = hashlib.sha256(f"{self.bucket}/{self._key(key)}/{head['ETag']}".encode()).hexdigest()[:16]
        path = self.cache_dir / tag / Path(key).name
        if not path.exists():
            with replaced_atomically(path) as tmp:
                self.client.download_file(self.bucket, self._key(key), str(tmp))
        return path

    def size(self, key):
        return int(self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"])

    def uri(self, key):
        return f"s3://{self.bucket}/{self._key(key)}"


def s3_settings_from_env() -> dict | None:
    """The S3 store the environment asks for (``MUP_S3_BUCKET``, ``MUP_S3_PREFIX``,
    ``MUP_S3_ENDPOINT_URL``; credentials the AWS way), or None for the local store. The
    Dagster resource and the CLI both read it here."""
    bucket = os.environ.get("MUP_S3_BUCKET")
    if not bucket:
        return None
    return {"bucket": bucket, "prefix": os.environ.get("MUP_S3_PREFIX", "mup"),
            "endpoint_url": os.environ.get("MUP_S3_ENDPOINT_URL") or None}


def store_from_env(root: str | os.PathLike | None = None) -> ArtifactStore:
    """``root`` if given, else the S3 store of the environment, else ``$MUP_HOME/artifacts``."""
    from mup_core.paths import artifact_root

    s3 = None if root else s3_settings_from_env()
    if s3 is None:
        return LocalStore(root or artifact_root())
    return S3Store(s3_client(s3["endpoint_url"]), s3["bucket"], s3["prefix"])


def s3_client(endpoint_url: str | None = None, region_name: str | None = None, *,
              credentials: dict | None = None, max_attempts: int | None = None):
    """The one boto3 S3 client of mup (the CLI, the Dagster resource, the IO manager, data
    sources, the local stack). Credentials the AWS way (environment, profile, instance role)
    unless given, never in config. A request that fails to connect, times out or gets a
    5xx / throttling answer is retried with exponential backoff and jitter (botocore's
    standard mode: the i-th wait is random(0, 1) x min(0.05 s x 2^i, 20 s) for such errors):
    ``max_attempts`` (default ``MUP_S3_MAX_ATTEMPTS``, 16) attempts in all wait 73 s in the
    median and more than 39 s in 99 of 100 outages (10 attempts waited 13 s in the median, 4 s
    at the 1st percentile: shorter than an object server's restart, which failed runs), so an
    object server that restarts costs a wait, not a run; one that refuses connections for
    longer than one to two minutes fails the step with its endpoint in the error. A server
    that accepts connections but never answers costs the 60 s read timeout per attempt."""
    import boto3
    from botocore.config import Config

    attempts = max_attempts or int(os.environ.get("MUP_S3_MAX_ATTEMPTS", "16"))
    config = Config(retries={"total_max_attempts": attempts, "mode": "standard"}, connect_timeout=5, read_timeout=60)
    keys = {"aws_access_key_id": credentials["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": credentials["AWS_SECRET_ACCESS_KEY"]} if credentials else {}
    # a session of its own: boto3's default session caches the first credentials it found
    return boto3.session.Session(**keys).client("s3", endpoint_url=endpoint_url, region_name=region_name, config=config)
