from mup_core.evaluation.metrics import (
    ProbeMetrics,
    brier,
    compute_metrics,
    expected_calibration_error,
    safe_auroc,
    tpr_at_fpr,
)

__all__ = ["ProbeMetrics", "brier", "compute_metrics", "expected_calibration_error", "safe_auroc", "tpr_at_fpr"]
