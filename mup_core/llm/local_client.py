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
from typing import Sequence

from mup_core.llm.base import ChatResult, LLMClient, LLMError, Message
from mup_core.llm.cache import ResponseCache, cache_key
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

    def complete(self, messages: Sequence[Message], *, schema=None, max_tokens=256, temperature=0.0) -> ChatResult:
        key = cache_key(self.name, self.model, list(messages), {"max_tokens": max_tokens, "temperature": temperature, "schema": schema})
        if self.cache is not None and (hit := self.cache.get(key)):
            text = hit[0]
            return ChatResult(text, json.loads(text) if schema else None, self.model, cached=True, attempts=0)
        prompt = self.lm.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
        with self._lock:
            if schema is None:
                text, parsed = self._generate(prompt, max_tokens, temperature, key), None
            else:
                parsed = self._constrained(prompt, schema, max_tokens)
                text = json.dumps(parsed, ensure_ascii=False)
        if self.cache is not None:
            self.cache.put(key, text, self.model)
        return ChatResult(text, parsed, self.model)

    def next_token_logprobs(self, messages: Sequence[Message], top_k: int = 20) -> list[tuple[str, float]]:
        """The ``top_k`` most likely first answer tokens and their log-probabilities
        (what an OpenAI-compatible server returns as ``top_logprobs``)."""
        import torch

        tok = self.lm.tokenizer
        prompt = tok.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
        ids = tok(prompt, add_special_tokens=False, return_tensors="pt").to(self.lm.device)
        with self._lock, torch.inference_mode():
            logits = self.lm.model(**ids, logits_to_keep=1).logits[0, -1].float()
        values, indices = torch.log_softmax(logits, -1).topk(top_k)
        return [(tok.decode([int(i)]), float(v)) for v, i in zip(values, indices)]

    def _generate(self, prompt: str, max_tokens: int, temperature: float, key: str) -> str:
        import torch

        tok = self.lm.tokenizer
        ids = tok(prompt, add_special_tokens=False, return_tensors="pt").to(self.lm.device)
        kwargs = {"do_sample": False}
        if temperature > 0:
            torch.manual_seed(int(hashlib.sha256(key.encode()).hexdigest()[:8], 16))
            kwargs = {"do_sample": True, "temperature": temperature, "top_p": 0.95}
        with torch.inference_mode():
            out = self.lm.model.generate(**ids, max_new_tokens=max_tokens, pad_token_id=tok.pad_token_id, **kwargs)
        return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()

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
