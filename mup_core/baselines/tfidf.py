"""The cheapest monitor: word and word-pair TF-IDF features into logistic regression."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from mup_core.baselines.text import transcript
from mup_core.data.dataset import Input


class TfidfMonitor:
    name = "tfidf"

    def __init__(self, C: float = 1.0, ngram_max: int = 2, min_df: int = 1, max_features: int = 50_000):
        self.vectorizer = TfidfVectorizer(ngram_range=(1, ngram_max), min_df=min_df, max_features=max_features, sublinear_tf=True)
        self.clf = LogisticRegression(C=C, max_iter=2000)

    def fit(self, inputs: Sequence[Input], labels: np.ndarray, sample_weight: np.ndarray | None = None) -> "TfidfMonitor":
        labels = np.asarray(labels).astype(int)
        if set(np.unique(labels)) != {0, 1}:
            raise ValueError("the TF-IDF monitor needs both classes in its training data")
        x = self.vectorizer.fit_transform([transcript(v) for v in inputs])
        self.clf.fit(x, labels, sample_weight=sample_weight)
        return self

    def predict_proba(self, inputs: Sequence[Input]) -> np.ndarray:
        return self.clf.predict_proba(self.vectorizer.transform([transcript(v) for v in inputs]))[:, 1]

    def top_features(self, k: int = 10) -> dict[str, list[str]]:
        """The words that push hardest towards each class (for the UI)."""
        names = np.asarray(self.vectorizer.get_feature_names_out())
        order = np.argsort(self.clf.coef_[0])
        return {"high-stakes": names[order[::-1][:k]].tolist(), "low-stakes": names[order[:k]].tolist()}

    def flops_per_example(self, inputs: Sequence[Input]) -> np.ndarray:
        """Sparse dot product: about two operations per non-zero feature."""
        x = self.vectorizer.transform([transcript(v) for v in inputs])
        return 2.0 * np.diff(x.indptr).astype(float)
