"""Activations stream to the store in shards; an interrupted extraction resumes."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from mup_core.activations import (
    extract_activations,
    layer_file,
    load_input_ids,
    load_layer,
    plan_shards,
    read_manifest,
    write_activations,
)
from mup_core.activations.store import SHARD_MARKER, shard_tokens_for

TEXTS = [f"Message {i}: " + "the quick brown fox jumps over the lazy dog " * (1 + i % 5) for i in range(12)]


def test_plan_shards_is_contiguous_and_bounded():
    lengths = [5, 3, 9, 2, 2, 30, 1]
    plan = plan_shards(lengths, 10)
    assert plan == [(0, 2), (2, 3), (3, 5), (5, 6), (6, 7)]
    assert [i for a, b in plan for i in range(a, b)] == list(range(len(lengths)))
    assert plan_shards(lengths, 10**9) == [(0, 7)]
    with pytest.raises(ValueError, match="shard_tokens must be >= 1"):
        plan_shards(lengths, 0)


def test_shard_size_follows_megabytes_layers_and_dtype():
    assert shard_tokens_for(1, [1, 2], 64, torch.bfloat16) == 2**20 // (2 * 64 * 2)
    assert shard_tokens_for(1, [1, 2], 64, torch.float32) == 2**20 // (2 * 64 * 4)


def test_sharded_set_equals_one_pass(tiny, store):
    layers = [1, 3]
    whole = extract_activations(tiny, TEXTS, layers, storage_dtype=torch.float32, progress=False)
    manifest = write_activations(store, "a/x", tiny, TEXTS, layers, storage_dtype=torch.float32, shard_mb=0.02,
                                 info={"model": "tiny"}, progress=False)
    assert manifest["stats"]["shards"] == len(manifest["shards"]) > 2
    assert manifest["stats"]["reused_shards"] == 0 and manifest["examples"] == len(TEXTS)
    starts = [s["start"] for s in manifest["shards"]]
    assert starts == sorted(starts) and starts[0] == 0
    for layer in layers:
        got = load_layer(store, "a/x", layer)
        assert got.offsets.tolist() == whole.offsets.tolist()
        torch.testing.assert_close(got.values, whole.layer(layer).values, atol=1e-5, rtol=1e-5)
    assert torch.equal(load_input_ids(store, "a/x"), whole.input_ids)


def test_unfinished_shards_are_recomputed_and_finished_ones_reused(tiny, store):
    layers = [1, 2]
    first = write_activations(store, "a/y", tiny, TEXTS, layers, shard_mb=0.02, progress=False)
    reference = load_layer(store, "a/y", 2).values.clone()
    n = first["stats"]["shards"]
    # as after a crash: no manifest; shard 1 never got its marker; shard 2's layer file is half-written
    store.local_path("a/y/manifest.json").unlink()
    store.local_path(f"a/y/shard_00001/{SHARD_MARKER}").unlink()
    half = store.local_path(f"a/y/shard_00002/{layer_file(2)}")
    half.write_bytes(half.read_bytes()[: half.stat().st_size // 2])
    with pytest.raises(FileNotFoundError, match="incomplete or missing.*re-materialise `activations`"):
        read_manifest(store, "a/y")
    again = write_activations(store, "a/y", tiny, TEXTS, layers, shard_mb=0.02, progress=False)
    assert again["stats"]["reused_shards"] == n - 2 and again["stats"]["shards"] == n
    assert torch.equal(load_layer(store, "a/y", 2).values, reference)


KILLED_RUN = textwrap.dedent("""
    import sys
    from mup_core.models import load_model
    from mup_core.activations import write_activations
    from mup_core.storage import LocalStore
    texts = [f"Example {i}: " + "a fairly ordinary sentence about the weather today " * (1 + i % 7) for i in range(3000)]
    lm = load_model("tiny", device="cpu", dtype="float32")
    write_activations(LocalStore(sys.argv[1]), "a/killed", lm, texts, [1, 2, 3], shard_mb=0.05, progress=False)
""")


def test_a_killed_extraction_resumes_from_its_finished_shards(tiny, tmp_path):
    """SIGKILL a real extraction process half-way; the re-run keeps its shards."""
    from mup_core.storage import LocalStore

    root = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(root)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 180
        while len(list(root.glob(f"a/killed/shard_*/{SHARD_MARKER}"))) < 5:
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            assert time.time() < deadline, "the extraction wrote no shards in 3 minutes"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    store = LocalStore(root)
    finished = len(list(root.glob(f"a/killed/shard_*/{SHARD_MARKER}")))
    assert not store.exists("a/killed/manifest.json") and finished >= 5
    texts = [f"Example {i}: " + "a fairly ordinary sentence about the weather today " * (1 + i % 7) for i in range(3000)]
    manifest = write_activations(store, "a/killed", tiny, texts, [1, 2, 3], shard_mb=0.05, progress=False)
    assert manifest["stats"]["reused_shards"] == finished  # markers are atomic: none is torn
    assert manifest["stats"]["reused_shards"] < manifest["stats"]["shards"]
    sample = [0, 1, 1234, 2999]
    whole = extract_activations(tiny, [texts[i] for i in sample], [3], storage_dtype=torch.bfloat16, progress=False)
    got = load_layer(store, "a/killed", 3)
    for row, i in enumerate(sample):
        torch.testing.assert_close(got.example(i).float(), whole.layer(3).example(row).float(), atol=1e-3, rtol=1e-2)
    assert json.loads(store.get_bytes("a/killed/manifest.json"))["examples"] == 3000


def test_a_new_shard_size_never_trusts_the_old_plans_shards(tiny, store):
    """Resumed with another shard size, shards whose range changed are recomputed."""
    write_activations(store, "a/z", tiny, TEXTS, [1], shard_mb=0.02, storage_dtype=torch.float32, progress=False)
    store.local_path("a/z/manifest.json").unlink()
    again = write_activations(store, "a/z", tiny, TEXTS, [1], shard_mb=0.06, storage_dtype=torch.float32, progress=False)
    assert again["stats"]["shards"] > again["stats"]["reused_shards"]
    whole = extract_activations(tiny, TEXTS, [1], storage_dtype=torch.float32, progress=False)
    torch.testing.assert_close(load_layer(store, "a/z", 1).values, whole.layer(1).values, atol=1e-5, rtol=1e-5)
