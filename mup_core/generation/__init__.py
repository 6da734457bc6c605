"""Synthetic high/low-stakes data, the research's recipe:

1. *situations* from factor combinations (role of user x impact factor x topic), each
   written by an LLM as a matched pair: one high-stakes, one low-stakes;
2. *prompts* from situations, each written in a sampled variation (tone, style,
   language, length); the two sides of a pair share the variation and a ``pair_id``.

Sampling is seeded with SHA-256 (never Python's salted ``hash()``), so the same seed
gives the same combinations on every machine. Every row keeps its provenance
(factors, variation, generator model, status). Failed or invalid generations are kept
as rows with a ``status`` saying why, and are excluded from the prompt dataset with
a count — never silently.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import polars as pl

from mup_core.data.dataset import Dataset
from mup_core.llm.base import LLMClient, LLMError

SITUATION_SCHEMA = {
    "type": "object",
    "properties": {"high_stakes": {"type": "string"}, "low_stakes": {"type": "string"}},
    "required": ["high_stakes", "low_stakes"],
}
PROMPT_SCHEMA = {"type": "object", "properties": {"prompt": {"type": "string"}}, "required": ["prompt"]}


def _load_json(path: str | Path | None, default: str) -> dict:
    if path:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    return json.loads((resources.files("mup_core.generation") / default).read_text(encoding="utf-8"))


def load_factors(path: str | Path | None = None) -> dict[str, list[str]]:
    """Our factors, or a file in the research's ``situation_factors.json`` format."""
    factors = _load_json(path, "factors.json")
    for key in ("role_of_user", "impact_factor", "topic"):
        if not factors.get(key):
            raise ValueError(f"{path or 'factors.json'}: missing or empty factor list {key!r}")
    return factors


def load_variations(path: str | Path | None = None) -> dict[str, dict[str, str]]:
    """Our variations, or a file in the research's ``prompt_variations.json`` format."""
    variations = _load_json(path, "variations.json")
    for key in ("tone", "prompt_style", "language", "length"):
        if not variations.get(key):
            raise ValueError(f"{path or 'variations.json'}: missing or empty variation axis {key!r}")
    return variations


def _rank(seed: int, *parts: str) -> str:
    return hashlib.sha256(":".join([str(seed), *parts]).encode()).hexdigest()


def sample_combinations(factors: dict[str, list[str]], n: int, seed: int = 0) -> list[dict]:
    combos = itertools.product(factors["role_of_user"], factors["impact_factor"], factors["topic"])
    ranked = sorted(combos, key=lambda c: _rank(seed, *c))[:n]
    return [
        {"situation_pair_id": _rank(seed, *c)[:10], "role_of_user": c[0], "impact_factor": c[1], "topic": c[2]}
        for c in ranked
    ]


def situation_request(combo: dict) -> list[dict]:
    return [
        {"role": "system", "content": "You write short, realistic scenarios for a dataset about how much is at stake in conversations with AI assistants."},
        {
            "role": "user",
            "content": (
                f"Write two short situations (one or two sentences each) about {combo['topic']}, "
                f"from the point of view of {combo['role_of_user']}, where {combo['impact_factor']} is affected. "
                "The two situations should be as similar as possible, except that in the first a lot is at stake "
                "(serious, possibly irreversible harm) and in the second very little is. "
                'Answer with JSON: {"high_stakes": "...", "low_stakes": "..."}'
            ),
        },
    ]


def generate_situations(client: LLMClient, combos: list[dict], on_done: Callable[[int, int], None] | None = None) -> pl.DataFrame:
    results = client.complete_many([situation_request(c) for c in combos], schema=SITUATION_SCHEMA, max_tokens=160, temperature=0.7, on_done=on_done)
    rows = []
    for combo, res in zip(combos, results):
        for side in ("high_stakes", "low_stakes"):
            ok = not isinstance(res, LLMError)
            text = res.parsed[side].strip() if ok else None
            status = "ok" if ok and text else (f"{res.kind}: {res.reason}" if not ok else "invalid: empty text")
            rows.append({
                **combo,
                "situation_id": f"{combo['situation_pair_id']}-{'h' if side == 'high_stakes' else 'l'}",
                "intended_stakes": "high" if side == "high_stakes" else "low",
                "situation": text,
                "generator": client.name,
                "status": status,
            })
    return pl.DataFrame(rows)


def _pick(seed: int, key: str, options: list[str]) -> str:
    return min(options, key=lambda o: _rank(seed, key, o))


def prompt_request(situation: str, variation: dict, variations: dict) -> list[dict]:
    return [
        {"role": "system", "content": "You write the message a real user would send to an AI assistant."},
        {
            "role": "user",
            "content": (
                f"Situation: {situation}\n\nWrite the message this person sends to an AI assistant, as "
                f"{variations['prompt_style'][variation['prompt_style']]}, about {variations['length'][variation['length']]} words. "
                f"{variations['tone'][variation['tone']]} {variations['language'][variation['language']]} "
                'Answer with JSON: {"prompt": "..."}'
            ),
        },
    ]


@dataclass
class GenerationReport:
    dataset: Dataset | None
    requested: int
    failed: int


def generate_prompts(
    client: LLMClient,
    situations: pl.DataFrame,
    variations: dict,
    per_situation: int = 1,
    seed: int = 0,
    on_done: Callable[[int, int], None] | None = None,
) -> GenerationReport:
    good = situations.filter(pl.col("status") == "ok")
    complete = good.group_by("situation_pair_id").len().filter(pl.col("len") == 2)["situation_pair_id"].to_list()
    good = good.filter(pl.col("situation_pair_id").is_in(complete)).sort("situation_id")
    jobs = []
    for row in good.iter_rows(named=True):
        for k in range(per_situation):
            key = f"{row['situation_pair_id']}:{k}"  # both sides of a pair share the variation
            variation = {axis: _pick(seed, f"{key}:{axis}", list(variations[axis])) for axis in ("tone", "prompt_style", "language", "length")}
            jobs.append((row, k, variation))
    results = client.complete_many(
        [prompt_request(r["situation"], v, variations) for r, _, v in jobs], schema=PROMPT_SCHEMA, max_tokens=160, temperature=0.7, on_done=on_done
    )
    records, failed = [], 0
    for (row, k, variation), res in zip(jobs, results):
        if isinstance(res, LLMError) or not res.parsed["prompt"].strip():
            failed += 1
            continue
        records.append({
            "inputs": res.parsed["prompt"].strip(),
            "ids": f"{row['situation_id']}-{k}",
            "pair_id": f"{row['situation_pair_id']}-{k}",
            "intended_stakes": row["intended_stakes"],
            "situation": row["situation"],
            "role_of_user": row["role_of_user"],
            "impact_factor": row["impact_factor"],
            "topic": row["topic"],
            **variation,
            "generator": client.name,
        })
    ds = Dataset.from_records(records, "synthetic_prompts") if records else None
    return GenerationReport(ds, len(jobs), failed)
