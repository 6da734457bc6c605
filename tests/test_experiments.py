"""The study's experiments on synthetic scores and activations (no model needed)."""

import numpy as np
import polars as pl
import pytest
import torch

from mup_core.activations import RaggedActivations
from mup_core.evaluation import safe_auroc
from mup_core.experiments import (
    VAL,
    Part,
    auroc_by_length,
    calibration,
    cascade,
    comparison_table,
    concat_scores,
    data_efficiency,
    few_shot,
    generalisation,
    method_summary,
    roc_points,
    score_rows,
    split_part,
)
from mup_core.figures import study as figs


def fake_scores(seed=0, n=200):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    tokens = rng.integers(10, 200, n)
    ids = [f"x{i}" for i in range(n)]
    tables = []
    for dataset in ("a", "b", VAL):
        # the probe is good on short inputs only; the LLM is good everywhere but costly
        probe = 1 / (1 + np.exp(-(rng.normal(size=n) + 3 * (y - 0.5) * (tokens < 100))))
        llm = 1 / (1 + np.exp(-(rng.normal(size=n) + 4 * (y - 0.5))))
        weak = rng.random(n)
        tables.append(score_rows("probe:lr", "probe", dataset, ids, y, probe, tokens, tokens * 2.0))
        for s in (0, 1):
            tables.append(score_rows("finetuned", "baseline", dataset, ids, y, np.clip(llm + 0.05 * s, 0, 1), tokens, tokens * 1e6, seed=s))
        tables.append(score_rows("prompted", "baseline", dataset, ids, y, llm, tokens, tokens * 1e6))
        tables.append(score_rows("tfidf", "baseline", dataset, ids, y, weak, tokens, tokens * 1.0))
    return concat_scores(tables)


def test_score_rows_reject_bad_input():
    with pytest.raises(ValueError, match="differ in length"):
        score_rows("m", "probe", "d", ["a", "b"], [0, 1], [0.1], [1, 1], [1.0, 1.0])
    with pytest.raises(ValueError, match="not finite"):
        score_rows("m", "probe", "d", ["a"], [0], [float("nan")], [1], [1.0])


def test_comparison_has_cis_and_seed_spread():
    table = comparison_table(fake_scores(), n_boot=200)
    ft = table.filter((pl.col("method") == "finetuned") & (pl.col("dataset") == "a")).row(0, named=True)
    assert ft["seeds"] == 2 and ft["auroc_lo"] < ft["auroc"] < ft["auroc_hi"]
    tf = table.filter((pl.col("method") == "tfidf") & (pl.col("dataset") == "a")).row(0, named=True)
    assert tf["seeds"] == 1 and tf["auroc_std"] == 0.0 and tf["auroc_lo"] < tf["auroc"] < tf["auroc_hi"]
    assert 0.05 < tf["auroc_hi"] - tf["auroc_lo"] < 0.25  # 200 examples: a few points either way
    summary = method_summary(table)
    assert summary["method"][0] in ("prompted", "finetuned") and summary["datasets"].to_list() == [2] * 4
    png = figs.comparison_bars(table.filter(pl.col("dataset") != VAL), "t")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_length_calibration_and_roc():
    scores = fake_scores()
    by_len = auroc_by_length(scores, bins=4)
    probe = by_len.filter(pl.col("method") == "probe:lr").sort("bin")["auroc"].to_list()
    assert probe[0] > probe[-1] + 0.2  # good on short inputs, chance on long ones
    table, curves = calibration(scores)
    assert set(curves) == {"probe:lr", "finetuned", "prompted", "tfidf"}
    assert sum(curves["tfidf"]["count"]) == 400  # datasets a and b, not the validation split
    pts = roc_points(scores)
    assert set(pts) == {"a", "b"} and pts["a"]["prompted"][2] == pytest.approx(
        safe_auroc(*[scores.filter((pl.col("dataset") == "a") & (pl.col("method") == "prompted"))[c].to_numpy() for c in ("label", "score")])
    )
    for png in (figs.auroc_by_length(by_len, "t"), figs.reliability_diagrams(curves, "t"), figs.roc_curves(pts, "t")):
        assert png[:4] == b"\x89PNG"


def test_cascade_interpolates_between_probe_and_llm():
    scores = fake_scores()
    out = cascade(scores, "probe:lr", ["prompted"], [0.0, 0.25, 1.0], combine="replace").sort("fraction")
    ev = scores.filter(pl.col("dataset") != VAL)

    def mean_auroc(method):
        return np.mean([safe_auroc(p["label"].to_numpy(), p["score"].to_numpy()) for _, p in ev.filter(pl.col("method") == method).group_by("dataset")])

    assert out["mean_auroc"][0] == pytest.approx(mean_auroc("probe:lr"))
    assert out["mean_auroc"][2] == pytest.approx(mean_auroc("prompted"))
    flops = out["mean_flops"].to_list()
    assert flops[0] < flops[1] < flops[2]
    # deferring the uncertain quarter costs a quarter of the LLM and buys accuracy
    assert out["mean_auroc"][1] > out["mean_auroc"][0]
    with pytest.raises(ValueError, match="no scores for"):
        cascade(scores, "probe:lr", ["gpt"], [0.5])
    avg = cascade(scores, "probe:lr", ["prompted"], [0.5])
    summary = method_summary(comparison_table(scores, n_boot=50))
    assert figs.summary(summary, avg, "t")[:4] == b"\x89PNG"


def synthetic_part(n, seed, shift=0.0, hidden=8, signal=1.0, groups=True):
    rng = np.random.default_rng(seed)
    direction = np.eye(hidden)[0] + shift * np.eye(hidden)[1]
    y = np.arange(n) % 2
    lengths = rng.integers(2, 6, n)
    parts = [rng.normal(size=(k, hidden)) + signal * (2 * yi - 1) * direction for k, yi in zip(lengths, y)]
    acts = RaggedActivations(torch.tensor(np.concatenate(parts), dtype=torch.float32), np.concatenate([[0], np.cumsum(lengths)]), "tiny", 1)
    return Part(acts, y, [f"g{i // 2}" for i in range(n)] if groups else None)


def test_split_part_keeps_groups_apart():
    part = synthetic_part(40, 0)
    a, b = split_part(part, 0.25, seed=0)
    assert len(a.labels) == 10 and len(b.labels) == 30 and not set(a.groups) & set(b.groups)


def test_generalisation_matrix():
    src = {"same": split_part(synthetic_part(120, 0), 0.5, 0), "flipped": split_part(synthetic_part(120, 1, shift=0.0, signal=-1.0), 0.5, 0)}
    m = generalisation(src, "logistic_regression")
    get = {(r["train"], r["test"]): r["auroc"] for r in m.iter_rows(named=True)}
    assert get[("same", "same")] > 0.8 and get[("flipped", "flipped")] > 0.8
    assert get[("same", "flipped")] < 0.2  # the concept is inverted: transfer fails
    assert figs.heatmap(m, "t")[:4] == b"\x89PNG"


def test_data_efficiency_grows_with_examples_and_takes_extra_methods():
    train, test = synthetic_part(300, 0, signal=0.25), synthetic_part(200, 1, signal=0.25)
    calls = []

    def constant(idx, seed):
        calls.append(len(idx))
        return {"t": np.full(len(test.labels), 0.5)}

    t = data_efficiency(train, None, {"t": test}, [4, 300], [0, 1], ["difference_of_means"], extra_methods={"const": constant})
    m = t.filter(pl.col("method") == "probe:difference_of_means").group_by("train_examples").agg(pl.col("auroc").mean()).sort("train_examples")
    assert m["auroc"][1] > m["auroc"][0]
    assert sorted(calls) == [4, 4, 300, 300]
    assert figs.mean_std_lines(t, "train_examples", "method", "t", "n", log_x=True)[:4] == b"\x89PNG"


def test_few_shot_modes():
    train = synthetic_part(200, 0)
    target = split_part(synthetic_part(200, 2, signal=-1.0), 0.5, 0)  # the target's concept is inverted
    t = few_shot(train, {"tgt": target}, shots=[8, 32], seeds=[0], probe_type="logistic_regression")
    get = {(r["mode"], r["shots"]): r["auroc"] for r in t.iter_rows(named=True)}
    assert get[("none", 0)] < 0.2
    assert get[("dev_only", 32)] > 0.8  # dev data alone learns the target
    assert get[("upweighted", 32)] > get[("combined", 32)]  # upweighting overrides the training set more
    with pytest.raises(ValueError, match="unknown modes"):
        few_shot(train, {"tgt": target}, [8], [0], modes=["both"])
