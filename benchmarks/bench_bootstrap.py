"""Bootstrap intervals: the vectorised implementation in mup_core.evaluation against the
per-resample loop over sklearn that it replaced (same resamples, same numbers).

    .venv/bin/python benchmarks/bench_bootstrap.py [--n 132] [--boot 1000]
"""

import argparse
import time

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from mup_core.evaluation.metrics import METRIC_FUNCTIONS, bootstrap_ci


def sklearn_tpr_at_1pct(y, s, max_fpr=0.01):
    """TPR at 1% FPR on sklearn's roc_curve (the implementation before the lean one)."""
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    i = np.flatnonzero(fpr <= max_fpr)[-1]
    best = tpr[i]
    if i + 1 < len(fpr) and fpr[i] < max_fpr:
        best = max(best, tpr[i] + (max_fpr - fpr[i]) / (fpr[i + 1] - fpr[i]) * (tpr[i + 1] - tpr[i]))
    return float(best)


def loop(y, s, metric, n_boot, seed):
    fn = {"auroc": roc_auc_score, "tpr_at_1pct_fpr": sklearn_tpr_at_1pct}.get(metric) or METRIC_FUNCTIONS[metric]
    idx = np.random.default_rng(seed).integers(0, len(y), (n_boot, len(y)))
    vals = [fn(y[i], s[i]) for i in idx if 0 < y[i].sum() < len(y)]
    return float(np.quantile(vals, 0.025)), float(np.quantile(vals, 0.975))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=132, help="examples (corpus-test has 132)")
    ap.add_argument("--boot", type=int, default=1000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    y = np.arange(args.n) % 2
    s = 1 / (1 + np.exp(-(rng.normal(size=args.n) + 2 * y)))
    print(f"{args.n} examples, {args.boot} resamples")
    print(f"{'metric':18s} {'vectorised':>12s} {'sklearn loop':>13s} {'speed-up':>9s}  same interval")
    for metric in ("auroc", "accuracy", "brier", "tpr_at_1pct_fpr"):
        t = time.perf_counter()
        fast = bootstrap_ci(y, s, metric, n_boot=args.boot, seed=1)
        t_fast = time.perf_counter() - t
        t = time.perf_counter()
        slow = loop(y, s, metric, args.boot, 1)
        t_slow = time.perf_counter() - t
        same = np.allclose(fast, slow)
        print(f"{metric:18s} {t_fast * 1000:10.1f}ms {t_slow * 1000:11.1f}ms {t_slow / t_fast:8.1f}x  {same}")


if __name__ == "__main__":
    main()
