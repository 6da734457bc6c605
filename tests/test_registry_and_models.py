import pytest
import torch

from mup_core.models import REGISTRY, ModelUnavailableError, all_probe_layers, get_spec, load_model
from mup_core.models.loading import decoder_layers, local_model_dir
from mup_core.models.registry import valid_probe_partitions


def test_registry_has_research_models_with_layer_counts():
    expected = {
        "meta-llama/Llama-3.2-1B-Instruct": 16,
        "meta-llama/Llama-3.1-8B-Instruct": 32,
        "google/gemma-3-12b-it": 48,
        "meta-llama/Llama-3.3-70B-Instruct": 80,
    }
    by_source = {spec.source: spec for spec in REGISTRY.values()}
    for source, layers in expected.items():
        assert by_source[source].num_layers == layers
    assert get_spec("smollm2-135m").num_layers == 30 and get_spec("smollm2-135m").hidden_size == 576
    assert "tiny" in REGISTRY


def test_probe_layers_are_valid_and_spread():
    for spec in REGISTRY.values():
        assert all(0 <= layer < spec.num_layers for layer in spec.default_layers)
    smol = get_spec("smollm2-135m").default_layers
    assert len(smol) >= 4 and min(smol) < 10 and max(smol) > 20
    assert set(all_probe_layers()) == {layer for layer, _ in valid_probe_partitions()}


def test_unknown_model_and_layer_errors_are_clear():
    with pytest.raises(KeyError, match="unknown model 'gpt-5'.*registered models"):
        get_spec("gpt-5")
    with pytest.raises(ValueError, match="layer 4 does not exist in 'tiny'.*0..3"):
        get_spec("tiny").check_layer(4)


def test_hub_model_fails_with_clear_message_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelUnavailableError, match="Llama-3.2-1B-Instruct.*HF_HOME"):
        load_model("llama-3.2-1b", device="cpu", dtype="float32")


def test_tiny_model_is_a_llama_with_the_smollm2_tokenizer(tiny):
    assert type(tiny.model).__name__ == "LlamaForCausalLM"
    assert len(decoder_layers(tiny.model)) == 4
    assert tiny.tokenizer.chat_template and "<|im_start|>" in tiny.tokenizer.chat_template
    ids = tiny.tokenizer("hello world")["input_ids"]
    assert tiny.tokenizer.decode(ids) == "hello world"


@pytest.mark.slow
def test_smollm2_is_dequantised_once_and_reloaded_from_safetensors():
    lm = load_model("smollm2-135m", device="cpu", dtype="float32")
    cache = local_model_dir(lm.spec)
    from pathlib import Path

    assert (Path(cache) / "model.safetensors").exists()
    assert not hasattr(lm.model, "hf_quantizer") or lm.model.hf_quantizer is None
    again = load_model("smollm2-135m", device="cpu", dtype="float32")
    ids = lm.tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        a = lm.model(**ids).logits
        b = again.model(**ids).logits
    assert torch.equal(a, b)
    # a real language model: " Paris" is among the top predictions
    top = a[0, -1].topk(5).indices.tolist()
    assert lm.tokenizer.encode(" Paris")[0] in top


def test_the_readmes_model_table_lists_every_registry_model():
    """The README's "Models" table is the user's view of the partition keys: every slug, with
    its source and layer count, and no model the registry lacks."""
    from pathlib import Path

    from mup_core.models.registry import model_slugs

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("\n## Models\n", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip(" `"): line.split("|") for line in section.splitlines() if line.startswith("| `")}
    assert sorted(rows) == sorted(model_slugs())
    for slug, cells in rows.items():
        spec = get_spec(slug)
        assert cells[3].strip() == str(spec.num_layers), slug
        if spec.kind == "hf":
            assert f"`{spec.source}`" in cells[2], slug
