import numpy as np
import pytest
import torch

from mup_core.activations import (
    RaggedActivations,
    activation_cache_key,
    extract_activations,
    layer_file,
    length_batches,
    load_input_ids,
    load_layer,
    read_manifest,
    write_activations,
)
from mup_core.data import render

TEXTS = [
    "Short one.",
    [{"role": "system", "content": "You are a triage nurse."}, {"role": "user", "content": "My chest hurts and my left arm is numb."}],
    "A somewhat longer prompt about booking a table for four people at an Italian restaurant on Friday evening.",
    "Hallo, wie geht's?",
]


def _reference_hidden(lm, value, layer):
    ids = lm.tokenizer(render(value, lm.tokenizer), add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        out = lm.model(**ids, output_hidden_states=True)
    return out.hidden_states[layer + 1][0]


def test_extraction_matches_unbatched_forward_at_every_layer(tiny):
    result = extract_activations(tiny, TEXTS, [0, 2, 3], batch_tokens=256, storage_dtype=torch.float32, progress=False)
    assert sorted(result.layers) == [0, 2, 3]
    for layer in (0, 2):  # the last layer's hidden_states[-1] is post-norm in HF; ours is the residual stream
        for i, value in enumerate(TEXTS):
            ref = _reference_hidden(tiny, value, layer)
            got = result.layer(layer).example(i)
            assert got.shape == ref.shape
            torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    # the last layer is the input of the final norm: applying the norm gives HF's last hidden state
    ids = tiny.tokenizer(render(TEXTS[2], tiny.tokenizer), add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        last = tiny.model(**ids, output_hidden_states=True).hidden_states[-1][0]
        normed = tiny.model.model.norm(result.layer(3).example(2))
    torch.testing.assert_close(normed, last, atol=1e-4, rtol=1e-4)


def test_results_do_not_depend_on_batching(tiny):
    one = extract_activations(tiny, TEXTS, [1], batch_tokens=10_000, storage_dtype=torch.float32, progress=False)
    many = extract_activations(tiny, TEXTS, [1], batch_tokens=1, storage_dtype=torch.float32, progress=False)
    torch.testing.assert_close(one.layer(1).values, many.layer(1).values, atol=1e-5, rtol=1e-5)
    assert one.stats["batches"] < many.stats["batches"] == len(TEXTS)
    assert many.stats["padding_efficiency"] == 1.0 and one.stats["padding_efficiency"] < 1.0


def test_layout_is_unpadded_with_offsets_and_token_ids(tiny):
    result = extract_activations(tiny, TEXTS, [1], progress=False)
    lengths = [len(tiny.tokenizer(render(t, tiny.tokenizer), add_special_tokens=False)["input_ids"]) for t in TEXTS]
    assert result.offsets.tolist() == np.concatenate([[0], np.cumsum(lengths)]).tolist()
    assert result.layer(1).values.shape == (sum(lengths), tiny.spec.hidden_size)
    assert result.layer(1).values.dtype == torch.bfloat16
    first = result.input_ids[: lengths[0]].tolist()
    assert tiny.tokenizer.decode(first) == render(TEXTS[0], tiny.tokenizer)


def test_length_batches_sort_by_length_and_respect_budget():
    lengths = [5, 100, 7, 98, 6, 99]
    batches = length_batches(lengths, batch_tokens=200, min_fill=0.6)
    assert sorted(i for b in batches for i in b) == list(range(6))
    for batch in batches:
        assert len(batch) * max(lengths[i] for i in batch) <= 200 or len(batch) == 1
    assert set(batches[0]) == {1, 5} and {0, 2, 4} in [set(b) for b in batches]
    # the default fill (0.85) keeps a 5-token example out of a batch padded to 7
    assert [sorted(b) for b in length_batches(lengths, batch_tokens=200)] == [[1, 5], [3], [2, 4], [0]]


def test_bad_layers_and_empty_inputs(tiny):
    with pytest.raises(ValueError, match="layer 9 does not exist in 'tiny'"):
        extract_activations(tiny, TEXTS, [9], progress=False)
    with pytest.raises(ValueError, match="no inputs"):
        extract_activations(tiny, [], [1], progress=False)


def test_stored_set_loads_one_layer_without_reading_others(tiny, store):
    result = extract_activations(tiny, TEXTS, [1, 2, 3], progress=False)
    manifest = write_activations(store, "acts/x", tiny, TEXTS, [1, 2, 3], info={"model": "tiny", "inputs_hash": "abc"},
                                 progress=False)
    assert manifest["layers"] == [1, 2, 3] and manifest["inputs_hash"] == "abc"
    assert read_manifest(store, "acts/x")["tokens"] == int(result.offsets[-1])
    # corrupt the other layers' files: loading layer 2 must not touch them
    for layer in (1, 3):
        store.local_path(f"acts/x/shard_00000/{layer_file(layer)}").write_bytes(b"garbage")
    loaded = load_layer(store, "acts/x", 2)
    assert torch.equal(loaded.values, result.layer(2).values)
    assert loaded.offsets.tolist() == result.offsets.tolist()
    assert torch.equal(load_input_ids(store, "acts/x"), result.input_ids)
    with pytest.raises(KeyError, match=r"layer 0 of tiny was not extracted .*have \[1, 2, 3\]"):
        load_layer(store, "acts/x", 0)
    assert not [p for p in store.root.rglob(".*")]  # no temp file left behind


def test_cache_key_covers_model_text_layers_and_settings():
    base = activation_cache_key("tiny", "h1", [1, 2], 512, "bfloat16", "tmpl")
    assert base == activation_cache_key("tiny", "h1", [2, 1], 512, "bfloat16", "tmpl")
    for other in [
        activation_cache_key("smollm2-135m", "h1", [1, 2], 512, "bfloat16", "tmpl"),
        activation_cache_key("tiny", "h2", [1, 2], 512, "bfloat16", "tmpl"),
        activation_cache_key("tiny", "h1", [1], 512, "bfloat16", "tmpl"),
        activation_cache_key("tiny", "h1", [1, 2], 256, "bfloat16", "tmpl"),
        activation_cache_key("tiny", "h1", [1, 2], 512, "float16", "tmpl"),
        activation_cache_key("tiny", "h1", [1, 2], 512, "bfloat16", "other"),
        activation_cache_key("tiny", "h1", [1, 2], 512, "bfloat16", "tmpl", compute="cpu:float32"),
    ]:
        assert other != base


def test_ragged_helpers():
    values = torch.arange(12, dtype=torch.float32).reshape(6, 2)
    acts = RaggedActivations(values, [0, 1, 4, 6])
    np.testing.assert_allclose(acts.mean_pool(), [[0, 1], [4, 5], [9, 10]])
    x, mask = acts.padded([1, 0])
    assert x.shape == (2, 3, 2) and mask.tolist() == [[True, True, True], [True, False, False]]
    sub = acts.subset([2, 0])
    assert sub.offsets.tolist() == [0, 2, 3] and torch.equal(sub.example(1), values[:1])
    with pytest.raises(ValueError, match="offsets do not match"):
        RaggedActivations(values, [0, 1, 5])


def test_a_question_is_read_beside_the_conversation_and_kept_through_subsets():
    """Prompted probing: mean_pool gives the conversation's mean and the question's mean side
    by side; subset and concat keep each example's question length; bad counts are refused."""
    import numpy as np
    import torch

    from mup_core.activations.ragged import RaggedActivations

    v = torch.randn(10, 3)
    acts = RaggedActivations(v, [0, 4, 10], "m", 1, [1, 2])
    pooled = acts.mean_pool()
    np.testing.assert_allclose(pooled[0], np.concatenate([v[0:3].mean(0), v[3:4].mean(0)]), atol=1e-6)
    np.testing.assert_allclose(pooled[1], np.concatenate([v[4:8].mean(0), v[8:10].mean(0)]), atol=1e-6)
    assert acts.subset([1]).question_tokens.tolist() == [2]
    assert RaggedActivations.concat([acts, acts.subset([0])]).question_tokens.tolist() == [1, 2, 1]
    with pytest.raises(ValueError, match="with and without a question"):
        RaggedActivations.concat([acts, RaggedActivations(v, [0, 10])])
    with pytest.raises(ValueError, match="question_tokens"):
        RaggedActivations(v, [0, 4, 10], question_tokens=[4, 1])  # the whole first example: no conversation left


def test_forward_flops_match_torchs_flop_counter(tiny):
    """The FLOPs the compute floor is measured against (``make bench``, the activations
    asset's share of the floor): the blocks' matmuls as torch's FLOP counter counts them
    (it leaves out the fused attention kernel), plus the norms' weights, plus causal
    attention (half the L x L square) per block."""
    from torch.utils.flop_counter import FlopCounterMode

    from mup_core.activations.extract import forward_flops
    from mup_core.models.loading import base_model, decoder_layers

    cfg = tiny.model.config
    n, blocks = 37, cfg.num_hidden_layers
    kernel = tiny.attention
    tiny.model.set_attn_implementation("sdpa")  # the fused kernel: the counter sees no attention products
    try:
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            base_model(tiny.model)(input_ids=torch.arange(n)[None] + 5, use_cache=False)
    finally:
        tiny.model.set_attn_implementation(kernel)
    norms = sum(p.numel() for b in decoder_layers(tiny.model) for name, p in b.named_parameters() if "norm" in name)
    causal = 2 * cfg.num_attention_heads * cfg.head_dim * n * (n + 1)
    assert forward_flops(tiny.model, [blocks - 1], [n]) == counter.get_total_flops() + 2 * norms * n + blocks * causal
    # fewer layers, fewer blocks; two examples cost their sum
    assert forward_flops(tiny.model, [0], [n, 5]) == forward_flops(tiny.model, [0], [n]) + forward_flops(tiny.model, [0], [5])
    assert forward_flops(tiny.model, [1], [n]) < forward_flops(tiny.model, [2], [n])
