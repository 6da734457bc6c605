"""Where a source file lives: a local path, an ``s3://`` URI or a Hugging Face dataset.

``fetch(uri)`` returns a local path to read:
- ``/path/to/file.jsonl`` or ``file://...``: the file itself;
- ``s3://bucket/key``: downloaded once (by ETag) with boto3; ``MUP_S3_ENDPOINT_URL``
  points at an S3-compatible server (Cloudflare R2, MinIO);
- ``hf://datasets/OWNER/NAME/path/in/repo.jsonl``: ``huggingface_hub.hf_hub_download``
  (needs hub access, and ``HF_TOKEN`` for gated sets).
"""

from __future__ import annotations

import os
from pathlib import Path

from mup_core.data.dataset import DatasetError
from mup_core.paths import mup_home


def fetch(uri: str, cache_dir: str | os.PathLike | None = None) -> Path:
    cache = Path(cache_dir or mup_home() / "sources")
    if uri.startswith("s3://"):
        return _fetch_s3(uri, cache)
    if uri.startswith("hf://"):
        return _fetch_hf(uri)
    path = Path(uri[7:] if uri.startswith("file://") else uri).expanduser()
    if not path.exists():
        raise DatasetError(f"{uri}: file not found")
    return path


def _fetch_s3(uri: str, cache: Path) -> Path:
    from botocore.exceptions import BotoCoreError, ClientError

    from mup_core.storage import S3Store, s3_client

    bucket, _, key = uri[5:].partition("/")
    if not bucket or not key:
        raise DatasetError(f"{uri}: expected s3://BUCKET/KEY")
    client = s3_client(os.environ.get("MUP_S3_ENDPOINT_URL") or None)
    try:
        return S3Store(client, bucket, cache_dir=cache).local_path(key)
    except (ClientError, BotoCoreError) as exc:
        raise DatasetError(f"{uri}: cannot download ({exc}); check the URI, credentials and MUP_S3_ENDPOINT_URL") from None


def _fetch_hf(uri: str) -> Path:
    parts = uri[5:].split("/")
    if len(parts) < 4 or parts[0] != "datasets":
        raise DatasetError(f"{uri}: expected hf://datasets/OWNER/NAME/path/to/file")
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id="/".join(parts[1:3]), filename="/".join(parts[3:]), repo_type="dataset"))
    except Exception as exc:  # noqa: BLE001 - offline, gated, missing: all reported the same way
        raise DatasetError(
            f"{uri}: cannot download from the Hugging Face hub ({exc.__class__.__name__}: {' '.join(str(exc).split())[:200]}); "
            "download it where the hub is reachable and pass the local path instead"
        ) from None
