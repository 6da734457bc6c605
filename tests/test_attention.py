"""The CPU bf16 causal attention (mup_core.models.attention) against PyTorch's SDPA."""

import pytest
import torch
import torch.nn.functional as F

import mup_core.models.attention as attention
from mup_core.activations import extract_activations
from mup_core.models import load_model

TEXTS = [
    "Short one.",
    [{"role": "system", "content": "You are a triage nurse."}, {"role": "user", "content": "My chest hurts and my left arm is numb."}],
    "A somewhat longer prompt about booking a table for four people at an Italian restaurant on Friday evening.",
]


def _qkv(batch, heads, kv_heads, n, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = lambda h: (batch, h, n, 64)  # noqa: E731
    return [torch.randn(shape(h), generator=g).to(dtype) * 2 for h in (heads, kv_heads, kv_heads)]


@pytest.mark.parametrize("batch, heads, kv_heads, n, chunk", [
    (2, 9, 3, 300, 128),  # SmolLM2's 9 query heads over 3 key-value heads; the last chunk is partial
    (3, 4, 4, 37, 128),  # no grouping, a single chunk
    (1, 4, 2, 65, 7),  # many small chunks
    (4, 6, 2, 2, 128),
])
def test_equals_sdpa_in_float32(batch, heads, kv_heads, n, chunk):
    q, k, v = _qkv(batch, heads, kv_heads, n, torch.float32)
    want = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    got = attention.chunked_causal(q, k, v, chunk=chunk)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=2e-5)
    scaled = attention.chunked_causal(q, k, v, scaling=0.3, chunk=chunk)
    torch.testing.assert_close(scaled, F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True, scale=0.3),
                               atol=2e-5, rtol=2e-5)


def test_bf16_error_is_that_of_bf16_attention():
    """In bf16 the scores are rounded before the softmax (as in Hugging Face's eager
    attention): within a small factor of SDPA's own bf16 error against float32."""
    q, k, v = _qkv(2, 9, 3, 300, torch.bfloat16)
    exact = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True, enable_gqa=True)
    ours = (attention.chunked_causal(q, k, v).float() - exact).abs()
    sdpa = (F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True).float() - exact).abs()
    assert ours.mean() < 1.5 * sdpa.mean() and ours.max() < 2 * sdpa.max(), (ours.mean(), sdpa.mean(), ours.max())


def test_refuses_shapes_it_cannot_compute():
    q, k, v = _qkv(1, 9, 3, 10, torch.float32)
    with pytest.raises(ValueError, match="heads divisible"):
        attention.chunked_causal(q, k[:, :, :5], v[:, :, :5])
    with pytest.raises(ValueError, match="heads divisible"):
        attention.chunked_causal(q[:, :8], k, v)


@pytest.fixture
def counted(monkeypatch):
    calls = []
    real = attention.chunked_causal

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(attention, "chunked_causal", spy)
    return calls


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_a_cpu_model_extracts_through_it_and_falls_back_to_sdpa_elsewhere(counted, dtype):
    lm = load_model("tiny", device="cpu", dtype=dtype)
    assert lm.attention == attention.ATTENTION and lm.compute == f"cpu:{dtype}:mup_sdpa"
    fast = extract_activations(lm, TEXTS, [1, 3], storage_dtype=torch.float32, progress=False)
    assert len(counted) == 4 * fast.stats["batches"]  # every block of every batch took the fast path

    lm.model.set_attn_implementation("sdpa")
    slow = extract_activations(lm, TEXTS, [1, 3], storage_dtype=torch.float32, progress=False)
    assert len(counted) == 4 * fast.stats["batches"]
    for layer in (1, 3):  # the same activations up to rounding
        a, b = fast.layer(layer).values, slow.layer(layer).values
        if dtype == "float32":
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        assert F.cosine_similarity(a, b, dim=-1).min() > 0.99
        assert ((a - b).norm(dim=-1) / b.norm(dim=-1)).median() < 0.02

    lm.model.set_attn_implementation(attention.ATTENTION)
    ids = lm.tokenizer(["a padded batch", "of two"], return_tensors="pt", padding=True)
    with torch.inference_mode():
        lm.model(**ids)  # an attention mask: SDPA
        lm.model(input_ids=ids["input_ids"][:, :1])  # one query: SDPA
        lm.model(input_ids=torch.ones(1, attention.MAX_LEN + 1, dtype=torch.long))  # long: SDPA
    with torch.enable_grad():
        lm.model(input_ids=ids["input_ids"])  # autograd (training): SDPA
    assert len(counted) == 4 * fast.stats["batches"]
    with torch.inference_mode():
        lm.model(input_ids=ids["input_ids"])
    assert len(counted) == 4 * fast.stats["batches"] + 4


def test_gpu_models_keep_sdpa():
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    lm = load_model("tiny", device="cuda")
    assert lm.attention == "sdpa" and lm.compute.startswith("cuda:") and lm.compute.count(":") == 1
