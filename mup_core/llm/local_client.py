"""A registry model generating in process with transformers (the offline backend).

Free text is generated greedily (or sampled, seeded by the request, when
``temperature > 0``). JSON answers are *constrained*: the object is written field by
field in schema order, integers are chosen among the allowed values from the
next-token distribution, strings are generated until their closing quote. So even a
135M-parameter model always returns a schema-valid answer, and its numbers are its
own most likely choices.
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Iterator, Sequence

from mup_core.llm.base import ChatResult, LLMClient, LLMError, Message, usage_of
from mup_core.llm.cache import ResponseCache, cache_key
from mup_core.models.loading import end_of_turn_ids, token_bytes
from mup_core.models.registry import DEFAULT_MODEL


class _Decoder:
    """Incremental greedy decoding over a KV cache."""

    def __init__(self, lm, prompt: str, quote_ids):
        import torch

        self.lm, self.torch = lm, torch
        self.quote_ids = quote_ids  # tokens that contain a double quote, and EOS
        self.past = None
        self.logits = None
        self.feed(prompt)

    def feed(self, text: str) -> None:
        ids = self.lm.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(self.lm.device)
        self._step(ids)

    def _step(self, ids) -> None:
        from mup_core.models.loading import cached_forward

        with self.torch.inference_mode():
            out, self.past = cached_forward(self.lm.model, ids, self.past)
        self.logits = out.logits[0, -1].float()

    def choose_int(self, lo: int, hi: int) -> int:
        tok = self.lm.tokenizer
        digit_ids = {d: tok.convert_tokens_to_ids(str(d)) for d in range(10)}
        firsts = sorted({int(str(v)[0]) for v in range(lo, hi + 1)})
        scores = {d: float(self.logits[digit_ids[d]]) for d in firsts}
        first = max(scores, key=scores.get)
        value = first
        self._step(self.torch.tensor([[digit_ids[first]]], device=self.lm.device))
        longer = [v for v in range(lo, hi + 1) if str(v).startswith(str(first)) and len(str(v)) == 2]
        if longer and (first not in range(lo, hi + 1) or self._prefers_second_digit(longer, digit_ids)):
            second = max((int(str(v)[1]) for v in longer), key=lambda d: float(self.logits[digit_ids[d]]))
            value = first * 10 + second
            self._step(self.torch.tensor([[digit_ids[second]]], device=self.lm.device))
        return value

    def _prefers_second_digit(self, longer, digit_ids) -> bool:
        tok = self.lm.tokenizer
        enders = [i for i in tok.convert_tokens_to_ids([",", "}", "Ġ", ",Ġ"]) if i is not None and i != tok.unk_token_id]
        best_digit = max(float(self.logits[digit_ids[int(str(v)[1])]]) for v in longer)
        best_end = max(float(self.logits[i]) for i in enders) if enders else float("-inf")
        return best_digit > best_end

    def gen_string(self, max_tokens: int) -> str:
        """Greedy text up to the closing quote; the string is never empty."""
        tok = self.lm.tokenizer
        pieces: list[int] = []
        for step in range(max_tokens):
            logits = self.logits
            if step == 0:
                logits = logits.clone()
                logits[self.quote_ids] = float("-inf")
            next_id = int(logits.argmax())
            if next_id == tok.eos_token_id:
                break
            pieces.append(next_id)
            text = tok.decode(pieces)
            if '"' in text:
                return text.split('"')[0]
            self._step(self.torch.tensor([[next_id]], device=self.lm.device))
        return tok.decode(pieces).split('"')[0]


class LocalChatClient(LLMClient):
    def __init__(self, model: str = DEFAULT_MODEL, *, cache: ResponseCache | None = None, device: str | None = None):
        from mup_core.models.loading import load_model_cached

        self.lm = load_model_cached(model, device)
        self.model = model
        self.name = f"local:{model}"
        self.max_concurrency = 1  # one forward at a time; torch already uses every core
        self.cache = cache
        self._quotes = None
        self._lock = threading.Lock()

    def _key(self, messages: Sequence[Message], schema, max_tokens: int, temperature: float) -> str:
        """The request's cache key, which also seeds a sampled reply (the same request, the same reply)."""
        return cache_key(self.name, self.model, list(messages), {"max_tokens": max_tokens, "temperature": temperature, "schema": schema})

    def _prompt(self, messages: Sequence[Message]) -> str:
        return self.lm.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)

    def complete(self, messages: Sequence[Message], *, schema=None, max_tokens=256, temperature=0.0) -> ChatResult:
        key = self._key(messages, schema, max_tokens, temperature)
        prompt = self._prompt(messages)
        if self.cache is not None and (hit := self.cache.get(key)):
            text = hit[0]
            return ChatResult(text, json.loads(text) if schema else None, self.model, cached=True, attempts=0,
                              usage=self._usage(prompt, text), finish_reason=None)  # the cache keeps the text only
        with self._lock:
            if schema is None:
                result = self._generate(prompt, max_tokens, temperature, key)
            else:
                parsed = self._constrained(prompt, schema, max_tokens)
                text = json.dumps(parsed, ensure_ascii=False)
                result = ChatResult(text, parsed, self.model, usage=self._usage(prompt, text))
        if self.cache is not None:
            self.cache.put(key, result.text, self.model)
        return result

    def token_logprobs(self, messages: Sequence[Message], *, max_tokens: int = 1, temperature: float = 0.0,
                       top_k: int = 0) -> ChatResult:
        """A free-text reply with every generated token's log-probability and the ``top_k``
        most likely alternatives at its position (OpenAI's ``logprobs`` / ``top_logprobs``;
        log-probabilities of the model's own distribution, before any sampling warper; the
        token that ends the turn is counted in the usage but, as the reply's text leaves it
        out, not listed)."""
        if not 0 <= top_k <= 20:
            raise LLMError(f"top_logprobs must be between 0 and 20, got {top_k}", kind="invalid")
        with self._lock:
            return self._generate(self._prompt(messages), max_tokens, temperature,
                                  self._key(messages, None, max_tokens, temperature), top_logprobs=top_k)

    def stream(self, messages: Sequence[Message], *, max_tokens: int = 256, temperature: float = 0.0,
               stop: threading.Event | None = None) -> Iterator[str | ChatResult]:
        """The free-text reply as it is generated: pieces of text (whole words where the
        tokenizer allows), then the ``ChatResult`` — the same reply as ``complete``'s, whose
        text is the pieces joined (whitespace at either end held back, as ``complete`` strips
        it), with its usage and finish reason. Setting ``stop`` (a client went away) ends the
        generation at the next token. Not cached."""
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self.lm.tokenizer, skip_prompt=True, skip_special_tokens=True)
        prompt, key = self._prompt(messages), self._key(messages, None, max_tokens, temperature)
        stop = stop or threading.Event()
        outcome: dict = {}

        def run() -> None:
            try:
                with self._lock:
                    outcome["result"] = self._generate(prompt, max_tokens, temperature, key, streamer=streamer, stop=stop)
            except BaseException as exc:  # re-raised in the caller's thread
                outcome["error"] = exc
            finally:
                streamer.end()  # the consumer never waits for a generation that has ended (an extra end is harmless)

        worker = threading.Thread(target=run, name="mup-generate", daemon=True)
        worker.start()
        held, started = "", False
        try:
            for piece in streamer:
                text = held + (piece if started else piece.lstrip())
                started = started or bool(text)
                shown = text.rstrip()
                if shown:
                    yield shown
                held = text[len(shown):]
        finally:
            stop.set()  # the caller stopped early (or the reply is complete): nothing more to generate
            worker.join()
        if "error" in outcome:
            raise outcome["error"]
        yield outcome["result"]

    def _usage(self, prompt: str, reply: str | Sequence[int]) -> dict:
        tok = self.lm.tokenizer
        n_reply = len(reply) if not isinstance(reply, str) else len(tok(reply, add_special_tokens=False)["input_ids"])
        return usage_of(len(tok(prompt, add_special_tokens=False)["input_ids"]), n_reply)

    def _generate(self, prompt: str, max_tokens: int, temperature: float, key: str, *,
                  top_logprobs: int | None = None, streamer=None, stop: threading.Event | None = None) -> ChatResult:
        """One free-text reply, at most ``max_tokens`` and the model's context long, ended at
        the end of the assistant's turn (``end_of_turn_ids``) or when ``stop`` is set; with
        ``top_logprobs``, each token's log-probability and that many alternatives. Call with
        ``self._lock`` held."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        class Stopped(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), stop is not None and stop.is_set(), dtype=torch.bool)

        tok = self.lm.tokenizer
        ids = tok(prompt, add_special_tokens=False, return_tensors="pt").to(self.lm.device)
        n_prompt = ids["input_ids"].shape[1]
        room = self.lm.spec.max_length - n_prompt
        if room < 1:
            raise LLMError(f"the prompt is {n_prompt} tokens, {self.lm.slug}'s maximum is {self.lm.spec.max_length}: "
                           "shorten the conversation", kind="invalid")
        limit = min(max_tokens, room)
        kwargs = {"do_sample": False}
        if temperature > 0:
            torch.manual_seed(int(hashlib.sha256(key.encode()).hexdigest()[:8], 16))
            kwargs = {"do_sample": True, "temperature": temperature, "top_p": 0.95}
        ends = end_of_turn_ids(self.lm)
        with torch.inference_mode():
            out = self.lm.model.generate(**ids, max_new_tokens=limit, pad_token_id=tok.pad_token_id,
                                         eos_token_id=sorted(ends), stopping_criteria=StoppingCriteriaList([Stopped()]),
                                         return_dict_in_generate=True, output_logits=top_logprobs is not None,
                                         streamer=streamer, **kwargs)
        new = out.sequences[0, n_prompt:].tolist()
        ended = bool(new) and new[-1] in ends
        finish = "stop" if ended or (len(new) < limit and stop is not None and stop.is_set()) else "length"
        logprobs = None
        if top_logprobs is not None:
            listed = new[:-1] if ended else new  # the end of turn is not part of the reply's text
            logprobs = [self._logprob_entry(step[0], token, top_logprobs) for step, token in zip(out.logits, listed)]
        text = tok.decode(new, skip_special_tokens=True).strip()
        return ChatResult(text, None, self.model, usage=usage_of(n_prompt, len(new)), finish_reason=finish, logprobs=logprobs)

    def _logprob_entry(self, logits, token: int, top_k: int) -> dict:
        import torch

        tok = self.lm.tokenizer
        logp = torch.log_softmax(logits.float(), -1)

        def entry(i: int, value: float) -> dict:
            return {"token": tok.decode([i]), "logprob": value, "bytes": list(token_bytes(tok, i))}

        values, indices = logp.topk(top_k) if top_k else (torch.empty(0), torch.empty(0, dtype=torch.long))
        return {**entry(token, float(logp[token])), "top_logprobs": [entry(int(i), float(v)) for v, i in zip(values, indices)]}

    def _constrained(self, prompt: str, schema: dict, max_tokens: int) -> dict:
        if schema.get("type") != "object":
            raise LLMError("the local backend's JSON mode needs an object schema", kind="invalid")
        decoder = _Decoder(self.lm, prompt + "{", self._quote_ids())
        value: dict = {}
        props = list(schema.get("properties", {}).items())
        for n, (name, sub) in enumerate(props):
            decoder.feed(("" if n == 0 else ", ") + json.dumps(name) + ": ")
            kind = sub.get("type")
            if kind == "integer":
                value[name] = decoder.choose_int(int(sub.get("minimum", 0)), int(sub.get("maximum", 9)))
            elif kind == "string" and "enum" in sub:
                value[name] = self._choose_enum(decoder, sub["enum"])
            elif kind == "string":
                decoder.feed('"')
                value[name] = decoder.gen_string(max(8, max_tokens // max(1, len(props))))
                decoder.feed('"')
            elif kind == "boolean":
                tok = self.lm.tokenizer
                t, f = tok.encode("true", add_special_tokens=False)[0], tok.encode("false", add_special_tokens=False)[0]
                value[name] = bool(decoder.logits[t] >= decoder.logits[f])
                decoder.feed(json.dumps(value[name]))
            else:
                raise LLMError(f"the local backend cannot produce field {name!r} of type {kind!r}", kind="invalid")
        return value

    def _quote_ids(self):
        if self._quotes is None:
            import torch

            tok = self.lm.tokenizer
            vocab = tok.convert_ids_to_tokens(list(range(len(tok))))
            bad = [i for i, t in enumerate(vocab) if t is not None and '"' in tok.convert_tokens_to_string([t])]
            self._quotes = torch.tensor(bad + [tok.eos_token_id], dtype=torch.long)
        return self._quotes

    def _choose_enum(self, decoder: _Decoder, options: list[str]) -> str:
        tok = self.lm.tokenizer
        firsts = [tok.encode('"' + o, add_special_tokens=False) for o in options]
        # compare the log-probability of each option's first distinguishing token
        scores = [float(decoder.logits[ids[0]]) + (float(decoder.logits[ids[1]]) if len(ids) > 1 and len({f[0] for f in firsts}) == 1 else 0) for ids in firsts]
        choice = options[max(range(len(options)), key=scores.__getitem__)]
        decoder.feed(json.dumps(choice))
        return choice
