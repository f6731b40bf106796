"""Heatmap pictures: breast-masked, transparent where low, a perceptually uniform colour map, honest labels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mammocad.explain.cam import overlay
from mammocad.explain.overlay import (
    AGNOSTIC_MEANING,
    ALPHA_FLOOR,
    COLORMAP,
    colorbar_png,
    colorbar_spec,
    composite,
    film_overlay,
    heatmap_caption,
    heatmap_meaning,
    heatmap_rgba,
    is_class_agnostic,
)
from mammocad.explain.run import display_overlay, overlay_rgba
from mammocad.preprocess import Geometry


def film(height: int = 300, width: int = 160) -> np.ndarray:
    """A half-ellipse 'breast' against the left edge, air (0) elsewhere, a label blob in the corner."""
    yy, xx = np.mgrid[0:height, 0:width]
    inside = (xx / (0.8 * width)) ** 2 + ((yy - height / 2) / (0.45 * height)) ** 2 <= 1
    pixels = np.where(inside, 0.55 + 0.1 * np.sin(yy / 7.0), 0.0).astype(np.float32)
    pixels[5:15, width - 20 : width - 6] = 1.0  # a film label: bright, but not breast
    return pixels


def test_air_and_labels_are_transparent_and_the_breast_is_coloured():
    picture = film()
    heat = np.ones((7, 7), np.float32)  # the map is high everywhere, air included
    rgba = film_overlay(picture, heat)
    assert rgba.shape == (*picture.shape, 4) and rgba.dtype == np.uint8
    breast = picture > 0.3
    breast[0:20, :] = False
    air = picture == 0
    # air: transparent (the mask is found on a blurred 256-px working copy: allow a few pixels of edge)
    assert (rgba[..., 3][ndimage.distance_transform_edt(air) > 4] == 0).all()
    assert (rgba[5:15, -20:-6, 3] == 0).all()  # the label is not breast tissue
    assert rgba[..., 3][breast].mean() > 200


def test_low_values_are_transparent_and_alpha_ramps_with_the_value():
    values = np.linspace(0, 1, 101, dtype=np.float32)[None, :].repeat(3, axis=0)
    rgba = heatmap_rgba(values)
    alpha = rgba[1, :, 3].astype(int)
    assert (alpha[values[1] <= ALPHA_FLOOR] == 0).all()
    assert (np.diff(alpha) >= 0).all() and alpha[-1] == 255


def test_the_colour_map_is_perceptually_uniform_not_jet():
    assert COLORMAP in ("inferno", "viridis", "magma", "cividis", "plasma")
    rgba = heatmap_rgba(np.linspace(0, 1, 256, dtype=np.float32)[None, :])
    luminance = rgba[0, :, :3].astype(float) @ [0.2126, 0.7152, 0.0722]
    # Jet is dark blue -> bright cyan/yellow -> dark red: its luminance is not monotonic. Inferno's is.
    assert (np.diff(luminance[::16]) > 0).all()
    top = rgba[0, -1, :3]
    assert not (top[0] > 100 and top[1] < 60 and top[2] < 60)  # jet's top is dark red


def test_overlay_has_the_original_film_shape_through_the_geometry():
    original = film(400, 220)
    # the model saw a 64x64 square of the crop x 10..210, y 20..380, mirrored
    geometry = Geometry(original_hw=(400, 220), crop=(10, 20, 210, 380), flipped=True, output_hw=(64, 64))
    heat = np.zeros((64, 64), np.float32)
    heat[20:40, 40:60] = 1.0  # right of the model input = left of the film (mirrored)
    rgba = film_overlay(original, heat, geometry)
    assert rgba.shape == (400, 220, 4)
    _rows, cols = np.nonzero(rgba[..., 3])
    assert cols.mean() < 110  # mapped back to the film's left half
    # smooth: no hard 8x8 block edges; alpha takes many values
    assert len(np.unique(rgba[..., 3])) > 50
    small = overlay_rgba(original, geometry, geometry.to_original(heat), max_side=100)
    assert small.shape == (100, 55, 4)


def test_display_overlay_keeps_the_film_outside_the_map():
    original = film()
    geometry = Geometry(original_hw=original.shape, crop=(0, 0, 160, 300), flipped=False, output_hw=(32, 32))
    picture = display_overlay(original, geometry, geometry.to_original(np.ones((32, 32))), 0.5)
    assert picture.shape == (*original.shape, 3)
    grey = np.rint(original * 255).astype(np.uint8)
    air = ndimage.distance_transform_edt(original == 0) > 4
    assert (picture[air] == grey[air][:, None]).all()  # air shows the film as is
    assert (composite(original, np.zeros((*original.shape, 4), np.uint8)) == grey[..., None]).all()


def test_cam_overlay_keeps_its_contract():
    grey = (np.arange(40 * 60) % 255).astype(np.uint8).reshape(40, 60)
    picture = overlay(grey, np.random.default_rng(0).random((5, 7)), opacity=0.5)
    assert picture.shape == (40, 60, 3) and picture.dtype == np.uint8
    with pytest.raises(ValueError, match="opacity"):
        overlay(grey, np.zeros((5, 7)), opacity=2)


def test_class_agnostic_methods_say_so():
    assert is_class_agnostic("eigencam") and is_class_agnostic("EigenCAM") and is_class_agnostic("activation")
    assert is_class_agnostic("lesion")
    assert not is_class_agnostic("gradcam")
    assert heatmap_meaning("eigencam", "malignant") == AGNOSTIC_MEANING
    assert heatmap_meaning("gradcam", "malignant") == "relative contribution to malignant"
    caption = heatmap_caption("eigencam", "malignant", "features.norm5")
    assert "class-agnostic" in caption and "malignant" not in caption
    assert "class malignant" in heatmap_caption("gradcam", "malignant")
    assert "P(any lesion)" in heatmap_caption("lesion", "abnormal")


def test_colour_bar_is_present_with_its_meaning():
    spec = colorbar_spec("gradcam++", "abnormal")
    assert spec["label"] == "relative contribution to abnormal" and len(spec["colors"]) >= 5
    assert all(c.startswith("#") and len(c) == 7 for c in spec["colors"])
    assert colorbar_spec("eigencam", "abnormal")["class_agnostic"] is True
    assert colorbar_png("eigencam", None).startswith(b"\x89PNG")
