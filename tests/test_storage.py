"""The artifact store, locally and against a real S3-compatible server on 127.0.0.1 (SeaweedFS)."""

import time

import pytest
import torch

from mup_core.activations import activations_complete, extract_activations, write_activations
from mup_core.storage import LocalStore
from mup_core.refs import ActivationRef
from mup_core.workflows import load_activations


def test_local_store_basics_and_atomicity(tmp_path):
    store = LocalStore(tmp_path)
    store.put_bytes("a/b.bin", b"one")
    store.put_bytes("a/b.bin", b"two")
    assert store.get_bytes("a/b.bin") == b"two" and store.size("a/b.bin") == 3
    assert store.list("a/") == ["a/b.bin"]  # no temp files left behind
    assert not store.exists("a/c.bin")
    with pytest.raises(FileNotFoundError, match="artifact 'a/c.bin' not found"):
        store.get_bytes("a/c.bin")
    with pytest.raises(ValueError, match="escapes the store root"):
        store.put_bytes("../evil", b"x")


def test_s3_store_round_trip(s3_store):
    s3_store.put_bytes("x/y.txt", b"hello")
    assert s3_store.exists("x/y.txt") and not s3_store.exists("x/z.txt")
    assert s3_store.get_bytes("x/y.txt") == b"hello" and s3_store.size("x/y.txt") == 5
    assert s3_store.list("x/") == ["x/y.txt"]
    assert s3_store.uri("x/y.txt") == f"s3://{s3_store.bucket}/runs/x/y.txt"
    assert s3_store.local_path("x/y.txt").read_bytes() == b"hello"
    with pytest.raises(FileNotFoundError):
        s3_store.get_bytes("x/missing")


@pytest.mark.parametrize("where", ["local", "s3"])
def test_tables_and_versioned_model_directories(where, tmp_path, request):
    """The typed artifacts every asset writes through the store: parquet tables, and model
    directories under a content hash with a `latest.json` pointer."""
    import polars as pl

    store = LocalStore(tmp_path / "store") if where == "local" else request.getfixturevalue("s3_store")
    df = pl.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    assert store.put_table("t/one.parquet", df) == "t/one.parquet"
    assert store.get_table("t/one.parquet").equals(df)
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "weights.bin").write_bytes(b"w" * 100)
    (model / "sub" / "tokenizer.json").write_text("{}")
    assert store.latest_version("models/m") is None
    with pytest.raises(FileNotFoundError, match="no model at models/m; materialise it first"):
        store.get_versioned_dir("models/m", tmp_path / "dl")
    first = store.put_versioned_dir("models/m", model)
    assert first.startswith("models/m/") and store.dir_complete(first) and store.latest_version("models/m") == first
    assert store.put_versioned_dir("models/m", model) == first  # same content: same version, nothing uploaded again
    got = store.get_versioned_dir("models/m", tmp_path / "dl")
    assert (got / "weights.bin").read_bytes() == b"w" * 100 and (got / "sub" / "tokenizer.json").read_text() == "{}"
    (model / "weights.bin").write_bytes(b"v" * 100)
    second = store.put_versioned_dir("models/m", model)
    assert second != first and store.latest_version("models/m") == second and store.dir_complete(first)  # the old one stays


def test_activations_stream_to_s3_and_read_back_one_layer(s3_store, tiny, tmp_path):
    texts = ["one text", "another, longer text", "a third", "and a fourth text about something"]
    result = extract_activations(tiny, texts, [1, 3], progress=False)
    assert not activations_complete(s3_store, "activations/tiny/x")
    manifest = write_activations(s3_store, "activations/tiny/x", tiny, texts, [1, 3], shard_mb=0.004, progress=False)
    assert manifest["stats"]["shards"] >= 2 and activations_complete(s3_store, "activations/tiny/x")
    ref = ActivationRef("tiny", "x", "activations/tiny/x", (1, 3), "h", int(result.offsets[-1]))
    loaded = load_activations(s3_store, ref, 3)
    # shards batch differently from one in-memory pass: equal up to bf16 rounding
    torch.testing.assert_close(loaded.values.float(), result.layer(3).values.float(), atol=1e-3, rtol=1e-2)
    assert loaded.offsets.tolist() == result.offsets.tolist()
    downloaded = sorted({p.name for p in (tmp_path / "cache").rglob("*.safetensors")})
    assert downloaded == ["layer_003.safetensors", "meta.safetensors"]  # layer 1 never left the bucket


def test_s3_large_files_go_up_in_parts(s3_store, tmp_path):
    """Above boto3's 8 MB threshold put_file is a multipart upload; the object is whole."""
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * (40 * 2**20 // 256))
    s3_store.put_file("big/one.bin", big)
    head = s3_store.client.head_object(Bucket=s3_store.bucket, Key=s3_store._key("big/one.bin"))
    assert head["ContentLength"] == big.stat().st_size
    assert head["ETag"].strip('"').endswith("-5")  # five 8 MB parts
    assert s3_store.local_path("big/one.bin").read_bytes() == big.read_bytes()


def test_s3_writes_wait_out_an_object_server_outage(s3_store, s3_server, tmp_path):
    """The object server goes away for a few seconds in the middle of a run: a write made
    meanwhile is retried with backoff and lands whole; what was stored before survives."""
    import threading

    import numpy as np

    s3_store.put_bytes("before/kept.bin", b"stored before the outage")
    payload = np.random.default_rng(0).bytes(3 * 2**20)
    big = tmp_path / "big.bin"
    big.write_bytes(payload)
    s3_server.stop()
    written: list = []

    def write() -> None:  # in a thread, while this one brings the server back
        try:
            s3_store.put_bytes("during/small.bin", b"written while the server was down")
            s3_store.put_file("during/big.bin", big)
            written.append("ok")
        except Exception as exc:
            written.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    time.sleep(2.0)
    assert writer.is_alive(), f"the write did not wait for the server: {written}"
    s3_server.start()
    writer.join(120)
    assert written == ["ok"], written
    assert s3_store.get_bytes("during/small.bin") == b"written while the server was down"
    assert s3_store.get_bytes("during/big.bin") == payload
    assert s3_store.get_bytes("before/kept.bin") == b"stored before the outage"


def test_s3_outage_longer_than_the_retries_fails_clearly_and_writes_nothing(s3_store, s3_server, monkeypatch):
    from botocore.exceptions import EndpointConnectionError

    from mup_core.storage import S3Store, s3_client

    monkeypatch.setenv("MUP_S3_MAX_ATTEMPTS", "2")
    impatient = S3Store(s3_client(s3_server.endpoint, "us-east-1"), s3_store.bucket, "runs")
    s3_server.stop()
    try:
        with pytest.raises(EndpointConnectionError, match=f"127.0.0.1:{s3_server.port}"):
            impatient.put_bytes("never/there.bin", b"x")
    finally:
        s3_server.start()
    assert not s3_store.exists("never/there.bin")
