"""Legible heatmap pictures: breast-masked, perceptually uniform, transparent where the map is low.

A heatmap on the model-input grid (e.g. a 224×224 Grad-CAM, itself upsampled from a 7×7 layer)
is smoothed (a Gaussian a few input pixels wide hides the bilinear kinks of the coarse map),
mapped back onto the film's own geometry with :meth:`Geometry.to_original` (bilinear, so the
film keeps its aspect ratio instead of being squashed to a square), then coloured with
:data:`COLORMAP` (inferno: perceptually uniform, readable in grey, unlike jet). Its alpha ramps
from 0 at :data:`ALPHA_FLOOR` to :data:`MAX_ALPHA` at the top, and is 0 outside the breast
(:func:`mammocad.preprocess.breast.breast_mask`), so air, labels and low responses show the
film as it is.

What a map means depends on the method (:func:`heatmap_meaning`): Grad-CAM-like methods show a
relative contribution to one class; EigenCAM and raw activation maps ignore the class (they show
where the network responds, not evidence for a class); a lesion-aware model's map is its P(any lesion).
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from mammocad.preprocess.breast import breast_mask, breast_mask_small
from mammocad.preprocess.pipeline import Geometry

#: A perceptually uniform matplotlib colour map (never jet: its bands read as edges that are not there).
COLORMAP = "inferno"
#: Map values at or below this are fully transparent (the film shows through).
ALPHA_FLOOR = 0.3
#: The alpha of the map's highest values, before the viewer's opacity.
MAX_ALPHA = 1.0
#: Methods whose map ignores the class asked for.
CLASS_AGNOSTIC = frozenset({"eigencam", "activation"})
AGNOSTIC_MEANING = "class-agnostic: where the network responds, not evidence for a class"
LESION_MEANING = "P(any lesion): the lesion-aware model's own heatmap, not evidence for a class"


def is_class_agnostic(method: str) -> bool:
    """Whether ``method``'s map is the same whatever class is asked for (EigenCAM, activations, lesion map)."""
    return method.strip().lower() in CLASS_AGNOSTIC or method.strip().lower() == "lesion"


def heatmap_meaning(method: str, target: str | None) -> str:
    """What the colours mean, for captions, legends and API responses."""
    name = method.strip().lower()
    if name == "lesion":
        return LESION_MEANING
    if name in CLASS_AGNOSTIC:
        return AGNOSTIC_MEANING
    return f"relative contribution to {target if target is not None else 'the predicted class'}"


def heatmap_caption(method: str, target: str | None, layer: str | None = None) -> str:
    """A one-line caption: method, class only when the method uses it, layer, and the meaning."""
    name = method.strip().lower()
    parts = [name]
    if not is_class_agnostic(name) and target is not None:
        parts.append(f"class {target}")
    if layer:
        parts.append(f"layer {layer}")
    return " · ".join(parts) + f" — {heatmap_meaning(name, target)}"


@functools.cache
def _lut() -> np.ndarray:
    # On first use, not at import: matplotlib would add a third of a second to every `mammocad serve` start.
    import matplotlib

    return (matplotlib.colormaps[COLORMAP](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)


def colormap_stops(n: int = 9) -> list[str]:
    """``n`` hex colours of :data:`COLORMAP`, low to high (a CSS gradient's stops)."""
    picks = _lut()[np.linspace(0, 255, n).round().astype(int)]
    return [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in picks]


def colorbar_spec(method: str, target: str | None) -> dict:
    """The legend :func:`mammocad.dashboard.viewer.film_viewer` draws: label, colour stops, ends."""
    return {
        "label": heatmap_meaning(method, target),
        "colors": colormap_stops(),
        "low": f"≤ {ALPHA_FLOOR:.1f} (transparent)",
        "high": "1 (highest)",
        "class_agnostic": is_class_agnostic(method),
    }


def colorbar_png(method: str, target: str | None, width: int = 520) -> bytes:
    """A colour-bar picture with the map's meaning, for PNG outputs and reports."""
    from matplotlib.figure import Figure

    from mammocad.reporting.html import figure_to_png

    figure = Figure(figsize=(width / 100, 0.9), dpi=100)
    axis = figure.add_axes((0.04, 0.55, 0.92, 0.25))
    ramp = np.linspace(0.0, 1.0, 256)[None, :]
    axis.imshow(ramp, aspect="auto", cmap=COLORMAP, extent=(0, 1, 0, 1))
    axis.axvspan(0, ALPHA_FLOOR, color="white", alpha=0.6, lw=0)
    axis.set_yticks([])
    axis.set_xticks([0, ALPHA_FLOOR, 0.5, 1.0], ["0", f"{ALPHA_FLOOR:.1f}\n(transparent below)", "0.5", "1"])
    axis.tick_params(labelsize=7)
    axis.set_title(heatmap_meaning(method, target), fontsize=8)
    return figure_to_png(figure)


def smooth_heatmap(heatmap: np.ndarray) -> np.ndarray:
    """The map on its own grid, NaNs zeroed, clipped to [0, 1], lightly Gaussian-smoothed (σ = side/112)."""
    heat = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0.0, 1.0)
    sigma = max(heat.shape) / 112
    if sigma >= 0.5:
        heat = cv2.GaussianBlur(heat, (0, 0), sigma)
    return heat


def heatmap_rgba(
    heat: np.ndarray,
    tissue: np.ndarray | None = None,
    floor: float = ALPHA_FLOOR,
    max_alpha: float = MAX_ALPHA,
) -> np.ndarray:
    """RGBA uint8 (H, W, 4) of a [0, 1] map already on the picture's grid.

    Colour: :data:`COLORMAP` of the value; alpha: 0 up to ``floor``, rising (smoothstep) to
    ``max_alpha`` at 1, times ``tissue`` (a mask of the same shape: boolean, or float in [0, 1]).
    """
    if not 0.0 <= floor < 1.0:
        raise ValueError(f"floor must be in [0, 1), got {floor}")
    values = np.clip(np.nan_to_num(np.asarray(heat, dtype=np.float32)), 0.0, 1.0)
    if values.ndim != 2:
        raise ValueError(f"expected a 2-D heatmap, got shape {values.shape}")
    rgba = np.empty((*values.shape, 4), dtype=np.uint8)
    rgba[..., :3] = _lut()[np.rint(values * 255).astype(np.uint8)]
    ramp = np.clip((values - floor) / (1.0 - floor), 0.0, 1.0)
    alpha = ramp * ramp * (3.0 - 2.0 * ramp) * max_alpha
    if tissue is not None:
        if tissue.shape != values.shape:
            raise ValueError(f"tissue mask {tissue.shape} does not match the heatmap {values.shape}")
        alpha = alpha * tissue
    rgba[..., 3] = np.rint(alpha * 255).astype(np.uint8)
    return rgba


def tissue_mask(film: np.ndarray) -> np.ndarray:
    """The breast (boolean, the film's shape): the preprocessing's segmentation, air and labels False."""
    return breast_mask(_segmentable(film))


def tissue_alpha(film: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The breast as float32 in [0, 1] at ``shape``: the segmentation's working-size mask resized
    bilinearly, so its edge is a soft ramp, not nearest-neighbour steps, when zoomed in."""
    small = breast_mask_small(_segmentable(film)).astype(np.float32)
    return cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def _segmentable(film: np.ndarray) -> np.ndarray:
    grey = np.asarray(film)
    if grey.dtype not in (np.uint8, np.uint16):
        grey = np.clip(np.nan_to_num(grey.astype(np.float32)), 0.0, 1.0)
    return grey


def film_overlay(
    film: np.ndarray,
    heatmap: np.ndarray,
    geometry: Geometry | None = None,
    max_side: int | None = None,
    mask: bool = True,
) -> np.ndarray:
    """The RGBA overlay of ``heatmap`` for ``film``, at the film's resolution (or ``max_side`` on its long side).

    ``heatmap``: on the model-input grid (any resolution) when ``geometry`` is given, mapped back
    with :meth:`Geometry.to_original`; on the film's own grid (any resolution, resized) otherwise.
    ``mask``: hide everything outside the breast.
    """
    height, width = np.asarray(film).shape[:2]
    heat = smooth_heatmap(heatmap)
    if geometry is not None:
        if tuple(geometry.original_hw) != (height, width):
            raise ValueError(f"geometry is for a {geometry.original_hw} film, not {(height, width)}")
        heat = geometry.to_original(heat)
    size = (height, width)
    if max_side is not None and max(height, width) > max_side:
        scale = max_side / max(height, width)
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
    if heat.shape != size:
        shrinking = heat.shape[0] > size[0]
        heat = cv2.resize(heat, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
    return heatmap_rgba(heat, tissue_alpha(film, size) if mask else None)


def composite(film: np.ndarray, rgba: np.ndarray, opacity: float = 1.0) -> np.ndarray:
    """RGB uint8: ``rgba`` blended over the grey ``film`` (resized to the overlay) at ``opacity``."""
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    from mammocad.explain.cam import to_float_image

    grey = to_float_image(film)
    if grey.shape != rgba.shape[:2]:
        shrinking = grey.shape[0] > rgba.shape[0]
        grey = cv2.resize(
            grey, (rgba.shape[1], rgba.shape[0]), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        )
    alpha = rgba[..., 3:].astype(np.float32) / 255.0 * opacity
    blended = grey[..., None] * 255.0 * (1.0 - alpha) + rgba[..., :3].astype(np.float32) * alpha
    return np.rint(np.clip(blended, 0, 255)).astype(np.uint8)
