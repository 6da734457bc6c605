"""Activations on disk: a directory per (model, dataset, cache key).

```
meta.safetensors        offsets (n+1, int64), input_ids (total_tokens, int32) + JSON header
layer_008.safetensors   activations (total_tokens, hidden) in bf16 / fp16
```
One file per layer, so a probe for layer 8 reads (or downloads from S3) only
``layer_008.safetensors``; ``safe_open`` memory-maps it. The directory is written
under a temporary name and renamed, so a crash never leaves a half-written set.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mup_core.activations.extract import ExtractionResult
from mup_core.activations.ragged import RaggedActivations

META_FILE = "meta.safetensors"


def layer_file(layer: int) -> str:
    return f"layer_{int(layer):03d}.safetensors"


def save_activations(result: ExtractionResult, directory: str | os.PathLike, info: dict) -> dict:
    """Write ``result`` atomically into ``directory``; returns the header written."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    header = {
        **{k: v for k, v in info.items()},
        "layers": sorted(result.layers),
        "examples": len(result.offsets) - 1,
        "tokens": int(result.offsets[-1]),
        "stats": result.stats,
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        save_file(
            {"offsets": torch.from_numpy(result.offsets), "input_ids": result.input_ids.contiguous()},
            tmp / META_FILE,
            metadata={"mup": json.dumps(header)},
        )
        for layer, acts in result.layers.items():
            save_file(
                {"activations": acts.values.contiguous()},
                tmp / layer_file(layer),
                metadata={"layer": str(layer), "model": str(info.get("model"))},
            )
        if directory.exists():
            shutil.rmtree(directory)
        os.rename(tmp, directory)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return header


def read_header(meta_path: str | os.PathLike) -> dict:
    with safe_open(str(meta_path), framework="pt") as f:
        return json.loads(f.metadata()["mup"])


def read_offsets(meta_path: str | os.PathLike) -> np.ndarray:
    with safe_open(str(meta_path), framework="pt") as f:
        return f.get_tensor("offsets").numpy()


def read_input_ids(meta_path: str | os.PathLike) -> torch.Tensor:
    with safe_open(str(meta_path), framework="pt") as f:
        return f.get_tensor("input_ids")


def load_layer_files(meta_path: str | os.PathLike, layer_path: str | os.PathLike) -> RaggedActivations:
    offsets = read_offsets(meta_path)
    with safe_open(str(layer_path), framework="pt") as f:
        values = f.get_tensor("activations")
    return RaggedActivations(values, offsets)


def load_layer(directory: str | os.PathLike, layer: int) -> RaggedActivations:
    """Load one layer from a local activation directory (other layers are not read)."""
    directory = Path(directory)
    path = directory / layer_file(layer)
    if not path.exists():
        have = sorted(int(p.name[6:9]) for p in directory.glob("layer_*.safetensors"))
        raise FileNotFoundError(f"{directory}: layer {layer} was not extracted (have layers {have})")
    return load_layer_files(directory / META_FILE, path)
