"""Partition definitions, all derived from the model registry in mup_core."""

from __future__ import annotations

import dagster as dg

from mup_core.models.registry import all_probe_layers, model_slugs

model_partitions = dg.StaticPartitionsDefinition(model_slugs())
layer_partitions = dg.StaticPartitionsDefinition([str(layer) for layer in all_probe_layers()])


def partition_key_hint(key: str) -> str:
    """Why ``key`` is not a LAYER|MODEL partition, and the keys that are meant."""
    from mup_core.models.registry import get_spec

    parts = key.split("|")
    layers_of = {slug: list(get_spec(slug).default_layers) for slug in model_slugs()}
    if len(parts) == 2 and parts[0] in layers_of and parts[1] not in layers_of:
        parts = [parts[1], parts[0]]
        guess = f"; did you mean `{parts[0]}|{parts[1]}` (layer first)?"
    else:
        guess = ""
    model = parts[1] if len(parts) == 2 else None
    if model in layers_of:
        detail = f"{model}'s probe layers are {layers_of[model]}, e.g. `{layers_of[model][0]}|{model}`"
    else:
        detail = f"models: {', '.join(layers_of)}"
    return (
        f"`{key}` is not a partition of the probe assets: their keys are LAYER|MODEL, e.g. "
        f"`{layers_of['smollm2-135m'][0]}|smollm2-135m`{guess} {detail}"
    )


class LayerModelPartitions(dg.MultiPartitionsDefinition):
    """(layer, model) pairs; an unknown key fails with what the keys look like and which
    layers the model has, where Dagster alone says only "could not find a partition"."""

    def validate_partition_key(self, partition_key, context=None):
        from dagster._core.errors import DagsterInvalidSubsetError, DagsterUnknownPartitionError

        try:
            return super().validate_partition_key(partition_key, context)
        except DagsterUnknownPartitionError:
            # not an unknown-partition error: the CLI swaps that for a message without the hint
            raise DagsterInvalidSubsetError(partition_key_hint(str(partition_key))) from None


# Dimension names sort alphabetically in key strings: "layer|model", e.g. "8|smollm2-135m".
model_layer_partitions = LayerModelPartitions({"layer": layer_partitions, "model": model_partitions})

# probes (layer x model) read the activations of their model
by_model = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="model")


def layer_model_key(layer: int, model: str) -> str:
    return dg.MultiPartitionKey({"layer": str(layer), "model": model})
