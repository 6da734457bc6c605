"""Choosing a probe on selection sets, and leave-one-set-out reporting."""

import polars as pl
import pytest

from mup_core.evaluation.selection import SelectionError, choose, leave_one_out, rank


def _table(auroc: dict) -> pl.DataFrame:
    """auroc[(probe_type, layer)][dataset] -> rows; TPR is AUROC / 2 so ties follow AUROC."""
    return pl.DataFrame([
        {"probe_type": t, "layer": l, "dataset": d, "auroc": a, "tpr_at_1pct_fpr": a / 2, "probe_key": f"{t}@{l}"}
        for (t, l), per_set in auroc.items() for d, a in per_set.items()
    ])


TABLE = _table({
    # great in distribution, poor elsewhere: what choosing on corpus-val would pick
    ("lr", 28): {"corpus-val": 1.00, "a": 0.60, "b": 0.62, "c": 0.58},
    ("lr", 16): {"corpus-val": 0.95, "a": 0.80, "b": 0.78, "c": 0.90},
    ("max", 16): {"corpus-val": 0.90, "a": 0.85, "b": 0.70, "c": 0.60},
    # evaluated on two sets only: never a candidate for a three-set selection
    ("attn", 8): {"a": 0.99, "b": 0.99},
})


def test_choose_uses_only_the_selection_sets():
    assert choose(TABLE, ["corpus-val"])[0]["layer"] == 28
    best, top = choose(TABLE, ["a", "b", "c"])
    assert (best["probe_type"], best["layer"]) == ("lr", 16)
    assert best["auroc"] == pytest.approx((0.80 + 0.78 + 0.90) / 3)
    assert best["worst_auroc"] == pytest.approx(0.78)
    assert [(r["probe_type"], r["layer"]) for r in top] == [("lr", 16), ("max", 16), ("lr", 28)]
    # a candidate missing a set is left out rather than ranked on fewer sets
    assert ("attn", 8) not in [(r["probe_type"], r["layer"]) for r in rank(TABLE, ["a", "b", "c"]).to_dicts()]


def test_ties_go_to_tpr_then_the_lower_layer():
    t = pl.DataFrame([
        {"probe_type": "x", "layer": 20, "dataset": "a", "auroc": 0.8, "tpr_at_1pct_fpr": 0.1},
        {"probe_type": "y", "layer": 12, "dataset": "a", "auroc": 0.8, "tpr_at_1pct_fpr": 0.3},
        {"probe_type": "z", "layer": 4, "dataset": "a", "auroc": 0.8, "tpr_at_1pct_fpr": 0.3},
    ])
    assert choose(t, ["a"])[0]["probe_type"] == "z"


def test_leave_one_out_never_lets_a_set_choose_what_it_reports():
    out = leave_one_out(TABLE, ["a", "b", "c"]).sort("held_out")
    # held out a: chosen on b, c -> lr@16 (0.84) beats max@16 (0.65); reported on a
    row = out.row(0, named=True)
    assert (row["held_out"], row["probe_type"], row["layer"]) == ("a", "lr", 16)
    assert row["auroc"] == pytest.approx(0.80)
    assert row["selection_auroc"] == pytest.approx(0.84)
    # held out c: on a, b lr@16 (0.79) still beats max@16 (0.775)
    assert out.filter(pl.col("held_out") == "c")["auroc"][0] == pytest.approx(0.90)
    # attn@8, great on a and b, was never evaluated on c: not a candidate for any rotation
    assert "attn" not in out["probe_type"].to_list()
    # where the held-out set alone would prefer another candidate, the rotation must not see it
    skew = _table({("p", 1): {"a": 0.9, "b": 0.9, "c": 0.5}, ("q", 2): {"a": 0.7, "b": 0.7, "c": 1.0}})
    row_c = leave_one_out(skew, ["a", "b", "c"]).filter(pl.col("held_out") == "c").row(0, named=True)
    assert (row_c["probe_type"], row_c["auroc"]) == ("p", 0.5)


def test_errors_name_what_is_missing():
    with pytest.raises(SelectionError, match=r"selection sets \['mt'\] have no probe metrics"):
        choose(TABLE, ["mt"])
    with pytest.raises(SelectionError, match="no candidate was evaluated on all"):
        choose(_table({("p", 1): {"a": 0.9}, ("q", 2): {"b": 0.7}}), ["a", "b"])
    with pytest.raises(SelectionError, match="at least two sets"):
        leave_one_out(TABLE, ["a"])
    with pytest.raises(SelectionError, match="no probe metrics stored"):
        choose(pl.DataFrame(), ["a"])
