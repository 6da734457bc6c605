"""Probes on mean-pooled activations: logistic regression, difference of means and
linear discriminant analysis (with a shrunk pooled covariance).

All three are linear in the pooled activation, so the same function applied to
each token gives a per-token score whose mean is the example's logit
(``token_scores``), for inspection.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from mup_core.activations.ragged import RaggedActivations
from mup_core.probes.base import Probe


class _MeanPooledStreaming:
    """The logit is affine in the mean-pooled activation, so it equals the mean of the
    per-token logits: a prefix's logit is their running mean."""

    def stream_terms(self, x):
        return self.token_scores_of(x.double().numpy())[:, None]

    def aggregate_prefixes(self, terms):
        return np.cumsum(terms[:, 0]) / np.arange(1, len(terms) + 1)


def _check_weights(sample_weight, n: int) -> np.ndarray:
    if sample_weight is None:
        return np.ones(n)
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.shape != (n,) or np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(f"sample_weight must be {n} finite non-negative numbers with a positive sum")
    return w


def _check_labels(labels: np.ndarray, n: int) -> np.ndarray:
    labels = np.asarray(labels).astype(np.int64)
    if labels.shape != (n,):
        raise ValueError(f"got {labels.shape[0]} labels for {n} examples")
    if set(np.unique(labels)) != {0, 1}:
        raise ValueError("training a probe needs both classes (high-stakes and low-stakes)")
    return labels


class LogisticRegressionProbe(_MeanPooledStreaming, Probe):
    """sklearn logistic regression on standardised mean-pooled activations."""

    probe_type = "logistic_regression"

    def __init__(self, C: float = 1e-3, max_iter: int = 2000):
        self.C = C
        self.max_iter = max_iter

    def validate(self):
        if not float(self.C) > 0:
            raise ValueError(f"logistic_regression: C must be > 0, got {self.C}")
        if int(self.max_iter) < 1:
            raise ValueError(f"logistic_regression: max_iter must be at least 1, got {self.max_iter}")

    def fit(self, acts, labels, val=None, sample_weight=None):
        x = acts.mean_pool().astype(np.float64)
        y = _check_labels(labels, len(acts))
        w = _check_weights(sample_weight, len(acts))
        scaler = StandardScaler().fit(x, sample_weight=w)
        clf = LogisticRegression(C=self.C, max_iter=self.max_iter)
        clf.fit(scaler.transform(x), y, sample_weight=w)
        self.mean_ = scaler.mean_
        self.scale_ = scaler.scale_
        self.coef_ = clf.coef_[0]
        self.intercept_ = float(clf.intercept_[0])
        return self

    def decision(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean_) / self.scale_) @ self.coef_ + self.intercept_

    def _decision(self, acts: RaggedActivations) -> np.ndarray:
        return self.decision(acts.mean_pool().astype(np.float64))

    def token_scores(self, acts, i):
        return self.decision(acts.example(i).double().numpy())

    def token_scores_of(self, x: np.ndarray) -> np.ndarray:
        return self.decision(x)

    def state_tensors(self):
        return _affine_state(self)

    def load_state_tensors(self, t):
        _load_affine_state(self, t)


def _affine_state(probe) -> dict:
    """The state of a standardise-then-linear probe (logistic regression, LDA)."""
    return {
        "mean": torch.from_numpy(np.asarray(probe.mean_, dtype=np.float64)),
        "scale": torch.from_numpy(np.asarray(probe.scale_, dtype=np.float64)),
        "coef": torch.from_numpy(np.asarray(probe.coef_, dtype=np.float64)),
        "intercept": torch.tensor([probe.intercept_], dtype=torch.float64),
    }


def _load_affine_state(probe, t) -> None:
    probe.mean_, probe.scale_, probe.coef_ = t["mean"].numpy(), t["scale"].numpy(), t["coef"].numpy()
    probe.intercept_ = float(t["intercept"][0])


def _fit_1d_calibration(proj: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Scale and offset of a one-dimensional logistic fit (the ranking is unchanged)."""
    proj = proj[:, None]
    mu = float(np.average(proj[:, 0], weights=w))
    sd = float(np.sqrt(np.average((proj[:, 0] - mu) ** 2, weights=w))) + 1e-12
    clf = LogisticRegression(C=1.0).fit((proj - mu) / sd, y, sample_weight=w)
    return float(clf.coef_[0, 0] / sd), float(clf.intercept_[0] - clf.coef_[0, 0] * mu / sd)


class DifferenceOfMeansProbe(_MeanPooledStreaming, Probe):
    """Direction = mean(high) - mean(low) of mean-pooled activations.

    Scores are the projection on that direction, mapped to a probability by a
    one-dimensional logistic fit (scale and offset only), so the ranking (AUROC)
    is exactly that of the raw difference-of-means direction.
    """

    probe_type = "difference_of_means"

    def __init__(self):
        pass

    def fit(self, acts, labels, val=None, sample_weight=None):
        x = acts.mean_pool().astype(np.float64)
        y = _check_labels(labels, len(acts))
        w = _check_weights(sample_weight, len(acts))
        self.direction_ = np.average(x[y == 1], axis=0, weights=w[y == 1]) - np.average(x[y == 0], axis=0, weights=w[y == 0])
        self.scale_, self.offset_ = _fit_1d_calibration(x @ self.direction_, y, w)
        return self

    def _decision(self, acts):
        proj = acts.mean_pool().astype(np.float64) @ self.direction_
        return self.scale_ * proj + self.offset_

    def token_scores(self, acts, i):
        return self.token_scores_of(acts.example(i).double().numpy())

    def token_scores_of(self, x: np.ndarray) -> np.ndarray:
        return self.scale_ * (x @ self.direction_) + self.offset_

    def state_tensors(self):
        return {
            "direction": torch.from_numpy(np.asarray(self.direction_, dtype=np.float64)),
            "calibration": torch.tensor([self.scale_, self.offset_], dtype=torch.float64),
        }

    def load_state_tensors(self, t):
        self.direction_ = t["direction"].numpy()
        self.scale_, self.offset_ = (float(v) for v in t["calibration"])


class LDAProbe(_MeanPooledStreaming, Probe):
    """Linear discriminant analysis on standardised mean-pooled activations.

    w = S^-1 (mu_high - mu_low) with S the pooled within-class covariance shrunk
    towards a scaled identity: S = (1 - a) S_emp + a tr(S_emp)/d I. ``shrinkage``
    is a number in [0, 1] or ``"auto"`` (Ledoit-Wolf). The score is the LDA
    posterior log-odds w.x - w.(mu_high + mu_low)/2 + log(pi_high/pi_low).
    Unlike difference of means (which is this with S = I), it discounts directions
    in which the classes vary a lot anyway.
    """

    probe_type = "lda"

    def __init__(self, shrinkage: float | str = "auto"):
        self.shrinkage = shrinkage

    def validate(self):
        s = self.shrinkage
        if s != "auto" and not (isinstance(s, (int, float)) and 0.0 <= float(s) <= 1.0):
            raise ValueError(f"lda: shrinkage must be 'auto' or in [0, 1], got {s!r}")

    def fit(self, acts, labels, val=None, sample_weight=None):
        from sklearn.covariance import ledoit_wolf_shrinkage

        x = acts.mean_pool().astype(np.float64)
        y = _check_labels(labels, len(acts))
        w = _check_weights(sample_weight, len(acts))
        self.mean_ = np.average(x, axis=0, weights=w)
        self.scale_ = np.sqrt(np.average((x - self.mean_) ** 2, axis=0, weights=w)) + 1e-8
        z = (x - self.mean_) / self.scale_
        mu1 = np.average(z[y == 1], axis=0, weights=w[y == 1])
        mu0 = np.average(z[y == 0], axis=0, weights=w[y == 0])
        centred = z - np.where(y[:, None] == 1, mu1, mu0)
        wn = w / w.sum()
        emp = (centred * wn[:, None]).T @ centred
        shrinkage = self.shrinkage
        if shrinkage == "auto":
            alpha = float(ledoit_wolf_shrinkage(centred * np.sqrt(wn * len(w))[:, None], assume_centered=True))
        else:
            alpha = float(shrinkage)
            if not 0.0 <= alpha <= 1.0:
                raise ValueError(f"lda: shrinkage must be 'auto' or in [0, 1], got {shrinkage!r}")
        d = emp.shape[0]
        cov = (1 - alpha) * emp + alpha * np.trace(emp) / d * np.eye(d)
        self.coef_ = np.linalg.solve(cov + 1e-10 * np.eye(d), mu1 - mu0)
        prior1 = wn[y == 1].sum()
        self.intercept_ = float(-self.coef_ @ (mu1 + mu0) / 2 + np.log(prior1 / (1 - prior1)))
        self.shrinkage_ = alpha
        return self

    def fitted_summary(self):
        return {"shrinkage": self.shrinkage_}

    def decision(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean_) / self.scale_) @ self.coef_ + self.intercept_

    def _decision(self, acts):
        return self.decision(acts.mean_pool().astype(np.float64))

    def token_scores(self, acts, i):
        return self.decision(acts.example(i).double().numpy())

    def token_scores_of(self, x: np.ndarray) -> np.ndarray:
        return self.decision(x)

    def state_tensors(self):
        return _affine_state(self)

    def load_state_tensors(self, t):
        _load_affine_state(self, t)
