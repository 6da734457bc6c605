"""Experiments that train probes themselves: generalisation across datasets, data
efficiency and few-shot adaptation. They work on ``(activations, labels)`` pairs of
one layer, so they are unit-tested without a model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import polars as pl

from mup_core.activations.ragged import RaggedActivations
from mup_core.evaluation.metrics import safe_auroc
from mup_core.probes import train_probe

Pair = tuple[RaggedActivations, np.ndarray]


@dataclass
class Part:
    """One labelled set: activations, labels and group keys (pairs stay together)."""

    acts: RaggedActivations
    labels: np.ndarray
    groups: Sequence[str] | None = None

    def take(self, idx) -> "Part":
        idx = np.asarray(idx, dtype=int)
        return Part(self.acts.subset(idx), np.asarray(self.labels)[idx], None if self.groups is None else [self.groups[i] for i in idx])

    def pair(self) -> Pair:
        return self.acts, np.asarray(self.labels)


def split_part(part: Part, fraction: float, seed: int) -> tuple[Part, Part]:
    """Split off ``fraction`` of the groups (seeded); the two parts share no group."""
    groups = part.groups if part.groups is not None else [str(i) for i in range(len(part.labels))]
    unique = sorted(set(groups))
    rng = np.random.default_rng(seed)
    chosen = set(rng.permutation(unique)[: max(1, int(round(fraction * len(unique))))].tolist())
    first = [i for i, g in enumerate(groups) if g in chosen]
    rest = [i for i, g in enumerate(groups) if g not in chosen]
    if not first or not rest:
        raise ValueError(f"cannot split {len(unique)} groups at fraction {fraction}")
    return part.take(first), part.take(rest)


def stratified_sample(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices, half from each class where possible (at least one of each)."""
    labels = np.asarray(labels)
    pos, neg = rng.permutation(np.flatnonzero(labels == 1)), rng.permutation(np.flatnonzero(labels == 0))
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("sampling training examples needs both classes")
    n_pos = min(len(pos), max(1, n // 2))
    n_neg = min(len(neg), max(1, n - n_pos))
    n_pos = min(len(pos), max(n_pos, n - n_neg))
    return np.sort(np.concatenate([pos[:n_pos], neg[:n_neg]]))


def _fit(probe_type, train: Pair, val: Pair | None, hp, seed, sample_weight=None):
    hp = dict(hp.get(probe_type, {}))
    from mup_core.probes import probe_class

    if "seed" in probe_class(probe_type).param_defaults():
        hp["seed"] = seed
    return train_probe(probe_type, train, val, hyperparameters=hp, sample_weight=sample_weight)


# -- 3. generalisation ---------------------------------------------------------------
def generalisation(
    sources: Mapping[str, tuple[Part, Part]],
    probe_type: str = "logistic_regression",
    hyperparameters: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> pl.DataFrame:
    """``sources`` maps a name to its (train, test) parts. A probe trained on each
    source's train part is evaluated on every source's test part."""
    hp = hyperparameters or {}
    rows = []
    for train_name, (train, _) in sources.items():
        if progress:
            progress(train_name)
        probe = _fit(probe_type, train.pair(), None, hp, seed)
        for test_name, (_, test) in sources.items():
            rows.append({"train": train_name, "test": test_name, "probe_type": probe_type, "train_examples": len(train.labels),
                         "auroc": safe_auroc(test.labels, probe.predict_proba(test.acts)[:, 1])})
    return pl.DataFrame(rows)


# -- 4. data efficiency ---------------------------------------------------------------
def transfer_sources(sets: Mapping[str, tuple[Any, Part]], by: str, seed: int = 0,
                     warn: Callable[[str], None] | None = None) -> tuple[str, dict[str, tuple[Part, Part]]]:
    """The (train, test) halves ``generalisation`` trains and tests on, from the study's
    labelled sets (``train``, the corpus validation split, ``corpus-test`` and evaluation
    sets, each ``(dataset, part)``): ``by="domain"`` — the corpus's domains (train split /
    test split); ``by="dataset"`` — the corpus and each evaluation set cut in halves;
    ``by="auto"`` — dataset when there are evaluation sets besides corpus-test. Sources
    without both labels in both halves are left out. Returns the mode used and the sources."""
    from mup_core.experiments.scores import VAL

    others = [n for n in sets if n not in ("train", VAL, "corpus-test")]
    by = by if by != "auto" else ("dataset" if others else "domain")
    sources: dict[str, tuple[Part, Part]] = {}
    if by == "domain":
        train_ds, train = sets["train"]
        test_ds, test = sets["corpus-test" if "corpus-test" in sets else VAL]
        if "domain" not in train_ds.df.columns:
            raise ValueError("by=domain needs a `domain` column in the corpus; use by=dataset")
        tr_dom, te_dom = train_ds.df["domain"].to_list(), test_ds.df["domain"].to_list()
        for d in sorted(set(tr_dom) & set(te_dom)):
            sources[d] = (train.take([i for i, v in enumerate(tr_dom) if v == d]), test.take([i for i, v in enumerate(te_dom) if v == d]))
    elif by == "dataset":
        sources["corpus"] = (sets["train"][1], sets["corpus-test"][1] if "corpus-test" in sets else sets[VAL][1])
        for name in others:
            try:
                sources[name] = split_part(sets[name][1], 0.5, seed)
            except ValueError as exc:
                if warn:
                    warn(f"skipping {name}: {exc}")
    else:
        raise ValueError(f"by must be auto, dataset or domain, got {by!r}")
    sources = {n: (a, b) for n, (a, b) in sources.items() if len(set(a.labels)) == 2 and len(set(b.labels)) == 2}
    if len(sources) < 2:
        raise ValueError(f"need two sources with both labels, got {sorted(sources)}")
    return by, sources


def data_efficiency(
    train: Part,
    val: Part | None,
    tests: Mapping[str, Part],
    sizes: Sequence[int],
    seeds: Sequence[int],
    probe_types: Sequence[str],
    hyperparameters: Mapping[str, Mapping[str, Any]] | None = None,
    extra_methods: Mapping[str, Callable[[np.ndarray, int], Mapping[str, np.ndarray]]] | None = None,
    progress: Callable[[str], None] | None = None,
) -> pl.DataFrame:
    """AUROC on each test set against the number of training examples. For each size
    and seed a stratified subset of ``train`` is drawn (the same subset for every
    method). ``extra_methods[name](train_indices, seed)`` returns {test: scores} for
    monitors that are not probes (e.g. the finetuned classifier)."""
    hp = hyperparameters or {}
    rows = []
    n_total = len(train.labels)
    for size in sorted({min(int(s), n_total) for s in sizes}):
        for seed in seeds:
            idx = stratified_sample(train.labels, size, np.random.default_rng(10_000 * size + seed))
            sub = train.take(idx)
            results: dict[str, Mapping[str, np.ndarray]] = {}
            for probe_type in probe_types:
                probe = _fit(probe_type, sub.pair(), val.pair() if val else None, hp, seed)
                results[f"probe:{probe_type}"] = {name: probe.predict_proba(t.acts)[:, 1] for name, t in tests.items()}
            for name, fn in (extra_methods or {}).items():
                results[name] = fn(idx, seed)
            for method, by_test in results.items():
                for test_name, scores in by_test.items():
                    rows.append({"method": method, "train_examples": len(idx), "seed": int(seed), "dataset": test_name,
                                 "auroc": safe_auroc(tests[test_name].labels, scores)})
            if progress:
                progress(f"size {len(idx)} seed {seed}")
    return pl.DataFrame(rows)


# -- 5. few-shot adaptation --------------------------------------------------------------
FEW_SHOT_MODES = ("dev_only", "combined", "upweighted")


def few_shot(
    train: Part,
    targets: Mapping[str, tuple[Part, Part]],
    shots: Sequence[int],
    seeds: Sequence[int],
    probe_type: str = "logistic_regression",
    modes: Sequence[str] = FEW_SHOT_MODES,
    upweight: float | None = None,
    hyperparameters: Mapping[str, Mapping[str, Any]] | None = None,
    progress: Callable[[str], None] | None = None,
) -> pl.DataFrame:
    """Adapting to an evaluation set with ``k`` labelled examples of its dev split.

    ``targets`` maps a dataset to its (dev pool, test) parts. Modes, as in the research:
    ``dev_only`` trains on the k dev examples alone; ``combined`` adds them to the
    training set; ``upweighted`` adds them with weight ``upweight`` (default: so that
    the k examples weigh as much as the whole training set). ``k = 0`` rows are the
    unadapted probe."""
    unknown = [m for m in modes if m not in FEW_SHOT_MODES]
    if unknown:
        raise ValueError(f"few_shot: unknown modes {unknown}; known: {FEW_SHOT_MODES}")
    hp = hyperparameters or {}
    rows = []
    base = _fit(probe_type, train.pair(), None, hp, 0)
    for name, (dev, test) in targets.items():
        rows.append({"dataset": name, "mode": "none", "shots": 0, "seed": 0, "auroc": safe_auroc(test.labels, base.predict_proba(test.acts)[:, 1])})
        for k in shots:
            if k < 2 or k > len(dev.labels):
                continue
            for seed in seeds:
                shot = dev.take(stratified_sample(dev.labels, k, np.random.default_rng(seed)))
                for mode in modes:
                    if mode == "dev_only":
                        fit_on, weights = shot, None
                    else:
                        fit_on = Part(RaggedActivations.concat([train.acts, shot.acts]), np.concatenate([train.labels, shot.labels]))
                        w_dev = 1.0 if mode == "combined" else (upweight or len(train.labels) / len(shot.labels))
                        weights = np.concatenate([np.ones(len(train.labels)), np.full(len(shot.labels), w_dev)])
                    probe = _fit(probe_type, fit_on.pair(), None, hp, seed, sample_weight=weights)
                    rows.append({"dataset": name, "mode": mode, "shots": int(k), "seed": int(seed),
                                 "auroc": safe_auroc(test.labels, probe.predict_proba(test.acts)[:, 1])})
            if progress:
                progress(f"{name}: {k} shots")
    return pl.DataFrame(rows)



def score_probe_types(sets: Mapping[str, tuple[Any, Part]], probe_types: Sequence[str], seeds: Sequence[int],
                      hyperparameters: Mapping[str, Mapping[str, Any]] | None = None, *, model: str, layer: int,
                      token_strings: Callable[[Any], list[str]] | None = None,
                      log: Callable[[str], None] | None = None) -> tuple[pl.DataFrame, dict]:
    """Every probe type (torch ones once per seed; linear ones are deterministic) trained on
    ``sets["train"]`` with early stopping on the corpus validation split, scored on every
    other set: one long scores table. Also, for inspection, the tokens each probe reads
    most in the first high-stakes example of the first evaluation set (``token_strings``
    turns an input into the model's tokens as text)."""
    from mup_core.baselines.compute import probe_flops
    from mup_core.experiments.analysis import top_tokens
    from mup_core.experiments.scores import VAL, concat_scores, score_rows
    from mup_core.probe_types import LINEAR_PROBE_TYPES

    hyperparameters = hyperparameters or {}
    train_ds, train = sets["train"]
    inspect_name = next(n for n in sets if n not in ("train", VAL)) if len(sets) > 2 else VAL
    inspect_ds, inspect_part = sets[inspect_name]
    inspect_i = int(next(i for i, y in enumerate(inspect_part.labels) if y == 1)) if inspect_part.labels.any() else 0
    tokens_read = token_strings(inspect_ds.input_at(inspect_i)) if token_strings else []
    highlights: dict = {"dataset": inspect_name, "id": inspect_ds.ids[inspect_i]}
    tables = []
    for probe_type in probe_types:
        type_seeds = [0] if probe_type in LINEAR_PROBE_TYPES else list(seeds)
        for seed in type_seeds:
            hp = dict(hyperparameters.get(probe_type, {}))
            if probe_type not in LINEAR_PROBE_TYPES:
                hp["seed"] = seed
            probe = train_probe(probe_type, train.pair(), sets[VAL][1].pair(), model=model, layer=layer,
                                sample_weight=train_ds.sample_weights(), train_inputs_hash=train_ds.inputs_hash,
                                train_labels_hash=train_ds.labels_hash, hyperparameters=hp)
            if seed == type_seeds[0] and len(tokens_read) == inspect_part.acts.lengths[inspect_i]:
                highlights[probe_type] = top_tokens(probe.token_scores(inspect_part.acts, inspect_i), tokens_read)
            for name, (ds, part) in sets.items():
                if name != "train":
                    tokens = part.acts.lengths
                    tables.append(score_rows(f"probe:{probe_type}", "probe", name, ds.ids, part.labels,
                                             probe.predict_proba(part.acts)[:, 1], tokens,
                                             probe_flops(probe_type, part.acts.hidden_size, tokens), seed=seed))
        if log:
            log(f"{probe_type} done ({len(type_seeds)} seed(s))")
    return concat_scores(tables), highlights
