"""Partition definitions, all derived from the model registry in mup_core."""

from __future__ import annotations

import difflib

import dagster as dg

from mup_core.models.registry import get_spec, model_slugs

# each model's probe layers: the registry's, the only (layer, model) pairs there are
LAYERS_OF = {slug: list(get_spec(slug).default_layers) for slug in model_slugs()}


def _unknown(partition_key, hint) -> None:
    """Raise the error for an unknown key that the CLI shows with ``hint``'s message."""
    from dagster._core.errors import DagsterInvalidSubsetError

    # not an unknown-partition error: the CLI swaps that for a message without the hint
    raise DagsterInvalidSubsetError(hint(str(partition_key))) from None


def model_key_hint(key: str) -> str:
    """Why ``key`` is not a model partition, and the models there are."""
    close = difflib.get_close_matches(key, list(LAYERS_OF), n=1, cutoff=0.5)
    if "|" in key:
        guess = "; a LAYER|MODEL key is for the probe assets, this asset is partitioned by model alone"
    else:
        guess = f"; did you mean `{close[0]}`?" if close else ""
    return f"`{key}` is not a model partition{guess} (models: {', '.join(LAYERS_OF)})"


class ModelPartitions(dg.StaticPartitionsDefinition):
    """One partition per registry model; an unknown key fails with the models there are."""

    def validate_partition_key(self, partition_key, context=None):
        from dagster._core.errors import DagsterUnknownPartitionError

        try:
            return super().validate_partition_key(partition_key, context)
        except DagsterUnknownPartitionError:
            _unknown(partition_key, model_key_hint)


model_partitions = ModelPartitions(model_slugs())


def layer_model_key(layer: int, model: str) -> str:
    """The probe partition of ``model`` at ``layer``: ``LAYER|MODEL``, e.g. ``8|smollm2-135m``."""
    return f"{layer}|{model}"


def layer_and_model(key: str) -> tuple[int, str]:
    """``(layer, model)`` of a probe partition key."""
    layer, model = str(key).split("|", 1)
    return int(layer), model


def partition_key_hint(key: str) -> str:
    """Why ``key`` is not a LAYER|MODEL partition, and the keys that are meant."""
    parts = key.split("|")
    if len(parts) == 2 and parts[0] in LAYERS_OF and parts[1] not in LAYERS_OF:
        parts = [parts[1], parts[0]]
        guess = f"; did you mean `{parts[0]}|{parts[1]}` (layer first)?"
    else:
        guess = ""
    model = parts[1] if len(parts) == 2 else None
    if model in LAYERS_OF:
        detail = f"{model}'s probe layers are {LAYERS_OF[model]}, e.g. `{LAYERS_OF[model][0]}|{model}`"
    else:
        detail = f"models: {', '.join(LAYERS_OF)}"
    example = next(iter(_pairs_of_model.values()))[0]
    return (
        f"`{key}` is not a partition of the probe assets: their keys are LAYER|MODEL, e.g. "
        f"`{example}`{guess or ';'} {detail}"
    )


class LayerModelPartitions(dg.StaticPartitionsDefinition):
    """The (layer, model) pairs that exist: each model at its own probe layers, so the UI
    offers no layer a model does not have. An unknown key fails with what the keys look
    like and which layers the model has, where Dagster alone says only "could not find a
    partition"."""

    def validate_partition_key(self, partition_key, context=None):
        from dagster._core.errors import DagsterUnknownPartitionError

        try:
            return super().validate_partition_key(partition_key, context)
        except DagsterUnknownPartitionError:
            _unknown(partition_key, partition_key_hint)


_pairs_of_model = {model: [layer_model_key(layer, model) for layer in layers] for model, layers in LAYERS_OF.items()}
model_layer_partitions = LayerModelPartitions([key for keys in _pairs_of_model.values() for key in keys])

# probes (layer|model) read the activations of their model
by_model = dg.StaticPartitionMapping(_pairs_of_model)
# a model's assets (report, bundle) read the probe metrics of all its layers
of_model = dg.StaticPartitionMapping({key: model for model, keys in _pairs_of_model.items() for key in keys})
