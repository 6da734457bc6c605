"""Read and write datasets in the research's formats (JSONL, CSV) and Parquet.

Errors name the file, the line (1-based, as an editor shows it) and the field, and
say what to do. Writes are atomic: a temp file renamed into place.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import polars as pl

from mup_core.data.dataset import (
    LABELS,
    Dataset,
    DatasetError,
    decode_input,
    frame_from_records,
    is_dialogue,
    message_problem,
)
from mup_core.storage import replaced_atomically

log = logging.getLogger(__name__)


def _check_record(rec: Any, where: str, require_labels: bool) -> dict[str, Any]:
    if not isinstance(rec, dict):
        raise DatasetError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    if "inputs" not in rec or rec["inputs"] in (None, "", []):
        raise DatasetError(f"{where}: field 'inputs' is missing or empty; every record needs the text or dialogue to monitor")
    value = rec["inputs"]
    if isinstance(value, str):
        value = decode_input(value)  # JSON-encoded dialogue -> list
    if isinstance(value, list) and not is_dialogue(value):
        raise DatasetError(
            f"{where}: field 'inputs' is a list but not a dialogue; expected "
            '[{"role": "user", "content": "..."}, ...]'
        )
    if isinstance(value, list):
        _check_messages(value, where)
    if not isinstance(value, (str, list)):
        raise DatasetError(f"{where}: field 'inputs' must be a string or a list of messages, got {type(value).__name__}")
    rec = dict(rec)
    rec["inputs"] = value
    if "ids" not in rec or rec["ids"] in (None, ""):
        raise DatasetError(f"{where}: field 'ids' is missing; every record needs a unique id")
    rec["ids"] = str(rec["ids"])
    if "labels" in rec or require_labels:
        label = rec.get("labels")
        if label not in LABELS:
            raise DatasetError(
                f"{where}: field 'labels' has unknown value {label!r}; expected one of {', '.join(LABELS)}"
            )
    return rec


def _check_messages(messages: list, where: str) -> None:
    """Every message has a known role and text content (checked at load time, so a bad
    dialogue never reaches a forward pass)."""
    problem = message_problem(messages, "inputs")
    if problem:
        raise DatasetError(f"{where}: {problem}")
    for i, m in enumerate(messages):
        extra = set(m) - {"role", "content"}
        if extra:
            log.debug("%s: message %d: ignoring fields %s", where, i, sorted(extra))


def _read_text(path: Path) -> str:
    """The file as text; a byte-order mark is dropped, and bytes that are not UTF-8 are
    reported with the line and column where they are."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        start = exc.start
        line = data.count(b"\n", 0, start) + 1
        column = start - (data.rfind(b"\n", 0, start) + 1) + 1
        raise DatasetError(
            f"{path}:{line}: byte {data[start:start + 1]!r} at column {column} is not UTF-8; "
            "save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 in > out`)"
        ) from None


def _check_unique(ids: list[tuple[str, str]], path: Path) -> None:
    seen: dict[str, str] = {}
    for id_, where in ids:
        if id_ in seen:
            raise DatasetError(f"{path}: duplicate id {id_!r} at {seen[id_]} and {where}; ids must be unique")
        seen[id_] = where


def read_jsonl_records(path: Path, require_labels: bool = True) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    ids: list[tuple[str, str]] = []
    # split on newlines only: U+2028 and friends are legal inside JSON strings
    for lineno, line in enumerate(_read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where}: malformed JSON ({exc.msg} at column {exc.colno}); fix or remove this line") from None
        rec = _check_record(rec, where, require_labels)
        records.append(rec)
        ids.append((rec["ids"], f"line {lineno}"))
    _check_unique(ids, path)
    return records


def read_csv_records(path: Path, require_labels: bool = True) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    ids: list[tuple[str, str]] = []
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    required = ("ids", "inputs") + (("labels",) if require_labels else ())
    columns = reader.fieldnames or []
    missing = [c for c in required if c not in columns]
    if missing:
        raise DatasetError(
            f"{path}:1: missing column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}; "
            f"columns found: {columns}; the header needs {', '.join(required)}"
        )
    for row in reader:
        lineno = reader.line_num
        where = f"{path}:{lineno}"
        rec = {k: (None if v == "" else v) for k, v in row.items() if k is not None}
        for key in ("scale_labels", "scale_label_confidence"):
            if rec.get(key) is not None:
                try:
                    rec[key] = float(rec[key])
                except ValueError:
                    raise DatasetError(f"{where}: field {key!r} is not a number: {rec[key]!r}") from None
        rec = _check_record(rec, where, require_labels)
        records.append(rec)
        ids.append((rec["ids"], f"line {lineno}"))
    _check_unique(ids, path)
    return records


def load_dataset(path: str | os.PathLike, name: str | None = None, require_labels: bool = True) -> Dataset:
    """Load a JSONL, CSV or Parquet dataset in the research's format."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: file not found")
    name = name or path.stem
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        records = read_jsonl_records(path, require_labels)
    elif suffix == ".csv":
        records = read_csv_records(path, require_labels)
    elif suffix == ".parquet":
        df = pl.read_parquet(path)
        records = [_check_record(r, f"{path}: row {i + 1}", require_labels) for i, r in enumerate(df.iter_rows(named=True))]
        _check_unique([(r["ids"], f"row {i + 1}") for i, r in enumerate(records)], path)
    else:
        raise DatasetError(f"{path}: unsupported file type {suffix!r}; use .jsonl, .csv or .parquet")
    if not records:
        raise DatasetError(f"{path}: the dataset is empty (no records)")
    return Dataset(frame_from_records(records, source=str(path)), name)


def save_jsonl(ds: Dataset, path: str | os.PathLike) -> None:
    """Write in the research's JSONL format (dialogues as message lists)."""

    with replaced_atomically(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for rec in ds.df.iter_rows(named=True):
            rec["inputs"] = decode_input(rec["inputs"])
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")



