"""Causal self-attention for CPU prefill of up to 512 tokens, faster than PyTorch's SDPA kernel there.

On CPUs with native bf16 the matrix products of a small model run near the machine's
peak, but ``scaled_dot_product_attention``'s CPU flash kernel does not: at head size 64 it
reaches 30-120 GFLOP/s against 400+ for the projections. ``chunked_causal`` computes causal
attention in query chunks of ``CHUNK`` rows against the keys up to the chunk's end (the
upper triangle is skipped a chunk at a time), the grouped query heads of one key-value
head in one product, the scores and softmax in float32 (as SDPA's kernel keeps them;
rounded to bf16, as Hugging Face's eager attention does, a large logit would lose up to
1/16 before the softmax) and the probabilities times the values in the compute dtype.
``make bench`` (benchmarks/bench_attention.py) on a 2-core AMD EPYC with AVX-512-BF16: 1.4-1.8x
SDPA in bf16 and 1.0-1.45x in float32 (AVX-512 or AVX2 kernels alike) from 32 to 512 tokens, at SDPA's
error; from 1,024 tokens on SDPA is faster, so longer sequences go to it (``MAX_LEN``).

``ATTENTION`` is registered with transformers' ``AttentionInterface`` (and SDPA's mask
builder), and ``load_model`` sets it on CPU models. It takes the fast path only where it
computes exactly causal attention: inference (no autograd), no attention mask (the
extraction path: right-padded, causal), as many queries as keys (at most ``MAX_LEN``), bf16
or float32, no dropout, no sliding window or soft-capping; everything else (training,
generation with a cache, masked batches, long sequences) goes to transformers' SDPA
function unchanged.
"""

from __future__ import annotations

from functools import lru_cache

import torch

ATTENTION = "mup_sdpa"
CHUNK = 32  # query rows per product: the best of 16/32/64/128 measured (docs/PERFORMANCE.md)
MAX_LEN = 512  # longer sequences go to SDPA, which is as fast or faster there (benchmarks/bench_attention.py)
DTYPES = (torch.bfloat16, torch.float32)
_UNSUPPORTED = ("softcap", "sliding_window", "s_aux", "position_bias")


@lru_cache(maxsize=CHUNK)
def _upper_mask(n: int) -> torch.Tensor:
    return torch.full((n, n), float("-inf")).triu(1)


def chunked_causal(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float | None = None,
                   chunk: int = CHUNK) -> torch.Tensor:
    """Causal attention of ``query`` (batch, heads, L, d) over ``key``/``value`` (batch,
    kv_heads, L, d), grouped-query heads allowed; returns (batch, heads, L, d)."""
    b, h, n, d = query.shape
    kv = key.shape[1]
    if h % kv or key.shape[2] != n:
        raise ValueError(f"chunked_causal needs heads divisible by kv heads and as many keys as queries, "
                         f"got query {tuple(query.shape)} and key {tuple(key.shape)}")
    g = h // kv
    scale = scaling if scaling is not None else d**-0.5
    q = query.reshape(b, kv, g, n, d)
    keys = key.float()
    out = torch.empty_like(q)
    for a in range(0, n, chunk):
        e = min(a + chunk, n)
        m = e - a
        # scores in float32 (as SDPA's kernel keeps them): rounded to bf16 they would lose
        # up to 1/16 of a large logit before the softmax
        scores = torch.matmul(q[:, :, :, a:e].reshape(b, kv, g * m, d).float(), keys[:, :, :e].transpose(-1, -2))
        scores = scores.mul_(scale).view(b, kv, g, m, e)
        scores[..., a:e].add_(_upper_mask(m))
        probs = torch.softmax(scores, dim=-1).to(value.dtype)
        out[:, :, :, a:e] = torch.matmul(probs.view(b, kv, g * m, e), value[:, :, :e]).view(b, kv, g, m, d)
    return out.view(b, h, n, d)


def fast_path(module, query, key, attention_mask, dropout: float, is_causal, kwargs) -> bool:
    """Whether ``chunked_causal`` computes what SDPA would for this call."""
    return (
        attention_mask is None
        and query.device.type == "cpu"
        and query.dtype in DTYPES
        and not torch.is_grad_enabled()
        and not dropout
        and is_causal is not False
        and getattr(module, "is_causal", True)
        and 1 < query.shape[2] == key.shape[2] <= MAX_LEN
        and all(kwargs.get(k) is None for k in _UNSUPPORTED)
    )


def attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                      is_causal: bool | None = None, **kwargs):
    """transformers' attention-function signature: returns ((batch, L, heads, d), None)."""
    if fast_path(module, query, key, attention_mask, dropout, is_causal, kwargs):
        return chunked_causal(query, key, value, scaling).transpose(1, 2).contiguous(), None
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  is_causal=is_causal, **kwargs)


@lru_cache(maxsize=None)
def register() -> str:
    """Register ``ATTENTION`` with transformers (once per process); returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, attention_forward)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)
    return ATTENTION


def use_fast_attention(model) -> None:
    """Set ``ATTENTION`` on a CPU model whose attention is SDPA (others, and models that do
    not take a custom implementation, keep theirs)."""
    if getattr(model.config, "_attn_implementation", None) == "sdpa" and model._can_set_attn_implementation():
        model.set_attn_implementation(register())
