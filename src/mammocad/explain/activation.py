"""Activation-map figures: ``F = (1/C) Σ_c |A_c|²`` at every layer group, and KT vs fine-tuning side by side."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from mammocad.models.activation_maps import activation_maps, resolve_layers
from mammocad.models.losses.knowledge_transfer import map_distance
from mammocad.reporting.html import figure_to_png


def layer_activation_maps(
    model: nn.Module, image: torch.Tensor, layers: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """Activation maps of one input (C, H, W) at ``layers`` (default: every layer group), each (h, w) float32."""
    maps = activation_maps(model, image[None].float(), layers)
    return {name: value[0].cpu().numpy().astype(np.float32) for name, value in maps.items()}


def activation_figure(image: np.ndarray, maps: dict[str, np.ndarray], title: str = "", dpi: int = 100) -> bytes:
    """PNG: the input, then each layer group's activation map (own resolution, scaled per map), side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("input", image)] + [(f"{_short(name)} ({m.shape[0]}×{m.shape[1]})", m) for name, m in maps.items()]
    columns = min(6, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(2.3 * columns, 2.5 * rows), squeeze=False)
    for axis, (label, data) in zip(axes.flat, panels, strict=False):
        axis.imshow(data, cmap="gray" if label == "input" else "inferno", interpolation="nearest")
        axis.set_title(label, fontsize=8)
    for axis in axes.flat:
        axis.axis("off")
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return figure_to_png(figure, dpi=dpi)


def compare_activation_maps(
    models: dict[str, nn.Module],
    inputs: Sequence[tuple[str, torch.Tensor, np.ndarray | None]],
    layer: str | None = None,
    dpi: int = 100,
) -> tuple[bytes, dict[str, list[float | None]]]:
    """Activation maps of several models (e.g. KT vs plain fine-tuning) on the same ROIs.

    Args:
        models: label -> model; every model must have ``layer`` (default: each model's last layer group).
        inputs: (name, input (C, H, W) in [0, 1], lesion mask on the input grid or None) per ROI.
        layer: layer name (resolved per model).

    Returns:
        (PNG: one row per ROI: the ROI with the mask outline, then each model's map over the ROI;
        {label: per-ROI d between the mask's and the ROI's activation maps — knowledge transfer's
        own distance, lower = attention on the lesion; None without a mask}).
    """
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    distances: dict[str, list[float | None]] = {label: [] for label in models}
    figure, axes = plt.subplots(
        len(inputs), 1 + len(models), figsize=(2.4 * (1 + len(models)), 2.4 * len(inputs)), squeeze=False
    )
    for row, (name, tensor, mask) in enumerate(inputs):
        grey = tensor[0].cpu().numpy()
        axes[row, 0].imshow(grey, cmap="gray")
        if mask is not None and mask.any():
            axes[row, 0].contour(mask > 0, levels=[0.5], colors="lime", linewidths=0.8)
        axes[row, 0].set_title(name, fontsize=7)
        for column, (label, model) in enumerate(models.items(), start=1):
            chosen = resolve_layers(model, None if layer is None else [layer])
            roi_map = activation_maps(model, tensor[None].float(), chosen)[chosen[0]][0]
            distance = None
            if mask is not None and mask.any():
                mask_input = torch.from_numpy((mask > 0).astype(np.float32))[None].expand_as(tensor)
                mask_map = activation_maps(model, mask_input[None], chosen)[chosen[0]][0]
                distance = float(map_distance(mask_map, roi_map))
            distances[label].append(distance)
            heat = roi_map.cpu().numpy()
            heat = (heat - heat.min()) / max(float(heat.max() - heat.min()), 1e-12)
            axes[row, column].imshow(grey, cmap="gray")
            up = cv2.resize(heat.astype(np.float32), grey.shape[::-1], interpolation=cv2.INTER_LINEAR)
            axes[row, column].imshow(up, cmap="inferno", alpha=0.55)
            suffix = "" if distance is None else f" · d={distance:.2f}"
            axes[row, column].set_title(f"{label}{suffix}", fontsize=7)
    for axis in axes.flat:
        axis.axis("off")
    figure.tight_layout()
    return figure_to_png(figure, dpi=dpi), distances


def _short(name: str) -> str:
    return name.removeprefix("backbone.")
