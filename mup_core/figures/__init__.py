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
    """One panel per evaluation dataset; one line per probe type; x = layer."""
    datasets: Sequence[str] = sorted(metrics["dataset"].unique().to_list())
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.6), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], datasets):
        sub = metrics.filter(pl.col("dataset") == name)
        for probe_type in sorted(sub["probe_type"].unique().to_list()):
            rows = sub.filter(pl.col("probe_type") == probe_type).sort("layer")
            ax.plot(rows["layer"].to_list(), rows[metric].to_list(), marker="o", label=probe_type)
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(metric.upper() if metric == "auroc" else metric)
    axes[0][-1].legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=11)
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
