"""Every probe type scores causally: the score after token t is the offline score of the
example cut after t, and a stream's last verdict is the offline verdict."""

import numpy as np
import pytest
import torch

from mup_core.activations.ragged import RaggedActivations
from mup_core.probe_types import ALL_PROBE_TYPES
from mup_core.probes import make_probe
from mup_core.probes.base import ProbeStream, tokens_until_alarm


def toy_acts(n=48, hidden=16, seed=0):
    """Examples whose label shows in a few tokens in the middle, of varied lengths."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=hidden)
    parts, labels = [], []
    for i in range(n):
        length = int(rng.integers(3, 40))
        x = rng.normal(size=(length, hidden))
        y = i % 2
        if y:
            at = rng.integers(0, length, size=max(1, length // 6))
            x[at] += 2.0 * direction
        parts.append(x)
        labels.append(y)
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])])
    return RaggedActivations(torch.tensor(np.concatenate(parts), dtype=torch.float32), offsets), np.array(labels)


FAST = {"max_epochs": 6, "patience": 6}


@pytest.mark.parametrize("probe_type", ALL_PROBE_TYPES)
def test_prefix_scores_equal_offline_scores_of_the_cut_example(probe_type):
    acts, y = toy_acts()
    hp = FAST if probe_type not in ("logistic_regression", "difference_of_means", "lda") else {}
    probe = make_probe(probe_type, **hp).fit(acts, y)
    offline = probe.predict_proba(acts)[:, 1]
    for i in range(0, len(acts), 5):
        x = acts.example(i)
        prefix = probe.prefix_proba(x)
        assert prefix.shape == (len(x),)
        assert prefix[-1] == pytest.approx(offline[i], abs=1e-5)
        logits = probe.aggregate_prefixes(probe.stream_terms(x))
        for t in {0, len(x) // 2, len(x) - 2} - {-1}:
            if t < 0:
                continue
            cut = RaggedActivations(x[: t + 1].clone(), np.array([0, t + 1]))
            p = float(probe.predict_proba(cut)[0, 1])
            assert prefix[t] == pytest.approx(p, abs=1e-5), (probe_type, i, t)
            if 1e-6 < p < 1 - 1e-6:  # compared as logits too, where a probability is not saturated
                assert logits[t] == pytest.approx(np.log(p) - np.log1p(-p), abs=1e-3), (probe_type, i, t)
        # a stream fed in uneven chunks gives the same scores
        stream = ProbeStream(probe)
        pieces = [stream.push(x[a:b]) for a, b in zip([0, 1, 4, 9], [1, 4, 9, len(x)]) if a < b <= len(x)]
        if len(x) > 9:
            assert np.concatenate(pieces) == pytest.approx(prefix, abs=1e-6)


def test_tokens_until_alarm():
    assert tokens_until_alarm(np.array([0.1, 0.4, 0.8, 0.2]), 0.5) == 3
    assert tokens_until_alarm(np.array([0.1, 0.2]), 0.5) is None
