"""Importers for the research's evaluation sources, from their native fields.

Each importer reads the source's native format (or a file already in the research's
format: ``inputs`` + ``ids``, passed through as is) and returns a ``Dataset``:

| kind | native fields | inputs |
|---|---|---|
| ``anthropic_hh`` | ``transcript`` ("\\n\\nHuman: ...\\n\\nAssistant: ...") | dialogue |
| ``mt`` | ``transcription``, ``description``, ``medical_specialty``, ``sample_name``, ``keywords`` | text |
| ``mts`` | ``ID``, ``section_header``, ``section_text``, ``dialogue`` | text (the dialogue) |
| ``toolace`` | ``system``, ``conversations`` [{``from``, ``value``}] | dialogue with system prompt |
| ``mental_health`` | ``statement``, ``status`` | text |
| ``aya_redteaming`` | ``prompt``, ``language``, ``harm_category``, ... | text |
| ``deployment_pairs`` | ``high_stakes``, ``low_stakes``, optional ``system_prompt``/``context`` | one row per side, labelled by construction |

Rows get stable ids (``<kind>-<row>`` unless the source has one); every native field
is kept. ``system_prompt`` prepends a deployment system message to every input.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import polars as pl

from mup_core.data.dataset import Dataset, DatasetError, decode_input, frame_from_records
from mup_core.data.loaders import load_dataset
from mup_core.data.sources import fetch


def read_rows(path: Path) -> Iterable[tuple[int, dict]]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if line.strip():
                    try:
                        yield lineno, json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DatasetError(f"{path}:{lineno}: malformed JSON ({exc.msg})") from None
    elif suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            for row in reader:
                yield reader.line_num, dict(row)
    elif suffix == ".parquet":
        for i, row in enumerate(pl.read_parquet(path).iter_rows(named=True), start=1):
            yield i, row
    else:
        raise DatasetError(f"{path}: unsupported file type {suffix!r}; use .jsonl, .csv or .parquet")


def _need(row: dict, field: str, where: str) -> Any:
    value = row.get(field)
    if value in (None, ""):
        raise DatasetError(f"{where}: field {field!r} is missing or empty")
    return value


_TURN = re.compile(r"\n\n(Human|Assistant):\s?")


def _hh(row, where):
    transcript = _need(row, "transcript", where)
    parts = _TURN.split("\n\n" + transcript.strip())
    messages = [{"role": "user" if who == "Human" else "assistant", "content": text.strip()}
                for who, text in zip(parts[1::2], parts[2::2])]
    if not messages:
        raise DatasetError(f"{where}: field 'transcript' has no 'Human:' / 'Assistant:' turns")
    return messages


def _toolace(row, where):
    conv = _need(row, "conversations", where)
    if isinstance(conv, str):
        conv = json.loads(conv)
    roles = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant", "tool": "tool", "function": "tool"}
    messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    for turn in conv:
        role = roles.get(str(turn.get("from", "")).lower())
        if role is None:
            raise DatasetError(f"{where}: unknown speaker {turn.get('from')!r} in 'conversations'")
        messages.append({"role": role, "content": str(turn.get("value", ""))})
    return messages


CONVERTERS: dict[str, Callable[[dict, str], Any]] = {
    "anthropic_hh": _hh,
    "mt": lambda row, where: _need(row, "transcription", where),
    "mts": lambda row, where: _need(row, "dialogue", where),
    "toolace": _toolace,
    "mental_health": lambda row, where: _need(row, "statement", where),
    "aya_redteaming": lambda row, where: _need(row, "prompt", where),
}
ID_FIELDS = {"mts": "ID", "mt": None, "anthropic_hh": None, "toolace": None, "mental_health": None, "aya_redteaming": None}
KINDS = tuple(CONVERTERS) + ("deployment_pairs",)


def _with_system(value, system_prompt: str | None):
    if not system_prompt:
        return value
    messages = [{"role": "user", "content": value}] if isinstance(value, str) else list(value)
    if messages and messages[0]["role"] == "system":
        messages = messages[1:]
    return [{"role": "system", "content": system_prompt}, *messages]


def import_source(kind: str, uri: str, name: str | None = None, system_prompt: str | None = None, limit: int | None = None) -> Dataset:
    """Import ``uri`` (local path, ``s3://`` or ``hf://``) of a given source kind."""
    if kind not in KINDS:
        raise DatasetError(f"unknown source kind {kind!r}; known: {', '.join(KINDS)}")
    path = fetch(uri)
    name = name or path.stem
    first = next(iter(read_rows(path)), None)
    if first is None:
        raise DatasetError(f"{uri}: the source is empty")
    if "inputs" in first[1] and "ids" in first[1]:  # already in the research's format
        ds = load_dataset(path, name, require_labels=False)
        if system_prompt:
            ds = Dataset(ds.df.with_columns(pl.Series("inputs", [json.dumps(_with_system(decode_input(v), system_prompt), ensure_ascii=False) for v in ds.df["inputs"]])), name)
        return ds if limit is None else ds.take(range(min(limit, len(ds))))
    records = []
    for n, (lineno, row) in enumerate(read_rows(path)):
        if limit is not None and n >= limit:
            break
        where = f"{uri}:{lineno}"
        native = {k: v for k, v in row.items() if k is not None}
        if kind == "deployment_pairs":
            pair = str(native.get("pair_id") or native.get("id") or f"{kind}-{n}")
            sp = system_prompt or native.get("system_prompt") or native.get("context")
            for side, label in (("high_stakes", "high-stakes"), ("low_stakes", "low-stakes")):
                records.append({**native, "inputs": _with_system(_need(native, side, where), sp), "ids": f"{pair}-{side[0]}",
                                "pair_id": pair, "labels": label, "source_kind": kind})
            continue
        id_field = ID_FIELDS.get(kind)
        rid = str(native[id_field]) if id_field and native.get(id_field) not in (None, "") else f"{kind}-{n}"
        records.append({**native, "inputs": _with_system(CONVERTERS[kind](native, where), system_prompt), "ids": rid, "source_kind": kind})
    if not records:
        raise DatasetError(f"{uri}: no records")
    return Dataset(frame_from_records(records, uri), name)


def balance(ds: Dataset, seed: int = 0, per_class: int | None = None) -> Dataset:
    """Equal numbers of high- and low-stakes rows (ambiguous dropped), seeded."""
    if not ds.has_labels:
        raise DatasetError(f"{ds.name}: cannot balance a dataset without labels; label it first")
    rng = np.random.default_rng(seed)
    labels = np.array(ds.labels)
    pools = {lab: np.flatnonzero(labels == lab) for lab in ("high-stakes", "low-stakes")}
    n = min(len(p) for p in pools.values())
    if per_class is not None:
        n = min(n, per_class)
    if n == 0:
        raise DatasetError(f"{ds.name}: cannot balance: counts are {ds.label_counts()}")
    keep = np.sort(np.concatenate([rng.permutation(p)[:n] for p in pools.values()]))
    return ds.take(keep.tolist(), f"{ds.name}")
