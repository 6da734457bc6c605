"""One forward pass per batch -> the residual stream at every requested layer.

Speed choices (see docs/PERFORMANCE.md): sequences are bucketed by length so that
little compute goes to padding; the LM head is never run (we call the transformer
body); the pass stops right after the deepest requested layer; everything runs
under ``torch.inference_mode()``. Results are stored unpadded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from mup_core.activations.ragged import RaggedActivations
from mup_core.data.chat import render
from mup_core.data.dataset import Input
from mup_core.models.loading import LoadedModel, base_model, decoder_layers

log = logging.getLogger(__name__)

EXTRACTION_VERSION = "1"  # bump when the meaning of stored activations changes


class _StopForward(Exception):
    pass


@dataclass
class ExtractionResult:
    layers: dict[int, RaggedActivations]
    input_ids: torch.Tensor  # (total_tokens,) int32
    offsets: np.ndarray
    stats: dict = field(default_factory=dict)

    def layer(self, layer: int) -> RaggedActivations:
        try:
            return self.layers[layer]
        except KeyError:
            raise KeyError(f"layer {layer} was not extracted (have {sorted(self.layers)})") from None


def activation_cache_key(
    model_slug: str, inputs_hash: str, layers: Sequence[int], max_length: int, storage_dtype: str,
    chat_template: str | None = None,
) -> str:
    """Content key of stored activations: model, input text, layers and settings."""
    payload = json.dumps(
        {
            "v": EXTRACTION_VERSION,
            "model": model_slug,
            "inputs": inputs_hash,
            "layers": sorted(int(x) for x in layers),
            "max_length": max_length,
            "dtype": storage_dtype,
            "template": hashlib.sha256((chat_template or "").encode()).hexdigest(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def tokenize_inputs(lm: LoadedModel, inputs: Sequence[Input], max_length: int | None = None) -> tuple[list[list[int]], int]:
    """Render through the chat template and tokenize; returns ids and how many were truncated."""
    max_length = max_length or lm.spec.max_length
    texts = [render(x, lm.tokenizer) for x in inputs]
    enc = lm.tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"]
    truncated = sum(1 for ids in enc if len(ids) > max_length)
    return [ids[:max_length] for ids in enc], truncated


def pad_right(token_ids: Sequence[Sequence[int]], pad_id: int):
    """Right-padded ``input_ids`` and ``attention_mask`` tensors for one batch."""
    import torch

    width = max(len(t) for t in token_ids)
    ids = torch.full((len(token_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(token_ids), width), dtype=torch.long)
    for row, t in enumerate(token_ids):
        ids[row, : len(t)] = torch.tensor(list(t), dtype=torch.long)
        mask[row, : len(t)] = 1
    return ids, mask


def length_batches(
    lengths: Sequence[int], batch_tokens: int, max_batch_size: int = 64, min_fill: float = 0.6
) -> list[list[int]]:
    """Indices grouped longest-first so each padded batch holds at most ``batch_tokens``.

    A sequence shorter than ``min_fill`` x the batch's longest starts a new batch, so
    no example is padded to much more than its own length.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        full = (len(current) + 1) * longest > batch_tokens or len(current) >= max_batch_size
        if current and (full or lengths[i] < min_fill * longest):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def extract_activations(
    lm: LoadedModel,
    inputs: Sequence[Input],
    layers: Sequence[int],
    *,
    batch_tokens: int = 4096,
    max_length: int | None = None,
    storage_dtype: torch.dtype = torch.bfloat16,
    progress: bool = True,
    on_batch: Callable[[int, int], None] | None = None,
) -> ExtractionResult:
    """Run the model over ``inputs`` and keep the residual stream at ``layers``.

    One forward pass per batch serves every requested layer. ``on_batch(done, total)``
    is called after each batch (the Dagster asset logs progress through it).
    """
    layers = sorted({int(x) for x in layers})
    if not layers:
        raise ValueError("extract_activations needs at least one layer")
    for layer in layers:
        lm.spec.check_layer(layer)
    if not inputs:
        raise ValueError("extract_activations got no inputs")
    token_ids, truncated = tokenize_inputs(lm, inputs, max_length)
    lengths = [len(ids) for ids in token_ids]
    if min(lengths) == 0:
        raise ValueError("an input rendered to zero tokens")
    batches = length_batches(lengths, batch_tokens)

    blocks = decoder_layers(lm.model)
    body = base_model(lm.model)
    deepest = layers[-1]
    per_layer: dict[int, list[torch.Tensor | None]] = {k: [None] * len(inputs) for k in layers}
    current: dict = {}

    def make_hook(k: int):
        def hook(_module, _args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            hidden = hidden.detach().to("cpu", storage_dtype)
            for row, i in enumerate(current["indices"]):
                per_layer[k][i] = hidden[row, : lengths[i]].clone()
            if k == deepest:
                raise _StopForward

        return hook

    handles = [blocks[k].register_forward_hook(make_hook(k)) for k in layers]
    pad_id = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    computed = 0
    start = time.perf_counter()
    bar = tqdm(total=sum(lengths), unit="tok", desc=f"activations {lm.slug}", disable=not progress)
    try:
        with torch.inference_mode():
            for b, batch in enumerate(batches):
                ids, mask = pad_right([token_ids[i] for i in batch], pad_id)
                width = ids.shape[1]
                current["indices"] = batch
                try:
                    body(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device), use_cache=False)
                except _StopForward:
                    pass
                computed += len(batch) * width
                bar.update(sum(lengths[i] for i in batch))
                if on_batch:
                    on_batch(b + 1, len(batches))
    finally:
        for h in handles:
            h.remove()
        bar.close()
    seconds = time.perf_counter() - start
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    result_layers = {k: RaggedActivations(torch.cat(per_layer[k]), offsets) for k in layers}
    input_ids = torch.tensor([t for ids in token_ids for t in ids], dtype=torch.int32)
    useful = int(sum(lengths))
    stats = {
        "examples": len(inputs),
        "tokens": useful,
        "computed_tokens": int(computed),
        "padding_efficiency": useful / computed,
        "batches": len(batches),
        "truncated_examples": truncated,
        "seconds": seconds,
        "tokens_per_second": useful / seconds if seconds > 0 else float("inf"),
        "layers": layers,
    }
    return ExtractionResult(layers=result_layers, input_ids=input_ids, offsets=offsets, stats=stats)
