"""Torch probes that read every token.

- ``attention``: learned query attends over tokens, pools a learned value;
- ``softmax``: per-token logits pooled with softmax weights at a temperature;
- ``max``: the largest per-token logit;
- ``last_token``: the logit of the last token;
- ``rolling_max``: the largest mean of per-token logits over a sliding window;
- ``per_token``: a linear classifier trained on every token (each token carries its
  example's label), aggregated by the mean of its token logits;
- ``ema``: the largest exponential moving average of per-token logits;
- ``multimax``: several max-pooled token scores, combined linearly.

Every probe also scores causally, token by token (``stream_terms`` and
``aggregate_prefixes``): the score after token t is the offline score of the example cut
after t, so a live monitor's verdict after the last token is the offline one.

All are trained with AdamW and a cosine schedule (defaults from the research:
lr 5e-3, weight decay 1e-3), with early stopping on a validation split: after every
epoch the validation AUROC is measured and the best epoch's weights are copied; at
the end those weights are restored (not the last epoch's). Padding never changes a
score: padded positions are masked out of every softmax, max, window and sum (the
original's max probes took the max over padding too).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from mup_core.activations.ragged import RaggedActivations
from mup_core.evaluation.metrics import safe_auroc
from mup_core.probes.base import Probe
from mup_core.probes.linear import _check_labels, _check_weights


def _prefix_softmax_mean(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """For every prefix t: sum_{s<=t} softmax(q_{<=t})_s v_s, in log space (stable)."""
    with np.errstate(divide="ignore"):
        log_norm = np.logaddexp.accumulate(q)
        pos = np.logaddexp.accumulate(q + np.log(np.clip(v, 0, None)))
        neg = np.logaddexp.accumulate(q + np.log(np.clip(-v, 0, None)))
    return np.exp(pos - log_norm) - np.exp(neg - log_norm)


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

    def terms(self, x):
        return torch.stack([self.query(x).squeeze(-1), self.token_scores(x)], dim=-1)

    def aggregate(self, terms):
        return _prefix_softmax_mean(terms[:, 0], terms[:, 1])


class _SoftmaxPoolHead(nn.Module):
    """per-token logit s_t = x_t . w + b; score = sum_t softmax_t(s_t / T) * s_t"""

    def __init__(self, hidden: int, temperature: float):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"softmax: temperature must be > 0, got {temperature}")
        self.linear = nn.Linear(hidden, 1)
        self.temperature = temperature

    def token_scores(self, x):
        return self.linear(x).squeeze(-1)

    def forward(self, x, mask):
        s = self.token_scores(x)
        weights = torch.softmax((s / self.temperature).masked_fill(~mask, float("-inf")), dim=-1)
        return (weights * s.masked_fill(~mask, 0.0)).sum(-1)

    def terms(self, x):
        return self.token_scores(x)[:, None]

    def aggregate(self, terms):
        return _prefix_softmax_mean(terms[:, 0] / self.temperature, terms[:, 0])


_NEG = -1e9  # not -inf: a max/softmax over masked positions must stay finite in gradients


class _MaxHead(nn.Module):
    """score = max_t (x_t . w + b) over real tokens."""

    def __init__(self, hidden: int):
        super().__init__()
        self.linear = nn.Linear(hidden, 1)

    def token_scores(self, x):
        return self.linear(x).squeeze(-1)

    def forward(self, x, mask):
        return self.token_scores(x).masked_fill(~mask, _NEG).max(-1).values

    def terms(self, x):
        return self.token_scores(x)[:, None]

    def aggregate(self, terms):
        return np.maximum.accumulate(terms[:, 0])


class _LastTokenHead(_MaxHead):
    """score = x_last . w + b (the last real token; padding is on the right)."""

    def forward(self, x, mask):
        last = mask.long().sum(-1) - 1
        return self.token_scores(x).gather(1, last[:, None]).squeeze(1)

    def aggregate(self, terms):
        return terms[:, 0].copy()


class _RollingMaxHead(_MaxHead):
    """score = max over windows of ``window`` consecutive real tokens of the mean logit;
    an example shorter than the window gets the mean over all its tokens."""

    def __init__(self, hidden: int, window: int):
        super().__init__(hidden)
        if window < 1:
            raise ValueError(f"rolling_max: window must be >= 1, got {window}")
        self.window = int(window)

    def forward(self, x, mask):
        s = self.token_scores(x).masked_fill(~mask, 0.0)
        b, length = s.shape
        cs = torch.cat([s.new_zeros(b, 1), s.cumsum(-1)], dim=1)  # cs[:, t] = sum of first t
        ends = torch.arange(1, length + 1)
        starts = (ends - self.window).clamp(min=0)
        means = (cs[:, 1:] - cs[:, starts]) / (ends - starts).to(s.dtype)
        n = mask.long().sum(-1, keepdim=True)
        valid = (ends[None, :] <= n) & ((ends[None, :] >= self.window) | (ends[None, :] == n))
        return means.masked_fill(~valid, _NEG).max(-1).values

    def aggregate(self, terms):
        s = terms[:, 0]
        cs = np.concatenate([[0.0], np.cumsum(s)])
        ends = np.arange(1, len(s) + 1)
        starts = np.clip(ends - self.window, 0, None)
        means = (cs[ends] - cs[starts]) / (ends - starts)
        full = np.where(ends >= self.window, means, -np.inf)  # whole windows only
        best = np.maximum.accumulate(full)
        return np.where(ends < self.window, cs[ends] / ends, best)  # shorter than a window: the mean


class _MeanHead(_MaxHead):
    """score = mean_t (x_t . w + b): the aggregation of the per-token probe."""

    def forward(self, x, mask):
        s = self.token_scores(x).masked_fill(~mask, 0.0)
        return s.sum(-1) / mask.sum(-1)

    def aggregate(self, terms):
        return np.cumsum(terms[:, 0]) / np.arange(1, len(terms) + 1)


class _EMAHead(_MaxHead):
    """Streaming aggregation of the production anchors: per-token logits smoothed by an
    exponential moving average (e_0 = s_0, e_t = a s_t + (1 - a) e_{t-1}); the example's
    logit is the largest smoothed value, i.e. the alarm a monitor would raise first."""

    def __init__(self, hidden: int, alpha: float):
        super().__init__(hidden)
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"ema: alpha must be in (0, 1], got {alpha}")
        self.alpha = float(alpha)

    def _weights(self, length: int, dtype) -> torch.Tensor:
        t = torch.arange(length)
        power = (t[:, None] - t[None, :]).clamp(min=0).to(dtype)
        w = self.alpha * (1 - self.alpha) ** power
        w[:, 0] = (1 - self.alpha) ** t.to(dtype)
        return torch.tril(w)

    def forward(self, x, mask):
        s = self.token_scores(x).masked_fill(~mask, 0.0)
        ema = s @ self._weights(s.shape[1], s.dtype).T  # causal: padding on the right never reaches a real token
        return ema.masked_fill(~mask, _NEG).max(-1).values

    def aggregate(self, terms):
        from scipy.signal import lfilter

        s = terms[:, 0]
        a = self.alpha
        ema = lfilter([a], [1.0, -(1 - a)], s, zi=[(1 - a) * s[0]])[0]  # e_0 = s_0
        return np.maximum.accumulate(ema)


class _MultiMaxHead(nn.Module):
    """``heads`` linear token scores, each max-pooled over tokens, combined linearly:
    a multi-head hard-max probe in the spirit of the production anchors' MultiMax (each
    head can fire on a different kind of evidence; one token suffices for each)."""

    def __init__(self, hidden: int, heads: int):
        super().__init__()
        if heads < 1:
            raise ValueError(f"multimax: heads must be >= 1, got {heads}")
        self.values = nn.Linear(hidden, heads)
        self.combine = nn.Linear(heads, 1)

    def token_scores(self, x):
        return self.combine(self.values(x)).squeeze(-1)

    def forward(self, x, mask):
        v = self.values(x).masked_fill(~mask[..., None], _NEG).max(-2).values
        return self.combine(v).squeeze(-1)

    def terms(self, x):
        return self.values(x)

    def aggregate(self, terms):
        w = self.combine.weight.detach().double().numpy()[0]
        b = float(self.combine.bias.detach()[0])
        return np.maximum.accumulate(terms, axis=0) @ w + b


class TorchSequenceProbe(Probe):
    """Shared training loop for probes over per-token activations."""

    def __init__(self, lr: float = 5e-3, weight_decay: float = 1e-3, batch_size: int = 16, max_epochs: int = 40,
                 patience: int = 6, val_fraction: float = 0.15, seed: int = 0):
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.val_fraction = val_fraction
        self.seed = seed

    def build_head(self, hidden: int) -> nn.Module:
        raise NotImplementedError

    def validate(self) -> None:
        for name in ("max_epochs", "batch_size", "patience"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{self.probe_type}: {name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 < float(self.val_fraction) < 1.0:
            raise ValueError(f"{self.probe_type}: val_fraction must be in (0, 1), got {self.val_fraction}")
        try:
            self.build_head(1)  # the head's own checks: window, alpha, heads, temperature
        except (TypeError, ValueError) as exc:
            raise ValueError(str(exc) if str(exc).startswith(self.probe_type) else f"{self.probe_type}: {exc}") from None

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mu_) / self.sigma_

    def _decision(self, acts: RaggedActivations, batch_size: int = 64) -> np.ndarray:
        self.head_.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(acts), batch_size):
                idx = range(start, min(start + batch_size, len(acts)))
                x, mask = acts.padded(idx)
                out.append(self.head_(self._prepare(x), mask).double().numpy())
        return np.concatenate(out)

    def token_scores(self, acts: RaggedActivations, i: int) -> np.ndarray:
        with torch.no_grad():
            return self.head_.token_scores(self._prepare(acts.example(i).float())).double().numpy()

    def stream_terms(self, x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return self.head_.terms(self._prepare(x.float())).double().numpy()

    def aggregate_prefixes(self, terms: np.ndarray) -> np.ndarray:
        return self.head_.aggregate(terms)

    token_level_loss: bool = False  # train every token on its example's label

    def _loss(self, x, mask, labels, weights):
        if self.token_level_loss:
            s = self.head_.token_scores(x)
            per_token = nn.functional.binary_cross_entropy_with_logits(
                s, labels[:, None].expand_as(s), reduction="none"
            )
            per_example = (per_token * mask).sum(-1) / mask.sum(-1)  # each example weighs the same
        else:
            per_example = nn.functional.binary_cross_entropy_with_logits(self.head_(x, mask), labels, reduction="none")
        return (per_example * weights).sum() / weights.sum()

    def fit(self, acts, labels, val=None, sample_weight=None):
        y = _check_labels(labels, len(acts))
        w = _check_weights(sample_weight, len(acts))
        gen = torch.Generator().manual_seed(int(self.seed))
        torch.manual_seed(int(self.seed))
        if val is None:  # carve a validation split from training, stratified and seeded
            rng = np.random.default_rng(int(self.seed))
            val_idx = np.concatenate(
                [rng.permutation(np.flatnonzero(y == c))[: max(1, int(self.val_fraction * (y == c).sum()))] for c in (0, 1)]
            )
            train_idx = np.setdiff1d(np.arange(len(y)), val_idx)
            val = (acts.subset(val_idx), y[val_idx])
            acts, y, w = acts.subset(train_idx), y[train_idx], w[train_idx]
        val_acts, val_y = val[0], np.asarray(val[1]).astype(np.int64)

        values = acts.values.float()
        self.mu_ = values.mean(0)
        self.sigma_ = values.std(0) + 1e-6
        self.head_ = self.build_head(acts.hidden_size)
        opt = torch.optim.AdamW(self.head_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        steps_per_epoch = math.ceil(len(y) / self.batch_size)
        total_steps = steps_per_epoch * self.max_epochs
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))
        labels_t = torch.from_numpy(y).float()
        weights_t = torch.from_numpy(w).float()

        best_auroc, best_state, best_epoch, since_best = -1.0, None, -1, 0
        self.history_ = []
        for epoch in range(self.max_epochs):
            self.head_.train()
            order = torch.randperm(len(y), generator=gen).tolist()
            total = 0.0
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                x, mask = acts.padded(idx)
                loss = self._loss(self._prepare(x), mask, labels_t[idx], weights_t[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(idx)
            val_auroc = safe_auroc(val_y, self._decision(val_acts))
            self.history_.append({"epoch": epoch, "train_loss": total / len(y), "val_auroc": val_auroc})
            if val_auroc > best_auroc:
                best_auroc, best_epoch, since_best = val_auroc, epoch, 0
                best_state = copy.deepcopy(self.head_.state_dict())
            else:
                since_best += 1
                if since_best >= self.patience:
                    break
        self.head_.load_state_dict(best_state)
        self.best_epoch_ = best_epoch
        self.best_val_auroc_ = best_auroc
        return self

    def fitted_summary(self):
        return {"best_epoch": self.best_epoch_, "best_val_auroc": self.best_val_auroc_, "epochs_run": len(self.history_)}

    def state_tensors(self):
        state = {f"head.{k}": v for k, v in self.head_.state_dict().items()}
        return {**state, "mu": self.mu_, "sigma": self.sigma_}

    def load_state_tensors(self, t):
        self.mu_, self.sigma_ = t["mu"], t["sigma"]
        self.head_ = self.build_head(int(self.mu_.shape[0]))
        self.head_.load_state_dict({k[5:]: v for k, v in t.items() if k.startswith("head.")})
        self.head_.eval()


class AttentionProbe(TorchSequenceProbe):
    probe_type = "attention"

    def build_head(self, hidden):
        return _AttentionHead(hidden)


class SoftmaxProbe(TorchSequenceProbe):
    probe_type = "softmax"

    def __init__(self, temperature: float = 5.0, **training):
        super().__init__(**training)
        self.temperature = temperature

    def build_head(self, hidden):
        return _SoftmaxPoolHead(hidden, float(self.temperature))


class MaxProbe(TorchSequenceProbe):
    probe_type = "max"

    def build_head(self, hidden):
        return _MaxHead(hidden)


class LastTokenProbe(TorchSequenceProbe):
    probe_type = "last_token"

    def build_head(self, hidden):
        return _LastTokenHead(hidden)


class RollingMaxProbe(TorchSequenceProbe):
    probe_type = "rolling_max"

    def __init__(self, window: int = 10, **training):
        super().__init__(**training)
        self.window = window

    def build_head(self, hidden):
        return _RollingMaxHead(hidden, int(self.window))


class PerTokenProbe(TorchSequenceProbe):
    probe_type = "per_token"
    token_level_loss = True

    def build_head(self, hidden):
        return _MeanHead(hidden)


class EMAProbe(TorchSequenceProbe):
    probe_type = "ema"

    def __init__(self, alpha: float = 0.5, **training):
        super().__init__(**training)
        self.alpha = alpha

    def build_head(self, hidden):
        return _EMAHead(hidden, float(self.alpha))


class MultiMaxProbe(TorchSequenceProbe):
    probe_type = "multimax"

    def __init__(self, heads: int = 4, **training):
        super().__init__(**training)
        self.heads = heads

    def build_head(self, hidden):
        return _MultiMaxHead(hidden, int(self.heads))
