"""The embedded high-/low-stakes corpus, written by the mup team.

Each domain is a text file of minimal pairs in ``stakes/``. A pair is a block of
lines separated from the next by a blank line::

    lang: de                      (optional, default en)
    H: the high-stakes prompt     (plain text: one user turn)
    L: the low-stakes prompt

or, for dialogues, role-tagged lines per side::

    H.system: You are the triage assistant of a clinic.
    H.user: ...
    H.assistant: ...
    H.user: ...
    L.system: ...
    L.user: ...

A line that starts with none of these markers continues the previous message.
Labels come from construction: every pair has one high- and one low-stakes side.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from mup_core.data.dataset import Dataset, DatasetError

_MARKER = re.compile(r"^(H|L)(?:\.(system|user|assistant))?:\s?(.*)$")
_LANG = re.compile(r"^lang:\s*([a-z]{2})\s*$")


def _corpus_dir() -> Path:
    return Path(str(resources.files("mup_core.corpus") / "stakes"))


def parse_pairs(text: str, domain: str, source: str) -> list[dict]:
    """Parse one domain file into records (two per pair)."""
    records: list[dict] = []
    blocks: list[list[tuple[int, str]]] = [[]]
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.startswith("#"):
            continue
        if not line.strip():
            if blocks[-1]:
                blocks.append([])
            continue
        blocks[-1].append((lineno, line.rstrip()))
    for n, block in enumerate(b for b in blocks if b):
        first_line = block[0][0]
        lang = "en"
        sides: dict[str, list[dict]] = {"H": [], "L": []}
        plain: dict[str, bool] = {}
        last = None
        for lineno, line in block:
            if m := _LANG.match(line):
                lang = m.group(1)
                continue
            m = _MARKER.match(line)
            if m:
                side, role, content = m.groups()
                is_plain = role is None
                if plain.setdefault(side, is_plain) != is_plain:
                    raise DatasetError(f"{source}:{lineno}: side {side} mixes plain text and role-tagged lines")
                last = {"role": role or "user", "content": content}
                sides[side].append(last)
            elif last is not None:
                last["content"] += "\n" + line
            else:
                raise DatasetError(f"{source}:{lineno}: expected 'H:', 'L:' or 'lang:' to start a pair")
        for side in ("H", "L"):
            if not sides[side]:
                raise DatasetError(f"{source}:{first_line}: the pair has no {side} side")
        pair_id = f"{domain}-{n + 1:03d}"
        for side, label in (("H", "high-stakes"), ("L", "low-stakes")):
            msgs = sides[side]
            value = msgs[0]["content"] if plain[side] and len(msgs) == 1 else msgs
            records.append(
                {
                    "inputs": value,
                    "ids": f"{pair_id}-{side.lower()}",
                    "labels": label,
                    "pair_id": pair_id,
                    "domain": domain,
                    "language": lang,
                    "format": "dialogue" if isinstance(value, list) else "text",
                }
            )
    return records


def corpus_files() -> list[Path]:
    return sorted(_corpus_dir().glob("*.txt"))


def load_embedded_corpus(name: str = "mup-stakes-corpus") -> Dataset:
    """All domains of the embedded corpus as one dataset."""
    records: list[dict] = []
    for path in corpus_files():
        records.extend(parse_pairs(path.read_text(encoding="utf-8"), path.stem, str(path)))
    if not records:
        raise DatasetError(f"{_corpus_dir()}: the embedded corpus is missing (no *.txt files)")
    return Dataset.from_records(records, name)
