"""`make demo`: materialise the whole default graph for one model and print the result.

Runs the same assets as the UI, against the Dagster instance in ``$DAGSTER_HOME``,
so every run and materialisation is visible afterwards in ``make ui``.
"""

import argparse
import os
import sys
import time

import dagster as dg
import polars as pl

from mup_core.models.registry import DEFAULT_MODEL, get_spec
from mup_dagster.definitions import DATASET_ASSETS, defs, run_assets
from mup_dagster.partitions import layer_model_key


def existing_file(path: str) -> str:
    """An argparse type: the absolute path of a file that exists (checked before any run starts)."""
    if not os.path.isfile(path):
        raise argparse.ArgumentTypeError(f"{path}: no such file (from {os.getcwd()}); give a JSONL/CSV file in the "
                                         "research format, e.g. ../shared/data/mup/dev/mt_dev_balanced.jsonl")
    return os.path.abspath(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--layers", type=int, nargs="*", help="default: the model's probe layers")
    parser.add_argument("--eval-file", action="append", default=[], type=existing_file, help="extra JSONL/CSV evaluation file")
    parser.add_argument("--probe-types", nargs="+", help="train only these probe types (default: all eleven)")
    args = parser.parse_args(argv)

    if not os.environ.get("DAGSTER_HOME"):
        print("DAGSTER_HOME is not set; run through `make demo` or export it first", file=sys.stderr)
        return 2
    spec = get_spec(args.model)
    layers = args.layers or list(spec.default_layers)
    bad = [layer for layer in layers if layer not in spec.default_layers]
    if bad:
        print(f"layers {bad} are not probe layers of {spec.slug} ({list(spec.default_layers)})", file=sys.stderr)
        return 2
    instance = dg.DagsterInstance.get()
    t0 = time.perf_counter()
    from mup_core.models.precision import choose_precision

    precision = choose_precision()
    print(f"mup demo: {spec.slug}, layers {layers}, DAGSTER_HOME={os.environ['DAGSTER_HOME']}", flush=True)
    print(f"compute: {precision.device} in {precision.dtype_name} ({precision.reason})", flush=True)
    eval_config = {"ops": {"eval_datasets": {"config": {"files": args.eval_file}}}}
    run_assets(instance, DATASET_ASSETS, run_config=eval_config, echo=True)
    extracted = run_assets(instance, ["activations"], spec.slug, echo=True)
    (done,) = extracted.asset_materializations_for_node("activations")
    print(f"  extraction: {done.metadata['throughput'].value}", flush=True)
    probes_config = {"ops": {"probes": {"config": {"probe_types": args.probe_types}}}} if args.probe_types else None
    for layer in layers:
        run_assets(instance, ["probes", "probe_metrics"], layer_model_key(layer, spec.slug), run_config=probes_config, echo=True)
    result = run_assets(instance, ["probe_report"], spec.slug, echo=True)
    bundle = run_assets(instance, ["monitor_bundle"], spec.slug, echo=True).output_for_node("monitor_bundle")

    from mup_core.workflows import collect_metrics

    store = defs.resources["artifact_store"].get_store()
    table = collect_metrics(store, spec.slug).filter(pl.col("layer").is_in(layers))
    report = result.output_for_node("probe_report")
    with_cols = table.select("dataset", "layer", "probe_type", "auroc", "accuracy", "tpr_at_1pct_fpr").sort(
        "dataset", "probe_type", "layer"
    )
    with pl.Config(tbl_rows=-1, tbl_hide_dataframe_shape=True, float_precision=3):
        print(with_cols)
    print(f"\nfigure: {store.uri(report.figure)}")
    print(f"table:  {store.uri(report.key)}")
    print(f"monitor: {bundle.probe_type} at layer {bundle.layer}, threshold {bundle.threshold:.3f} "
          f"({store.uri(bundle.prefix)})")
    print(f"done in {time.perf_counter() - t0:.0f}s. Open the UI with `make ui` (http://127.0.0.1:3000); "
          f"watch a conversation live with `make monitor` (http://127.0.0.1:8100).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
