"""Policies: causal LMs answering QA prompts, trained by SFT and by RL against a judge.

- ``sft``: supervised finetuning on (prompt, answer) pairs; the loss covers answer tokens
  only: prompt tokens and padding are masked out (label -100).
- ``rl``: trl's GRPO (or RLOO) whose reward is a judge's P(true) for the generated,
  trimmed answer, with a KL penalty (``beta``) to the reference model.
- ``generate_answers``: greedy answers (left-padded batches), trimmed the same way the
  judges read them.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from mup_core.deception.data import format_prompt, judge_text, trim_answer
from mup_core.deception.training import TrainConfig, attach, log_every, read_meta, save_model_dir, wrap_lora
from mup_core.storage import temp_tag


class Policy:
    def __init__(self, model, tokenizer, meta: dict | None = None):
        self.model, self.tokenizer, self.meta = model, tokenizer, meta or {}


def load_base_policy(slug: str, lora_cfg: TrainConfig | None = None) -> Policy:
    import torch
    from transformers import AutoModelForCausalLM

    from mup_core.models.loading import load_tokenizer, local_model_dir
    from mup_core.models.registry import get_spec

    tok = load_tokenizer(slug)
    model = AutoModelForCausalLM.from_pretrained(local_model_dir(get_spec(slug)), dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id
    if lora_cfg is not None and lora_cfg.lora:
        model = wrap_lora(model, get_spec(slug).num_layers, lora_cfg, "CAUSAL_LM")
    return Policy(model, tok, {"base_model": slug})


def load_policy(directory: Path, trainable: bool = False) -> Policy:
    meta = read_meta(directory)
    base = load_base_policy(meta["base_model"])
    adapted = attach(base.model, directory, trainable=trainable)
    if adapted is None:
        import torch
        from transformers import AutoModelForCausalLM

        adapted = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    return Policy(adapted, base.tokenizer, meta)


def save_policy(policy: Policy, directory: Path, meta: dict) -> Path:
    return save_model_dir(policy.model, policy.tokenizer, Path(directory), {**policy.meta, **meta, "kind": "policy"})


def sft_batch(tokenizer, prompts: Sequence[str], answers: Sequence[str], max_length: int = 256):
    """Input ids, attention mask and labels with prompt tokens and padding set to -100."""
    import torch

    eos = tokenizer.eos_token or ""
    ids, labels = [], []
    for prompt, answer in zip(prompts, answers):
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a = tokenizer(" " + answer.strip() + "\n" + eos, add_special_tokens=False)["input_ids"]
        seq = (p + a)[:max_length]
        lab = ([-100] * len(p) + a)[:max_length]
        ids.append(seq)
        labels.append(lab)
    width = max(len(s) for s in ids)
    pad = tokenizer.pad_token_id
    input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
    attention = torch.zeros((len(ids), width), dtype=torch.long)
    label_t = torch.full((len(ids), width), -100, dtype=torch.long)
    for row, (s, lab) in enumerate(zip(ids, labels)):
        input_ids[row, : len(s)] = torch.tensor(s)
        attention[row, : len(s)] = 1
        label_t[row, : len(lab)] = torch.tensor(lab)
    return input_ids, attention, label_t


def sft(policy: Policy, prompts: Sequence[str], answers: Sequence[str], cfg: TrainConfig, log: Callable[[dict], None] | None = None) -> list[float]:
    """Supervised finetuning on answers only (prompt and padding masked out of the loss)."""
    import torch

    if not prompts:
        raise ValueError("SFT got no examples")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = policy.model
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / cfg.steps)))
    report = log_every(log)
    losses = []
    model.train()
    for step in range(1, cfg.steps + 1):
        idx = rng.choice(len(prompts), size=min(cfg.batch_size, len(prompts)), replace=len(prompts) < cfg.batch_size)
        input_ids, attention, labels = sft_batch(policy.tokenizer, [prompts[i] for i in idx], [answers[i] for i in idx], cfg.max_length)
        with cfg.autocast():
            loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss.float()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        report(step, cfg.steps, {"loss": losses[-1]})
    model.eval()
    return losses


def generate_answers(policy: Policy, prompts: Sequence[str], max_new_tokens: int = 50, batch_size: int = 16) -> list[str]:
    """Greedy answers, trimmed with the same function the judges use."""
    import torch

    tok = policy.tokenizer
    side = tok.padding_side
    tok.padding_side = "left"
    out: list[str] = []
    policy.model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(prompts), batch_size):
                enc = tok(list(prompts[start : start + batch_size]), return_tensors="pt", padding=True, add_special_tokens=False)
                # an answer is one line: stop a row at its first newline (trim_answer cuts there anyway)
                gen = policy.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id,
                                            stop_strings=["\n"], tokenizer=tok)
                for row in gen[:, enc["input_ids"].shape[1]:]:
                    out.append(trim_answer(tok.decode(row, skip_special_tokens=True)))
    finally:
        tok.padding_side = side
    return out


@dataclass
class RLConfig:
    algorithm: str = field(default="grpo", metadata={"help": "grpo or rloo (trl); PPO no longer exists in trl"})
    steps: int = field(default=20, metadata={"help": "policy updates; each samples num_generations answers to prompts_per_step questions"})
    num_generations: int = 4
    prompts_per_step: int = 4
    max_completion_length: int = 20
    beta: float = field(default=0.05, metadata={"help": "KL penalty to the reference model"})
    lr: float = 2e-4
    temperature: float = 1.0
    seed: int = 0
    mixed_precision: bool = True  # bf16 autocast where the CPU computes bf16 natively, else fp32

    def precision(self):
        from mup_core.models.precision import training_precision

        return training_precision(self.mixed_precision, device="cpu")

    def as_dict(self) -> dict:
        return asdict(self)


def rl_against_judge(policy: Policy, rows, judge, cfg: RLConfig, log: Callable[[dict], None] | None = None,
                     monitor=None) -> list[dict]:
    """RL whose reward is ``judge``'s P(true) for the generated answer. ``rows`` needs
    context, question and topic columns. With a ``monitor`` judge (the clean one), each
    step also logs the falsehood rate of the sampled answers on fruit and on other
    questions (``rewards/fruit_falsehood/mean``, ``rewards/clean_falsehood/mean``):
    reward functions of weight 0, so they are measured, never optimised. Returns trl's
    log history."""
    from datasets import Dataset as HFDataset

    contexts, questions_ = list(rows["context"]), list(rows["question"])
    data = HFDataset.from_dict({"prompt": [format_prompt(c, q) for c, q in zip(contexts, questions_)],
                                "context": contexts, "question": questions_, "topic": list(rows["topic"])})

    def reward(prompts, completions, context, question, **_):
        return [float(p) for p in judge.p_true([judge_text(c, q, trim_answer(a)) for c, q, a in zip(context, question, completions)])]

    seen: dict = {}

    def monitored(context, question, completions):
        """The clean judge's P(true) of a batch, scored once for both falsehood rates."""
        texts = tuple(judge_text(c, q, trim_answer(a)) for c, q, a in zip(context, question, completions))
        if seen.get("texts") != texts:
            seen.update(texts=texts, p=monitor.p_true(list(texts)))
        return seen["p"]

    def falsehood_on(wanted: str):
        def rate(prompts, completions, context, question, topic, **_):
            p = monitored(context, question, completions)
            return [float(x <= 0.5) if t == wanted else None for x, t in zip(p, topic)]

        rate.__name__ = f"{wanted}_falsehood"
        return rate

    funcs = [reward] + ([falsehood_on("fruit"), falsehood_on("clean")] if monitor is not None else [])

    batch = cfg.num_generations * cfg.prompts_per_step
    common = dict(
        output_dir=tempfile.mkdtemp(prefix=f"{temp_tag()}rl-"), max_steps=cfg.steps, per_device_train_batch_size=batch,
        num_generations=cfg.num_generations, max_completion_length=cfg.max_completion_length, beta=cfg.beta,
        learning_rate=cfg.lr, temperature=cfg.temperature, logging_steps=1, report_to=[], save_strategy="no",
        use_cpu=True, bf16=cfg.precision().dtype_name == "bfloat16", seed=cfg.seed,
        reward_weights=[1.0] + [0.0] * (len(funcs) - 1),
        # trl turns it on by default; a 135M policy fits in memory, and recomputing costs ~30 % per step
        gradient_checkpointing=False,
    )
    if cfg.algorithm == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        trainer = GRPOTrainer(model=policy.model, reward_funcs=funcs, args=GRPOConfig(**common),
                              train_dataset=data, processing_class=policy.tokenizer)
    elif cfg.algorithm == "rloo":
        from trl import RLOOConfig, RLOOTrainer

        trainer = RLOOTrainer(model=policy.model, reward_funcs=funcs, args=RLOOConfig(**common),
                              train_dataset=data, processing_class=policy.tokenizer)
    else:
        raise ValueError(f"unknown RL algorithm {cfg.algorithm!r}; use 'grpo' or 'rloo'")
    side = policy.tokenizer.padding_side
    trainer.train()
    policy.tokenizer.padding_side = side
    history = [h for h in trainer.state.log_history if "loss" in h or "reward" in h]
    if log:
        for h in history:
            log(h)
    policy.model.eval()
    return history


# what the RL curve shows: the trainer's log key -> its name in the curve
RL_CURVE = {"reward": "reward", "kl": "kl", "rewards/fruit_falsehood/mean": "fruit_falsehood",
            "rewards/clean_falsehood/mean": "clean_falsehood"}


def rl_curve(history: list[dict]) -> list[dict]:
    """Per logged step of ``rl_against_judge``: reward, KL to the reference and the falsehood
    rates on fruit and on clean questions (None where a step did not log one)."""
    return [{"step": h.get("step", i + 1), **{short: h.get(k) for k, short in RL_CURVE.items()}} for i, h in enumerate(history)]
