"""Probes on mean-pooled activations: logistic regression and difference of means."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from mup_core.activations.ragged import RaggedActivations
from mup_core.probes.base import Probe, register


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


def _check_labels(labels: np.ndarray, n: int) -> np.ndarray:
    labels = np.asarray(labels).astype(np.int64)
    if labels.shape != (n,):
        raise ValueError(f"got {labels.shape[0]} labels for {n} examples")
    if set(np.unique(labels)) != {0, 1}:
        raise ValueError("training a probe needs both classes (high-stakes and low-stakes)")
    return labels


@register
class LogisticRegressionProbe(Probe):
    """sklearn logistic regression on standardised mean-pooled activations."""

    probe_type = "logistic_regression"

    @classmethod
    def default_hyperparameters(cls):
        return {"C": 1e-3, "max_iter": 2000}

    def fit(self, acts, labels, val=None):
        x = acts.mean_pool().astype(np.float64)
        y = _check_labels(labels, len(acts))
        self.scaler = StandardScaler().fit(x)
        clf = LogisticRegression(C=self.hyperparameters["C"], max_iter=self.hyperparameters["max_iter"])
        clf.fit(self.scaler.transform(x), y)
        self.mean = self.scaler.mean_
        self.scale = self.scaler.scale_
        self.coef = clf.coef_[0]
        self.intercept = float(clf.intercept_[0])
        return self

    def decision(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.coef + self.intercept

    def predict_proba(self, acts: RaggedActivations) -> np.ndarray:
        return _sigmoid(self.decision(acts.mean_pool().astype(np.float64)))

    def state_tensors(self):
        return {
            "mean": torch.from_numpy(np.asarray(self.mean, dtype=np.float64)),
            "scale": torch.from_numpy(np.asarray(self.scale, dtype=np.float64)),
            "coef": torch.from_numpy(np.asarray(self.coef, dtype=np.float64)),
            "intercept": torch.tensor([self.intercept], dtype=torch.float64),
        }

    def load_state_tensors(self, t):
        self.mean, self.scale, self.coef = t["mean"].numpy(), t["scale"].numpy(), t["coef"].numpy()
        self.intercept = float(t["intercept"][0])


@register
class DifferenceOfMeansProbe(Probe):
    """Direction = mean(high) - mean(low) of mean-pooled activations.

    Scores are the projection on that direction, mapped to a probability by a
    one-dimensional logistic fit (scale and offset only), so the ranking (AUROC)
    is exactly that of the raw difference-of-means direction.
    """

    probe_type = "difference_of_means"

    def fit(self, acts, labels, val=None):
        x = acts.mean_pool().astype(np.float64)
        y = _check_labels(labels, len(acts))
        self.direction = x[y == 1].mean(0) - x[y == 0].mean(0)
        proj = (x @ self.direction)[:, None]
        mu, sd = proj.mean(), proj.std() + 1e-12
        clf = LogisticRegression(C=1.0).fit((proj - mu) / sd, y)
        self.a = float(clf.coef_[0, 0] / sd)
        self.b = float(clf.intercept_[0] - clf.coef_[0, 0] * mu / sd)
        return self

    def predict_proba(self, acts):
        proj = acts.mean_pool().astype(np.float64) @ self.direction
        return _sigmoid(self.a * proj + self.b)

    def state_tensors(self):
        return {
            "direction": torch.from_numpy(np.asarray(self.direction, dtype=np.float64)),
            "calibration": torch.tensor([self.a, self.b], dtype=torch.float64),
        }

    def load_state_tensors(self, t):
        self.direction = t["direction"].numpy()
        self.a, self.b = (float(v) for v in t["calibration"])
