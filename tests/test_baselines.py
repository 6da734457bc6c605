"""Baselines: TF-IDF, prompted monitor (local and through an OpenAI-compatible server),
continuation judgement, finetuned classifier, compute accounting."""

import numpy as np
import pytest

from mup_core.baselines import (
    ContinuationMonitor,
    EndpointPromptedMonitor,
    FinetuneConfig,
    FinetunedClassifier,
    LocalPromptedMonitor,
    TfidfMonitor,
    model_compute,
    parse_judgement,
)
from mup_core.evaluation import safe_auroc

HIGH = ["my child swallowed bleach and is vomiting", "the brakes on the bus failed on the motorway",
        "someone is threatening to kill me tonight", "the reactor coolant pressure alarm is going off",
        "I took twenty sleeping pills an hour ago", "there is smoke coming from the baby's room"]
LOW = ["which colour should I paint the shed", "what rhymes with orange", "recommend a podcast about gardening",
       "how do I make pancakes fluffy", "is it pronounced gif or jif", "suggest a name for a hamster"]
TEXTS = HIGH + LOW
LABELS = np.array([1] * len(HIGH) + [0] * len(LOW))


def test_tfidf_learns_words_and_needs_both_classes():
    train = [f"{w} emergency danger help now" for w in HIGH] + [f"{w} fun hobby question" for w in LOW]
    mon = TfidfMonitor().fit(train, LABELS)
    scores = mon.predict_proba(["help, danger, emergency", "a fun hobby question"])
    assert scores[0] > 0.5 > scores[1]
    assert "danger" in " ".join(mon.top_features(5)["high-stakes"])
    assert (mon.flops_per_example(["danger", "danger help now"]) == [2.0, 10.0]).all()  # 3 words + 2 word pairs
    with pytest.raises(ValueError, match="both classes"):
        TfidfMonitor().fit(LOW, np.zeros(len(LOW)))


def test_prompted_monitor_on_tiny_scores_every_template_and_ignores_padding(tiny):
    mon = LocalPromptedMonitor(tiny, batch_size=8)
    dev = mon.select_template(TEXTS, LABELS)
    assert set(dev) == {"direct", "monitor", "consequences", "rubric"} and mon.template.name in dev
    batched = mon.predict_proba(TEXTS)
    assert batched.shape == (12,) and ((batched > 0) & (batched < 1)).all()
    alone = LocalPromptedMonitor(tiny, batch_size=1).scores_for(mon.template, TEXTS)
    np.testing.assert_allclose(batched, alone, atol=1e-4)  # tiny runs in fp32 here
    assert (mon.prompt_tokens > 20).all()
    with pytest.raises(ValueError, match="unknown prompt templates"):
        mon.select_template(TEXTS, LABELS, ["nope"])


@pytest.fixture(scope="module")
def smollm2_server():
    from mup_core.llm.local_client import LocalChatClient
    from mup_core.llm.server import ChatServer

    client = LocalChatClient("smollm2-135m")
    srv = ChatServer(client, "smollm2-135m", port=0).start()
    yield client, srv
    srv.stop()


def test_endpoint_monitor_agrees_with_the_local_one(smollm2_server):
    """The same model behind `mup serve`'s OpenAI-compatible server, read through the real
    `openai` client's logprobs/top_logprobs, gives the local monitor's scores."""
    client, srv = smollm2_server
    # batch 1: the server scores one conversation per request (in bf16, batching with padding
    # alone moves a 135M model's scores by up to ~0.05; in fp32 it does not, see the tiny test)
    local = LocalPromptedMonitor(client.lm, batch_size=1)
    remote = EndpointPromptedMonitor(srv.url, "smollm2-135m")
    texts = TEXTS[:3] + TEXTS[-3:]
    got, want = remote.predict_proba(texts), local.predict_proba(texts)
    assert remote.missing == 0
    # the endpoint sees only the top 20 tokens (spellings outside them count as 0), so
    # the two agree to a few hundredths, not exactly
    np.testing.assert_allclose(got, want, atol=0.03)
    assert np.argsort(got)[-2:].tolist() == np.argsort(want)[-2:].tolist()
    assert np.ptp(want) > 0.01  # the scores vary: the comparison means something


def test_endpoint_without_logprobs_fails_clearly(smollm2_server):
    from mup_core.llm.server import ChatServer

    class NoLogprobs:
        def complete(self, *a, **k):
            raise AssertionError("not called")

    srv = ChatServer(NoLogprobs(), "plain", port=0).start()
    try:
        with pytest.raises(Exception, match="does not return log-probabilities"):
            EndpointPromptedMonitor(srv.url, "plain").predict_proba(["hello"])
    finally:
        srv.stop()


@pytest.mark.parametrize("reply, score", [("7", 6 / 9), (" 10\n", 1.0), ("1", 0.0), ("I'd say 3 out of 10", 2 / 9),
                                          ("High stakes.", 1.0), ("low", 0.0), ("no idea", None), ("0", None)])
def test_parse_judgement(reply, score):
    got = parse_judgement(reply)
    assert got == (pytest.approx(score) if score is not None else None)


def test_continuation_monitor_on_tiny(tiny):
    mon = ContinuationMonitor(tiny, max_new_tokens=3, batch_size=5)
    scores = mon.predict_proba(TEXTS)
    assert scores.shape == (12,) and np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()
    assert len(mon.replies) == 12 and 0 <= mon.unparsed <= 12
    assert (scores[[i for i, r in enumerate(mon.replies) if parse_judgement(r) is None]] == 0.5).all()


@pytest.mark.parametrize("method", ["lora", "full"])
def test_finetuned_classifier_learns_on_tiny(method):
    cfg = FinetuneConfig(method=method, steps=40, batch_size=6, lr=3e-3 if method == "lora" else 1e-3, seed=0, mixed_precision=False)
    clf = FinetunedClassifier("tiny", cfg).fit(TEXTS, LABELS)
    assert clf.history[-1]["loss"] < clf.history[0]["loss"]
    train_auroc = safe_auroc(LABELS, clf.predict_proba(TEXTS))
    assert train_auroc > 0.9
    np.testing.assert_allclose(clf.predict_proba(TEXTS, batch_size=1), clf.predict_proba(TEXTS, batch_size=12), atol=1e-4)
    full_params = clf.trainable_parameters()
    if method == "lora":
        assert full_params < 50_000  # adapters and the head only
    again = FinetunedClassifier("tiny", cfg).fit(TEXTS, LABELS)
    np.testing.assert_allclose(again.predict_proba(TEXTS), clf.predict_proba(TEXTS), atol=1e-5)  # seeded
    with pytest.raises(ValueError, match="method must be 'lora' or 'full'"):
        FinetuneConfig(method="prefix")


def test_model_compute_counts_parameters_outside_the_embeddings(tiny):
    c = model_compute(tiny)
    emb = tiny.model.get_input_embeddings().weight
    total = sum(p.numel() for p in tiny.model.parameters())
    assert c.non_embedding_params == total - emb.numel()  # tiny ties its LM head to the embeddings
    assert c.forward_flops(100, 1) == pytest.approx(2 * c.non_embedding_params * 100 + 2 * c.hidden_size * c.vocab_size)
