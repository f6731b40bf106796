"""Lesion/Background interpretation of a classifier's last activation map (Li & Zwiggelaar, 2024).

For an ROI and the network's last feature map (gh × gw cells, 7 × 7 for DenseNet121 at 224²):

1. the *Lesion* image is the GLCM variance texture map of the ROI, the *Background* image the ROI with
   the lesion's content removed (inpainted over the lesion region);
2. for every cell, the ROI gets that cell's window replaced by the Lesion image's window, and again by
   the Background image's window;
3. with A, Aᴸ, Aᴮ the activations (gh × gw × C) of the ROI and the two replaced inputs,
   ``dis = (1/(gh·gw)) Σ_n ||A_n − A'_n||₂``; the cell reads as *lesion* when disᴸ < disᴮ (the network
   sees the lesion texture there as "more of the same"), else *background*.

    result = lesion_background(model, roi)          # roi: (H, W) or (C, H, W), uint8/uint16 or [0, 1]
    result.is_lesion(); result.to_json(); result.figure_png()

All forward passes of one ROI (the ROI and the 2·gh·gw replaced inputs) run as one batch by default.
The Lesion and Background images themselves come from :mod:`mammocad.explain.lesion_images`
(their names stay importable from here).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from mammocad.errors import ConfigError
from mammocad.explain.lesion_images import (
    as_grey,
    background_image,
    checked_override,
    lesion_image,
    lesion_region,
    mask_on_grid,
)
from mammocad.models.activation_maps import activation_map, recording, resolve_layers

# 2·cells + 1 forward passes per ROI: a shallow layer (e.g. 112 × 112) would mean ~25 000 passes
MAX_CELLS = 1024
LESION_COLOUR = "#ff4d4d"
BACKGROUND_COLOUR = "#4dc3ff"


@dataclass
class LesionBackgroundResult:
    """The interpretation of one ROI at one layer.

    Attributes:
        roi: float32 (H, W) in [0, 1], the ROI as the network saw it (channels averaged).
        lesion: float32 (H, W), the Lesion image (GLCM variance map scaled to [0, 1], or the override).
        background: float32 (H, W), the Background image (ROI inpainted over ``region``, or the override).
        region: bool (H, W), the lesion region removed from the Background image.
        layer: the full submodule name whose output was compared.
        activation: float32 (gh, gw), the ROI's activation map ``F = mean_c A_c²`` at ``layer``.
        dis_lesion: float64 (gh, gw), disᴸ per cell.
        dis_background: float64 (gh, gw), disᴮ per cell.
        cell_boxes: (x0, y0, x1, y1) per cell in ROI pixels (x1, y1 exclusive), row-major over the grid.
    """

    roi: np.ndarray
    lesion: np.ndarray
    background: np.ndarray
    region: np.ndarray
    layer: str
    activation: np.ndarray
    dis_lesion: np.ndarray
    dis_background: np.ndarray
    cell_boxes: list[tuple[int, int, int, int]] = field(default_factory=list)

    @property
    def grid(self) -> tuple[int, int]:
        """(gh, gw), the layer's spatial grid."""
        return int(self.dis_lesion.shape[0]), int(self.dis_lesion.shape[1])

    def is_lesion(self) -> np.ndarray:
        """bool (gh, gw): True where the cell is explained as lesion (disᴸ < disᴮ)."""
        return self.dis_lesion < self.dis_background

    def to_json(self) -> dict[str, Any]:
        """A json.dumps-able summary: layer, grid, ROI size, and per cell (row-major) its box, both
        distances and its label (``"lesion"`` / ``"background"``), plus the count of each label."""
        labels = self.is_lesion()
        gh, gw = self.grid
        cells = []
        for index, box in enumerate(self.cell_boxes):
            row, col = divmod(index, gw)
            cells.append(
                {
                    "row": row,
                    "col": col,
                    "box": [int(v) for v in box],
                    "dis_lesion": float(self.dis_lesion[row, col]),
                    "dis_background": float(self.dis_background[row, col]),
                    "label": "lesion" if labels[row, col] else "background",
                }
            )
        lesion_cells = int(labels.sum())
        return {
            "layer": self.layer,
            "grid": [gh, gw],
            "roi_size": [int(self.roi.shape[0]), int(self.roi.shape[1])],
            "cells": cells,
            "lesion_cells": lesion_cells,
            "background_cells": gh * gw - lesion_cells,
        }

    def figure_png(self, dpi: int = 110) -> bytes:
        """PNG bytes of a four-panel figure: the ROI (lesion region outlined), the Lesion image, the
        Background image, and the activation map upsampled onto the ROI with the grid drawn and each cell
        labelled ``L`` (lesion, red outline) or ``B`` (background, blue outline)."""
        # the object-oriented API with an Agg canvas: no pyplot state, no global backend switch
        from matplotlib import patheffects
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Rectangle

        height, width = self.roi.shape
        figure = Figure(figsize=(12.0, 3.4))
        FigureCanvasAgg(figure)
        axes = figure.subplots(1, 4)
        axes[0].imshow(self.roi, cmap="gray", vmin=0, vmax=1)
        if self.region.any() and not self.region.all():
            axes[0].contour(self.region, levels=[0.5], colors="lime", linewidths=0.8)
        axes[0].set_title("ROI (lesion region)", fontsize=9)
        axes[1].imshow(self.lesion, cmap="magma")
        axes[1].set_title("Lesion image (GLCM variance)", fontsize=9)
        axes[2].imshow(self.background, cmap="gray", vmin=0, vmax=1)
        axes[2].set_title("Background image", fontsize=9)

        gh, gw = self.grid
        heat = cv2.resize(self.activation.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
        axes[3].imshow(self.roi, cmap="gray", vmin=0, vmax=1)
        axes[3].imshow(heat, cmap="inferno", alpha=0.55)
        labels = self.is_lesion()
        font = max(4.0, min(10.0, 70.0 / max(gh, gw)))
        halo = [patheffects.withStroke(linewidth=1.5, foreground="black")]  # readable on any heat colour
        for index, (x0, y0, x1, y1) in enumerate(self.cell_boxes):
            row, col = divmod(index, gw)
            lesion = bool(labels[row, col])
            colour = LESION_COLOUR if lesion else BACKGROUND_COLOUR
            # inset outlines so neighbouring cells' colours do not overlap; pixel j spans [j - 0.5, j + 0.5]
            inset = 0.08 * min(x1 - x0, y1 - y0)
            outline = Rectangle(
                (x0 - 0.5 + inset, y0 - 0.5 + inset),
                x1 - x0 - 2 * inset,
                y1 - y0 - 2 * inset,
                fill=False,
                edgecolor=colour,
                linewidth=1.0,
            )
            axes[3].add_patch(outline)
            axes[3].text(
                (x0 + x1 - 1) / 2,
                (y0 + y1 - 1) / 2,
                "L" if lesion else "B",
                color=colour,
                fontsize=font,
                ha="center",
                va="center",
                fontweight="bold",
                path_effects=halo,
            )
        for x in sorted({box[0] for box in self.cell_boxes} | {box[2] for box in self.cell_boxes}):
            axes[3].axvline(x - 0.5, color="white", linewidth=0.4, alpha=0.6)
        for y in sorted({box[1] for box in self.cell_boxes} | {box[3] for box in self.cell_boxes}):
            axes[3].axhline(y - 0.5, color="white", linewidth=0.4, alpha=0.6)
        axes[3].set_title(
            f"{_short(self.layer)} {gh}×{gw}: {int(labels.sum())} L / {labels.size - int(labels.sum())} B", fontsize=9
        )
        for axis in axes:
            axis.set_xlim(-0.5, width - 0.5)
            axis.set_ylim(height - 0.5, -0.5)
            axis.axis("off")
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
        return buffer.getvalue()


def lesion_background(
    model: nn.Module,
    roi: np.ndarray | torch.Tensor,
    *,
    layer: str | None = None,
    mask: np.ndarray | None = None,
    lesion: np.ndarray | None = None,
    background: np.ndarray | None = None,
    window: int = 7,
    levels: int = 16,
    batch_size: int | None = None,
) -> LesionBackgroundResult:
    """Label every cell of ``layer``'s grid as lesion or background for one ROI (Li & Zwiggelaar, 2024).

    Args:
        model: a mammocad MammoNet (run through ``forward_features``; inputs in [0, 1]) or any nn.Module
            taking (B, in_chans, H, W) (``in_chans`` from ``model.in_chans``, default 1).
        roi: (H, W) or (C, H, W) image, uint8/uint16 or float in [0, 1] (floats are clipped to [0, 1]);
            channels are averaged, then the grey ROI is repeated to the model's ``in_chans``.
        layer: layer name (resolved by ``resolve_layers``: full or ``backbone.``-less submodule name, or a
            layer-group index such as ``-1``); default: the last layer group. Its output must be 4-D.
        mask: lesion mask on the ROI grid (> 0 = lesion; nearest-neighbour resized if its shape differs);
            an empty or absent mask falls back to the Otsu region of the Lesion image.
        lesion, background: override the computed Lesion / Background images ((H, W), converted like the ROI).
        window, levels: GLCM window and grey levels of the Lesion image.
        batch_size: None runs the ROI and all 2·gh·gw replaced inputs in one forward pass; else chunks of
            this many inputs (same results, less memory).

    Returns:
        :class:`LesionBackgroundResult`.

    Raises ConfigError for a bad layer (unknown: the message lists the candidates; not 4-D; a grid finer
    than the ROI or larger than ``MAX_CELLS``) or batch size, ValueError for bad arrays.
    """
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1
    ):
        raise ConfigError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    grey = as_grey(roi, "roi")
    height, width = grey.shape
    name = resolve_layers(model, None if layer is None else [layer])[0]

    lesion_img = (
        lesion_image(grey, window, levels) if lesion is None else checked_override(lesion, "lesion", grey.shape)
    )
    mask_grid = None if mask is None else mask_on_grid(mask, grey.shape)
    region = lesion_region(lesion_img, mask_grid)
    background_img = (
        background_image(grey, region) if background is None else checked_override(background, "background", grey.shape)
    )

    in_chans = int(getattr(model, "in_chans", 1))
    parameter = next((p for p in model.parameters() if p.is_floating_point()), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None else torch.float32

    def to_batch(images: list[np.ndarray]) -> torch.Tensor:
        batch = torch.from_numpy(np.stack(images)).to(device=device, dtype=dtype)
        return batch[:, None].expand(-1, in_chans, -1, -1).contiguous()

    training = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.inference_mode():
            # the ROI alone first: which forward runs the layer, and the layer's grid
            forward, first = _probe(model, name, to_batch([grey]))
            gh, gw = int(first.shape[-2]), int(first.shape[-1])
            del first
            if gh > height or gw > width:
                raise ConfigError(f"layer {name!r} has a {gh}×{gw} grid, finer than the {height}×{width} ROI")
            if gh * gw > MAX_CELLS:
                raise ConfigError(
                    f"layer {name!r} has {gh}×{gw} = {gh * gw} cells (> {MAX_CELLS}, {2 * gh * gw + 1} forward "
                    "passes); pick a deeper layer"
                )
            boxes = _cell_boxes(height, width, gh, gw)
            cells = len(boxes)

            def variant(index: int) -> np.ndarray:
                # 0: the ROI; 1..cells: cell k ← Lesion; cells+1..2·cells: cell k ← Background
                if index == 0:
                    return grey
                source = lesion_img if index <= cells else background_img
                x0, y0, x1, y1 = boxes[(index - 1) % cells]
                image = grey.copy()
                image[y0:y1, x0:x1] = source[y0:y1, x0:x1]
                return image

            total = 2 * cells + 1
            step = total if batch_size is None else int(batch_size)
            reference: torch.Tensor | None = None
            distances = np.zeros(total, dtype=np.float64)
            for start in range(0, total, step):
                stop = min(total, start + step)
                outputs = _run(forward, model, name, to_batch([variant(i) for i in range(start, stop)]))
                outputs = outputs.float()
                if reference is None:
                    reference = outputs[0].clone()  # (C, gh, gw), the ROI's activations
                # mean over the gh·gw positions of the L2 distance between channel vectors
                distances[start:stop] = (outputs - reference).norm(dim=1).mean(dim=(1, 2)).cpu().double().numpy()
                del outputs  # free the chunk's activations before the next one
            assert reference is not None
            activation = activation_map(reference[None])[0].cpu().numpy().astype(np.float32)
    finally:
        for module, mode in training.items():
            module.training = mode

    return LesionBackgroundResult(
        roi=grey,
        lesion=lesion_img.astype(np.float32),
        background=background_img.astype(np.float32),
        region=region,
        layer=name,
        activation=activation,
        dis_lesion=distances[1 : cells + 1].reshape(gh, gw),
        dis_background=distances[cells + 1 :].reshape(gh, gw),
        cell_boxes=boxes,
    )


class _NotRun(ConfigError):
    """The layer was not run by the forward pass."""


def _probe(model: nn.Module, name: str, batch: torch.Tensor) -> tuple[Callable[[torch.Tensor], Any], torch.Tensor]:
    """(forward, ``name``'s output for ``batch``): ``model.forward_features`` when it runs the layer (the
    head is not needed), else the whole ``model``."""
    features = getattr(model, "forward_features", None)
    if callable(features):
        try:
            return features, _run(features, model, name, batch)
        except _NotRun:
            pass
    return model, _run(model, model, name, batch)


def _run(forward: Callable[[torch.Tensor], Any], model: nn.Module, name: str, batch: torch.Tensor) -> torch.Tensor:
    """``name``'s output (B, C, h, w) for ``batch``; ConfigError when the layer is not run or not 4-D."""
    with recording(model, [name]) as recorder:
        forward(batch)
    output = recorder.outputs.pop(name, None)
    if output is None:
        raise _NotRun(f"layer {name!r} is not run by the model's forward pass")
    if not isinstance(output, torch.Tensor) or output.ndim != 4:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ConfigError(
            f"layer {name!r} outputs {shape}, not a (B, C, H, W) feature map; the Lesion/Background "
            "interpretation needs a convolutional layer with a spatial grid"
        )
    return output


def _cell_boxes(height: int, width: int, gh: int, gw: int) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) of the gh × gw cells, row-major: near-equal integer bands over H and W."""
    ys = np.rint(np.linspace(0, height, gh + 1)).astype(int)
    xs = np.rint(np.linspace(0, width, gw + 1)).astype(int)
    return [(int(xs[c]), int(ys[r]), int(xs[c + 1]), int(ys[r + 1])) for r in range(gh) for c in range(gw)]


def _short(name: str) -> str:
    return name.removeprefix("backbone.")


__all__ = [
    "BACKGROUND_COLOUR",
    "LESION_COLOUR",
    "MAX_CELLS",
    "LesionBackgroundResult",
    "background_image",
    "lesion_background",
    "lesion_image",
    "lesion_region",
]
