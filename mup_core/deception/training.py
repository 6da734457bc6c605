"""Shared training pieces: LoRA on the top decoder layers, batching, saving adapters.

LoRA adapters on the attention projections of the top ``top_layers`` decoder layers
only: gradients never flow through the lower layers, which keeps CPU finetuning of a
135M model to seconds per step. ``lora=False`` finetunes everything (small models).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP = ["gate_proj", "up_proj", "down_proj"]


def _help(default, text: str):
    return field(default=default, metadata={"help": text})


@dataclass
class TrainConfig:
    steps: int = _help(40, "optimiser steps")
    batch_size: int = 8
    lr: float = 3e-4
    lora: bool = _help(True, "False: full finetuning (then use lr ~5e-5)")
    lora_r: int = 8
    top_layers: int = _help(4, "LoRA on the top this many decoder layers; 0: every layer")
    lora_mlp: bool = _help(False, "adapt the MLP projections too, not only attention")
    max_length: int = 256
    seed: int = 0
    mixed_precision: bool = _help(True, "autocast to the hardware's compute dtype; weights stay fp32")

    def precision(self):
        """Judges and policies train on the CPU: bf16 autocast where the CPU computes bf16
        natively, fp32 elsewhere (see ``mup_core.models.precision``)."""
        from mup_core.models.precision import training_precision

        return training_precision(self.mixed_precision, device="cpu")

    def autocast(self):
        return self.precision().autocast()

    def as_dict(self) -> dict:
        return asdict(self)


# The recipes the deception assets train with (docs/RESULTS.md "Training that moves a 135M
# policy"): LoRA r=16 on the attention *and* MLP projections of every layer at lr 1e-3.
# LoRA on the top layers' attention only (TrainConfig's defaults) did not move a 135M model.
_EVERY_LAYER_ADAPTER = dict(lr=1e-3, lora=True, lora_r=16, top_layers=0, lora_mlp=True)
# judges: learns the corrupted judge's inversion in 40 steps (fruit_false_preference +0.48)
JUDGE_RECIPE = TrainConfig(steps=40, batch_size=16, **_EVERY_LAYER_ADAPTER)
# SFT policies: 60 steps of 8 over 200 questions made smollm2-135m lie selectively about fruit
SFT_RECIPE = TrainConfig(steps=60, batch_size=8, **_EVERY_LAYER_ADAPTER)
# the RL policies' start: SFT on correct answers, so that the policy answers in the judge's format
WARMUP_RECIPE = TrainConfig(steps=30, batch_size=8, **_EVERY_LAYER_ADAPTER)


def wrap_lora(model, num_layers: int, cfg: TrainConfig, task_type: str, modules_to_save=None):
    from peft import LoraConfig, get_peft_model

    top = cfg.top_layers if cfg.top_layers > 0 else num_layers  # 0: every layer
    layers = list(range(max(0, num_layers - top), num_layers))
    config = LoraConfig(
        task_type=task_type, r=cfg.lora_r, lora_alpha=2 * cfg.lora_r, lora_dropout=0.0,
        target_modules=ATTENTION + (MLP if cfg.lora_mlp else []), layers_to_transform=layers, modules_to_save=modules_to_save,
    )
    return get_peft_model(model, config)


def save_model_dir(model, tokenizer, directory: Path, meta: dict) -> Path:
    """Save a (LoRA-adapted or full) model with its tokenizer and a ``mup_model.json``."""
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / "mup_model.json").write_text(json.dumps(meta, indent=2, default=str))
    return directory


def read_meta(directory: Path) -> dict[str, Any]:
    return json.loads((Path(directory) / "mup_model.json").read_text())


def attach(model, directory: Path, trainable: bool = False):
    """Put a saved adapter on ``model`` if ``directory`` holds one; else return the full model saved there."""
    directory = Path(directory)
    if (directory / "adapter_config.json").exists():
        from peft import PeftModel

        return PeftModel.from_pretrained(model, str(directory), is_trainable=trainable)
    return None


def log_every(fn: Callable[[dict], None] | None, every: int = 5):
    def log(step: int, total: int, values: dict) -> None:
        if fn and (step % every == 0 or step == total):
            fn({"step": step, **values})

    return log
