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


def test_reliability_curve_bins_predictions():
    from mup_core.evaluation import reliability_curve

    y = np.array([0, 0, 1, 1, 1, 0, 1, 1])
    p = np.array([0.05, 0.15, 0.12, 0.55, 0.58, 0.51, 0.95, 0.99])
    curve = reliability_curve(y, p, bins=10)
    assert curve["count"] == [1, 2, 3, 2]
    assert curve["mean_predicted"][1] == pytest.approx((0.15 + 0.12) / 2)
    assert curve["fraction_positive"] == pytest.approx([0.0, 0.5, 2 / 3, 1.0])
    assert curve["bin_lo"][2] == pytest.approx(0.5)


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_data():
    from mup_core.evaluation import bootstrap_ci, metrics_with_ci, safe_auroc

    rng = np.random.default_rng(0)

    def sample(n):
        y = np.arange(n) % 2
        return y, rng.normal(size=n) + y

    y, s = sample(60)
    lo, hi = bootstrap_ci(y, s, "auroc", n_boot=300)
    assert lo < safe_auroc(y, s) < hi
    y2, s2 = sample(2000)
    lo2, hi2 = bootstrap_ci(y2, s2, "auroc", n_boot=300)
    assert hi2 - lo2 < (hi - lo) / 3
    # the population AUROC of N(1,1) vs N(0,1) is Phi(1/sqrt 2) = 0.760
    assert lo2 < 0.760 < hi2
    assert bootstrap_ci(y, s, "auroc", seed=1) == bootstrap_ci(y, s, "auroc", seed=1)
    row = metrics_with_ci(y, 1 / (1 + np.exp(-s)), n_boot=100)
    assert row["brier_lo"] <= row["brier"] <= row["brier_hi"]


def test_mean_std_over_seeds():
    import polars as pl

    from mup_core.evaluation import mean_std_over_seeds

    t = pl.DataFrame({"method": ["a", "a", "a", "b"], "seed": [0, 1, 2, 0], "auroc": [0.6, 0.7, 0.8, 0.9]})
    out = mean_std_over_seeds(t, ["method"]).to_dicts()
    assert out[0] == {"method": "a", "seeds": 3, "auroc_mean": pytest.approx(0.7), "auroc_std": pytest.approx(0.1)}
    assert out[1]["auroc_std"] == 0.0 and out[1]["seeds"] == 1


def test_roc_points_match_sklearn_and_bootstrap_matches_the_slow_loop():
    from sklearn.metrics import roc_curve

    from mup_core.evaluation.metrics import METRIC_FUNCTIONS, bootstrap_ci, roc_curve_points

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(size=300) + y, 1)  # many ties
    fpr, tpr = roc_curve_points(y, s)
    ref_fpr, ref_tpr, _ = roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)
    p = 1 / (1 + np.exp(-s))
    for metric in ("auroc", "accuracy", "brier"):
        fast = bootstrap_ci(y, p, metric, n_boot=200, seed=5)
        idx = np.random.default_rng(5).integers(0, len(y), (200, len(y)))
        slow = [METRIC_FUNCTIONS[metric](y[i], p[i]) for i in idx]
        assert fast == pytest.approx((np.quantile(slow, 0.025), np.quantile(slow, 0.975))), metric
