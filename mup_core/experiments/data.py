"""Load the labelled sets of the study (one layer of one model) from the artifact store."""

from __future__ import annotations

from typing import Mapping

from mup_core.activations.store import MissingActivations
from mup_core.data.dataset import Dataset
from mup_core.data.splits import split_groups
from mup_core.experiments.scores import VAL
from mup_core.experiments.training import Part
from mup_core.storage import ArtifactStore
from mup_core.workflows import evaluation_sets, load_labelled, load_stored_dataset


def study_sets(
    store: ArtifactStore, corpus_splits: Mapping, eval_datasets: Mapping, activations: Mapping, layer: int
) -> dict[str, tuple[Dataset, Part]]:
    """``train``, ``corpus-val`` and every evaluation set: (dataset without ambiguous rows,
    its Part at ``layer``). Selection sets (role ``selection``) chose the probe and layer and
    are left out: results are never reported on them. Raises MissingActivations naming what is missing."""
    refs = {"train": (corpus_splits["train"], activations["train"]), VAL: (corpus_splits["val"], activations["val"])}
    for name, ref in evaluation_sets(eval_datasets).items():
        if name not in activations:
            raise MissingActivations(f"no activations for evaluation set {name!r}; re-materialise `activations` after changing eval_datasets")
        refs[name] = (ref, activations[name])
    out = {}
    for name, (ds_ref, act_ref) in refs.items():
        ds = load_stored_dataset(store, ds_ref)
        clear, acts = load_labelled(store, ds, act_ref, layer)
        if len(clear) == 0:
            continue
        out[name] = (clear, Part(acts, clear.label_array(), split_groups(clear)))
    return out
