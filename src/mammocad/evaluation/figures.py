"""Figures of the evaluation suite (Dahes (2025)), as matplotlib figures or plotly HTML.

Every function takes plain arrays/tables and returns a figure; the caller renders it (PNG bytes
via :func:`mammocad.reporting.html.figure_to_png`, or a file). Nothing is shown on screen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: reports are rendered on servers and CI machines

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import auc, precision_recall_curve, roc_curve

PALETTE = plt.get_cmap("tab10").colors


def confusion_matrix_figure(matrix: np.ndarray, classes: Sequence[str], normalise: bool = False) -> Figure:
    """Counts (or row-normalised rates: each true class sums to 1) with the values written in."""
    matrix = np.asarray(matrix, dtype=float)
    if normalise:
        totals = matrix.sum(axis=1, keepdims=True)
        matrix = np.divide(matrix, totals, out=np.full_like(matrix, np.nan), where=totals > 0)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(classes), 1.0 + 0.8 * len(classes)))
    image = ax.imshow(np.nan_to_num(matrix), cmap="Blues", vmin=0, vmax=1 if normalise else None)
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix (row-normalised)" if normalise else "confusion matrix (counts)")
    limit = np.nanmax(matrix) if np.isfinite(matrix).any() else 1
    for (i, j), value in np.ndenumerate(matrix):
        text = "–" if np.isnan(value) else (f"{value:.2f}" if normalise else f"{int(value)}")
        ax.text(j, i, text, ha="center", va="center", color="white" if value > 0.6 * limit else "black")
    fig.colorbar(image, ax=ax, fraction=0.046)
    return fig


def _one_vs_rest(
    labels: np.ndarray, probs: np.ndarray, classes: Sequence[str]
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(class, binary truth, score) for each class that has positives and negatives."""
    curves = []
    for k, name in enumerate(classes):
        truth = labels == k
        if truth.any() and (~truth).any():
            curves.append((name, truth, probs[:, k]))
    if len(classes) == 2 and len(curves) == 2:
        curves = curves[1:]  # binary: one curve, the positive class
    return curves


def roc_figure(labels: np.ndarray, probs: np.ndarray, classes: Sequence[str], title: str = "ROC") -> Figure:
    """One-vs-rest ROC curve per class (binary: the positive class), AUC in the legend."""
    curves = {name: (truth, score) for name, truth, score in _one_vs_rest(labels, probs, classes)}
    return _roc_curves(curves, title, legend_size=8)


def _roc_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str, legend_size: int) -> Figure:
    """ROC curves of ``{label: (truth, score)}`` on one axes, AUC in the legend, chance diagonal."""
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for k, (name, (truth, score)) in enumerate(curves.items()):
        fpr, tpr, _ = roc_curve(truth, score)
        ax.plot(fpr, tpr, color=PALETTE[k % 10], label=f"{name} (AUC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set(xlabel="1 − specificity", ylabel="sensitivity", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=legend_size)
    return fig


def pr_figure(labels: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> Figure:
    """One-vs-rest precision-recall curve per class; the dotted line is each class's prevalence."""
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for k, (name, truth, score) in enumerate(_one_vs_rest(labels, probs, classes)):
        precision, recall, _ = precision_recall_curve(truth, score)
        ax.plot(recall, precision, color=PALETTE[k % 10], label=f"{name} (AP area {auc(recall, precision):.3f})")
        ax.axhline(truth.mean(), color=PALETTE[k % 10], ls=":", lw=0.8)
    ax.set(xlabel="recall", ylabel="precision", title="precision-recall", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower left", fontsize=8)
    return fig


def learning_curves_figure(history: pd.DataFrame) -> Figure:
    """Train vs validation loss, accuracy, macro-F1 and macro-AUC per epoch, and the learning rate."""
    panels = [("loss", "loss"), ("acc", "accuracy"), ("f1_macro", "macro-F1"), ("auc_macro", "macro-AUC")]
    fig, axes = plt.subplots(1, 5, figsize=(17, 3.2))
    for ax, (key, label) in zip(axes, panels, strict=False):
        for stage, style in (("train", "-"), ("val", "--")):
            column = f"{stage}_{key}"
            if column in history:
                ax.plot(history["epoch"], history[column], style, marker=".", label=stage)
        ax.set(title=label, xlabel="epoch")
        ax.legend(fontsize=8)
    if "val_loss" in history and history["val_loss"].notna().any():
        best = history.loc[history["val_loss"].idxmin(), "epoch"]
        for ax in axes[:4]:
            ax.axvline(best, color="grey", lw=0.8, ls=":")
    if "lr" in history:
        axes[4].plot(history["epoch"], history["lr"], marker=".")
        axes[4].set(title="learning rate", xlabel="epoch", yscale="log")
    fig.tight_layout()
    return fig


def reliability_figure(table: pd.DataFrame, ece: float) -> Figure:
    """Reliability diagram: accuracy vs mean confidence per bin, bar width ∝ nothing, counts below."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(4.4, 5), height_ratios=(3, 1), sharex=True)
    centres = (table["bin_low"] + table["bin_high"]) / 2
    width = float((table["bin_high"] - table["bin_low"]).iloc[0])
    top.bar(centres, table["accuracy"].fillna(0), width=width * 0.9, color="#4c78a8", label="accuracy")
    top.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="perfect calibration")
    top.plot(table["mean_confidence"], table["accuracy"], "o", color="#e45756", ms=4, label="mean confidence")
    top.set(ylabel="accuracy", title=f"reliability (ECE {ece:.3f})", xlim=(0, 1), ylim=(0, 1))
    top.legend(fontsize=7, loc="upper left")
    bottom.bar(centres, table["count"], width=width * 0.9, color="#9ecae9")
    bottom.set(xlabel="confidence (top-class probability)", ylabel="images")
    fig.tight_layout()
    return fig


def pca_variance_figure(ratios: Mapping[str, np.ndarray]) -> Figure:
    """Cumulative explained variance of PCA per layer: how many directions each layer really uses."""
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for k, (layer, ratio) in enumerate(ratios.items()):
        ax.plot(np.arange(1, len(ratio) + 1), np.cumsum(ratio), marker=".", color=PALETTE[k % 10], label=layer)
    ax.set(xlabel="principal components", ylabel="cumulative explained variance", ylim=(0, 1.02))
    ax.set_title("PCA explained variance per layer")
    ax.legend(fontsize=8)
    return fig


def embedding_figure(coords: np.ndarray, labels: np.ndarray, classes: Sequence[str], title: str) -> Figure:
    """A 2-D embedding (PCA or t-SNE) coloured by true class."""
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for k, name in enumerate(classes):
        chosen = labels == k
        if chosen.any():
            ax.scatter(coords[chosen, 0], coords[chosen, 1], s=14, color=PALETTE[k % 10], label=name, alpha=0.8)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=8)
    return fig


def embedding_3d_html(coords: np.ndarray, labels: np.ndarray, classes: Sequence[str], title: str) -> str:
    """An interactive (rotatable) 3-D PCA scatter as an HTML fragment (plotly.js loaded separately)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for k, name in enumerate(classes):
        chosen = labels == k
        if chosen.any():
            colour = "rgb({:.0f},{:.0f},{:.0f})".format(*(255 * np.array(PALETTE[k % 10])))
            fig.add_trace(
                go.Scatter3d(
                    x=coords[chosen, 0],
                    y=coords[chosen, 1],
                    z=coords[chosen, 2],
                    mode="markers",
                    name=name,
                    marker={"size": 3, "color": colour},
                )
            )
    fig.update_layout(title=title, height=460, margin={"l": 0, "r": 0, "t": 40, "b": 0})
    return fig.to_html(full_html=False, include_plotlyjs=False)


# ---- comparison figures -------------------------------------------------------------------------


def scatter_pairs_figure(table: pd.DataFrame, pairs: Sequence[tuple[str, str]]) -> Figure:
    """One scatter per metric pair, a labelled point per run (the scatter pairs of Dahes (2025))."""
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.4 * len(pairs), 3.8))
    for ax, (x, y) in zip(np.atleast_1d(axes), pairs, strict=True):
        for k, (name, row) in enumerate(table.iterrows()):
            ax.scatter(row[x], row[y], color=PALETTE[k % 10], s=40)
            ax.annotate(str(name), (row[x], row[y]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set(xlabel=x, ylabel=y)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def radar_figure(table: pd.DataFrame, groups: Mapping[str, Sequence[str]]) -> Figure:
    """Radar triplets: one polar chart per metric group, a polygon per run (raw metric values)."""
    fig, axes = plt.subplots(1, len(groups), figsize=(4.4 * len(groups), 4.2), subplot_kw={"projection": "polar"})
    for ax, (group, metrics) in zip(np.atleast_1d(axes), groups.items(), strict=True):
        angles = np.linspace(0, 2 * np.pi, len(metrics), endpoint=False).tolist()
        for k, (name, row) in enumerate(table.iterrows()):
            values = [float(row[m]) if pd.notna(row[m]) else 0.0 for m in metrics]
            ax.plot(angles + angles[:1], values + values[:1], color=PALETTE[k % 10], label=str(name))
            ax.fill(angles + angles[:1], values + values[:1], color=PALETTE[k % 10], alpha=0.1)
        ax.set_xticks(angles, list(metrics), fontsize=8)
        ax.set_title(group, fontsize=10)
    np.atleast_1d(axes)[-1].legend(fontsize=7, loc="upper right", bbox_to_anchor=(1.35, 1.1))
    fig.tight_layout()
    return fig


def mean_std_bars_figure(table: pd.DataFrame, pairs: Sequence[tuple[str, str, str]], across: str = "classes") -> Figure:
    """Bars of mean ± std (e.g. F1 and recall across classes, or scores across folds), one bar per run."""
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.6 * len(pairs), 3.6))
    for ax, (label, mean, std) in zip(np.atleast_1d(axes), pairs, strict=True):
        names = [str(n) for n in table.index]
        ax.bar(names, table[mean], yerr=table[std], capsize=4, color=[PALETTE[k % 10] for k in range(len(names))])
        ax.set(title=f"{label} mean ± std across {across}", ylim=(0, 1))
        ax.tick_params(axis="x", rotation=30, labelsize=8)
    fig.tight_layout()
    return fig


def roc_overlay_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str) -> Figure:
    """ROC curves of several runs on the same images, ``{run: (truth, score)}``."""
    return _roc_curves(curves, title, legend_size=7)


def froc_figure(froc: Mapping[str, Any]) -> Figure:
    """Lesion sensitivity against false positives per film (the FROC curve), with the 0.5/1/2 FP marks."""
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    ax.step(froc["fp_per_film"], froc["sensitivity"], where="post", color="#1f77b4")
    for rate in (0.5, 1.0, 2.0):
        ax.axvline(rate, color="#999999", linestyle=":", linewidth=0.8)
    ax.set_xlabel("false positives per film")
    ax.set_ylabel("lesion sensitivity")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(0, max(2.2, max(froc["fp_per_film"] or [0])))
    ax.set_title(f"FROC ({froc['lesions']} lesions, {froc['films']} films)")
    fig.tight_layout()
    return fig
