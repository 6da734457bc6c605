"""Partition definitions, all derived from the model registry in mup_core."""

from __future__ import annotations

import dagster as dg

from mup_core.models.registry import all_probe_layers, model_slugs

model_partitions = dg.StaticPartitionsDefinition(model_slugs())
layer_partitions = dg.StaticPartitionsDefinition([str(layer) for layer in all_probe_layers()])

# Dimension names sort alphabetically in key strings: "layer|model", e.g. "8|smollm2-135m".
model_layer_partitions = dg.MultiPartitionsDefinition({"layer": layer_partitions, "model": model_partitions})

# probes (layer x model) read the activations of their model
by_model = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="model")


def layer_model_key(layer: int, model: str) -> str:
    return dg.MultiPartitionKey({"layer": str(layer), "model": model})
