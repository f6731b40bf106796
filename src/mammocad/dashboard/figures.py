"""The dashboard's Plotly figures: class probabilities, model comparison (radar, scatter pairs), latent space."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mammocad.dashboard.latent import LatentPoints
from mammocad.evaluation.compare import SCATTER_PAIRS

#: Radar axes: metrics in [0, 1] where higher is better, so the polygons compare at a glance.
RADAR_METRICS = ("accuracy", "f1_macro", "auc_macro", "recall_min")
#: Plotly's default qualitative colours, one per class / run.
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")


def probability_figure(probabilities: Mapping[str, float], truth: str | None = None) -> go.Figure:
    """Horizontal bars of class probabilities (the true class, when given, marked)."""
    names = list(probabilities)
    labels = [f"{name} (truth)" if name == truth else name for name in names]
    figure = go.Figure(
        go.Bar(
            x=[probabilities[name] for name in names],
            y=labels,
            orientation="h",
            marker_color=[COLOURS[k % len(COLOURS)] for k in range(len(names))],
            text=[f"{probabilities[name]:.2f}" for name in names],
            textposition="auto",
        )
    )
    figure.update_layout(
        xaxis={"range": [0, 1], "title": "probability"},
        height=60 + 40 * len(names),
        margin={"l": 10, "r": 10, "t": 10, "b": 40},
    )
    return figure


def radar_figure(table: pd.DataFrame, metrics: Sequence[str] = RADAR_METRICS) -> go.Figure:
    """A polygon per run over ``metrics`` (all in [0, 1], higher is better); undefined values sit at 0."""
    figure = go.Figure()
    axes = [*metrics, metrics[0]]  # repeat the first axis to close the polygon
    for k, (name, row) in enumerate(table.iterrows()):
        values = [float(row[m]) if pd.notna(row[m]) else 0.0 for m in axes]
        figure.add_trace(
            go.Scatterpolar(r=values, theta=axes, fill="toself", name=str(name), line_color=COLOURS[k % len(COLOURS)])
        )
    figure.update_layout(polar={"radialaxis": {"range": [0, 1]}}, height=420, margin={"t": 30, "b": 30})
    return figure


def scatter_figure(table: pd.DataFrame, pairs: Sequence[tuple[str, str]] = tuple(SCATTER_PAIRS)) -> go.Figure:
    """``mammocad compare``'s scatter pairs (accuracy vs loss, ...): a point per run in each panel (legend: run)."""
    figure = make_subplots(rows=1, cols=len(pairs), horizontal_spacing=0.12)
    for k, (name, row) in enumerate(table.iterrows()):
        for col, (x, y) in enumerate(pairs, start=1):
            figure.add_trace(
                go.Scatter(
                    x=[row[x]],
                    y=[row[y]],
                    mode="markers",
                    name=str(name),
                    hovertext=str(name),
                    legendgroup=str(name),
                    showlegend=col == 1,
                    marker={"size": 11, "color": COLOURS[k % len(COLOURS)]},
                ),
                row=1,
                col=col,
            )
            figure.update_xaxes(title_text=x, row=1, col=col)
            figure.update_yaxes(title_text=y, row=1, col=col)
    figure.update_layout(height=380, margin={"t": 30}, legend={"orientation": "h", "y": -0.25})
    return figure


def latent_figure(points: LatentPoints, classes: Sequence[str]) -> go.Figure:
    """A rotatable 3-D scatter: colour = true class, open ring = misclassified (hover says what the model said)."""
    figure = go.Figure()
    wrong = points.truth != points.prediction
    for k, name in enumerate(classes):
        chosen = points.truth == name
        if not chosen.any():
            continue
        figure.add_trace(
            go.Scatter3d(
                x=points.coords[chosen, 0],
                y=points.coords[chosen, 1],
                z=points.coords[chosen, 2],
                mode="markers",
                name=f"{name} ({int(wrong[chosen].sum())} ○ misclassified)",
                marker={
                    "size": 4,
                    "color": COLOURS[k % len(COLOURS)],
                    # Plotly draws 3-D symbols as font glyphs: ○/● exist in every font, ✕ is tofu in some.
                    "symbol": np.where(wrong[chosen], "circle-open", "circle").tolist(),
                },
                text=[f"true {name} · predicted {p}" for p in points.prediction[chosen]],
                hoverinfo="text",
            )
        )
    variance = ", ".join(f"{v:.0%}" for v in points.explained_variance)
    figure.update_layout(
        title=f"3-D PCA · {points.layer} (explained variance {variance})",
        scene={"xaxis_title": "PC1", "yaxis_title": "PC2", "zaxis_title": "PC3"},
        height=560,
        margin={"l": 0, "r": 0, "t": 40, "b": 0},
    )
    return figure
