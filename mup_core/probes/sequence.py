"""Torch probes that read every token: attention probe and softmax-pooled probe.

Both are trained with AdamW and a cosine schedule, with early stopping on a
validation split: after every epoch the validation AUROC is measured and the
best epoch's weights are copied; at the end those weights are restored (not the
last epoch's). Padding never changes a score: padded positions are masked out of
every softmax and sum.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from mup_core.activations.ragged import RaggedActivations
from mup_core.evaluation.metrics import safe_auroc
from mup_core.probes.base import Probe, register
from mup_core.probes.linear import _check_labels


class _AttentionHead(nn.Module):
    """score = sum_t softmax_t(x_t . q) * (x_t . v) + b"""

    def __init__(self, hidden: int):
        super().__init__()
        self.query = nn.Linear(hidden, 1, bias=False)
        self.value = nn.Linear(hidden, 1)

    def token_scores(self, x):
        return self.value(x).squeeze(-1)

    def forward(self, x, mask):
        att = self.query(x).squeeze(-1).masked_fill(~mask, float("-inf"))
        weights = torch.softmax(att, dim=-1)
        return (weights * self.token_scores(x).masked_fill(~mask, 0.0)).sum(-1)


class _SoftmaxPoolHead(nn.Module):
    """per-token logit s_t = x_t . w + b; score = sum_t softmax_t(s_t / T) * s_t"""

    def __init__(self, hidden: int, temperature: float):
        super().__init__()
        self.linear = nn.Linear(hidden, 1)
        self.temperature = temperature

    def token_scores(self, x):
        return self.linear(x).squeeze(-1)

    def forward(self, x, mask):
        s = self.token_scores(x)
        weights = torch.softmax((s / self.temperature).masked_fill(~mask, float("-inf")), dim=-1)
        return (weights * s.masked_fill(~mask, 0.0)).sum(-1)


class TorchSequenceProbe(Probe):
    """Shared training loop for probes over per-token activations."""

    @classmethod
    def default_hyperparameters(cls):
        return {
            "lr": 5e-3,
            "weight_decay": 1e-3,
            "batch_size": 16,
            "max_epochs": 40,
            "patience": 6,
            "val_fraction": 0.15,
            "seed": 0,
        }

    def build_head(self, hidden: int) -> nn.Module:
        raise NotImplementedError

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mu) / self.sigma

    def _logits(self, acts: RaggedActivations, batch_size: int = 64) -> np.ndarray:
        self.head.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(acts), batch_size):
                idx = range(start, min(start + batch_size, len(acts)))
                x, mask = acts.padded(idx)
                out.append(self.head(self._prepare(x), mask).double().numpy())
        return np.concatenate(out)

    def predict_proba(self, acts):
        return 1.0 / (1.0 + np.exp(-np.clip(self._logits(acts), -60, 60)))

    def token_scores(self, acts: RaggedActivations, i: int) -> np.ndarray:
        """Per-token scores of example ``i`` (for inspection)."""
        with torch.no_grad():
            return self.head.token_scores(self._prepare(acts.example(i).float())).double().numpy()

    def fit(self, acts, labels, val=None):
        hp = self.hyperparameters
        y = _check_labels(labels, len(acts))
        gen = torch.Generator().manual_seed(int(hp["seed"]))
        torch.manual_seed(int(hp["seed"]))
        if val is None:  # carve a validation split from training, stratified and seeded
            rng = np.random.default_rng(int(hp["seed"]))
            val_idx = np.concatenate(
                [rng.permutation(np.flatnonzero(y == c))[: max(1, int(hp["val_fraction"] * (y == c).sum()))] for c in (0, 1)]
            )
            train_idx = np.setdiff1d(np.arange(len(y)), val_idx)
            val = (acts.subset(val_idx), y[val_idx])
            acts, y = acts.subset(train_idx), y[train_idx]
        val_acts, val_y = val[0], np.asarray(val[1]).astype(np.int64)

        values = acts.values.float()
        self.mu = values.mean(0)
        self.sigma = values.std(0) + 1e-6
        self.head = self.build_head(acts.hidden_size)
        opt = torch.optim.AdamW(self.head.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
        steps_per_epoch = math.ceil(len(y) / hp["batch_size"])
        total_steps = steps_per_epoch * hp["max_epochs"]
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))
        loss_fn = nn.BCEWithLogitsLoss()
        labels_t = torch.from_numpy(y).float()

        best_auroc, best_state, best_epoch, since_best = -1.0, None, -1, 0
        self.history = []
        for epoch in range(hp["max_epochs"]):
            self.head.train()
            order = torch.randperm(len(y), generator=gen).tolist()
            total = 0.0
            for start in range(0, len(order), hp["batch_size"]):
                idx = order[start : start + hp["batch_size"]]
                x, mask = acts.padded(idx)
                logits = self.head(self._prepare(x), mask)
                loss = loss_fn(logits, labels_t[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(idx)
            val_auroc = safe_auroc(val_y, self._logits(val_acts))
            self.history.append({"epoch": epoch, "train_loss": total / len(y), "val_auroc": val_auroc})
            if val_auroc > best_auroc:
                best_auroc, best_epoch, since_best = val_auroc, epoch, 0
                best_state = copy.deepcopy(self.head.state_dict())
            else:
                since_best += 1
                if since_best >= hp["patience"]:
                    break
        self.head.load_state_dict(best_state)
        self.best_epoch = best_epoch
        self.best_val_auroc = best_auroc
        self.info.extra.update({"best_epoch": best_epoch, "best_val_auroc": best_auroc, "epochs_run": len(self.history)})
        return self

    def state_tensors(self):
        state = {f"head.{k}": v for k, v in self.head.state_dict().items()}
        return {**state, "mu": self.mu, "sigma": self.sigma}

    def load_state_tensors(self, t):
        self.mu, self.sigma = t["mu"], t["sigma"]
        self.head = self.build_head(int(self.mu.shape[0]))
        self.head.load_state_dict({k[5:]: v for k, v in t.items() if k.startswith("head.")})
        self.head.eval()


@register
class AttentionProbe(TorchSequenceProbe):
    probe_type = "attention"

    def build_head(self, hidden):
        return _AttentionHead(hidden)


@register
class SoftmaxProbe(TorchSequenceProbe):
    probe_type = "softmax"

    @classmethod
    def default_hyperparameters(cls):
        return {**super().default_hyperparameters(), "temperature": 5.0}

    def build_head(self, hidden):
        return _SoftmaxPoolHead(hidden, float(self.hyperparameters["temperature"]))
