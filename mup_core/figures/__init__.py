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
