"""The long table every monitor's predictions go into, and the experiments read.

One row per (method, seed, dataset, example):

| column | meaning |
|---|---|
| method | ``probe:<type>`` or a baseline name (``tfidf``, ``prompted``, ``finetuned``, ``continuation``) |
| family | ``probe`` or ``baseline`` |
| seed | training seed (0 where nothing is random) |
| dataset | evaluation set (``corpus-val`` is the validation split used for choices) |
| id, label, score | example id, 1 = high-stakes, P(high-stakes) |
| tokens | tokens the monitored model reads for this example |
| flops | FLOPs this method spends on this example (see ``mup_core.baselines.compute``) |
"""

from __future__ import annotations


import numpy as np
import polars as pl

from mup_core.evaluation.selection import VALIDATION_SET

SCHEMA = {
    "method": pl.Utf8,
    "family": pl.Utf8,
    "seed": pl.Int64,
    "dataset": pl.Utf8,
    "id": pl.Utf8,
    "label": pl.Int64,
    "score": pl.Float64,
    "tokens": pl.Int64,
    "flops": pl.Float64,
}
VAL = VALIDATION_SET


def score_rows(method: str, family: str, dataset: str, ids, labels, scores, tokens, flops, seed: int = 0) -> pl.DataFrame:
    n = len(ids)
    scores = np.asarray(scores, dtype=float)
    if not (len(labels) == len(scores) == len(tokens) == len(flops) == n):
        raise ValueError(f"{method} on {dataset}: ids, labels, scores, tokens and flops differ in length")
    if not np.isfinite(scores).all():
        raise ValueError(f"{method} on {dataset}: {int((~np.isfinite(scores)).sum())} scores are not finite")
    return pl.DataFrame(
        {
            "method": [method] * n,
            "family": [family] * n,
            "seed": [int(seed)] * n,
            "dataset": [dataset] * n,
            "id": [str(i) for i in ids],
            "label": np.asarray(labels, dtype=np.int64),
            "score": scores,
            "tokens": np.asarray(tokens, dtype=np.int64),
            "flops": np.asarray(flops, dtype=float),
        },
        schema=SCHEMA,
    )


def concat_scores(tables) -> pl.DataFrame:
    tables = [t for t in tables if t is not None and t.height]
    if not tables:
        return pl.DataFrame(schema=SCHEMA)
    return pl.concat([t.select(list(SCHEMA)) for t in tables])


def baseline_table(method: str, sets, score_fn, flops_fn, seed: int = 0) -> pl.DataFrame:
    """One baseline's scores table over every set but ``train`` (``sets``: name -> (dataset,
    token counts)); ``score_fn(name, ds)`` then ``flops_fn(name, ds, tokens)`` per set."""
    tables = []
    for name, (ds, tokens) in sets.items():
        if name == "train":
            continue
        scores = score_fn(name, ds)
        tables.append(score_rows(method, "baseline", name, ds.ids, ds.label_array(), scores, tokens, flops_fn(name, ds, tokens), seed=seed))
    return concat_scores(tables)
