from mup_core.activations.extract import (
    ExtractionResult,
    activation_cache_key,
    extract_activations,
    length_batches,
    tokenize_inputs,
)
from mup_core.activations.ragged import RaggedActivations
from mup_core.activations.store import (
    META_FILE,
    layer_file,
    load_layer,
    load_layer_files,
    read_header,
    save_activations,
)

__all__ = [
    "META_FILE",
    "ExtractionResult",
    "RaggedActivations",
    "activation_cache_key",
    "extract_activations",
    "layer_file",
    "length_batches",
    "load_layer",
    "load_layer_files",
    "read_header",
    "save_activations",
    "tokenize_inputs",
]
