from mup_core.evaluation.metrics import (
    ProbeMetrics,
    bootstrap_ci,
    brier,
    compute_metrics,
    expected_calibration_error,
    mean_std_over_seeds,
    metrics_with_ci,
    reliability_curve,
    safe_auroc,
    tpr_at_fpr,
)

__all__ = [
    "ProbeMetrics",
    "bootstrap_ci",
    "brier",
    "compute_metrics",
    "expected_calibration_error",
    "mean_std_over_seeds",
    "metrics_with_ci",
    "reliability_curve",
    "safe_auroc",
    "tpr_at_fpr",
]
