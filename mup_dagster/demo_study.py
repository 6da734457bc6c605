"""`make demo-study`: the full probe study for one model on the embedded corpus.

Materialises, against the Dagster instance in ``$DAGSTER_HOME`` (so everything is
visible in ``make ui`` afterwards): datasets -> activations -> probes and metrics at
every probe layer -> layer sweep -> probe scores at the selected layer -> the four
baselines -> the ten experiments. Prints the comparison and where the figures are.
"""

import argparse
import os
import sys
import time

import dagster as dg
import polars as pl

from mup_core.models.registry import DEFAULT_MODEL, get_spec
from mup_dagster.study.common import BASELINES
from mup_dagster.definitions import DATASET_ASSETS, defs, run_assets
from mup_dagster.demo import existing_file
from mup_dagster.partitions import layer_model_key

EXPERIMENTS = ["probe_comparison", "calibration_curves", "roc_curves", "auroc_by_length", "monitoring_cascade",
               "study_summary", "generalisation_heatmap", "data_efficiency", "few_shot_adaptation"]



def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--eval-file", action="append", default=[], type=existing_file, help="extra JSONL/CSV evaluation file (research format)")
    parser.add_argument("--selection-file", action="append", default=[], type=existing_file,
                        help="JSONL/CSV set from outside the training distribution to choose the layer, probe and "
                        "threshold on (research format, e.g. ../shared/data/mup/dev/mt_dev_balanced.jsonl)")
    parser.add_argument("--finetune-steps", type=int, default=40)
    parser.add_argument("--experiments-only", action="store_true",
                        help="re-run only the experiments (probes and baselines already materialised)")
    args = parser.parse_args(argv)
    if not os.environ.get("DAGSTER_HOME"):
        print("DAGSTER_HOME is not set; run through `make demo-study` or export it first", file=sys.stderr)
        return 2
    spec = get_spec(args.model)
    instance = dg.DagsterInstance.get()
    t0 = time.perf_counter()
    print(f"mup probe study: {spec.slug}, probe layers {list(spec.default_layers)}", flush=True)
    if not args.experiments_only:
        files = {"files": args.eval_file, "selection_files": args.selection_file}  # absolute (existing_file)
        run_assets(instance, DATASET_ASSETS, run_config={"ops": {"eval_datasets": {"config": files}}}, echo=True)
        run_assets(instance, ["activations"], spec.slug, echo=True)
        for layer in spec.default_layers:
            run_assets(instance, ["probes", "probe_metrics"], layer_model_key(layer, spec.slug), echo=True)
        run_assets(instance, ["probe_report", "layer_sweep", "probe_scores"], spec.slug, echo=True)
        ft = {"ops": {"finetuned_baseline": {"config": {"steps": args.finetune_steps}}}}
        run_assets(instance, list(BASELINES), spec.slug, run_config=ft, echo=True)
    result = run_assets(instance, EXPERIMENTS, spec.slug, echo=True)

    from mup_core.experiments import VAL, method_summary

    store = defs.resources["artifact_store"].get_store()
    comparison = store.get_table(result.output_for_node("probe_comparison").key)
    sweep = instance.get_latest_materialization_event(dg.AssetKey("layer_sweep"))
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_hide_dataframe_shape=True, float_precision=3, tbl_width_chars=200):
        print(comparison.filter(pl.col("dataset") != VAL).select(
            "dataset", "method", "seeds", "tpr_at_1pct_fpr", "tpr_at_1pct_fpr_lo", "tpr_at_1pct_fpr_hi",
            "auroc", "auroc_lo", "auroc_hi", "auroc_std", "brier", "mean_flops"))
        print("\nsummary: TPR at 1 % FPR first; ood_* = mean over the evaluation sets other than corpus-test")
        print(method_summary(comparison))
    if sweep is not None:
        meta = sweep.asset_materialization.metadata
        print(f"\nlayer and probe chosen on {meta['chosen_on'].value}: layer {meta['selected_layer'].value}, "
              f"best probe {meta['best_probe'].value}")
        if "leave_one_set_out" in meta:
            print("leave one selection set out (choose on the others, report it):")
            print(meta["leave_one_set_out"].value)
    print("\nfigures:")
    for name in EXPERIMENTS:
        print(f"  {name:24s} {store.uri(result.output_for_node(name).figure)}")
    print(f"done in {time.perf_counter() - t0:.0f}s. Open the UI with `make ui` (http://127.0.0.1:3000).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
