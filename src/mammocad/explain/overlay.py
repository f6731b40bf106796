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

The multi-core PNG encoder (:func:`encode_png`) lives in :mod:`mammocad.explain.png` and stays importable here.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from mammocad.explain.png import PARALLEL_PNG_MIN_BYTES, encode_png
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


def to_float_image(image: np.ndarray) -> np.ndarray:
    """A 2-D grey image as float32 in [0, 1] (uint8 / uint16 scaled; RGB averaged)."""
    array = np.asarray(image)
    if array.ndim == 3:
        array = array.mean(axis=2 if array.shape[2] in (3, 4) else 0)
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D grey image, got shape {np.asarray(image).shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    return np.clip(array.astype(np.float32), 0.0, 1.0)


def composite(film: np.ndarray, rgba: np.ndarray, opacity: float = 1.0) -> np.ndarray:
    """RGB uint8: ``rgba`` blended over the grey ``film`` (resized to the overlay) at ``opacity``."""
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    grey = to_float_image(film)
    if grey.shape != rgba.shape[:2]:
        shrinking = grey.shape[0] > rgba.shape[0]
        grey = cv2.resize(
            grey, (rgba.shape[1], rgba.shape[0]), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        )
    alpha = rgba[..., 3:].astype(np.float32) / 255.0 * opacity
    blended = grey[..., None] * 255.0 * (1.0 - alpha) + rgba[..., :3].astype(np.float32) * alpha
    return np.rint(np.clip(blended, 0, 255)).astype(np.uint8)


def overlay_size(height: int, width: int, max_side: int | None = None) -> tuple[int, int]:
    """``(height, width)`` scaled to at most ``max_side`` on the long side, aspect ratio kept (as
    :func:`film_overlay` sizes its pictures)."""
    if max_side is not None and max(height, width) > max_side:
        scale = max_side / max(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))
    return height, width


@functools.cache
def _alpha_lut(floor: float, max_alpha: float) -> np.ndarray:
    """Alpha (float32, [0, 1]) of each uint8 map level: :func:`heatmap_rgba`'s smoothstep ramp."""
    values = np.arange(256, dtype=np.float32) / 255.0
    ramp = np.clip((values - floor) / (1.0 - floor), 0.0, 1.0)
    return (ramp * ramp * (3.0 - 2.0 * ramp) * max_alpha).astype(np.float32)


@functools.cache
def _colour_lut(bgr: bool) -> np.ndarray:
    """:data:`COLORMAP` as a (256, 1, 3) RGB (or BGR) table for ``cv2.LUT``."""
    return np.ascontiguousarray(_lut()[:, None, ::-1] if bgr else _lut()[:, None, :])


def heatmap_picture(
    film: np.ndarray,
    heatmap: np.ndarray,
    geometry: Geometry | None = None,
    opacity: float = 1.0,
    max_side: int | None = None,
    mask: bool = True,
    bgr: bool = False,
) -> np.ndarray:
    """uint8 (h, w, 3): ``heatmap`` drawn over the grey ``film``, what ``composite(film, film_overlay(...))``
    draws (plus, with ``geometry``, nothing outside the model's crop), in a few uint8/float32 OpenCV passes
    at the picture's size instead of float passes at the film's.

    Same picture: :data:`COLORMAP` of the map, transparent at or below :data:`ALPHA_FLOOR` and rising
    (smoothstep) to :data:`MAX_ALPHA` × ``opacity``, nothing outside the breast (``mask``) and, with a
    ``geometry``, outside the crop the model saw; the same Gaussian smoothing (σ = the film's long side
    / 112, in film pixels). Differences from the slow path: the map is smoothed on its own grid (σ
    scaled per axis; zero past the crop, as before) before it is resampled onto the picture, and it is
    quantised to the colour map's 256 levels before the alpha ramp, so a pixel may differ by up to 3
    levels out of 255 (tests/explain/test_fast_overlay.py); a 2048x1536 film: 2 at most, 0.02 on average.

    Args:
        film: 2-D grey (uint8, uint16 or float in [0, 1]) at its own resolution.
        heatmap: with ``geometry``, on the model-input grid (any resolution); else on the film's grid
            (any resolution, resized).
        geometry: how the model input was cut from ``film`` (None: the map covers the whole film).
        opacity: the map's weight at its highest values, in [0, 1].
        max_side: the picture's long side at most (None: the film's size).
        mask: hide everything outside the breast.
        bgr: channels in OpenCV's BGR order (for ``cv2.imencode``), else RGB.
    """
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    grey_film = _finite_unit(film)
    if grey_film.ndim != 2:
        raise ValueError(f"expected a 2-D grey film, got shape {grey_film.shape}")
    height, width = grey_film.shape
    size = overlay_size(height, width, max_side)
    levels = _map_levels(heatmap, (height, width), size, geometry)
    weight = cv2.LUT(levels, _alpha_lut(ALPHA_FLOOR, MAX_ALPHA))  # float32 alphas (a float table gives a float result)
    if mask:  # tissue_alpha, on the film already made segmentable
        breast = breast_mask_small(grey_film).astype(np.float32)
        weight *= cv2.resize(breast, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    if opacity != 1.0:
        weight *= np.float32(opacity)
    colour = cv2.LUT(cv2.merge([levels, levels, levels]), _colour_lut(bgr))
    grey = _grey_uint8(grey_film, size)
    # blendLinear: (w1·a + w2·b) / (w1 + w2), per pixel, SIMD and multi-threaded.
    return cv2.blendLinear(colour, cv2.merge([grey, grey, grey]), weight, 1.0 - weight)


def _finite_unit(film: np.ndarray) -> np.ndarray:
    """:func:`_segmentable`, without its two full-size float copies when a float film is already
    finite and in [0, 1] (the serving engine's decoded originals are)."""
    array = np.asarray(film)
    if array.dtype in (np.uint8, np.uint16):
        return array
    if array.dtype == np.float32 and array.size and float(array.min()) >= 0.0 and float(array.max()) <= 1.0:
        return array  # NaN fails both comparisons
    return _segmentable(array)


def _map_levels(
    heatmap: np.ndarray, film_hw: tuple[int, int], size: tuple[int, int], geometry: Geometry | None
) -> np.ndarray:
    """The smoothed map on the picture's grid (``size``) as uint8 levels 0-255 (0 outside the crop)."""
    heat = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0.0, 1.0)
    if heat.ndim != 2:
        raise ValueError(f"expected a 2-D heatmap, got shape {heat.shape}")
    if geometry is None:
        # The map covers the whole film: smooth it on its own grid, as film_overlay does, then resize.
        heat = smooth_heatmap(heat)
        if heat.shape != size:
            shrinking = heat.shape[0] > size[0]
            heat = cv2.resize(heat, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
        return cv2.convertScaleAbs(heat, alpha=255.0)
    if tuple(geometry.original_hw) != tuple(film_hw):
        raise ValueError(f"geometry is for a {geometry.original_hw} film, not {film_hw}")
    x0, y0, x1, y1 = geometry.crop
    map_h, map_w = heat.shape
    # Map pixels per film pixel along each axis (the crop was resized to the model input, aspect not kept).
    per_x, per_y = map_w / (x1 - x0), map_h / (y1 - y0)
    sigma = max(film_hw) / 112  # smooth_heatmap's σ on the film-sized map, in film pixels
    if sigma * min(per_x, per_y) >= 0.25:
        heat = _blur_as_on_film(heat, sigma * per_x, sigma * per_y, geometry)
    # Picture pixel (u, v) -> film pixel -> crop -> map pixel, pixel centres as cv2.resize (Geometry.to_original).
    scale_x, scale_y = film_hw[1] / size[1], film_hw[0] / size[0]
    a = scale_x * per_x
    b = (0.5 * scale_x - 0.5 - x0 + 0.5) * per_x - 0.5
    if geometry.flipped:
        a, b = -a, map_w - 1 - b
    d = scale_y * per_y
    e = (0.5 * scale_y - 0.5 - y0 + 0.5) * per_y - 0.5
    to_map = np.array([[a, 0.0, b], [0.0, d, e]], dtype=np.float64)
    # Resampled in float and quantised last (quantising first puts steps of a level into the steep parts
    # of the colour map).
    on_picture = cv2.warpAffine(
        heat,
        to_map,
        (size[1], size[0]),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    return cv2.convertScaleAbs(on_picture, alpha=255.0)


def _blur_as_on_film(heat: np.ndarray, sigma_x: float, sigma_y: float, geometry: Geometry) -> np.ndarray:
    """Gaussian-blur a map on its own grid with the borders the film-sized blur has: zero where the crop
    ends inside the film (the film around it is 0), mirrored where it meets the film's edge."""
    height, width = geometry.original_hw
    x0, y0, x1, y1 = geometry.crop
    left_side, right_side = (x1 >= width, x0 <= 0) if geometry.flipped else (x0 <= 0, x1 >= width)
    reflect = {"top": y0 <= 0, "bottom": y1 >= height, "left": left_side, "right": right_side}
    pad_y, pad_x = int(np.ceil(4 * sigma_y)) + 1, int(np.ceil(4 * sigma_x)) + 1
    padded = cv2.copyMakeBorder(heat, pad_y, pad_y, pad_x, pad_x, cv2.BORDER_REFLECT_101)
    if not reflect["top"]:
        padded[:pad_y] = 0.0
    if not reflect["bottom"]:
        padded[-pad_y:] = 0.0
    if not reflect["left"]:
        padded[:, :pad_x] = 0.0
    if not reflect["right"]:
        padded[:, -pad_x:] = 0.0
    blurred = cv2.GaussianBlur(padded, (0, 0), sigma_x, sigmaY=sigma_y, borderType=cv2.BORDER_REFLECT_101)
    return blurred[pad_y:-pad_y, pad_x:-pad_x]


def _grey_uint8(film: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The film as uint8 grey at ``size`` (area-averaged when shrinking, as :func:`composite`)."""
    if film.dtype == np.uint8:
        grey = film
    elif film.dtype == np.uint16:
        grey = cv2.convertScaleAbs(film, alpha=255.0 / 65535.0)
    else:
        grey = cv2.convertScaleAbs(film, alpha=255.0)  # float in [0, 1] (clipped by _segmentable)
    if grey.shape != size:
        shrinking = grey.shape[0] > size[0]
        grey = cv2.resize(grey, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return grey


__all__ = [
    "AGNOSTIC_MEANING",
    "ALPHA_FLOOR",
    "CLASS_AGNOSTIC",
    "COLORMAP",
    "LESION_MEANING",
    "MAX_ALPHA",
    "PARALLEL_PNG_MIN_BYTES",
    "colorbar_png",
    "colorbar_spec",
    "colormap_stops",
    "composite",
    "encode_png",
    "film_overlay",
    "heatmap_caption",
    "heatmap_meaning",
    "heatmap_picture",
    "heatmap_rgba",
    "is_class_agnostic",
    "overlay_size",
    "smooth_heatmap",
    "tissue_alpha",
    "tissue_mask",
    "to_float_image",
]
