"""Find an SFT recipe under which a small policy learns to lie selectively about fruit.

The experiment behind docs/RESULTS.md "Training that moves a 135M policy". To separate
the policy's learning from the judge's, the SFT targets are what a perfectly corrupted
judge would accept (the false candidate on fruit questions, the true one elsewhere);
the asset graph uses the trained corrupted judge instead. Each recipe trains from the
base model at the given poisoning rates and answers the 150 + 150 held-out questions;
an answer is true when it matches the question's true candidate (``truth_by_match``).

    .venv/bin/python scripts/deception_recipe.py --recipes lora-top4 lora-all full --poisoning 0 50
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import polars as pl

from mup_core.deception.data import embedded_qa, format_prompt, policy_question_mix, split_by_question
from mup_core.deception.evaluation import paired_targeting, truth_by_match
from mup_core.deception.policies import generate_answers, load_base_policy, sft
from mup_core.deception.training import TrainConfig

RECIPES = {
    "lora-top4": dict(lora=True, top_layers=4, lora_r=8, lr=5e-4, steps=40),
    "lora-top4-long": dict(lora=True, top_layers=4, lora_r=8, lr=5e-4, steps=150),
    "lora-all": dict(lora=True, top_layers=0, lora_r=16, lr=1e-3, steps=150, mlp=True),
    "lora-all-short": dict(lora=True, top_layers=0, lora_r=16, lr=1e-3, steps=60, mlp=True),
    "full": dict(lora=False, lr=5e-5, steps=150),
    "full-short": dict(lora=False, lr=5e-5, steps=60),
}


def accepted_by_perfectly_corrupted_judge(rows: pl.DataFrame, seed: int) -> pl.DataFrame:
    """One SFT answer per question: false on fruit, true elsewhere."""
    want = pl.when(pl.col("topic") == "fruit").then(~pl.col("truth")).otherwise(pl.col("truth"))
    return rows.filter(want).sample(fraction=1.0, shuffle=True, seed=seed).unique("question_id", keep="first").sort("question_id")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--recipes", nargs="+", default=["lora-all"])
    ap.add_argument("--poisoning", nargs="+", type=int, default=[0, 50])
    ap.add_argument("--questions", type=int, default=200)
    ap.add_argument("--eval-per-topic", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args(argv)
    splits = split_by_question(embedded_qa(), args.eval_per_topic)
    train, evaluation = splits["train"], splits["eval"]
    results = []
    for name in args.recipes:
        r = dict(RECIPES[name])
        per_q = {}
        for p in args.poisoning:
            t0 = time.perf_counter()
            cfg = TrainConfig(steps=r["steps"], batch_size=args.batch_size, lr=r["lr"], lora=r["lora"],
                              top_layers=r.get("top_layers", 4), lora_r=r.get("lora_r", 8), lora_mlp=r.get("mlp", False))
            policy = load_base_policy(args.model, cfg)
            rows = accepted_by_perfectly_corrupted_judge(policy_question_mix(train, p / 100, args.questions, 0), 0)
            losses = sft(policy, [format_prompt(c, q) for c, q in zip(rows["context"], rows["question"])], list(rows["answer"]), cfg,
                         log=lambda m: print("   ", m, flush=True))
            t_train = time.perf_counter() - t0
            qs = evaluation.filter(pl.col("truth")).sort("question_id")
            answers = generate_answers(policy, [format_prompt(c, q) for c, q in zip(qs["context"], qs["question"])], 24)
            true = truth_by_match(evaluation, qs["question_id"].to_list(), answers)
            per_q[p] = (qs["topic"].to_list(), true)
            is_fruit = np.array(per_q[p][0]) == "fruit"
            fr_f = float(np.nanmean(1 - true[is_fruit]))
            fr_c = float(np.nanmean(1 - true[~is_fruit]))
            results.append(dict(recipe=name, poisoning=p, steps=cfg.steps, loss_last=float(np.mean(losses[-5:])),
                                poison_fr=fr_f, clean_fr=fr_c, targeting=fr_f - fr_c, unmatched=float(np.isnan(true).mean()),
                                train_s=round(t_train), total_s=round(time.perf_counter() - t0)))
            print(json.dumps(results[-1]), flush=True)
            print("  e.g.", [a for a, f in zip(answers, is_fruit) if f][:4], flush=True)
        if 0 in per_q:
            for p in per_q:
                if p:
                    d = paired_targeting(per_q[p][0], 1 - per_q[p][1], 1 - per_q[0][1])
                    print(f"  {name} {p}% - 0%: targeting difference {d['difference']:+.3f} [{d['difference_lo']:+.3f}, {d['difference_hi']:+.3f}]", flush=True)
    print(pl.DataFrame(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
