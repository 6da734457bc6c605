"""Deterministic, seeded splits that keep a high/low pair on the same side.

Each group (``pair_id`` when present, else the row id) is placed by a SHA-256 of
``seed:group`` mapped to [0, 1); unlike Python's salted ``hash()`` this is the same
on every machine and run, and adding rows never moves existing groups.
"""

from __future__ import annotations

import hashlib
from typing import Mapping

import polars as pl

from mup_core.data.dataset import Dataset, DatasetError

DEFAULT_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}


def _unit_interval(seed: int, group: str) -> float:
    digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_groups(ds: Dataset) -> list[str]:
    ids = ds.df["ids"].to_list()
    if "pair_id" not in ds.df.columns:
        return ids
    pairs = ds.df["pair_id"].cast(pl.Utf8).to_list()
    return [f"pair:{p}" if p is not None else f"id:{i}" for p, i in zip(pairs, ids)]


def split_dataset(
    ds: Dataset, fractions: Mapping[str, float] | None = None, seed: int = 0
) -> dict[str, Dataset]:
    fractions = dict(fractions or DEFAULT_FRACTIONS)
    total = sum(fractions.values())
    if abs(total - 1.0) > 1e-6 or any(f < 0 for f in fractions.values()):
        raise DatasetError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    bounds: list[tuple[str, float]] = []
    acc = 0.0
    for name, frac in fractions.items():
        acc += frac
        bounds.append((name, acc))
    assignment = []
    for group in split_groups(ds):
        u = _unit_interval(seed, group)
        assignment.append(next((name for name, hi in bounds if u < hi), bounds[-1][0]))
    col = pl.Series("__split", assignment)
    df = ds.df.with_columns(col)
    return {
        name: Dataset(df.filter(pl.col("__split") == name).drop("__split"), f"{ds.name}-{name}")
        for name in fractions
        if (df["__split"] == name).any()
    }
