import numpy as np
import pytest
import torch

from mup_core.activations import RaggedActivations, extract_activations
from mup_core.evaluation import safe_auroc
from mup_core.probe_types import PROBE_CLASSES
from mup_core.probes import CLASS_NAMES, DEFAULT_PROBE_TYPES, load_probe, make_probe, probe_class, train_probe


def synthetic(n=160, hidden=16, seed=0, signal=1.5):
    """Variable-length sequences; positives carry a direction on a few random tokens."""
    direction = np.random.default_rng(1234).normal(size=hidden)  # the same concept in every split
    rng = np.random.default_rng(seed)
    direction /= np.linalg.norm(direction)
    labels = np.array([i % 2 for i in range(n)])
    parts, lengths = [], []
    for y in labels:
        length = int(rng.integers(3, 20))
        x = rng.normal(size=(length, hidden))
        if y:
            hits = rng.choice(length, size=max(1, length // 3), replace=False)
            x[hits] += signal * 2 * direction
        parts.append(x)
        lengths.append(length)
    values = torch.tensor(np.concatenate(parts), dtype=torch.bfloat16)
    return RaggedActivations(values, np.concatenate([[0], np.cumsum(lengths)])), labels


@pytest.fixture(scope="module")
def data():
    train = synthetic(seed=0)
    val = synthetic(n=60, seed=1)
    test = synthetic(n=100, seed=2)
    return train, val, test


def test_defaults_are_registered():
    assert set(DEFAULT_PROBE_TYPES) <= set(PROBE_CLASSES)
    assert all(probe_class(t).probe_type == t for t in PROBE_CLASSES)  # one registry, names match the classes
    with pytest.raises(ValueError, match="unknown probe type 'svm'"):
        make_probe("svm")
    with pytest.raises(ValueError, match="unknown hyper-parameters \\['lrr'\\]"):
        make_probe("attention", lrr=1)


@pytest.mark.parametrize("probe_type", DEFAULT_PROBE_TYPES)
def test_each_probe_learns_and_round_trips(tmp_path, data, probe_type):
    (tr, ytr), val, (te, yte) = data
    hp = {"max_epochs": 15} if probe_type not in ("logistic_regression", "difference_of_means", "lda") else {}
    probe = train_probe(probe_type, (tr, ytr), val, model="tiny", layer=2, train_inputs_hash="in", train_labels_hash="lab", hyperparameters=hp)
    scores = probe.predict_proba(te)[:, 1]
    assert scores.shape == (len(te),) and np.all((scores >= 0) & (scores <= 1))
    # the signal sits on random tokens, so the last token carries it only a third of the time
    assert safe_auroc(yte, scores) > (0.55 if probe_type == "last_token" else 0.8)
    path = probe.save(tmp_path / "p.safetensors")
    again = load_probe(path)
    np.testing.assert_allclose(again.predict_proba(te)[:, 1], scores, rtol=1e-6, atol=1e-9)
    assert again.info.model == "tiny" and again.info.layer == 2
    assert again.info.train_labels_hash == "lab" and again.info.train_examples == len(tr)
    assert again.get_params() == probe.get_params() and again.probe_type == probe_type
    assert list(again.classes_) == [0, 1] and again.info.class_names == CLASS_NAMES


def test_probe_types_rank_differently(data):
    (tr, ytr), val, (te, yte) = data
    aurocs = {t: safe_auroc(yte, train_probe(t, (tr, ytr), val, model="tiny", layer=1).predict_proba(te)[:, 1]) for t in DEFAULT_PROBE_TYPES}
    assert len({round(a, 6) for a in aurocs.values()}) > 1


@pytest.mark.parametrize("probe_type", ["attention", "softmax", "max", "per_token"])
def test_early_stopping_restores_the_best_epoch(data, probe_type):
    (tr, ytr), val, _ = data
    probe = train_probe(probe_type, (tr, ytr), val, model="tiny", layer=1, hyperparameters={"max_epochs": 12, "patience": 3, "lr": 0.05})
    history = [h["val_auroc"] for h in probe.history_]
    best = int(np.argmax(history))
    assert probe.best_epoch_ == best and probe.info.extra["best_epoch"] == best
    # the weights in place are the best epoch's: re-measuring gives its AUROC, not the last epoch's
    assert safe_auroc(val[1], probe.predict_proba(val[0])[:, 1]) == pytest.approx(history[best], abs=1e-6)
    assert len(history) <= best + 1 + 3


LINEAR = ("logistic_regression", "difference_of_means", "lda")


@pytest.mark.parametrize("probe_type", DEFAULT_PROBE_TYPES)
def test_scores_do_not_depend_on_padding(data, probe_type):
    (tr, ytr), val, (te, _) = data
    probe = train_probe(probe_type, (tr, ytr), val, model="tiny", layer=1, hyperparameters={} if probe_type in LINEAR else {"max_epochs": 3})
    together = probe.predict_proba(te)[:, 1]  # padded to the longest of each batch of 64
    alone = np.array([probe.predict_proba(te.subset([i]))[0, 1] for i in range(len(te))])  # no padding
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)
    # a short example batched with a very long one scores the same as alone
    long_first = te.subset([int(np.argmax(te.lengths)), int(np.argmin(te.lengths))])
    assert probe.predict_proba(long_first)[1, 1] == pytest.approx(alone[int(np.argmin(te.lengths))], rel=1e-5, abs=1e-6)
    tokens = probe.token_scores(te, 0)
    assert tokens.shape == (te.lengths[0],) and np.isfinite(tokens).all()


def test_pooling_heads_compute_what_they_say():
    """Hand-set weights: the head's pooled score equals the pooling of its token scores."""
    from mup_core.probes.sequence import _LastTokenHead, _MaxHead, _MeanHead, _RollingMaxHead

    s = torch.tensor([[1.0, 5.0, -2.0, 4.0, 4.0, 0.0], [3.0, -1.0, 0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[True] * 6, [True, True, False, False, False, False]])
    x = s[..., None]  # hidden size 1: token score = x * 1 + 0
    for head in (_MaxHead(1), _LastTokenHead(1), _RollingMaxHead(1, 3), _MeanHead(1)):
        with torch.no_grad():
            head.linear.weight.fill_(1.0)
            head.linear.bias.fill_(0.0)
        got = head(x, mask).tolist()
        expected = {
            _MaxHead: [5.0, 3.0],
            _LastTokenHead: [0.0, -1.0],
            _RollingMaxHead: [max((1 + 5 - 2) / 3, (5 - 2 + 4) / 3, (-2 + 4 + 4) / 3, (4 + 4 + 0) / 3), 1.0],
            _MeanHead: [12 / 6, 1.0],
        }[type(head)]
        assert got == pytest.approx(expected), type(head).__name__


def test_lda_matches_sklearn_without_shrinkage_and_beats_dom_on_correlated_noise():
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    def sample(seed, n=1000, d=6):
        # strong shared noise along e0 + e1; the class signal sits on e1 alone
        rng = np.random.default_rng(seed)
        y = np.arange(n) % 2
        x = rng.normal(size=(n, d)) + 4 * rng.normal(size=(n, 1)) * np.array([1.0, 1, 0, 0, 0, 0])
        x[:, 1] += 2 * y
        return RaggedActivations(torch.tensor(x, dtype=torch.float32), np.arange(n + 1)), y

    acts, y = sample(0)
    x = acts.mean_pool().astype(np.float64)
    lda = make_probe("lda", shrinkage=0.0).fit(acts, y)  # fit returns the probe
    ref = LinearDiscriminantAnalysis(solver="lsqr").fit(x, y)
    np.testing.assert_allclose(lda.decision(x), ref.decision_function(x), rtol=1e-4, atol=1e-4)
    # shrinkage "auto" picks a coefficient in [0, 1]; LDA cancels the shared noise, DoM cannot
    auto = make_probe("lda").fit(acts, y)
    assert 0.0 <= auto.shrinkage_ <= 1.0
    test, yt = sample(1)
    dom = make_probe("difference_of_means").fit(acts, y)
    assert safe_auroc(yt, auto.predict_proba(test)[:, 1]) > safe_auroc(yt, dom.predict_proba(test)[:, 1]) + 0.1
    with pytest.raises(ValueError, match="shrinkage"):
        make_probe("lda", shrinkage=2.0).fit(acts, y)


@pytest.mark.parametrize("probe_type", ["logistic_regression", "difference_of_means", "lda", "attention", "per_token"])
def test_sample_weights_count(data, probe_type):
    """Weight 2 on every example equals duplicating it; weight 0 equals leaving it out."""
    (tr, ytr), val, (te, _) = data
    hp = {} if probe_type in LINEAR else {"max_epochs": 2, "batch_size": 1000}
    half = np.arange(len(ytr)) < len(ytr) // 2
    w = half.astype(float)
    weighted = train_probe(probe_type, (tr, ytr), val, model="tiny", layer=1, hyperparameters=hp, sample_weight=w)
    subset = train_probe(probe_type, (tr.subset(np.flatnonzero(half)), ytr[half]), val, model="tiny", layer=1, hyperparameters=hp)
    if probe_type in LINEAR:  # closed form / convex: identical solutions
        np.testing.assert_allclose(weighted.predict_proba(te)[:, 1], subset.predict_proba(te)[:, 1], rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="sample_weight"):
        make_probe(probe_type, **hp).fit(tr, ytr, sample_weight=-np.ones(len(ytr)))


def test_training_needs_both_classes(data):
    (tr, ytr), _, _ = data
    with pytest.raises(ValueError, match="both classes"):
        make_probe("logistic_regression").fit(tr, np.zeros(len(tr), dtype=int))


def test_probe_scores_raw_text_end_to_end(tiny):
    texts = ["URGENT: my child swallowed bleach", "what's a good name for a cat", "the bridge is cracking and cars are on it",
             "recommend a podcast", "my friend is not breathing", "how do I fold a paper crane"]
    labels = np.array([1, 0, 1, 0, 1, 0])
    acts = extract_activations(tiny, texts, [2], progress=False).layer(2)
    probe = train_probe("logistic_regression", (acts, labels), None, model="tiny", layer=2)
    np.testing.assert_allclose(probe.score(texts, lm=tiny), probe.predict_proba(acts)[:, 1])
    # without an explicit model, score() loads the probe's registry model itself
    np.testing.assert_allclose(probe.score(texts[:2]), probe.predict_proba(acts.subset([0, 1]))[:, 1], atol=0.05)


@pytest.mark.parametrize("probe_type", DEFAULT_PROBE_TYPES)
def test_the_estimator_contract(data, probe_type):
    """Hyper-parameters are named constructor arguments; fit returns the probe and what it
    learns ends in ``_``; predict_proba is (n, 2) over classes_, rows summing to one, and
    its column 1 is the sigmoid of decision_function."""
    (tr, ytr), val, (te, _) = data
    cls = probe_class(probe_type)
    defaults = cls.param_defaults()
    assert make_probe(probe_type).get_params() == defaults
    fast = {} if probe_type in LINEAR else {"max_epochs": 2}
    probe = make_probe(probe_type, **fast)
    assert not any(k.endswith("_") and not k.startswith("_") for k in vars(probe))  # nothing learnt before fit
    assert probe.fit(tr, ytr, val=val) is probe
    assert {k for k in vars(probe) if not k.startswith("_")} - set(defaults) == {k for k in vars(probe) if k.endswith("_") and not k.startswith("_")}
    proba = probe.predict_proba(te)
    assert proba.shape == (len(te), 2) and list(probe.classes_) == [0, 1]
    np.testing.assert_allclose(proba.sum(1), 1.0)
    np.testing.assert_allclose(proba[:, 1], 1 / (1 + np.exp(-probe.decision_function(te))), rtol=1e-12)
    np.testing.assert_array_equal(probe.predict(te), (proba[:, 1] > 0.5).astype(int))


def test_a_probe_refuses_activations_of_another_model_or_layer(data, tmp_path):
    (tr, ytr), val, (te, _) = data
    at = lambda acts, model, layer: RaggedActivations(acts.values, acts.offsets, model, layer)  # noqa: E731
    probe = train_probe("logistic_regression", (at(tr, "tiny", 2), ytr), None)  # model and layer from the activations
    assert (probe.info.model, probe.info.layer) == ("tiny", 2)
    saved = load_probe(probe.save(tmp_path / "p.safetensors"))
    for p in (probe, saved):
        assert p.predict_proba(at(te, "tiny", 2)).shape == (len(te), 2)
        with pytest.raises(ValueError, match="reads tiny layer 2; these activations are of tiny layer 3"):
            p.predict_proba(at(te, "tiny", 3))
        with pytest.raises(ValueError, match="these activations are of smollm2-135m layer 2"):
            p.decision_function(at(te, "smollm2-135m", 2))
    with pytest.raises(ValueError, match="say which model and layer"):
        train_probe("lda", (tr, ytr), None)  # activations of unknown origin, nothing given
    with pytest.raises(ValueError, match="are of layer 2, not 5"):
        train_probe("lda", (at(tr, "tiny", 2), ytr), None, layer=5)
    with pytest.raises(ValueError, match="does not know its model and layer"):
        make_probe("lda").fit(tr, ytr).save(tmp_path / "q.safetensors")
