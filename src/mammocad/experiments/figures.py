"""Figures of repeated experiments: per-fold scores, fold learning curves, paired folds, ablations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from mammocad.evaluation.figures import PALETTE


def fold_scores_figure(folds: pd.DataFrame, metrics: Sequence[str]) -> Figure:
    """One column per metric: each fold's score as a dot, the mean as a bar with ± std error bars."""
    metrics = [m for m in metrics if m in folds and folds[m].notna().any()]
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(metrics), 3.4))
    for i, metric in enumerate(metrics):
        values = folds[metric].astype(float).to_numpy()
        ax.bar(
            i,
            np.nanmean(values),
            yerr=np.nanstd(values, ddof=1) if len(values) > 1 else 0,
            capsize=5,
            color=PALETTE[i % 10],
            alpha=0.35,
        )
        jitter = np.linspace(-0.15, 0.15, len(values))
        ax.scatter(i + jitter, values, color=PALETTE[i % 10], zorder=3, s=18)
    ax.set_xticks(range(len(metrics)), metrics)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score")
    ax.set_title("per-fold validation scores (mean ± std)")
    fig.tight_layout()
    return fig


def fold_curves_figure(histories: Mapping[str, pd.DataFrame], column: str = "val_loss") -> Figure:
    """``column`` per epoch, one line per fold (or run)."""
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for k, (name, history) in enumerate(histories.items()):
        ax.plot(history["epoch"], history[column], color=PALETTE[k % 10], label=name)
        best = history[column].idxmin() if column.endswith("loss") else history[column].idxmax()
        ax.scatter(history.loc[best, "epoch"], history.loc[best, column], color=PALETTE[k % 10], marker="o")
    ax.set_xlabel("epoch")
    ax.set_ylabel(column)
    ax.legend(fontsize=7)
    ax.set_title(f"{column} per fold (dot: best epoch)")
    fig.tight_layout()
    return fig


def paired_folds_figure(scores: pd.DataFrame, metric: str) -> Figure:
    """Each fold's ``metric`` for every run (columns), lines joining the same fold across runs.

    Paired tests look at these within-fold differences, not at the spread of each run alone.
    """
    fig, ax = plt.subplots(figsize=(1.8 + 1.2 * scores.shape[1], 3.4))
    x = np.arange(scores.shape[1])
    for k, (fold, row) in enumerate(scores.iterrows()):
        ax.plot(x, row.to_numpy(dtype=float), marker="o", color=PALETTE[k % 10], alpha=0.8, label=f"fold {fold}")
    ax.set_xticks(x, scores.columns, rotation=20, ha="right")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per fold, paired across runs")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def ablation_figure(table: pd.DataFrame, metrics: Sequence[str], reference: str) -> Figure:
    """Horizontal bars of ``<metric>_mean`` ± ``<metric>_std`` per variant; the reference variant hatched."""
    variants = list(table.index)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics), 0.9 + 0.42 * len(variants)), sharey=True)
    axes = np.atleast_1d(axes)
    y = np.arange(len(variants))
    for ax, metric in zip(axes, metrics, strict=True):
        means = table[f"{metric}_mean"].astype(float).to_numpy()
        stds = table[f"{metric}_std"].astype(float).fillna(0).to_numpy()
        bars = ax.barh(y, means, xerr=stds, capsize=4, color=[PALETTE[i % 10] for i in range(len(variants))], alpha=0.7)
        for bar, variant in zip(bars, variants, strict=True):
            if variant == reference:
                bar.set_hatch("//")
        if reference in variants:
            ax.axvline(means[variants.index(reference)], color="black", linestyle=":", linewidth=1)
        ax.set_xlim(0, 1.05)
        ax.set_xlabel(f"{metric} (mean ± std over folds)")
    axes[0].set_yticks(y, variants)
    axes[0].invert_yaxis()
    fig.tight_layout()
    return fig
