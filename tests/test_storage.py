"""The artifact store, locally and against a real S3-compatible server on 127.0.0.1 (moto)."""

import pytest
import torch

from mup_core.activations import extract_activations, save_activations
from mup_core.storage import LocalStore
from mup_core.workflows import ActivationRef, load_activations


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


def test_activations_through_s3_download_only_the_needed_layer(s3_store, tiny, tmp_path):
    result = extract_activations(tiny, ["one text", "another, longer text"], [1, 3], progress=False)
    save_activations(result, tmp_path / "acts", {"model": "tiny"})
    assert not s3_store.dir_complete("activations/tiny/x")
    s3_store.put_dir("activations/tiny/x", tmp_path / "acts")
    assert s3_store.dir_complete("activations/tiny/x")
    ref = ActivationRef("tiny", "x", "activations/tiny/x", (1, 3), "h", int(result.offsets[-1]))
    loaded = load_activations(s3_store, ref, 3)
    assert torch.equal(loaded.values, result.layer(3).values)
    downloaded = sorted(p.name for p in (tmp_path / "cache").rglob("*.safetensors"))
    assert downloaded == ["layer_003.safetensors", "meta.safetensors"]
