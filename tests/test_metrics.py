import numpy as np
import pytest

from mup_core.evaluation import brier, compute_metrics, expected_calibration_error, safe_auroc, tpr_at_fpr


def test_tpr_at_fpr_exact_point():
    # 100 negatives: exactly one negative above every positive except the last 2
    neg = np.linspace(0, 0.5, 100)
    neg[-1] = 0.95
    pos = np.array([0.99, 0.98, 0.97, 0.96, 0.9, 0.1])
    y = np.r_[np.zeros(100), np.ones(6)]
    s = np.r_[neg, pos]
    # with FPR <= 1% (one negative allowed) we can catch the 4 positives above 0.95, plus
    # the 0.9 positive (thresholds down to 0.9 still only pass the one 0.95 negative)
    assert tpr_at_fpr(y, s, 0.01) == pytest.approx(5 / 6)
    assert tpr_at_fpr(y, s, 0.0) == pytest.approx(4 / 6)


def test_tpr_at_fpr_interpolates_on_the_roc():
    # 10 negatives: the first step of the ROC goes from FPR 0 to 0.1; at 1% we interpolate
    y = np.r_[np.zeros(10), np.ones(2)]
    s = np.r_[np.full(10, 0.5), 0.9, 0.1]
    # points: (0, 0) -> (0, 0.5) [threshold 0.9] -> (1.0, 0.5) [0.5] -> (1, 1)
    assert tpr_at_fpr(y, s, 0.01) == pytest.approx(0.5)
    y2 = np.array([0, 1, 0, 1])
    s2 = np.array([0.8, 0.7, 0.1, 0.2])
    # ROC: (0,0) (0.5,0) (0.5,0.5) (0.5,1.0)... then (1,1); at 1% FPR nothing is caught
    assert tpr_at_fpr(y2, s2, 0.01) == pytest.approx(0.0)
    # a tie between a positive and a negative: the segment (0,0)->(0.5,0.5) is interpolated
    y3 = np.array([0, 1, 0])
    s3 = np.array([0.9, 0.9, 0.1])
    assert tpr_at_fpr(y3, s3, 0.01) == pytest.approx(0.02)


def test_perfect_and_random_scores():
    y = np.r_[np.zeros(500), np.ones(500)]
    assert tpr_at_fpr(y, y, 0.01) == 1.0 and safe_auroc(y, y) == 1.0
    rng = np.random.default_rng(0)
    s = rng.random(1000)
    assert 0.45 < safe_auroc(y, s) < 0.55 and tpr_at_fpr(y, s, 0.01) < 0.05
    assert np.isnan(safe_auroc(np.ones(3), np.ones(3)))


def test_calibration_metrics():
    y = np.array([0, 0, 1, 1])
    assert brier(y, np.array([0, 0, 1, 1])) == 0.0
    assert brier(y, np.full(4, 0.5)) == pytest.approx(0.25)
    assert expected_calibration_error(y, np.full(4, 0.5)) == pytest.approx(0.0)
    assert expected_calibration_error(y, np.array([0.9, 0.9, 0.9, 0.9])) == pytest.approx(0.4)


def test_compute_metrics_table_row():
    m = compute_metrics(np.array([0, 1, 0, 1]), np.array([0.1, 0.8, 0.6, 0.4]))
    assert m.n == 4 and m.positives == 2 and m.accuracy == pytest.approx(0.5) and m.auroc == pytest.approx(0.75)
    with pytest.raises(ValueError, match="4 labels but 3 scores"):
        compute_metrics(np.array([0, 1, 0, 1]), np.array([0.1, 0.8, 0.6]))
