"""Figures of the probe study (all return PNG bytes)."""

from __future__ import annotations

import numpy as np
import polars as pl

from mup_core.figures import plt, to_png


def _short(method: str) -> str:
    return method.replace("probe:", "")


def comparison_bars(comparison: pl.DataFrame, title: str, metric: str = "auroc") -> bytes:
    """Grouped bars: one group per dataset, one bar per method, 95% bootstrap CI whiskers."""
    datasets = sorted(comparison["dataset"].unique().to_list())
    methods = (comparison.group_by("method").agg(pl.col(metric).mean()).sort(metric, descending=True)["method"].to_list())
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(methods) * len(datasets) + 2), 4.0))
    width = 0.8 / len(methods)
    cmap = plt.get_cmap("tab20")
    for j, method in enumerate(methods):
        sub = comparison.filter(pl.col("method") == method)
        xs, ys, lo, hi = [], [], [], []
        for i, d in enumerate(datasets):
            row = sub.filter(pl.col("dataset") == d)
            if row.height:
                r = row.row(0, named=True)
                xs.append(i + (j - (len(methods) - 1) / 2) * width)
                ys.append(r[metric])
                lo.append(r[metric] - r.get(f"{metric}_lo", r[metric]))
                hi.append(r.get(f"{metric}_hi", r[metric]) - r[metric])
        ax.bar(xs, ys, width=width, yerr=[lo, hi], capsize=2, color=cmap(j % 20), label=_short(method),
               hatch="//" if not method.startswith("probe:") else None, edgecolor="white")
    ax.set_xticks(range(len(datasets)), datasets)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_ylim(0.3 if metric == "auroc" else 0, 1.0)
    ax.set_ylabel(metric.upper() if metric == "auroc" else metric)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=2, bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.grid(alpha=0.3, axis="y")
    return to_png(fig)


def layer_sweep(table: pl.DataFrame, selected: int, title: str) -> bytes:
    """Mean evaluation AUROC (solid) and selection-set AUROC (dashed) by layer, per probe type."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    cmap = plt.get_cmap("tab10")
    for j, probe_type in enumerate(sorted(table["probe_type"].unique().to_list())):
        rows = table.filter(pl.col("probe_type") == probe_type).sort("layer")
        if rows["eval_auroc"].is_not_null().any():
            ax.plot(rows["layer"], rows["eval_auroc"], marker="o", color=cmap(j % 10), label=probe_type)
        ax.plot(rows["layer"], rows["selection_auroc"], ls="--", lw=0.8, color=cmap(j % 10),
                label=None if rows["eval_auroc"].is_not_null().any() else probe_type)
    ax.axvline(selected, color="black", lw=1, ls=":", label=f"selected layer {selected}")
    ax.set_xlabel("layer")
    ax.set_ylabel("AUROC (solid: evaluation mean, dashed: selection)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    return to_png(fig)


def heatmap(matrix: pl.DataFrame, title: str, row: str = "train", col: str = "test", value: str = "auroc") -> bytes:
    rows = sorted(matrix[row].unique().to_list())
    cols = sorted(matrix[col].unique().to_list())
    grid = np.full((len(rows), len(cols)), np.nan)
    for r in matrix.iter_rows(named=True):
        grid[rows.index(r[row]), cols.index(r[col])] = r[value]
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(cols), 1.0 + 0.6 * len(rows)))
    im = ax.imshow(grid, vmin=0.5, vmax=1.0, cmap="viridis")
    for i in range(len(rows)):
        for j in range(len(cols)):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7, color="white" if grid[i, j] < 0.8 else "black")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel(f"evaluated on ({col})")
    ax.set_ylabel(f"trained on ({row})")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label=value.upper())
    return to_png(fig)


def mean_std_lines(table: pl.DataFrame, x: str, group: str, title: str, xlabel: str, log_x: bool = False,
                   reference: dict[str, float] | None = None) -> bytes:
    """Mean AUROC over seeds and datasets against ``x``, one line per ``group``, with a ±1 std band."""
    agg = (table.group_by([group, x, "seed"]).agg(pl.col("auroc").mean())
           .group_by([group, x]).agg(pl.col("auroc").mean().alias("m"), pl.col("auroc").std(ddof=1).fill_null(0.0).alias("s"))
           .sort(group, x))
    fig, ax = plt.subplots(figsize=(6.0, 3.9))
    for name in agg[group].unique(maintain_order=True).to_list():
        rows = agg.filter(pl.col(group) == name)
        xs, m, s = rows[x].to_numpy(), rows["m"].to_numpy(), rows["s"].to_numpy()
        line = ax.plot(xs, m, marker="o", label=_short(str(name)))[0]
        ax.fill_between(xs, m - s, m + s, color=line.get_color(), alpha=0.15)
    for name, value in (reference or {}).items():
        ax.axhline(value, ls=":", color="grey", lw=1)
        ax.text(0.01, value, name, fontsize=7, va="bottom", transform=ax.get_yaxis_transform())
    if log_x:
        from matplotlib.ticker import NullFormatter, ScalarFormatter

        ax.set_xscale("log")
        ax.set_xticks(sorted(agg[x].unique().to_list()))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel("AUROC (mean over seeds and datasets)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    return to_png(fig)


def auroc_by_length(table: pl.DataFrame, title: str) -> bytes:
    fig, ax = plt.subplots(figsize=(6.0, 3.9))
    bins = table.select("bin", "tokens_lo", "tokens_hi").unique().sort("bin")
    for method in sorted(table["method"].unique().to_list()):
        rows = table.filter(pl.col("method") == method).sort("bin")
        ax.plot(rows["bin"], rows["auroc"], marker="o", label=_short(method), ls="-" if method.startswith("probe:") else "--")
    ax.set_xticks(bins["bin"].to_list(), [f"{a}–{b}" for a, b in zip(bins["tokens_lo"], bins["tokens_hi"])], fontsize=8)
    ax.set_xlabel("input length (tokens)")
    ax.set_ylabel("AUROC")
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    return to_png(fig)


def reliability_diagrams(curves: dict[str, dict], title: str) -> bytes:
    methods = sorted(curves)
    cols = min(4, len(methods))
    nrows = int(np.ceil(len(methods) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(3.0 * cols, 3.0 * nrows), squeeze=False, constrained_layout=True)
    for ax in axes.flat[len(methods):]:
        ax.axis("off")
    for ax, method in zip(axes.flat, methods):
        c = curves[method]
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        sizes = 10 + 60 * np.asarray(c["count"]) / max(1, max(c["count"] or [1]))
        ax.plot(c["mean_predicted"], c["fraction_positive"], color="tab:blue", lw=1)
        ax.scatter(c["mean_predicted"], c["fraction_positive"], s=sizes, color="tab:blue")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(_short(method), fontsize=8)
        ax.tick_params(labelsize=7)
    fig.supxlabel("mean predicted P(high-stakes)", fontsize=9)
    fig.supylabel("fraction high-stakes", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return to_png(fig)


def roc_curves(points: dict[str, dict[str, tuple]], title: str) -> bytes:
    datasets = sorted(points)
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 4.0), squeeze=False)
    for ax, d in zip(axes[0], datasets):
        for method, (fpr, tpr, auc) in sorted(points[d].items(), key=lambda kv: -kv[1][2]):
            ax.plot(fpr, tpr, lw=1.2, label=f"{_short(method)} ({auc:.2f})", ls="-" if method.startswith("probe:") else "--")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        ax.axvline(0.01, color="red", lw=0.6, ls=":")
        ax.set_title(d, fontsize=9)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.legend(fontsize=6, loc="lower right")
    fig.suptitle(title, fontsize=10)
    return to_png(fig)


def compute_frontier(summary: pl.DataFrame, cascades: pl.DataFrame | None, title: str) -> bytes:
    """Mean AUROC against mean FLOPs per example (log x): methods as points, cascades as lines."""
    fig, ax = plt.subplots(figsize=(6.6, 4.3))
    _frontier(ax, summary, cascades, title)
    return to_png(fig)


def _frontier(ax, summary: pl.DataFrame, cascades: pl.DataFrame | None, title: str) -> None:
    for r in summary.iter_rows(named=True):
        probe = r["family"] == "probe"
        ax.scatter(max(r["mean_flops"], 1.0), r["mean_auroc"], marker="o" if probe else "s", s=36,
                   color="tab:blue" if probe else "tab:orange")
        ax.annotate(_short(r["method"]), (max(r["mean_flops"], 1.0), r["mean_auroc"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if cascades is not None and cascades.height:
        for (llm,), rows in cascades.group_by(["llm"]):
            rows = rows.sort("fraction")
            ax.plot(rows["mean_flops"], rows["mean_auroc"], marker=".", lw=1, label=f"cascade → {llm}")
        ax.legend(fontsize=7, loc="lower right")
    ax.set_xscale("log")
    ax.set_xlabel("FLOPs per example (probes: marginal cost on the monitored model's activations)", fontsize=8)
    ax.set_ylabel("mean AUROC over evaluation sets")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")


def summary(summary: pl.DataFrame, cascades: pl.DataFrame | None, title: str) -> bytes:
    """Two panels: AUROC per method (bars, probes blue, baselines orange) and the
    AUROC-compute frontier."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [1, 1.2]})
    s = summary.sort("mean_auroc")
    colors = ["tab:blue" if f == "probe" else "tab:orange" for f in s["family"]]
    a.barh([_short(m) for m in s["method"]], s["mean_auroc"], color=colors)
    for y, v in enumerate(s["mean_auroc"]):
        a.text(v + 0.005, y, f"{v:.3f}", va="center", fontsize=7)
    a.set_xlim(0.4, 1.02)
    a.axvline(0.5, color="grey", lw=0.8, ls=":")
    a.set_xlabel("mean AUROC over evaluation sets")
    a.set_title("accuracy (blue: probes, orange: LLM and text baselines)", fontsize=9)
    _frontier(b, summary, cascades, "accuracy against compute (cascades: probe, then LLM on the uncertain share)")
    fig.suptitle(title, fontsize=11)
    return to_png(fig)
