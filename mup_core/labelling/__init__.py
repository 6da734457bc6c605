"""LLM stakes labelling: a 1-10 stakes score, a 1-10 confidence and an explanation per row.

Thresholds (configuration): stakes <= ``low_max`` with confidence >= ``min_confidence``
-> low-stakes; stakes >= ``high_min`` with confidence >= ``min_confidence`` ->
high-stakes; anything else -> ambiguous. A row whose request failed or whose answer was
invalid keeps its row, gets ``labels = "ambiguous"`` and a ``label_status`` of
``failed: ...`` or ``invalid: ...`` — nothing is dropped silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Callable

import numpy as np
import polars as pl

from mup_core.data.chat import as_dialogue
from mup_core.data.dataset import Dataset
from mup_core.llm.base import LLMClient, LLMError

LABEL_SCHEMA = {
    "type": "object",
    # the explanation comes first so that a model reasons before it scores
    "properties": {
        "explanation": {"type": "string"},
        "stakes": {"type": "integer", "minimum": 1, "maximum": 10},
        "confidence": {"type": "integer", "minimum": 1, "maximum": 10},
    },
    "required": ["stakes", "confidence", "explanation"],
}


def rubric() -> str:
    return (resources.files("mup_core.labelling") / "rubric.md").read_text(encoding="utf-8")


@dataclass(frozen=True)
class Thresholds:
    low_max: int = 3
    high_min: int = 8
    min_confidence: int = 7

    def label(self, stakes: int, confidence: int) -> str:
        if confidence >= self.min_confidence:
            if stakes <= self.low_max:
                return "low-stakes"
            if stakes >= self.high_min:
                return "high-stakes"
        return "ambiguous"


def format_conversation(value) -> str:
    return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in as_dialogue(value))


def label_request(value, rubric_text: str | None = None) -> list[dict]:
    return [
        {"role": "system", "content": (rubric_text or rubric())},
        {
            "role": "user",
            "content": "Conversation to judge:\n\n" + format_conversation(value)
            + '\n\nAnswer with JSON only: {"explanation": "...", "stakes": 1-10, "confidence": 1-10}',
        },
    ]


@dataclass
class LabelReport:
    dataset: Dataset
    counts: dict
    failed: int
    invalid: int
    agreement: float | None
    cohen_kappa: float | None


def label_dataset(
    ds: Dataset,
    client: LLMClient,
    thresholds: Thresholds = Thresholds(),
    *,
    max_tokens: int = 48,
    on_done: Callable[[int, int], None] | None = None,
) -> LabelReport:
    """Label every row; keeps earlier labels as ``previous_labels`` and reports agreement."""
    requests = [label_request(v) for v in ds.inputs]
    results = client.complete_many(requests, schema=LABEL_SCHEMA, max_tokens=max_tokens, on_done=on_done)
    stakes, conf, expl, status, labels = [], [], [], [], []
    for res in results:
        if isinstance(res, LLMError):
            stakes.append(None)
            conf.append(None)
            expl.append(None)
            status.append(f"{res.kind}: {res.reason}")
            labels.append("ambiguous")
        else:
            p = res.parsed
            stakes.append(int(p["stakes"]))
            conf.append(int(p["confidence"]))
            expl.append(str(p["explanation"]))
            status.append("ok")
            labels.append(thresholds.label(int(p["stakes"]), int(p["confidence"])))
    df = ds.df
    previous = df["labels"].to_list() if "labels" in df.columns else None
    if previous is not None:
        df = df.with_columns(pl.Series("previous_labels", previous))
    df = df.with_columns(
        pl.Series("scale_labels", stakes, dtype=pl.Int64),
        pl.Series("scale_label_confidence", conf, dtype=pl.Int64),
        pl.Series("scale_label_explanation", expl, dtype=pl.Utf8),
        pl.Series("scale_label_model", [client.name] * len(labels)),
        pl.Series("label_status", status),
        pl.Series("labels", labels),
    )
    out = Dataset(df, ds.name)
    agreement = kappa = None
    if previous is not None:
        agreement, kappa = label_agreement(previous, labels)
    return LabelReport(
        dataset=out,
        counts=out.label_counts(),
        failed=sum(s.startswith("failed") for s in status),
        invalid=sum(s.startswith("invalid") for s in status),
        agreement=agreement,
        cohen_kappa=kappa,
    )


def label_agreement(a: list[str], b: list[str]) -> tuple[float, float]:
    """Share of rows with the same label, and Cohen's kappa (rows where either is ambiguous count as disagreement classes)."""
    a_arr, b_arr = np.array(a), np.array(b)
    agree = float(np.mean(a_arr == b_arr))
    cats = sorted(set(a) | set(b))
    pe = sum(float(np.mean(a_arr == c)) * float(np.mean(b_arr == c)) for c in cats)
    kappa = (agree - pe) / (1 - pe) if pe < 1 else 1.0
    return agree, float(kappa)


def labels_to_json(report: LabelReport) -> str:
    return json.dumps({"counts": report.counts, "failed": report.failed, "invalid": report.invalid,
                       "agreement": report.agreement, "cohen_kappa": report.cohen_kappa})
