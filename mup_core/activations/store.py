"""Activations in the artifact store: shards streamed as the forward passes go.

```
<prefix>/shard_00000/meta.safetensors        offsets (n+1, int64, local), input_ids (tokens, int32)
<prefix>/shard_00000/layer_008.safetensors   activations (tokens, hidden), bf16 by default
<prefix>/shard_00000/_COMPLETE               JSON: examples start:stop, layers, file sizes, stats
...
<prefix>/manifest.json                       written last: what the set is, its shards, totals
```
A shard is a contiguous run of examples in dataset order of at most ``shard_mb``
megabytes of activations (all layers together); it is written as soon as it is
computed, each file atomically (temp + rename locally, one PUT or a multipart upload
on S3), and its ``_COMPLETE`` marker last. Peak memory is one shard, whatever the
size of the data set.

A run that was killed leaves finished shards (with markers) and maybe files of an
unfinished one (without): ``write_activations`` on the same prefix reuses every
shard whose marker matches the plan and whose files are all there at the recorded
sizes, and recomputes the rest. The set counts as present only once
``manifest.json`` exists. A probe reads one layer's files only, memory-mapped from
the local store (or from the S3 download cache).
"""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from safetensors.torch import save_file

from mup_core.activations.extract import (
    EXTRACTION_VERSION,
    Shard,
    _check_request,
    iter_shards,
    plan_shards,
    summarise,
    tokenize_flat,
)
from mup_core.activations.ragged import RaggedActivations
from mup_core.data.dataset import Input
from mup_core.defaults import DEFAULT_BATCH_TOKENS, DEFAULT_SHARD_MB
from mup_core.storage import ArtifactStore

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
META_FILE = "meta.safetensors"
SHARD_MARKER = "_COMPLETE"


def layer_file(layer: int) -> str:
    return f"layer_{int(layer):03d}.safetensors"


def shard_dir(index: int) -> str:
    return f"shard_{int(index):05d}"


def shard_tokens_for(shard_mb: float, layers: Sequence[int], hidden_size: int, storage_dtype: torch.dtype) -> int:
    """How many tokens fill ``shard_mb`` megabytes of activations over ``layers``."""
    per_token = len(layers) * hidden_size * torch.empty(0, dtype=storage_dtype).element_size()
    return max(1, int(shard_mb * 2**20) // per_token)


# -- writing ---------------------------------------------------------------------------------
def _marker(store: ArtifactStore, prefix: str, index: int) -> dict | None:
    try:
        return json.loads(store.get_bytes(f"{prefix}/{shard_dir(index)}/{SHARD_MARKER}"))
    except (ValueError, FileNotFoundError):
        return None


def _shard_is_done(store: ArtifactStore, prefix: str, index: int, start: int, stop: int, layers: list[int]) -> dict | None:
    """The shard's marker if it matches the plan and every file it lists is there, whole."""
    marker = _marker(store, prefix, index)
    if not marker or (marker.get("start"), marker.get("stop"), marker.get("layers")) != (start, stop, layers):
        return None
    if set(marker.get("files", {})) != {META_FILE, *(layer_file(k) for k in layers)}:
        return None
    for name, size in marker.get("files", {}).items():
        key = f"{prefix}/{shard_dir(index)}/{name}"
        if not store.exists(key) or store.size(key) != size:
            return None
    return marker


def _write_shard(store: ArtifactStore, prefix: str, shard: Shard, info: Mapping) -> dict:
    base = f"{prefix}/{shard_dir(shard.index)}"
    store.delete(f"{base}/{SHARD_MARKER}")  # a marker of another plan must never vouch for these files
    offsets = shard.layers[next(iter(shard.layers))].offsets
    files = [(META_FILE, {"offsets": torch.from_numpy(offsets), "input_ids": shard.input_ids},
              {"start": str(shard.start), "stop": str(shard.stop)})]
    files += [(layer_file(layer), {"activations": acts.values}, {"layer": str(layer), "model": str(info.get("model"))})
              for layer, acts in shard.layers.items()]
    sizes: dict[str, int] = {}
    for name, tensors, metadata in files:
        with store.writing(f"{base}/{name}") as path:  # atomic: temp file + rename, or one upload
            save_file(tensors, path, metadata=metadata)
            sizes[name] = path.stat().st_size
    marker = {"start": shard.start, "stop": shard.stop, "layers": sorted(shard.layers), "tokens": shard.stats["tokens"],
              "files": sizes, "stats": shard.stats}
    store.put_bytes(f"{base}/{SHARD_MARKER}", json.dumps(marker).encode())
    return marker


def write_activations(
    store: ArtifactStore,
    prefix: str,
    lm,
    inputs: Sequence[Input],
    layers: Sequence[int],
    *,
    info: Mapping | None = None,
    shard_mb: float = DEFAULT_SHARD_MB,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    max_length: int | None = None,
    overlong: str = "truncate",
    storage_dtype: torch.dtype = torch.bfloat16,
    progress: bool = True,
    on_batch: Callable[[int, int], None] | None = None,
) -> dict:
    """Extract ``layers`` for ``inputs`` into ``prefix``, one shard at a time, reusing
    the finished shards of an earlier, interrupted run. Returns the manifest."""
    layers = _check_request(lm, inputs, layers)
    info = dict(info or {})
    tokens = tokenize_flat(lm, inputs, max_length, overlong=overlong)
    shard_tokens = shard_tokens_for(shard_mb, layers, lm.spec.hidden_size, storage_dtype)
    plan = plan_shards(tokens.lengths.tolist(), shard_tokens)
    markers: dict[int, dict] = {}
    for index, (start, stop) in enumerate(plan):
        marker = _shard_is_done(store, prefix, index, start, stop, layers)
        if marker is not None:
            markers[index] = marker
    if markers:
        log.info("%s: reusing %d of %d finished shards of an earlier run", prefix, len(markers), len(plan))
    computed = []
    for shard in iter_shards(lm, tokens, layers, plan, skip=set(markers), batch_tokens=batch_tokens,
                             storage_dtype=storage_dtype, progress=progress, on_batch=on_batch):
        markers[shard.index] = _write_shard(store, prefix, shard, info)
        computed.append(shard.stats)
        del shard  # the generator allocates the next shard's buffers on resuming
    stats = summarise(computed, tokens.truncated, layers)
    stats.update(overlong=overlong, max_length=max_length or lm.spec.max_length)
    stats.update(reused_shards=len(plan) - len(computed), shards=len(plan))
    manifest = {
        **info,
        "version": EXTRACTION_VERSION,
        "layers": layers,
        "examples": len(inputs),
        "tokens": int(tokens.offsets[-1]),
        "hidden_size": lm.spec.hidden_size,
        "storage_dtype": str(storage_dtype).removeprefix("torch."),
        "shard_tokens": shard_tokens,
        "shards": [{"index": i, "start": a, "stop": b, "tokens": markers[i]["tokens"]} for i, (a, b) in enumerate(plan)],
        "stats": stats,
    }
    store.put_bytes(f"{prefix}/{MANIFEST}", json.dumps(manifest, default=str).encode())
    return manifest


# -- reading ---------------------------------------------------------------------------------
def activations_complete(store: ArtifactStore, prefix: str) -> bool:
    return store.exists(f"{prefix}/{MANIFEST}")


def read_manifest(store: ArtifactStore, prefix: str) -> dict:
    try:
        return json.loads(store.get_bytes(f"{prefix}/{MANIFEST}"))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"activations {store.uri(prefix)} are incomplete or missing (no {MANIFEST}); "
            "re-materialise `activations` (finished shards of an interrupted run are reused)"
        ) from None


_SAFETENSORS_DTYPES = {"BF16": (np.uint16, torch.bfloat16), "F16": (np.uint16, torch.float16),
                       "F32": (np.float32, torch.float32), "I64": (np.int64, torch.int64), "I32": (np.int32, torch.int32)}


def mmap_tensor(path: str | Path, name: str) -> torch.Tensor:
    """Tensor ``name`` of a safetensors file, memory-mapped (copy-on-write), not read."""
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    if name not in header:
        raise KeyError(f"{path}: no tensor {name!r} (has {sorted(k for k in header if k != '__metadata__')})")
    entry = header[name]
    np_dtype, torch_dtype = _SAFETENSORS_DTYPES[entry["dtype"]]
    begin, end = entry["data_offsets"]
    shape = tuple(entry["shape"])
    if end == begin:
        return torch.empty(shape, dtype=torch_dtype)
    array = np.memmap(path, dtype=np_dtype, mode="c", offset=8 + n + begin, shape=shape)
    return torch.from_numpy(array).view(torch_dtype)


class MissingActivations(KeyError):
    """Activations a step needs were not extracted (a dataset, or a layer); the message says
    what to re-materialise."""


def load_layer(store: ArtifactStore, prefix: str, layer: int, manifest: Mapping | None = None) -> RaggedActivations:
    """One layer of a stored set: its shards' files only, memory-mapped, joined in order.

    A single-shard set stays memory-mapped; several shards are joined into one tensor in
    memory (one layer's worth: what a probe trains on)."""
    manifest = manifest or read_manifest(store, prefix)
    if int(layer) not in manifest["layers"]:
        raise MissingActivations(
            f"layer {layer} of {manifest.get('model', '?')} was not extracted for {manifest.get('dataset', prefix)} "
            f"(have {manifest['layers']}); add it to the activations asset's `layers` config and re-materialise it"
        )
    values, offsets, base = [], [np.zeros(1, dtype=np.int64)], 0
    for shard in manifest["shards"]:
        d = f"{prefix}/{shard_dir(shard['index'])}"
        local = mmap_tensor(store.local_path(f"{d}/{META_FILE}"), "offsets").numpy()
        values.append(mmap_tensor(store.local_path(f"{d}/{layer_file(layer)}"), "activations"))
        offsets.append(local[1:] + base)
        base += int(local[-1])
    joined = values[0] if len(values) == 1 else torch.cat(values)
    question = manifest.get("question_tokens")  # prompted probing (see RaggedActivations)
    return RaggedActivations(joined, np.concatenate(offsets), manifest.get("model"), int(layer),
                             np.asarray(question, dtype=np.int64) if question is not None else None)


def load_input_ids(store: ArtifactStore, prefix: str, manifest: Mapping | None = None) -> torch.Tensor:
    """The token ids of every example, flat (offsets as in ``load_layer``)."""
    manifest = manifest or read_manifest(store, prefix)
    parts = [mmap_tensor(store.local_path(f"{prefix}/{shard_dir(s['index'])}/{META_FILE}"), "input_ids")
             for s in manifest["shards"]]
    return torch.cat(parts)
