from mup_core.activations.extract import (
    ExtractionResult,
    activation_cache_key,
    extract_activations,
    iter_shards,
    length_batches,
    plan_shards,
    tokenize_flat,
    tokenize_inputs,
    OverlongInputs,
    OVERLONG_POLICIES,
)
from mup_core.activations.ragged import RaggedActivations
from mup_core.activations.store import (
    MANIFEST,
    activations_complete,
    layer_file,
    load_input_ids,
    load_layer,
    read_manifest,
    write_activations,
)

__all__ = [
    "MANIFEST",
    "ExtractionResult",
    "RaggedActivations",
    "activation_cache_key",
    "activations_complete",
    "extract_activations",
    "iter_shards",
    "layer_file",
    "length_batches",
    "load_input_ids",
    "load_layer",
    "plan_shards",
    "read_manifest",
    "tokenize_flat",
    "tokenize_inputs",
    "OverlongInputs",
    "OVERLONG_POLICIES",
    "write_activations",
]
