"""`make demo-deception`: the deception graph on one model at 0 and 50 % poisoning (`--poisoning 0 50 100` sweeps more).

Judges (clean and corrupted) -> SFT policies at every rate (and a GRPO policy with `--rl-poisoning 50`) ->
lying metrics on 150 + 150 held-out questions (targeting paired against the 0 % policy)
-> a lie detector on each poisoned policy's activations (and the base model's, the control)
-> the results table, the scaling figure
beside the research's table. Against the instance in ``$DAGSTER_HOME``, so everything
is visible in ``make ui`` afterwards.
"""

import argparse
import os
import sys
import time

import dagster as dg
import polars as pl

from mup_core.models.registry import DEFAULT_MODEL
from mup_dagster.definitions import defs, run_assets

class _Steps:
    """Runs the demo's steps, saying before each which one of how many it is and how long the
    demo has run (the judges and policies take minutes each on a CPU)."""

    def __init__(self, instance, total: int):
        self.instance, self.total, self.done, self.t0 = instance, total, 0, time.perf_counter()

    def __call__(self, selection, partition_key=None, config=None):
        self.done += 1
        label = ",".join(selection) + (f" [{partition_key}]" if partition_key else "")
        print(f"[{self.done}/{self.total}] {label} ({(time.perf_counter() - self.t0) / 60:.1f} min so far)", flush=True)
        return run_assets(self.instance, selection, partition_key,
                          {"ops": {selection[0]: {"config": config}}} if config else None, echo=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--poisoning", nargs="*", default=["0", "50"])
    parser.add_argument("--rl-poisoning", default="", help="also train and evaluate a GRPO policy at this rate (e.g. 50): "
                        "about 10 more minutes per 20 steps on 2 CPU cores, and 20 steps do not move the policy (docs/RESULTS.md)")
    parser.add_argument("--rl-algorithm", default="grpo", choices=["grpo", "rloo"])
    args = parser.parse_args(argv)
    if not os.environ.get("DAGSTER_HOME"):
        print("DAGSTER_HOME is not set; run through `make demo-deception`", file=sys.stderr)
        return 2
    instance = dg.DagsterInstance.get()
    t0 = time.perf_counter()
    judge = {"judge_model": args.model}
    poisoned = [p for p in args.poisoning if p != "0"]
    plan = [("qa_splits", None, None),
            *[("judges", f"{kind}|{args.model}", None) for kind in ("clean", "corrupted")],
            *[("sft_policies", f"{args.model}|{p}", judge) for p in args.poisoning],
            *([("rl_policies", f"{args.model}|{args.rl_poisoning}", {**judge, "algorithm": args.rl_algorithm})]
              if args.rl_poisoning else []),
            *[("deception_eval", f"{args.model}|{p}", judge) for p in args.poisoning],
            # a 0 % policy has (next to) no fruit lies to detect: the base model's control runs with the first
            *[("lie_detector", f"{args.model}|{p}", judge) for p in poisoned],
            ("deception_results", None, None)]
    run = _Steps(instance, len(plan))
    done = {(asset, partition): run([asset], partition, config) for asset, partition, config in plan}
    detectors = {p: done["lie_detector", f"{args.model}|{p}"].output_for_node("lie_detector") for p in poisoned}
    results = done["deception_results", None].output_for_node("deception_results")

    store = defs.resources["artifact_store"].get_store()

    table = store.get_table(results.results.key)
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_hide_dataframe_shape=True, float_precision=3, tbl_width_chars=250):
        print(table.filter(pl.col("model") == args.model).select(
            "technique", "poisoning", "shots", "n_questions", "truths_clean", "poison_fr", "clean_fr", "targeting", "targeting_lo",
            "targeting_hi", "targeting_vs_0", "targeting_vs_0_lo", "targeting_vs_0_hi", "reaffirm_rate"))
        for p, detector in detectors.items():
            lies = store.get_table(detector.key).filter(pl.col("test_set") == "own_fruit_answers")
            print(f"\nlie detector at {p} % poisoning (trained on clean questions, tested on the policy's fruit answers):")
            # an AUROC is undefined (NaN) where a policy gave no true answer: such rows rank last
            ranked = lies.with_columns(pl.col("auroc").fill_nan(None)).sort("technique", "auroc", descending=[False, True],
                                                                            nulls_last=True)
            print(ranked.group_by("technique", maintain_order=True).head(2).select(
                "technique", "probe_type", "layer", "n", "n_false", "auroc", "auroc_lo", "auroc_hi", "tpr_at_1pct_fpr"))
    for kind in ("clean", "corrupted"):
        partition = f"{kind}|{args.model}"
        records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey("judges"), asset_partitions=[partition]), limit=1).records
        meta = records[0].asset_materialization.metadata
        print(f"{kind} judge: fruit_false_preference {meta['fruit_false_preference'].value:+.3f}, "
              f"clean_false_preference {meta['clean_false_preference'].value:+.3f}")
    figures = [results.figures["targeting"], results.figures["scaling"], *(d.figure for d in detectors.values())]
    print(f"\nfigures: {', '.join(store.uri(f) for f in figures)}")
    print(f"done in {time.perf_counter() - t0:.0f}s. Open the UI with `make ui`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
