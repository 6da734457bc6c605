"""Finetuned classifier baseline: a classification head on a registry model's last
token, trained end to end with LoRA (adapters on the top layers' attention) or full
finetuning, seeded.

The head reads the hidden state of the last real token (found from the attention
mask, so padding never matters), as Hugging Face's sequence-classification models do.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

from mup_core.data.chat import render
from mup_core.data.dataset import Input


@dataclass
class FinetuneConfig:
    method: str = field(default="lora", metadata={"help": "lora or full"})
    steps: int = 40
    batch_size: int = 8
    lr: float = 5e-4  # LoRA; full finetuning wants ~2e-5
    weight_decay: float = 1e-3
    lora_r: int = 8
    top_layers: int = 4
    max_length: int = 256
    seed: int = 0
    mixed_precision: bool = True  # autocast to the hardware's compute dtype (none where that is fp32)

    def __post_init__(self) -> None:
        if self.method not in ("lora", "full"):
            raise ValueError(f"finetuned baseline: method must be 'lora' or 'full', got {self.method!r}")
        if self.steps < 1:
            raise ValueError("finetuned baseline: steps must be >= 1")

    def as_dict(self) -> dict:
        return asdict(self)


class FinetunedClassifier:
    name = "finetuned"

    def __init__(self, slug: str, cfg: FinetuneConfig):
        import torch
        from torch import nn
        from transformers import AutoModelForCausalLM

        from mup_core.deception.training import TrainConfig, wrap_lora
        from mup_core.models.loading import _unavailable, base_model, load_tokenizer, local_model_dir
        from mup_core.models.registry import get_spec

        self.cfg = cfg
        self.spec = get_spec(slug)
        torch.manual_seed(cfg.seed)
        try:
            lm = AutoModelForCausalLM.from_pretrained(local_model_dir(self.spec), dtype=torch.float32)
        except OSError as exc:
            raise _unavailable(self.spec, exc) from exc
        self.tokenizer = load_tokenizer(slug)
        if cfg.method == "lora":
            tc = TrainConfig(lora=True, lora_r=cfg.lora_r, top_layers=cfg.top_layers, lora_mlp=False, seed=cfg.seed)
            lm.requires_grad_(False)
            lm = wrap_lora(lm, self.spec.num_layers, tc, task_type="CAUSAL_LM").base_model.model  # adapters injected in place
        from mup_core.models.precision import training_precision

        # weights stay fp32; matmuls in the hardware's compute dtype through autocast
        self.precision = training_precision(cfg.mixed_precision)
        self.device = self.precision.device
        self.body = base_model(lm).to(self.device)  # the LM head is never run
        self.head = nn.Linear(self.spec.hidden_size, 1).to(self.device)
        self.history: list[dict] = []

    def _batch(self, inputs: Sequence[Input]):
        import torch

        texts = [render(v, self.tokenizer) for v in inputs]
        enc = self.tokenizer(texts, add_special_tokens=False, truncation=True, max_length=self.cfg.max_length,
                             padding=True, return_tensors="pt")
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(torch.long).to(self.device)

    def _logits(self, ids, mask):
        import torch

        hidden = self.body(input_ids=ids, attention_mask=mask).last_hidden_state
        last = hidden[torch.arange(ids.shape[0], device=ids.device), mask.sum(1) - 1]
        return self.head(last.float()).squeeze(-1)

    def _autocast(self):
        return self.precision.autocast()

    def fit(self, inputs: Sequence[Input], labels: np.ndarray, log: Callable[[dict], None] | None = None) -> "FinetunedClassifier":
        import torch

        cfg = self.cfg
        labels = np.asarray(labels).astype(np.float32)
        if set(np.unique(labels)) != {0.0, 1.0}:
            raise ValueError("the finetuned baseline needs both classes in its training data")
        params = [p for p in self.body.parameters() if p.requires_grad] + list(self.head.parameters())
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps)))
        rng = np.random.default_rng(cfg.seed)
        order = rng.permutation(len(labels))
        self.body.train()
        pos = 0
        for step in range(cfg.steps):
            if pos + cfg.batch_size > len(order):
                order, pos = rng.permutation(len(labels)), 0
            idx = order[pos : pos + cfg.batch_size]
            pos += cfg.batch_size
            ids, mask = self._batch([inputs[i] for i in idx])
            with self._autocast():
                logits = self._logits(ids, mask)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), torch.from_numpy(labels[idx]).to(self.device))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            self.history.append({"step": step, "loss": loss.item()})
            if log:
                log({"step": step + 1, "steps": cfg.steps, "loss": loss.item()})
        self.body.eval()
        return self

    def flops(self, tokens) -> np.ndarray:
        """Forward FLOPs per example of ``tokens`` tokens: 2 per non-embedding parameter per
        token and one classification position."""
        from mup_core.baselines.compute import ModelCompute

        n = sum(p.numel() for p in self.body.parameters())
        emb = self.body.get_input_embeddings().weight.numel()
        return ModelCompute(self.spec.slug, int(n - emb), self.spec.hidden_size, 1).forward_flops(np.asarray(tokens), 1)

    def predict_proba(self, inputs: Sequence[Input], batch_size: int = 16) -> np.ndarray:
        import torch

        out = np.empty(len(inputs))
        order = np.argsort([-len(str(v)) for v in inputs])
        with torch.inference_mode(), self._autocast():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                ids, mask = self._batch([inputs[i] for i in idx])
                out[idx] = torch.sigmoid(self._logits(ids, mask).float()).double().cpu().numpy()
        return out

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.body.parameters() if p.requires_grad) + sum(p.numel() for p in self.head.parameters())
