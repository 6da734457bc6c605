"""The labelled dataset type: a polars frame with a few required columns.

Columns
-------
``ids``      unique string id per row
``inputs``   plain text, or a dialogue stored as canonical JSON
             (``[{"role": ..., "content": ...}, ...]``); use ``Dataset.input_at``
``labels``   ``high-stakes`` / ``low-stakes`` / ``ambiguous`` (may be absent for
             unlabelled pools)
optional     ``scale_labels``, ``scale_label_confidence``, ``pair_id`` and every
             other source field, preserved as loaded.

Two content hashes version a dataset separately: ``inputs_hash`` (ids + text: what
activations depend on) and ``labels_hash`` (ids + labels: what probes also depend on).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import polars as pl

LABELS = ("high-stakes", "low-stakes", "ambiguous")
ROLES = ("system", "user", "assistant", "tool")
Message = dict[str, str]
Input = str | list[Message]


class DatasetError(ValueError):
    """Bad dataset content; the message names the source, line and field."""


def encode_input(value: Input) -> str:
    """Store a dialogue as canonical JSON text; plain text as itself."""
    if isinstance(value, str):
        return value
    return json.dumps([{"role": m["role"], "content": m["content"]} for m in value], ensure_ascii=False)


def decode_input(text: str) -> Input:
    """Inverse of ``encode_input``: a JSON list of role/content messages is a dialogue."""
    stripped = text.lstrip()
    if stripped.startswith("[{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return text
        if is_dialogue(value):
            return value
    return text


def is_dialogue(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(isinstance(m, dict) and "role" in m and "content" in m for m in value)
    )


def message_problem(messages: Sequence[dict], field: str) -> str | None:
    """What is wrong with a dialogue's messages (an unknown role, content that is not text),
    naming ``field[i]``; None when nothing is. Loaders and the live monitor both ask here."""
    for i, m in enumerate(messages):
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            return f"field '{field}[{i}].role' is {role!r}; expected one of {', '.join(ROLES)}"
        if not isinstance(content, str):
            return f"field '{field}[{i}].content' must be text, got {type(content).__name__} ({content!r:.40}); quote it as a string"
    return None


def _hash(*columns: Iterable[str]) -> str:
    h = hashlib.sha256()
    for column in columns:
        for value in column:
            data = ("" if value is None else str(value)).encode()
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
    return h.hexdigest()


WEIGHT = "weight"  # optional per-row training weight (training sources combined)


@dataclass(frozen=True)
class Dataset:
    """An immutable labelled dataset. ``name`` is used in errors and storage keys."""

    df: pl.DataFrame
    name: str = "dataset"

    def __post_init__(self) -> None:
        validate_frame(self.df, self.name, require_labels=False)

    # -- access -------------------------------------------------------------
    def __len__(self) -> int:
        return self.df.height

    @property
    def ids(self) -> list[str]:
        return self.df["ids"].to_list()

    @property
    def inputs(self) -> list[Input]:
        return [decode_input(t) for t in self.df["inputs"].to_list()]

    def input_at(self, i: int) -> Input:
        return decode_input(self.df["inputs"][i])

    @property
    def has_labels(self) -> bool:
        return "labels" in self.df.columns

    @property
    def labels(self) -> list[str]:
        if not self.has_labels:
            raise DatasetError(f"{self.name}: has no 'labels' column")
        return self.df["labels"].to_list()

    def label_array(self) -> np.ndarray:
        """1 for high-stakes, 0 for low-stakes; raises if any row is ambiguous."""
        labels = self.labels
        if "ambiguous" in labels:
            raise DatasetError(
                f"{self.name}: {labels.count('ambiguous')} rows are 'ambiguous'; "
                "drop them first with Dataset.unambiguous()"
            )
        return np.array([1 if lab == "high-stakes" else 0 for lab in labels], dtype=np.int64)

    def label_counts(self) -> dict[str, int]:
        if not self.has_labels:
            return {}
        counts = self.df["labels"].value_counts()
        return {row["labels"]: int(row["count"]) for row in counts.iter_rows(named=True)}

    # -- versions -----------------------------------------------------------
    @property
    def inputs_hash(self) -> str:
        return _hash(self.df["ids"].to_list(), self.df["inputs"].to_list())

    @property
    def labels_hash(self) -> str:
        """Hash of the supervision: ids, labels and, where the set has them, per-row training
        weights (a changed weight re-trains like a changed label, and re-embeds nothing)."""
        labels = self.df["labels"].to_list() if self.has_labels else []
        if WEIGHT in self.df.columns:
            labels = [f"{label}\x1f{float(w)!r}" for label, w in zip(labels, self.df[WEIGHT].to_list())]
        return _hash(self.df["ids"].to_list(), labels)

    def sample_weights(self) -> np.ndarray | None:
        """Per-row training weights (column ``weight``, set by ``weighted``), or None."""
        return self.df[WEIGHT].to_numpy().astype(np.float64) if WEIGHT in self.df.columns else None

    def weighted(self, weight: float, source: str) -> "Dataset":
        """This set with every row weighted ``weight`` in training and tagged with ``source``."""
        if not (isinstance(weight, (int, float)) and np.isfinite(weight) and weight > 0):
            raise DatasetError(f"{source}: training weight must be a positive number, got {weight!r}")
        return Dataset(self.df.with_columns(pl.lit(float(weight)).alias(WEIGHT), pl.lit(source).alias("source")), self.name)

    # -- derivation ---------------------------------------------------------
    def filter(self, mask: pl.Expr | pl.Series | Sequence[bool], name: str | None = None) -> "Dataset":
        return Dataset(self.df.filter(mask), name or self.name)

    def take(self, indices: Sequence[int], name: str | None = None) -> "Dataset":
        return Dataset(self.df[list(indices)], name or self.name)

    def unambiguous(self) -> "Dataset":
        return self.filter(pl.col("labels") != "ambiguous")

    def with_name(self, name: str) -> "Dataset":
        return Dataset(self.df, name)

    # -- construction -------------------------------------------------------
    @classmethod
    def from_records(cls, records: Sequence[dict[str, Any]], name: str = "dataset") -> "Dataset":
        return cls(frame_from_records(records, source=name), name)


def frame_from_records(records: Sequence[dict[str, Any]], source: str) -> pl.DataFrame:
    """Build the frame; nested extra fields are kept as JSON text so any mix of types loads."""
    if not records:
        raise DatasetError(f"{source}: the dataset is empty (no records)")
    columns: dict[str, list[Any]] = {}
    keys: list[str] = []
    for rec in records:
        for key in rec:
            if key not in columns:
                columns[key] = []
                keys.append(key)
    for key in keys:
        values = [rec.get(key) for rec in records]
        if key == "inputs":
            values = [encode_input(v) if v is not None else None for v in values]
        elif any(isinstance(v, (dict, list)) for v in values):
            values = [json.dumps(v, ensure_ascii=False) if v is not None else None for v in values]
        else:
            kinds = {type(v) for v in values if v is not None}
            if len(kinds) > 1 and not kinds <= {int, float}:
                values = [None if v is None else str(v) for v in values]
        columns[key] = values
    df = pl.DataFrame(columns, strict=False, infer_schema_length=None)
    if "ids" in df.columns:
        df = df.with_columns(pl.col("ids").cast(pl.Utf8))
    return df


def validate_frame(df: pl.DataFrame, source: str, require_labels: bool = True) -> None:
    """Check required columns, unique ids and known labels; rows are 1-based in messages."""
    if df.height == 0:
        raise DatasetError(f"{source}: the dataset is empty (no rows)")
    for column in ("ids", "inputs") + (("labels",) if require_labels else ()):
        if column not in df.columns:
            raise DatasetError(f"{source}: missing required field {column!r} (columns: {df.columns})")
    nulls = df.with_row_index("row").filter(pl.col("inputs").is_null() | (pl.col("inputs") == ""))
    if nulls.height:
        row = nulls["row"][0] + 1
        raise DatasetError(f"{source}: row {row}: field 'inputs' is missing or empty")
    null_ids = df.with_row_index("row").filter(pl.col("ids").is_null())
    if null_ids.height:
        raise DatasetError(f"{source}: row {null_ids['row'][0] + 1}: field 'ids' is missing")
    dup = df.with_row_index("row").filter(pl.col("ids").is_duplicated())
    if dup.height:
        first = dup["ids"][0]
        rows = dup.filter(pl.col("ids") == first)["row"].to_list()
        raise DatasetError(
            f"{source}: duplicate id {first!r} on rows {', '.join(str(r + 1) for r in rows)}; "
            "ids must be unique"
        )
    if "labels" in df.columns:
        bad = df.with_row_index("row").filter(~pl.col("labels").is_in(list(LABELS)) | pl.col("labels").is_null())
        if bad.height:
            raise DatasetError(
                f"{source}: row {bad['row'][0] + 1}: field 'labels' has unknown value "
                f"{bad['labels'][0]!r}; expected one of {', '.join(LABELS)}"
            )


def concat(datasets: Sequence[Dataset], name: str) -> Dataset:
    return Dataset(pl.concat([d.df for d in datasets], how="diagonal_relaxed"), name)
