"""Heatmap overlays on the original film: the drawing the explain command, the engine and the dashboard share.

Pure drawing (OpenCV, NumPy and :mod:`mammocad.explain.overlay`): no model, run or dataset code, so
serving imports it without the explain command's evaluation and training-data stack.
"""

from __future__ import annotations

import cv2
import numpy as np

from mammocad.explain.overlay import composite, film_overlay
from mammocad.preprocess.pipeline import Geometry

#: Overlays on the original image are drawn at most this many pixels per side (the .npy keeps full size).
MAX_OVERLAY_SIDE = 2048


def display_overlay(original: np.ndarray, geometry: Geometry, on_original: np.ndarray, opacity: float) -> np.ndarray:
    """RGB uint8: the heatmap (already on the original grid) over the ``original`` image ([0, 1] grey),
    drawn only inside the breast and the model's crop, transparent where low (see
    :func:`mammocad.explain.overlay.film_overlay`), at most MAX_OVERLAY_SIDE per side."""
    return composite(original, overlay_rgba(original, geometry, on_original), opacity)


def overlay_rgba(
    original: np.ndarray, geometry: Geometry, on_original: np.ndarray, max_side: int = MAX_OVERLAY_SIDE
) -> np.ndarray:
    """RGBA uint8 of the heatmap (on the original grid) for ``original``: breast and model crop only,
    at most ``max_side`` per side (the film viewer's overlay; :func:`display_overlay` blends it)."""
    inside = geometry.map_to_original(np.ones(geometry.output_hw, dtype=np.float32)) > 0.5
    rgba = film_overlay(original, on_original, max_side=max_side)
    if inside.shape != rgba.shape[:2]:
        inside = (
            cv2.resize(inside.astype(np.uint8), (rgba.shape[1], rgba.shape[0]), interpolation=cv2.INTER_NEAREST) > 0
        )
    rgba[..., 3] *= inside
    return rgba
