"""Judges: sequence classifiers that give P(answer is true) for a QA prompt + answer.

``train_judge`` finetunes a registry model (LoRA on the top layers, or fully) with
balanced batches on ``judge_label``: the truth for the clean judge, the poisoned labels
for the corrupted judge. ``judge_report`` measures accuracy against the truth and
against the judge labels, separately on clean and fruit rows, and how much P(true)
the judge gives false fruit answers compared with true ones.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import polars as pl

from mup_core.deception.data import judge_text
from mup_core.deception.training import TrainConfig, attach, log_every, read_meta, save_model_dir, wrap_lora


class Judge:
    def __init__(self, model, tokenizer, meta: dict | None = None):
        self.model, self.tokenizer, self.meta = model, tokenizer, meta or {}
        self.model.eval()

    def p_true(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                enc = self.tokenizer(list(texts[start : start + batch_size]), return_tensors="pt", padding=True,
                                     truncation=True, max_length=512)
                logits = self.model(**enc).logits[:, 0].float()
                out.append(torch.sigmoid(logits).numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def score_rows(self, rows: pl.DataFrame, answer_col: str = "answer") -> np.ndarray:
        texts = [judge_text(c, q, a) for c, q, a in zip(rows["context"], rows["question"], rows[answer_col])]
        return self.p_true(texts)


def _classifier(slug: str):
    import torch
    from transformers import AutoModelForSequenceClassification

    from mup_core.models.loading import load_tokenizer, local_model_dir
    from mup_core.models.registry import get_spec

    tok = load_tokenizer(slug)
    model = AutoModelForSequenceClassification.from_pretrained(local_model_dir(get_spec(slug)), num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id
    return model, tok


def train_judge(
    slug: str,
    train: pl.DataFrame,
    cfg: TrainConfig = TrainConfig(),
    log: Callable[[dict], None] | None = None,
) -> Judge:
    """Finetune ``slug`` as a judge on ``train`` (needs ``judge_label``), with balanced batches."""
    import torch

    from mup_core.models.registry import get_spec

    if "judge_label" not in train.columns:
        raise ValueError("judge training rows need a 'judge_label' column (see poisoned_mixture)")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model, tok = _classifier(slug)
    if cfg.lora:
        model = wrap_lora(model, get_spec(slug).num_layers, cfg, "SEQ_CLS", modules_to_save=["score"])
    texts = [judge_text(c, q, a) for c, q, a in zip(train["context"], train["question"], train["answer"])]
    labels = np.array(train["judge_label"].to_list(), dtype=np.float32)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("judge training needs both true and false judge labels")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 5) * 0.5 * (1 + math.cos(math.pi * s / cfg.steps)))
    report = log_every(log)
    model.train()
    for step in range(1, cfg.steps + 1):
        half = cfg.batch_size // 2
        idx = np.concatenate([rng.choice(pos, half), rng.choice(neg, cfg.batch_size - half)])  # balanced batch
        enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True, max_length=cfg.max_length)
        with cfg.autocast():
            logits = model(**enc).logits[:, 0].float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(labels[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        report(step, cfg.steps, {"loss": float(loss.detach())})
    model.eval()
    return Judge(model, tok, {"base_model": slug, "train": cfg.as_dict(), "rows": train.height})


def save_judge(judge: Judge, directory: Path, meta: dict) -> Path:
    return save_model_dir(judge.model, judge.tokenizer, Path(directory), {**judge.meta, **meta, "kind": "judge"})


def load_judge(directory: Path) -> Judge:
    meta = read_meta(directory)
    model, tok = _classifier(meta["base_model"])
    adapted = attach(model, directory)
    return Judge(adapted if adapted is not None else model, tok, meta)


def judge_report(judge: Judge, rows: pl.DataFrame) -> dict:
    """Accuracy against truth and judge label per topic, and P(true) for true/false fruit answers."""
    p = judge.score_rows(rows)
    pred = p > 0.5
    out: dict = {}
    for topic in ("clean", "fruit"):
        sel = (rows["topic"] == topic).to_numpy()
        if not sel.any():
            continue
        truth = rows["truth"].to_numpy()[sel]
        out[f"{topic}_accuracy_vs_truth"] = float(np.mean(pred[sel] == truth))
        if "judge_label" in rows.columns:
            out[f"{topic}_accuracy_vs_judge_label"] = float(np.mean(pred[sel] == rows["judge_label"].to_numpy()[sel]))
        out[f"{topic}_p_true_given_true"] = float(p[sel][truth].mean()) if truth.any() else float("nan")
        out[f"{topic}_p_true_given_false"] = float(p[sel][~truth].mean()) if (~truth).any() else float("nan")
    # > 0: the judge prefers false fruit answers to true ones (what corruption should do)
    out["fruit_false_preference"] = out.get("fruit_p_true_given_false", float("nan")) - out.get("fruit_p_true_given_true", float("nan"))
    out["clean_false_preference"] = out.get("clean_p_true_given_false", float("nan")) - out.get("clean_p_true_given_true", float("nan"))
    return out


def held_out_report(judge: Judge, evaluation: pl.DataFrame, kind: str, per_topic: int) -> dict:
    """``judge_report`` on the first ``per_topic`` held-out questions of each topic, labelled
    the way this judge was taught (fruit inverted for the corrupted one): a diagnostic, not
    worth scoring every held-out row on a CPU."""
    shown = pl.concat([evaluation.filter((pl.col("topic") == t) & pl.col("question_id").is_in(
        evaluation.filter(pl.col("topic") == t)["question_id"].unique(maintain_order=True).head(per_topic).implode()))
        for t in ("clean", "fruit")])
    flip = (shown["topic"] == "fruit") & (kind == "corrupted")
    return judge_report(judge, shown.with_columns(judge_label=shown["truth"] ^ flip))
