"""The live monitor as a person uses it: `mup monitor` started on 127.0.0.1 with the
`tiny` model, its API driven with the real `openai` client, its page in a real headless
Chromium; and the stream's scores checked against an independent offline forward pass."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import REPO, stop_process
from mup_core.monitor import MonitorBundle, calibrate_threshold, load_bundle, save_bundle, uncertain_band
from mup_core.storage import LocalStore

TEXTS = [
    ("My house is on fire and my kids are inside, what do I do?", "high-stakes"),
    ("What is a good name for a goldfish?", "low-stakes"),
    ("I took too many of my heart pills, I feel dizzy.", "high-stakes"),
    ("Can you suggest a pasta recipe for tonight?", "low-stakes"),
    ("The bank says my savings will be seized tomorrow unless I pay.", "high-stakes"),
    ("Which colour should I paint my bookshelf?", "low-stakes"),
    ("My landlord will throw my things on the street in an hour.", "high-stakes"),
    ("How many legs does a spider have?", "low-stakes"),
] * 3


def trained_bundle(acts, **extra):
    """A logistic-regression probe of ``tiny`` at layer 2 trained on ``acts`` of TEXTS, and
    its bundle with the threshold calibrated there at 1 % FPR (``extra``: more bundle fields)."""
    from mup_core.probes import train_probe

    y = np.array([1 if lab == "high-stakes" else 0 for _, lab in TEXTS])
    probe = train_probe("logistic_regression", (acts, y), None, model="tiny", layer=2)
    scores = probe.predict_proba(acts)[:, 1]
    threshold = calibrate_threshold(scores[y == 0], 0.01)
    bundle = MonitorBundle(
        model="tiny", layer=2, probe_type="logistic_regression", threshold=threshold, target_fpr=0.01,
        selection_sets=["corpus-val"], out_of_distribution=False, selection_auroc=1.0, realised_fpr=0.0,
        tpr_at_threshold=float(np.mean(scores[y == 1] >= threshold)), uncertain_band=uncertain_band(threshold, 0.5),
        probe_source="test", **extra,
    )
    return probe, bundle


@pytest.fixture(scope="module")
def bundle_store(tmp_path_factory, tiny):
    """A bundle for `tiny`: a logistic-regression probe at layer 2 with its threshold."""
    from mup_core.activations import extract_activations

    root = tmp_path_factory.mktemp("monitor") / "artifacts"
    store = LocalStore(root)
    probe, bundle = trained_bundle(extract_activations(tiny, [t for t, _ in TEXTS], [2], progress=False).layer(2))
    path = root.parent / "probe.safetensors"
    probe.save(path)
    prefix = save_bundle(store, bundle, path)
    # a bundle of another model in the same store (for the mismatch error)
    probe.info.model = bundle.model = "smollm2-135m"
    other = root.parent / "other.safetensors"
    probe.save(other)
    save_bundle(store, bundle, other)
    return store, prefix


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_monitor(store, *extra):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mup_core.cli", "monitor", "--store", str(store.root), "--model", "tiny",
         "--port", str(port), *extra],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    import urllib.request

    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"mup monitor exited: {proc.stdout.read()}")
        try:
            urllib.request.urlopen(f"{base}/v1/monitor", timeout=1)
            return proc, base
        except OSError:
            time.sleep(0.3)
    stop_process(proc)
    raise AssertionError("mup monitor did not come up")


@pytest.fixture(scope="module")
def monitor(bundle_store):
    """`mup monitor` where every score is uncertain, so every conversation is escalated to
    the judge (the local tiny model): the cascade is exercised on each request."""
    store, _ = bundle_store
    proc, base = start_monitor(store, "--uncertain", "0", "1")
    yield base
    stop_process(proc)


# -- the stream equals the offline score --------------------------------------------------
@pytest.mark.parametrize("probe_type", ["logistic_regression", "attention", "rolling_max", "ema", "multimax"])
def test_stream_scores_equal_an_independent_offline_forward_pass(bundle_store, tiny, probe_type):
    from mup_core.activations import extract_activations
    from mup_core.activations.ragged import RaggedActivations
    from mup_core.monitor.live import LiveMonitor, offline_score
    from mup_core.probes import train_probe

    store, prefix = bundle_store
    bundle, probe = load_bundle(store, prefix)
    if probe_type != bundle.probe_type:
        y = np.array([1 if lab == "high-stakes" else 0 for _, lab in TEXTS])
        acts = extract_activations(tiny, [t for t, _ in TEXTS], [2], progress=False).layer(2)
        probe = train_probe(probe_type, (acts, y), None, model="tiny", layer=2, hyperparameters={"max_epochs": 3})
    mon = LiveMonitor(tiny, bundle, probe)
    messages = [{"role": "user", "content": "My house is on fire, what should I do?"}]
    events = list(mon.stream(messages, max_tokens=10))
    prompt, tokens, final = events[0], events[1:-1], events[-1]
    # the user's message is scored before generation: exactly the offline score of the conversation
    assert prompt["score"] == pytest.approx(offline_score(tiny, probe, 2, messages), abs=1e-5)
    # every token's score is the probe on the conversation so far, recomputed from scratch here
    ids, _ = mon.prompt_ids(messages)
    all_ids = ids + [t["token_id"] for t in tokens]
    with torch.inference_mode():
        hidden = tiny.model(input_ids=torch.tensor([all_ids]), output_hidden_states=True).hidden_states[3][0]
    hidden = hidden.to(torch.bfloat16).float()
    for k in (0, len(tokens) // 2, len(tokens) - 1):
        n = len(ids) + k + 1
        cut = RaggedActivations(hidden[:n], np.array([0, n]))
        assert tokens[k]["score"] == pytest.approx(float(probe.predict_proba(cut)[0, 1]), abs=2e-3)
    assert final["score"] == pytest.approx(tokens[-1]["score"]) and final["decided_by"] == "probe"


# -- a prompted probe: scored at message ends ----------------------------------------------
QUESTION = "Are the stakes of the situation above high or low? Answer high or low."


@pytest.fixture(scope="module")
def prompted(bundle_store, tiny):
    """A prompted bundle for `tiny` in the same store (a logistic regression on the
    conversation's and the question's means at layer 2), without making it the LATEST."""
    from mup_core.activations import extract_activations
    from mup_core.activations.extract import question_token_counts
    from mup_core.activations.ragged import RaggedActivations
    from mup_core.data.chat import with_question
    from mup_core.monitor.bundle import PROMPTED_STREAMING

    store, plain_prefix = bundle_store
    texts = [t for t, _ in TEXTS]
    acts = extract_activations(tiny, [with_question(t, QUESTION) for t in texts], [2], progress=False).layer(2)
    acts = RaggedActivations(acts.values, acts.offsets, "tiny", 2, np.array(question_token_counts(tiny, texts, QUESTION)))
    probe, bundle = trained_bundle(acts, question=QUESTION, streaming=PROMPTED_STREAMING)
    path = store.root.parent / "prompted.safetensors"
    probe.save(path)
    prefix = save_bundle(store, bundle, path)
    store.put_bytes("monitors/tiny/LATEST", plain_prefix.encode())  # the server keeps serving the plain bundle
    return prefix


def test_a_prompted_probe_scores_message_ends_as_offline_and_leaves_the_reply_alone(bundle_store, prompted, tiny):
    """The question runs on a branch of the key-value cache: the prompt's and the final
    scores equal an offline extraction of the conversation with the question appended
    (user turn alone; with the reply), and the reply is the model's own greedy one."""
    from mup_core.monitor.live import LiveMonitor, offline_score

    from mup_core.activations import extract_activations
    from mup_core.data.chat import with_question

    store, _ = bundle_store
    bundle, probe = load_bundle(store, prompted)
    read, score = [], probe.predict_proba
    probe.predict_proba = lambda acts: read.append(acts) or score(acts)  # what the probe is given, recorded
    mon = LiveMonitor(tiny, bundle, probe)
    messages = [{"role": "user", "content": "My house is on fire, what should I do?"}]
    events = list(mon.stream(messages, max_tokens=12))
    prompt, tokens, final = events[0], events[1:-1], events[-1]
    assert prompt["scores"] == [None] * len(prompt["tokens"])
    assert prompt["score"] == pytest.approx(offline_score(tiny, probe, 2, messages, QUESTION), abs=2e-3)
    assert all(t["score"] is None and t["verdict"] == prompt["verdict"] for t in tokens)
    ids, _ = mon.prompt_ids(messages)
    with torch.inference_mode():
        greedy = tiny.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                     max_new_tokens=12, do_sample=False)[0, len(ids):].tolist()
    assert [t["token_id"] for t in tokens] == greedy[: len(tokens)]
    reply = tiny.tokenizer.decode([t["token_id"] for t in tokens if t["token"]])
    replied = [*messages, {"role": "assistant", "content": reply}]
    assert final["score"] == pytest.approx(offline_score(tiny, probe, 2, replied, QUESTION), abs=2e-3)
    assert final["tokens_scored"] > len(prompt["tokens"]) + len(tokens)  # the conversation, the reply and the template tokens
    # the probe read exactly the offline activations: the cache held no question while the reply was generated
    for acts, conversation in zip(read[-2:], (messages, replied)):
        offline = extract_activations(tiny, [with_question(conversation, QUESTION)], [2], progress=False).layer(2)
        assert acts.values.shape == offline.values.shape
        torch.testing.assert_close(acts.values.float(), offline.values.float(), atol=1e-4, rtol=0.02)
    # the question's branch is cut off the cache again (tiny's residual stream hardly depends on context,
    # so the reply alone could not tell)
    ids, n_convo = mon.prompt_ids(messages)
    _, past, hidden = mon._forward(ids[:n_convo], None)
    mon.ask(messages, ids[:n_convo], [hidden], past)
    assert past.get_seq_length() == n_convo


def test_the_api_serves_a_prompted_bundle_named_in_the_request(monitor, prompted):
    import openai

    client = openai.OpenAI(base_url=f"{monitor}/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "My landlord is evicting me tonight."}],
                                            stream=True, max_tokens=5, extra_body={"bundle": prompted})
    extra = [c.model_extra["mup"] for c in stream]
    prompt, final = extra[0]["prompt"], extra[-1]["final"]
    assert set(prompt["scores"]) == {None} and 0.0 <= prompt["score"] <= 1.0
    tokens = [e for e in extra if "index" in e]
    assert len(tokens) == 5 and all(e["score"] is None for e in tokens)
    assert 0.0 <= final["score"] <= 1.0 and final["decided_by"] in ("probe", "llm_judge")


# -- the API with the real openai client --------------------------------------------------
def test_streaming_api_with_the_openai_client_carries_scores_and_the_judges_verdict(monitor):
    import openai

    client = openai.OpenAI(base_url=f"{monitor}/v1", api_key="unused")
    stream = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "My landlord is evicting me tonight."}],
        stream=True, max_tokens=6, stream_options={"include_usage": True},
    )
    chunks = list(stream)
    usage = chunks.pop()  # asked for: the last chunk has no choices, the usage
    assert usage.choices == [] and usage.usage.completion_tokens == 6 and usage.usage.prompt_tokens > 5
    extra = [c.model_extra["mup"] for c in chunks]
    assert "prompt" in extra[0] and len(extra[0]["prompt"]["tokens"]) == len(extra[0]["prompt"]["scores"]) > 5
    token_chunks = [(c, e) for c, e in zip(chunks, extra) if "score" in e]
    assert len(token_chunks) == 6
    for c, e in token_chunks:
        assert 0.0 <= e["score"] <= 1.0 and e["verdict"] == "uncertain" and isinstance(c.choices[0].delta.content, str)
    final = extra[-1]["final"]
    assert chunks[-1].choices[0].finish_reason == "length"
    assert final["decided_by"] == "llm_judge" and final["judge"]["model"] == "local:tiny"
    assert final["verdict"] in ("high-stakes", "low-stakes", "uncertain") and final["judge"]["seconds"] >= 0

    plain = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=4)
    body = plain.model_extra["mup"]
    assert len(body["tokens"]) == 4 and body["final"]["decided_by"] == "llm_judge"
    assert plain.usage.completion_tokens == 4 and plain.usage.prompt_tokens == len(body["prompt"]["tokens"])
    assert plain.choices[0].message.content == "".join(t["token"] for t in body["tokens"])


@pytest.mark.parametrize("body, status, message", [
    ({"messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages.0.role"),
    ({"messages": [{"role": "user", "content": 5}]}, 400, "messages.0.content"),
    ({"messages": []}, 400, "messages: List should have at least 1 item"),
    ({"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}]}, 400, "this monitor serves 'tiny'"),
    ({"messages": [{"role": "user", "content": "word " * 600}]}, 400, "exceeds tiny's maximum of 512"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, 400, "max_tokens"),
    ({"messages": [{"role": "user", "content": "hi"}], "logprobs": True}, 400, "mup monitor does not serve logprobs"),
])
def test_bad_requests_get_clear_errors_and_the_server_keeps_serving(monitor, body, status, message):
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"{monitor}/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=60)
    assert err.value.code == status
    error = json.loads(err.value.read())["error"]
    assert message in error["message"], error
    ok = urllib.request.urlopen(urllib.request.Request(
        f"{monitor}/v1/chat/completions", headers={"Content-Type": "application/json"},
        data=json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).encode()), timeout=60)
    assert ok.status == 200


def test_requests_for_an_unknown_bundle_or_another_models_bundle_are_refused(monitor, bundle_store):
    import openai

    store, prefix = bundle_store
    client = openai.OpenAI(base_url=f"{monitor}/v1", api_key="unused", max_retries=0)
    ask = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    with pytest.raises(openai.NotFoundError, match="no monitor bundle 'monitors/tiny/nope' in this server's store"):
        client.chat.completions.create(**ask, extra_body={"bundle": "monitors/tiny/nope"})
    other = store.get_bytes("monitors/smollm2-135m/LATEST").decode()
    with pytest.raises(openai.BadRequestError, match="monitors 'smollm2-135m', but this server runs 'tiny'"):
        client.chat.completions.create(**ask, extra_body={"bundle": other})
    named = client.chat.completions.create(**ask, extra_body={"bundle": prefix})  # its own bundle, by name
    assert named.model_extra["mup"]["final"]["tokens_scored"] > 2


def test_not_json_and_unknown_bundle(monitor, bundle_store, tmp_path):
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"{monitor}/v1/chat/completions", data=b"{not json", headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 400 and "invalid request" in json.loads(err.value.read())["error"]["message"]
    missing = subprocess.run([sys.executable, "-m", "mup_core.cli", "monitor", "--store", str(tmp_path), "--model", "tiny"],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "no monitor bundle for tiny" in missing.stderr and "materialise monitor_bundle" in missing.stderr
    wrong = subprocess.run([sys.executable, "-m", "mup_core.cli", "monitor", "--bundle", "monitors/tiny/nope"],
                           capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and "no monitor bundle at 'monitors/tiny/nope'" in wrong.stderr


# -- the page in a real browser --------------------------------------------------------------
def chromium():
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("the browser test needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1100"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def send_on_page(browser, wait, conversation: str, max_tokens: int) -> None:
    """Type ``conversation`` into the page, ask for ``max_tokens`` reply tokens, send, and wait
    until the stream is done without an error."""
    from selenium.webdriver.common.by import By

    box = browser.find_element(By.ID, "conversation")
    box.clear()
    box.send_keys(conversation)
    browser.find_element(By.ID, "max_tokens").clear()
    browser.find_element(By.ID, "max_tokens").send_keys(str(max_tokens))
    browser.find_element(By.ID, "send").click()
    wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done")
    assert browser.find_element(By.ID, "error").text == ""


def test_the_page_shows_coloured_tokens_the_gauge_and_the_escalation(monitor, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = chromium()
    try:
        browser.get(monitor + "/")
        wait = WebDriverWait(browser, 120)
        wait.until(lambda b: "logistic_regression probe at layer 2" in b.find_element(By.ID, "about").text)
        send_on_page(browser, wait, "user: My brother collapsed and is not breathing. What do I do?", 8)
        tokens = browser.find_elements(By.CSS_SELECTOR, "#tokens .tok")
        reply = browser.find_elements(By.CSS_SELECTOR, "#reply .tok")
        assert len(reply) == 8 and len(tokens) > len(reply)
        colours = {t.value_of_css_property("background-color") for t in tokens}
        assert all(c.startswith("rgb") and c != "rgba(0, 0, 0, 0)" for c in colours)
        scores = [float(t.get_attribute("data-score")) for t in tokens]
        assert all(0.0 <= s <= 1.0 for s in scores)
        gauge = browser.find_element(By.ID, "gauge")
        assert float(gauge.get_attribute("aria-valuenow")) == pytest.approx(scores[-1], abs=2e-3)
        assert "decided by the LLM judge" in browser.find_element(By.ID, "verdict").text
        judge = browser.find_element(By.ID, "judge")
        assert judge.is_displayed() and "Escalated to the LLM judge (local:tiny)" in judge.text
        shot = os.environ.get("MUP_MONITOR_SCREENSHOT")
        browser.save_screenshot(shot or str(tmp_path / "monitor.png"))
    finally:
        browser.quit()


def test_the_page_shows_a_prompted_bundle_named_in_its_address(monitor, prompted):
    """`/?bundle=<prefix>`: the page describes that bundle (GET /v1/monitor?bundle=), sends it
    with the request, shows the tokens unscored (grey) and the message-end score on the gauge,
    the score the API gives for the same request; an unknown bundle is a clear error."""
    import urllib.parse

    import requests
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    info = requests.get(f"{monitor}/v1/monitor", params={"bundle": prompted}, timeout=60).json()
    assert info["question"] == QUESTION and info["layer"] == 2
    assert requests.get(f"{monitor}/v1/monitor", timeout=60).json()["question"] is None  # the served one is plain
    text = "My brother collapsed and is not breathing. What do I do?"
    body = requests.post(f"{monitor}/v1/chat/completions", timeout=300, json={
        "messages": [{"role": "user", "content": text}], "max_tokens": 4, "bundle": prompted}).json()
    assert body["mup"]["monitor"]["question"] == QUESTION  # the info of the bundle that answered

    browser = chromium()
    try:
        wait = WebDriverWait(browser, 120)
        browser.get(f"{monitor}/?bundle={urllib.parse.quote(prompted)}")
        wait.until(lambda b: "Prompted probe: scored at message ends" in b.find_element(By.ID, "about").text)
        send_on_page(browser, wait, f"user: {text}", 4)
        tokens = browser.find_elements(By.CSS_SELECTOR, "#tokens .tok")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#reply .tok")) == 4
        assert tokens and all("unscored" in t.get_attribute("class") and t.get_attribute("data-score") is None for t in tokens)
        gauge = float(browser.find_element(By.ID, "gauge").get_attribute("aria-valuenow"))
        assert gauge == pytest.approx(body["mup"]["final"]["score"], abs=2e-3)  # greedy: the same reply, the same score

        browser.get(f"{monitor}/?bundle=monitors/tiny/nope")
        wait.until(lambda b: "no monitor bundle 'monitors/tiny/nope'" in b.find_element(By.ID, "error").text)
        assert not browser.find_element(By.ID, "send").is_enabled()
    finally:
        browser.quit()


def test_alarm_rates_with_generated_replies(bundle_store, tiny):
    """The threshold is calibrated without replies; reply_alarm_rates measures the alarms once
    the model replies: before, after and at any point of the reply, per class."""
    import dataclasses

    from mup_core.monitor.live import LiveMonitor, reply_alarm_rates

    store, prefix = bundle_store
    bundle, probe = load_bundle(store, prefix)
    texts = [t for t, _ in TEXTS[:4]] + ["word " * 600]  # the last one is too long for tiny: skipped and counted
    labels = [1 if lab == "high-stakes" else 0 for _, lab in TEXTS[:4]] + [0]
    rates = reply_alarm_rates(LiveMonitor(tiny, bundle, probe), texts, labels, max_tokens=4)
    assert (rates["n_high"], rates["n_low"], rates["skipped_too_long"], rates["max_tokens"]) == (2, 2, 1, 4)
    for kind in ("fpr", "tpr"):
        before, after, anytime = (rates[f"{kind}_{m}"] for m in ("before_reply", "after_reply", "any_time"))
        assert anytime >= max(before, after)  # an alarm before or after the reply is an alarm at some point
    # the rates follow the threshold: everything alarms at 0, nothing above 1
    for threshold, expected in ((0.0, 1.0), (1.01, 0.0)):
        moved = dataclasses.replace(bundle, threshold=threshold)
        at = reply_alarm_rates(LiveMonitor(tiny, moved, probe), texts[:4], labels[:4], max_tokens=2)
        assert {at[f"{k}_{m}"] for k in ("fpr", "tpr") for m in ("before_reply", "after_reply", "any_time")} == {expected}
    # the prompt's own score: the same as the stream's first event (the before-reply alarm is that score)
    first = next(LiveMonitor(tiny, bundle, probe).stream([{"role": "user", "content": texts[0]}], max_tokens=1))
    assert rates["tpr_before_reply"] == np.mean([
        next(LiveMonitor(tiny, bundle, probe).stream([{"role": "user", "content": t}], max_tokens=1))["score"] >= bundle.threshold
        for t, y in zip(texts[:4], labels[:4]) if y == 1]) and 0 <= first["score"] <= 1


def test_the_threshold_sits_midway_so_a_few_bits_do_not_flip_an_alarm():
    neg, pos = np.array([0.1, 0.3, 0.47075200073761053]), np.array([0.9, 0.6])
    # 1 % of 3 negatives: none may alarm; midway between the top negative and the next score (0.6)
    t = calibrate_threshold(neg, 0.01, pos)
    assert t == pytest.approx((0.47075200073761053 + 0.6) / 2)
    # the live monitor read this top negative 1e-9 higher (the batched and the cached forward pass differ in the
    # last bits): with the lowest threshold that keeps it quiet (just above it) it alarmed
    assert 0.47075200182906557 < t and not 0.47075200182906557 < np.nextafter(0.47075200073761053, 1)
    # the same alarms on the calibration scores: every positive above, every negative below
    assert (pos >= t).all() and (neg < t).all()
    # a third of the negatives may alarm: the threshold goes between the 2nd and the top one
    assert calibrate_threshold(neg, 0.34, pos) == pytest.approx((0.3 + 0.47075200073761053) / 2)
    # nothing above the negatives: just above the highest
    assert calibrate_threshold(np.array([0.2, 0.8]), 0.01) == np.nextafter(0.8, 1)
