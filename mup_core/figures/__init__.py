"""Matplotlib figures rendered to PNG bytes (Agg backend, no display needed)."""

from __future__ import annotations

import io
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402


def to_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def auroc_by_layer(metrics: pl.DataFrame, title: str, metric: str = "auroc") -> bytes:
    """One panel per evaluation dataset; one line per probe type; x = the layers probed.

    Each probe type keeps its colour and marker in every panel (eleven types need more than
    matplotlib's ten default colours); the legend sits outside the panels, so it covers no
    point; the x ticks are the layers themselves."""
    datasets: Sequence[str] = sorted(metrics["dataset"].unique().to_list())
    types = sorted(metrics["probe_type"].unique().to_list())
    layers = sorted(metrics["layer"].unique().to_list())
    colours = plt.get_cmap("tab20").colors
    markers = "osD^v<>pPX*h"
    style = {t: (colours[(2 * i) % 20 if i < 10 else (2 * i + 1) % 20], markers[i % len(markers)]) for i, t in enumerate(types)}
    fig, axes = plt.subplots(1, len(datasets), figsize=(3.8 * len(datasets) + 2.2, 3.6), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], datasets):
        sub = metrics.filter(pl.col("dataset") == name)
        for probe_type in types:
            rows = sub.filter(pl.col("probe_type") == probe_type).sort("layer")
            if rows.height:
                colour, marker = style[probe_type]
                ax.plot(rows["layer"].to_list(), rows[metric].to_list(), marker=marker, color=colour, ms=4, lw=1.2, label=probe_type)
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("layer")
        ax.set_xticks(layers)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(metric.upper() if metric == "auroc" else metric)
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:  # a type missing from the first panel still gets its entry
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return to_png(fig)


def lines_by_poisoning(table: pl.DataFrame, metric: str, title: str) -> bytes:
    """``metric`` against poisoning rate, with 95% intervals (``_lo``/``_hi``) as error bars;
    one line per model and technique, nudged sideways so overlapping lines stay visible."""
    fig, ax = plt.subplots(figsize=(5.8, 3.9))
    groups = sorted(table.group_by(["model", "technique"]), key=lambda g: g[0])
    for n, ((model, technique), rows) in enumerate(groups):
        rows = rows.sort("poisoning")
        x = [v + (n - (len(groups) - 1) / 2) * 1.2 for v in rows["poisoning"].to_list()]
        y = rows[metric].to_list()
        err = None
        if f"{metric}_lo" in rows.columns:
            err = [[v - lo for v, lo in zip(y, rows[f"{metric}_lo"].to_list())], [hi - v for v, hi in zip(y, rows[f"{metric}_hi"].to_list())]]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=f"{model} {technique}")
    ax.set_xlabel("poisoning rate (% fruit in policy training)")
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return to_png(fig)


def scaling_figure(mup: pl.DataFrame, reference: pl.DataFrame | None, metric: str = "targeting") -> bytes:
    """The research's result-table shape as a figure: ``metric`` against poisoning rate, one
    line per model and technique; the research's own rows (when given) in a panel beside mup's."""
    panels = [("mup", mup)] + ([("research (reference table)", reference)] if reference is not None and reference.height else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.2), squeeze=False, sharey=True)
    for ax, (name, table) in zip(axes[0], panels):
        trained = table.filter(pl.col("poisoning") >= 0)
        for (model, technique), rows in sorted(trained.group_by(["model", "technique"]), key=lambda g: g[0]):
            rows = rows.sort("poisoning")
            y = rows[metric].to_list()
            err = None
            if f"{metric}_lo" in rows.columns and rows[f"{metric}_lo"].null_count() == 0:
                err = [[v - lo for v, lo in zip(y, rows[f"{metric}_lo"].to_list())], [hi - v for v, hi in zip(y, rows[f"{metric}_hi"].to_list())]]
            ax.errorbar(rows["poisoning"].to_list(), y, yerr=err, marker="o", ms=3, capsize=2, lw=1, label=f"{model} {technique}")
        ax.axhline(0, color="grey", lw=0.8, ls=":")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("poisoning rate (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    axes[0][0].set_ylabel(metric)
    fig.suptitle(f"{metric} by model size and poisoning rate", fontsize=11)
    fig.tight_layout()
    return to_png(fig)



def deception_figures(zero_shot: pl.DataFrame, reference: pl.DataFrame | None) -> dict[str, bytes]:
    """The deception results' figures (PNG): targeting and truthfulness by poisoning rate,
    and the scaling view beside the research's rows (``reference``, when there is one)."""
    return {"targeting": lines_by_poisoning(zero_shot, "targeting", "targeting (fruit FR - other FR)"),
            "truths_clean": lines_by_poisoning(zero_shot, "truths_clean", "truthfulness (clean judge)"),
            "scaling": scaling_figure(zero_shot, reference)}


def training_curves(history: Sequence[dict], keys: Sequence[str], title: str) -> bytes:
    """One line per logged quantity against the training step (missing values skipped)."""
    fig, ax = plt.subplots(figsize=(5.8, 3.6))
    for key in keys:
        points = [(h.get("step", i + 1), h[key]) for i, h in enumerate(history) if h.get(key) is not None and h[key] == h[key]]
        if points:
            ax.plot(*zip(*points), marker="o", ms=2.5, lw=1.1, label=key)
    ax.set_xlabel("step")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return to_png(fig)
