"""A probe watching a conversation as the model writes it.

``LiveMonitor.stream(messages)`` yields events: first the scores of the conversation's
own tokens (the user's messages are judged before any reply), then one event per
generated token with its text, the probe's score after it and the running verdict, and a
last event with the final verdict. When that final score falls in the bundle's
uncertain band, the conversation goes to an LLM judge (any client of ``mup_core.llm``)
and the event says which monitor decided and what the judge cost.

The probe reads the residual stream of the bundle's layer through a forward hook on
that decoder block (the convention of ``mup_core.activations``), rounded to the storage
dtype of the activations the probe was trained on (recorded in the bundle), so the score
after each token equals the offline score of the conversation up to it.

A bundle with a ``question`` (prompted probing: the probe was trained on activations with
that question appended as a last user turn) is scored at message ends instead: after the
user's messages and after the reply, the question's tokens run on a branch of the key-value
cache (cropped back afterwards, so the reply is generated from the conversation alone) and
the probe reads the conversation and the question, exactly as offline. Token events then
carry ``score: None`` and the verdict of the last message end.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from mup_core.activations.ragged import RaggedActivations
from mup_core.data.chat import as_dialogue, with_question
from mup_core.data.dataset import message_problem
from mup_core.models.loading import cached_forward, end_of_turn_ids
from mup_core.monitor.bundle import BundleError, MonitorBundle
from mup_core.probes.base import ProbeStream


log = logging.getLogger(__name__)


class MonitorInputError(ValueError):
    """A request the monitor cannot serve; the message says what is wrong."""


@dataclass
class Verdict:
    score: float
    label: str  # "high-stakes", "low-stakes" or "uncertain"
    decided_by: str = "probe"
    judge: dict = field(default_factory=dict)


def verdict_for(score: float, bundle: MonitorBundle) -> str:
    """``uncertain`` inside the band (escalated to the judge at the end), otherwise the
    probe's own call at the bundle's threshold."""
    low, high = bundle.uncertain_band
    if low <= score < high:
        return "uncertain"
    return "high-stakes" if score >= bundle.threshold else "low-stakes"


def check_messages(messages: Sequence[dict]) -> list[dict]:
    """Messages as the chat template wants them, or ``MonitorInputError``."""
    if not messages:
        raise MonitorInputError("the conversation is empty: send at least one message")
    problem = message_problem(messages, "messages")
    if problem:
        raise MonitorInputError(problem)
    return [{"role": m["role"], "content": m["content"]} for m in messages]


class LiveMonitor:
    def __init__(self, lm, bundle: MonitorBundle, probe, judge=None):
        if lm.slug != bundle.model:
            raise BundleError(f"the bundle monitors {bundle.model}, but the loaded model is {lm.slug}")
        self.lm, self.bundle, self.probe, self.judge = lm, bundle, probe, judge
        # the probe was trained on activations stored in this dtype: read them rounded alike
        self.storage_dtype = getattr(torch, bundle.storage_dtype)
        from mup_core.activations.extract import decoder_layers

        self._block = decoder_layers(lm.model)[bundle.layer]
        self._captured: list[torch.Tensor] = []

    # -- model plumbing ---------------------------------------------------------------
    def _hook(self, _module, _args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        self._captured.append(hidden[0].detach().to("cpu", self.storage_dtype).float())

    def _forward(self, ids: list[int], past):
        self._captured.clear()
        handle = self._block.register_forward_hook(self._hook)
        try:
            with torch.inference_mode():
                out, past = cached_forward(self.lm.model, torch.tensor([ids], device=self.lm.device), past)
        finally:
            handle.remove()
        return out.logits[0, -1].float(), past, self._captured[0]

    def _ids(self, messages: Sequence[dict], opened: bool = False) -> list[int]:
        """Token ids of ``messages`` through the chat template, as ``mup_core.activations``
        tokenizes them (``opened``: with the assistant's turn opened)."""
        tok = self.lm.tokenizer
        text = tok.apply_chat_template(as_dialogue(list(messages)), tokenize=False, add_generation_prompt=opened)
        return tok(text, add_special_tokens=False)["input_ids"]

    def prompt_ids(self, messages: Sequence[dict]) -> tuple[list[int], int]:
        """Token ids of the conversation with the assistant's turn opened, and how many of
        them are the conversation itself (what the offline probe reads)."""
        ids = self._ids(messages, opened=True)
        return ids, min(len(self._ids(messages)), len(ids))

    def ask(self, messages: Sequence[dict], conversation: list[int], hidden: list[torch.Tensor], past) -> float:
        """The prompted probe's score of ``messages``, whose ids are ``conversation``, whose
        hidden states (bundle layer, storage rounding) are ``hidden`` and whose key-value
        cache is ``past``: the question's tokens run on the cache, which is cropped back to
        the conversation afterwards. Without a cache (None), or where the asked rendering
        does not start with ``conversation``, the asked conversation runs from scratch."""
        asked = self._ids(with_question(list(messages), self.bundle.question))
        if past is not None and asked[: len(conversation)] == conversation:
            question = asked[len(conversation):]
            _, _, tail = self._forward(question, past)
            past.crop(-len(question))  # negative: remove that many (transformers' only form now)
            values, n_question = torch.cat([*hidden, tail]), len(question)
        else:  # as question_token_counts counts it offline
            _, _, values = self._forward(asked, None)
            n_question = len(asked) - len(self._ids(messages))
        acts = RaggedActivations(values, np.array([0, len(values)]), question_tokens=np.array([n_question]))
        return float(self.probe.predict_proba(acts)[0, 1])

    # -- the stream -------------------------------------------------------------------
    def check(self, messages: Sequence[dict], max_tokens: int) -> tuple[list[dict], list[int], int]:
        """Validate a request before anything streams; ``MonitorInputError`` says why not."""
        messages = check_messages(messages)
        ids, n_convo = self.prompt_ids(messages)
        limit = self.lm.spec.max_length
        # a prompted probe's question runs after the reply (and its closing tokens)
        asking = len(self._ids(with_question(messages, self.bundle.question))) - n_convo + 2 if self.bundle.question else 0
        if len(ids) + max_tokens + asking > limit:
            raise MonitorInputError(
                f"the conversation is {len(ids)} tokens; with max_tokens={max_tokens}"
                f"{f' and the probe question ({asking} tokens)' if asking else ''} it exceeds {self.lm.slug}'s "
                f"maximum of {limit}; shorten it or ask for fewer tokens"
            )
        return messages, ids, n_convo

    def stream(self, messages: Sequence[dict], max_tokens: int = 64, temperature: float = 0.0, seed: int = 0) -> Iterator[dict]:
        messages, ids, n_convo = self.check(messages, max_tokens)
        tok = self.lm.tokenizer
        asking = self.bundle.question is not None
        stream = ProbeStream(self.probe)
        hidden_seen: list[torch.Tensor] = []  # the conversation's hidden states (prompted probes)
        t0 = time.perf_counter()
        if asking:  # the conversation, the question on a branch of the cache, then the opened turn
            logits, past, hidden = self._forward(ids[:n_convo], None)
            hidden_seen.append(hidden)
            score = self.ask(messages, ids[:n_convo], hidden_seen, past)
            scores = [None] * n_convo
            if n_convo < len(ids):
                logits, past, hidden = self._forward(ids[n_convo:], past)
                hidden_seen.append(hidden)
        else:
            logits, past, hidden = self._forward(ids, None)
            probs = stream.push(hidden[:n_convo])
            scores, score = [round(float(p), 5) for p in probs], float(probs[-1])
            if n_convo < len(ids):  # the opened assistant turn: part of the reply's conversation
                stream.push(hidden[n_convo:])
        verdict = verdict_for(score, self.bundle)
        yield {"type": "prompt", "tokens": [tok.decode([i]) for i in ids[:n_convo]], "scores": scores, "score": score,
               "verdict": verdict, "seconds": time.perf_counter() - t0}
        gen = torch.Generator().manual_seed(seed)
        eos = end_of_turn_ids(self.lm)
        finish = "length"
        streamed, reply = list(ids), []
        probe_seconds = 0.0
        for step in range(max_tokens):
            if temperature > 0:  # sampled on the CPU, where the seeded generator lives
                next_id = int(torch.multinomial(torch.softmax(logits.cpu() / temperature, -1), 1, generator=gen))
            else:
                next_id = int(torch.argmax(logits))
            t1 = time.perf_counter()
            logits, past, hidden = self._forward([next_id], past)
            t2 = time.perf_counter()
            if asking:  # scored at the message's end
                hidden_seen.append(hidden)
                token_score = None
            else:
                score = token_score = float(stream.push(hidden)[-1])
                verdict = verdict_for(score, self.bundle)
            probe_seconds += time.perf_counter() - t2
            streamed.append(next_id)
            done = next_id in eos
            if not done:
                reply.append(next_id)
            yield {
                "type": "token",
                "index": step,
                "token_id": next_id,
                "token": "" if done else tok.decode([next_id]),
                "score": token_score,
                "verdict": verdict,
                "forward_seconds": t2 - t1,
                "probe_seconds": time.perf_counter() - t2,
            }
            if done:
                finish = "stop"
                break
        if finish == "stop" or asking:  # the template's tokens after the reply, as the offline probe reads them
            replied = [*messages, {"role": "assistant", "content": tok.decode(reply)}]
            full, n_full = self.prompt_ids(replied)
            tail = full[len(streamed):n_full]
            matches = full[: len(streamed)] == streamed
            if tail and matches:
                _, past, hidden = self._forward(tail, past)
                hidden_seen.append(hidden)
                if not asking:
                    score = float(stream.push(hidden)[-1])
            elif not matches and not asking:
                log.warning("the reply re-tokenises differently; the final score leaves out the template's closing "
                            "tokens and may differ slightly from the offline score of the conversation")
            if asking:
                t2 = time.perf_counter()
                conversation = full[:n_full]
                score = self.ask(replied, conversation, hidden_seen, past if matches else None)
                probe_seconds += time.perf_counter() - t2
        tokens = sum(len(h) for h in hidden_seen) if asking else stream.tokens
        final = self.decide(messages, score, tokens=tokens)
        yield {"type": "final", "finish_reason": finish, "score": final.score, "verdict": final.label,
               "decided_by": final.decided_by, "judge": final.judge, "tokens_scored": tokens,
               "probe_seconds": round(probe_seconds, 4)}

    def decide(self, messages: Sequence[dict], score: float, tokens: int) -> Verdict:
        """The probe's verdict, or the judge's when the score is in the uncertain band."""
        label = verdict_for(score, self.bundle)
        if label != "uncertain" or self.judge is None:
            return Verdict(score, label)
        from mup_core.labelling import LABEL_SCHEMA, Thresholds, label_request
        from mup_core.llm.base import LLMError

        t0 = time.perf_counter()
        try:
            result = self.judge.complete(label_request(list(messages)), schema=LABEL_SCHEMA, max_tokens=48)
        except LLMError as exc:
            return Verdict(score, "uncertain", "probe", {"error": str(exc), "seconds": time.perf_counter() - t0})
        p = result.parsed
        judged = Thresholds().label(int(p["stakes"]), int(p["confidence"]))
        cost = {
            "model": self.judge.name, "stakes": int(p["stakes"]), "confidence": int(p["confidence"]),
            "explanation": str(p["explanation"])[:300], "seconds": round(time.perf_counter() - t0, 3),
            "cached": result.cached, "usage": result.usage or {}, "probe_tokens_scored": tokens,
        }
        return Verdict(score, "uncertain" if judged == "ambiguous" else judged, "llm_judge", cost)


def reply_alarm_rates(monitor: LiveMonitor, conversations: Sequence, labels: Sequence[int], max_tokens: int = 32,
                      on_done: Callable[[int, int], None] | None = None) -> dict:
    """How the bundle's threshold behaves once the model *replies*: the threshold is calibrated
    on conversations without a reply, and a reply moves the score (a max-like probe's can only
    rise). For each conversation (labels: 1 high-stakes, 0 low), the monitored model writes a
    reply of up to ``max_tokens`` tokens (greedy), the monitor streams it without a judge, and
    it counts as an alarm *before* the reply (the conversation's score), *after* it (the final
    score) or *at any point* of the stream. Conversations too long for the model are skipped
    and counted. Returns the rates per class (``fpr_*`` on the low-stakes, ``tpr_*`` on the
    high-stakes conversations) and the counts."""
    threshold = monitor.bundle.threshold
    alarms: dict[int, list[tuple[bool, bool, bool]]] = {0: [], 1: []}
    skipped = 0
    for done, (messages, label) in enumerate(zip(conversations, labels), 1):
        try:
            events = list(monitor.stream(as_dialogue(messages), max_tokens=max_tokens))
        except MonitorInputError:
            skipped += 1
            continue
        prompt, final = events[0], events[-1]
        seen = [prompt["score"], *(e["score"] for e in events[1:-1] if e["score"] is not None), final["score"]]
        alarms[int(label)].append((prompt["score"] >= threshold, final["score"] >= threshold, max(seen) >= threshold))
        if on_done:
            on_done(done, len(conversations))
    rates: dict = {"max_tokens": max_tokens, "skipped_too_long": skipped}
    for label, prefix in ((0, "fpr"), (1, "tpr")):
        rows = np.array(alarms[label], dtype=bool).reshape(-1, 3)
        rates[f"n_{'low' if label == 0 else 'high'}"] = len(rows)
        for column, moment in enumerate(("before_reply", "after_reply", "any_time")):
            rates[f"{prefix}_{moment}"] = float(rows[:, column].mean()) if len(rows) else None
    return rates


def offline_score(lm, probe, layer: int, messages: Sequence[dict], question: str | None = None) -> float:
    """The offline probe score of a conversation (what ``mup_core.activations`` and the
    probe's ``predict_proba`` give; with ``question`` appended, as the ``activations``
    asset's config ``question`` extracts), for comparison with the stream."""
    from mup_core.activations.extract import extract_activations, question_token_counts

    inputs = [with_question(list(messages), question)] if question else [list(messages)]
    acts = extract_activations(lm, inputs, [layer], progress=False).layer(layer)
    if question:
        acts = RaggedActivations(acts.values, acts.offsets, acts.model, acts.layer,
                                 np.array(question_token_counts(lm, [list(messages)], question)))
    return float(probe.predict_proba(acts)[0, 1])


__all__ = ["LiveMonitor", "MonitorInputError", "Verdict", "check_messages", "offline_score", "reply_alarm_rates",
           "verdict_for"]
