from mup_core.models.loading import (
    LoadedModel,
    ModelUnavailableError,
    load_model,
    load_model_cached,
    load_tokenizer,
)
from mup_core.models.registry import (
    DEFAULT_MODEL,
    REGISTRY,
    ModelSpec,
    all_probe_layers,
    get_spec,
    model_slugs,
    valid_probe_partitions,
)

__all__ = [
    "DEFAULT_MODEL",
    "REGISTRY",
    "LoadedModel",
    "ModelSpec",
    "ModelUnavailableError",
    "all_probe_layers",
    "get_spec",
    "load_model",
    "load_model_cached",
    "load_tokenizer",
    "model_slugs",
    "valid_probe_partitions",
]
