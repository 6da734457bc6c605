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
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from mup_core.data.chat import as_dialogue
from mup_core.data.dataset import message_problem
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
                out = self.lm.model(input_ids=torch.tensor([ids], device=self.lm.device), past_key_values=past, use_cache=True)
        finally:
            handle.remove()
        return out.logits[0, -1].float(), out.past_key_values, self._captured[0]

    def prompt_ids(self, messages: Sequence[dict]) -> tuple[list[int], int]:
        """Token ids of the conversation with the assistant's turn opened, and how many of
        them are the conversation itself (what the offline probe reads)."""
        tok = self.lm.tokenizer
        convo = tok.apply_chat_template(as_dialogue(list(messages)), tokenize=False)
        prompt = tok.apply_chat_template(as_dialogue(list(messages)), tokenize=False, add_generation_prompt=True)
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        n_convo = len(tok(convo, add_special_tokens=False)["input_ids"])
        return ids, min(n_convo, len(ids))

    # -- the stream -------------------------------------------------------------------
    def check(self, messages: Sequence[dict], max_tokens: int) -> tuple[list[dict], list[int], int]:
        """Validate a request before anything streams; ``MonitorInputError`` says why not."""
        messages = check_messages(messages)
        ids, n_convo = self.prompt_ids(messages)
        limit = self.lm.spec.max_length
        if len(ids) + max_tokens > limit:
            raise MonitorInputError(
                f"the conversation is {len(ids)} tokens; with max_tokens={max_tokens} it exceeds {self.lm.slug}'s "
                f"maximum of {limit}; shorten it or ask for fewer tokens"
            )
        return messages, ids, n_convo

    def stream(self, messages: Sequence[dict], max_tokens: int = 64, temperature: float = 0.0, seed: int = 0) -> Iterator[dict]:
        messages, ids, n_convo = self.check(messages, max_tokens)
        tok = self.lm.tokenizer
        stream = ProbeStream(self.probe)
        t0 = time.perf_counter()
        logits, past, hidden = self._forward(ids, None)
        probs = stream.push(hidden[:n_convo])
        yield {
            "type": "prompt",
            "tokens": [tok.decode([i]) for i in ids[:n_convo]],
            "scores": [round(float(p), 5) for p in probs],
            "score": float(probs[-1]),
            "verdict": verdict_for(float(probs[-1]), self.bundle),
            "seconds": time.perf_counter() - t0,
        }
        if n_convo < len(ids):  # the opened assistant turn: part of the reply's conversation
            stream.push(hidden[n_convo:])
        gen = torch.Generator().manual_seed(seed)
        eos = self.end_of_turn_ids()
        score = float(probs[-1])
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
            score = float(stream.push(hidden)[-1])
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
                "score": score,
                "verdict": verdict_for(score, self.bundle),
                "forward_seconds": t2 - t1,
                "probe_seconds": time.perf_counter() - t2,
            }
            if done:
                finish = "stop"
                break
        if finish == "stop":  # the template's tokens after the end of the turn, as the offline probe reads them
            full, n_full = self.prompt_ids([*messages, {"role": "assistant", "content": tok.decode(reply)}])
            tail = full[len(streamed):n_full]
            if tail and full[: len(streamed)] == streamed:
                _, past, hidden = self._forward(tail, past)
                score = float(stream.push(hidden)[-1])
            elif full[: len(streamed)] != streamed:
                log.warning("the reply re-tokenises differently; the final score leaves out the template's closing "
                            "tokens and may differ slightly from the offline score of the conversation")
        final = self.decide(messages, score, tokens=stream.tokens)
        yield {"type": "final", "finish_reason": finish, "score": final.score, "verdict": final.label,
               "decided_by": final.decided_by, "judge": final.judge, "tokens_scored": stream.tokens,
               "probe_seconds": round(probe_seconds, 4)}

    def end_of_turn_ids(self) -> set[int]:
        """Tokens that end the assistant's turn: the generation config's EOS ids (Llama-3's
        <|eot_id|> among them), the tokenizer's, and ChatML's <|im_end|>."""
        tok = self.lm.tokenizer
        ids = {tok.eos_token_id}
        configured = getattr(getattr(self.lm.model, "generation_config", None), "eos_token_id", None)
        ids.update(configured if isinstance(configured, (list, tuple)) else [configured])
        vocab = tok.get_vocab()
        ids.update(vocab[t] for t in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>") if t in vocab)
        return {i for i in ids if i is not None}

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


def offline_score(lm, probe, layer: int, messages: Sequence[dict]) -> float:
    """The offline probe score of a conversation (what ``mup_core.activations`` and the
    probe's ``predict_proba`` give), for comparison with the stream."""
    from mup_core.activations.extract import extract_activations

    result = extract_activations(lm, [list(messages)], [layer], progress=False)
    return float(probe.predict_proba(result.layer(layer))[0, 1])


__all__ = ["LiveMonitor", "MonitorInputError", "Verdict", "check_messages", "offline_score", "verdict_for"]
