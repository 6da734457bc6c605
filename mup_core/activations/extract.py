"""One forward pass per batch -> the residual stream at every requested layer.

Speed choices (see docs/PERFORMANCE.md): sequences are bucketed by length so that
little compute goes to padding; the LM head is never run (we call the transformer
body); the pass stops right after the deepest requested layer; batches are
right-padded and run without an attention mask (causal attention already keeps real
tokens from seeing the padding after them, and the causal kernel skips the upper
triangle); everything runs under ``torch.inference_mode()``; each layer's hook does one
gather of the batch's real tokens and one scatter into the shard's buffer. Results are
unpadded.

Memory: the inputs are split into *shards*, contiguous runs of examples of at most
``shard_tokens`` tokens; a shard's buffers are the only activations held at once, so
``iter_shards`` runs in memory that does not grow with the dataset (the streaming
writer in ``mup_core.activations.store`` writes each shard as it is finished).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from mup_core.activations.ragged import RaggedActivations
from mup_core.defaults import DEFAULT_BATCH_TOKENS
from mup_core.data.chat import render
from mup_core.data.dataset import Input
from mup_core.models.loading import LoadedModel, base_model, decoder_layers

log = logging.getLogger(__name__)

EXTRACTION_VERSION = "2"  # bump when the meaning or layout of stored activations changes


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
    chat_template: str | None = None, compute: str = "", overlong: str = "truncate", question: str | None = None,
) -> str:
    """Content key of stored activations: model, input text, layers and settings, and the
    compute device type and dtype (``cpu:float32``), so that sets computed in another dtype
    are neither reused nor mixed with by a resumed run."""
    payload = json.dumps(
        {
            "v": EXTRACTION_VERSION,
            "model": model_slug,
            "inputs": inputs_hash,
            "layers": sorted(int(x) for x in layers),
            "max_length": max_length,
            "dtype": storage_dtype,
            "template": hashlib.sha256((chat_template or "").encode()).hexdigest(),
            "compute": compute,
            # only keep_end stores something else ("refuse" stores what "truncate" does, or fails);
            # absent otherwise, so the keys of existing sets stay valid
            **({"overlong": overlong} if overlong == "keep_end" else {}),
            **({"question": question} if question else {}),  # absent without one: existing keys stay valid
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


OVERLONG_POLICIES = ("truncate", "keep_end", "refuse")


class OverlongInputs(ValueError):
    """Inputs longer than the model's maximum length under ``overlong="refuse"``."""

    def __init__(self, positions: list[int], lengths: list[int], max_length: int, message: str | None = None):
        self.positions, self.lengths, self.max_length = positions, lengths, max_length
        shown = ", ".join(f"#{p} ({n} tokens)" for p, n in list(zip(positions, lengths))[:5])
        super().__init__(message or (
            f"{len(positions)} inputs are longer than the model's {max_length} tokens: {shown}"
            f"{' ...' if len(positions) > 5 else ''}; shorten them, or set overlong to 'truncate' "
            "(keep the start) or 'keep_end' (keep the end)"
        ))


def tokenize_inputs(
    lm: LoadedModel, inputs: Sequence[Input], max_length: int | None = None, overlong: str = "truncate"
) -> tuple[list[list[int]], int]:
    """Render through the chat template and tokenize; returns ids and how many were cut.

    ``overlong`` says what happens to an input longer than ``max_length`` tokens:
    ``truncate`` keeps its first tokens (as the research does), ``keep_end`` its last
    ones (the latest turns of a long conversation), ``refuse`` raises ``OverlongInputs``.
    """
    if overlong not in OVERLONG_POLICIES:
        raise ValueError(f"overlong must be one of {', '.join(OVERLONG_POLICIES)}, got {overlong!r}")
    max_length = max_length or lm.spec.max_length
    texts = [render(x, lm.tokenizer) for x in inputs]
    enc = lm.tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"]
    long = [i for i, ids in enumerate(enc) if len(ids) > max_length]
    if long and overlong == "refuse":
        raise OverlongInputs(long, [len(enc[i]) for i in long], max_length)
    if overlong == "keep_end":
        return [ids[-max_length:] for ids in enc], len(long)
    return [ids[:max_length] for ids in enc], len(long)


def question_token_counts(lm: LoadedModel, inputs: Sequence[Input], question: str) -> list[int]:
    """How many tokens ``question`` adds after each input (its user turn, as rendered)."""
    from mup_core.data.chat import with_question

    plain, _ = tokenize_inputs(lm, inputs, max_length=2**62)
    asked, _ = tokenize_inputs(lm, [with_question(x, question) for x in inputs], max_length=2**62)
    return [len(b) - len(a) for a, b in zip(plain, asked)]


def pad_right(token_ids: Sequence[Sequence[int]], pad_id: int):
    """Right-padded ``input_ids`` and ``attention_mask`` tensors for one batch."""
    import torch

    width = max(len(t) for t in token_ids)
    ids = torch.full((len(token_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(token_ids), width), dtype=torch.long)
    for row, t in enumerate(token_ids):
        ids[row, : len(t)] = torch.as_tensor(t, dtype=torch.long)
        mask[row, : len(t)] = 1
    return ids, mask


def length_batches(
    lengths: Sequence[int], batch_tokens: int, max_batch_size: int = 64, min_fill: float = 0.85
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


@dataclass
class TokenizedInputs:
    """Every input's token ids in one flat int32 array (4 bytes a token)."""

    ids: np.ndarray  # (total_tokens,) int32
    offsets: np.ndarray  # (n + 1,) int64
    truncated: int

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def example(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i + 1]]


def tokenize_flat(
    lm: LoadedModel, inputs: Sequence[Input], max_length: int | None = None, chunk: int = 512, overlong: str = "truncate"
) -> TokenizedInputs:
    """``tokenize_inputs`` in chunks, kept as one flat array (no per-token Python objects)."""
    parts, lengths, truncated = [], [], 0
    for start in range(0, len(inputs), chunk):
        try:
            ids, cut = tokenize_inputs(lm, inputs[start : start + chunk], max_length, overlong)
        except OverlongInputs as exc:  # positions in the whole input list
            raise OverlongInputs([start + p for p in exc.positions], exc.lengths, exc.max_length) from None
        truncated += cut
        lengths.extend(len(t) for t in ids)
        parts.extend(np.asarray(t, dtype=np.int32) for t in ids)
    flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return TokenizedInputs(flat, offsets, truncated)


def plan_shards(lengths: Sequence[int], shard_tokens: int) -> list[tuple[int, int]]:
    """Contiguous example ranges ``[start, stop)`` of at most ``shard_tokens`` tokens each
    (an example longer than that is a shard of its own). Deterministic, so a re-run
    plans the same shards and can reuse the finished ones."""
    if shard_tokens < 1:
        raise ValueError(f"shard_tokens must be >= 1, got {shard_tokens}")
    plan: list[tuple[int, int]] = []
    start, tokens = 0, 0
    for i, n in enumerate(lengths):
        if i > start and tokens + n > shard_tokens:
            plan.append((start, i))
            start, tokens = i, 0
        tokens += int(n)
    if len(lengths) > start:
        plan.append((start, len(lengths)))
    return plan


@dataclass
class Shard:
    """The activations of examples ``start:stop`` (offsets local to the shard)."""

    index: int
    start: int
    stop: int
    layers: dict[int, RaggedActivations]
    input_ids: torch.Tensor  # (tokens,) int32
    stats: dict


def _check_request(lm: LoadedModel, inputs: Sequence[Input], layers: Sequence[int]) -> list[int]:
    layers = sorted({int(x) for x in layers})
    if not layers:
        raise ValueError("extract_activations needs at least one layer")
    for layer in layers:
        lm.spec.check_layer(layer)
    if not inputs:
        raise ValueError("extract_activations got no inputs")
    return layers


def iter_shards(
    lm: LoadedModel,
    tokens: TokenizedInputs,
    layers: Sequence[int],
    plan: Sequence[tuple[int, int]],
    *,
    skip: set[int] = frozenset(),
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    storage_dtype: torch.dtype = torch.bfloat16,
    progress: bool = True,
    on_batch: Callable[[int, int], None] | None = None,
) -> Iterator[Shard]:
    """Compute the shards of ``plan`` (except those in ``skip``) one at a time.

    ``on_batch(done, total)`` is called after each forward pass, counting the batches
    of every shard that is computed.
    """
    layers = sorted(int(x) for x in layers)
    lengths = tokens.lengths
    if len(lengths) and lengths.min() == 0:
        raise ValueError(f"input {int(np.argmin(lengths))} rendered to zero tokens")
    todo = [(i, a, b) for i, (a, b) in enumerate(plan) if i not in skip]
    batches_of = {i: length_batches(lengths[a:b].tolist(), batch_tokens) for i, a, b in todo}
    total_batches = sum(len(v) for v in batches_of.values())
    blocks = decoder_layers(lm.model)
    body = base_model(lm.model)
    deepest = layers[-1]
    pad_id = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    tap: dict = {}

    def make_hook(k: int):
        def hook(_module, _args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            real = hidden[tap["mask"]]  # the batch's real tokens, row by row: one gather
            tap["buffers"][k].index_copy_(0, tap["dest"], real.to("cpu", storage_dtype))
            if k == deepest:
                raise _StopForward

        return hook

    handles = [blocks[k].register_forward_hook(make_hook(k)) for k in layers]
    bar = tqdm(total=int(sum(lengths[a:b].sum() for _, a, b in todo)), unit="tok", desc=f"activations {lm.slug}",
               disable=not progress)
    done_batches = 0
    try:
        for index, a, b in todo:
            local = np.concatenate([[0], np.cumsum(lengths[a:b])]).astype(np.int64)
            n_tokens = int(local[-1])
            tap["buffers"] = {k: torch.empty(n_tokens, lm.spec.hidden_size, dtype=storage_dtype) for k in layers}
            computed, start = 0, time.perf_counter()
            with torch.inference_mode():
                for batch in batches_of[index]:
                    ids, mask = pad_right([tokens.example(a + j) for j in batch], pad_id)
                    tap["mask"] = mask.to(lm.device, torch.bool)
                    tap["dest"] = torch.from_numpy(np.concatenate([np.arange(local[j], local[j + 1]) for j in batch]))
                    try:
                        # No attention mask: with right padding and causal attention a real
                        # token never sees a later (padded) position, so its hidden states
                        # are those of the padded run; without a mask SDPA takes its causal
                        # kernel, which skips the upper triangle (tested in test_activations).
                        body(input_ids=ids.to(lm.device), use_cache=False)
                    except _StopForward:
                        pass
                    computed += ids.shape[0] * ids.shape[1]
                    bar.update(int(mask.sum()))
                    done_batches += 1
                    if on_batch:
                        on_batch(done_batches, total_batches)
            seconds = time.perf_counter() - start
            stats = {"examples": b - a, "tokens": n_tokens, "computed_tokens": int(computed),
                     "batches": len(batches_of[index]), "seconds": seconds,
                     "flops": forward_flops(lm.model, layers, lengths[a:b])}
            shard = Shard(index, a, b, {k: RaggedActivations(v, local, lm.slug, k) for k, v in tap.pop("buffers").items()},
                          torch.from_numpy(tokens.ids[tokens.offsets[a] : tokens.offsets[b]].copy()), stats)
            yield shard
            del shard  # before the next shard's buffers exist: one shard in memory at a time
    finally:
        for h in handles:
            h.remove()
        bar.close()


def forward_flops(model, layers: Sequence[int], lengths: Sequence[int]) -> float:
    """Forward FLOPs of extracting ``layers`` from examples of ``lengths`` tokens: the
    decoder blocks up to the deepest layer, 2 per parameter per token, plus causal
    attention (``2 * d_attn * L * (L + 1)`` per example and block). What the compute floor
    of a machine is measured against (``make bench``, the ``activations`` asset)."""
    blocks = list(decoder_layers(model))[: max(layers) + 1]
    params = sum(p.numel() for b in blocks for p in b.parameters())
    cfg = model.config
    d_attn = cfg.num_attention_heads * (getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
    n = np.asarray(lengths, dtype=np.float64)
    return float(2.0 * params * n.sum() + 2.0 * d_attn * (n * (n + 1)).sum() * len(blocks))


def summarise(shard_stats: Sequence[dict], truncated: int, layers: Sequence[int]) -> dict:
    """Totals over the computed shards: tokens/s, padding efficiency, batches, forward FLOPs."""
    tokens = sum(s["tokens"] for s in shard_stats)
    computed = sum(s["computed_tokens"] for s in shard_stats)
    seconds = sum(s["seconds"] for s in shard_stats)
    return {
        "flops": sum(s.get("flops", 0.0) for s in shard_stats),
        "examples": sum(s["examples"] for s in shard_stats),
        "tokens": tokens,
        "computed_tokens": computed,
        "padding_efficiency": tokens / computed if computed else 1.0,
        "batches": sum(s["batches"] for s in shard_stats),
        "truncated_examples": truncated,
        "seconds": seconds,
        "tokens_per_second": tokens / seconds if seconds > 0 else 0.0,
        "layers": list(layers),
    }


def extract_activations(
    lm: LoadedModel,
    inputs: Sequence[Input],
    layers: Sequence[int],
    *,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    max_length: int | None = None,
    storage_dtype: torch.dtype = torch.bfloat16,
    progress: bool = True,
    on_batch: Callable[[int, int], None] | None = None,
) -> ExtractionResult:
    """Run the model over ``inputs`` and keep the residual stream at ``layers``, in memory.

    One forward pass per batch serves every requested layer. For data sets that do not
    fit in memory use ``mup_core.activations.store.write_activations``, which streams
    shards to the artifact store.
    """
    layers = _check_request(lm, inputs, layers)
    tokens = tokenize_flat(lm, inputs, max_length)
    plan = [(0, len(inputs))]
    (shard,) = iter_shards(lm, tokens, layers, plan, batch_tokens=batch_tokens, storage_dtype=storage_dtype,
                           progress=progress, on_batch=on_batch)
    stats = summarise([shard.stats], tokens.truncated, layers)
    return ExtractionResult(layers=shard.layers, input_ids=shard.input_ids, offsets=tokens.offsets, stats=stats)


def tokenizer_only(slug: str):
    """What ``tokenize_inputs`` reads of a loaded model (tokenizer and spec), without its
    weights: token counts and token strings of a registry model for free."""
    from types import SimpleNamespace

    from mup_core.models.loading import load_tokenizer
    from mup_core.models.registry import get_spec

    return SimpleNamespace(tokenizer=load_tokenizer(slug), spec=get_spec(slug))


def token_strings(slug: str, value) -> list[str]:
    """The tokens ``slug`` reads for one input (chat template, truncation), as text."""
    lm = tokenizer_only(slug)
    ids, _ = tokenize_inputs(lm, [value])
    return [lm.tokenizer.decode([i]) for i in ids[0]]
