"""The serving overlay (heatmap_picture, uint8/OpenCV) draws what the float path (film_overlay + composite) drew."""

from __future__ import annotations

import zlib

import cv2
import numpy as np
import pytest
from scipy import ndimage

from mammocad.explain.overlay import (
    ALPHA_FLOOR,
    PARALLEL_PNG_MIN_BYTES,
    colorbar_spec,
    composite,
    encode_png,
    film_overlay,
    heatmap_picture,
    overlay_size,
)
from mammocad.explain.run import display_overlay, overlay_rgba
from mammocad.preprocess import Geometry
from tests.explain.test_overlay import film

#: Colour levels (out of 255) the fast picture may differ by: the map is quantised to the colour map's
#: 256 levels before the alpha ramp, and smoothed on its own grid before it is resampled.
LEVELS = 3


def blob(size: int = 64, centre: tuple[float, float] = (0.4, 0.6)) -> np.ndarray:
    """A smooth map on the model-input grid peaking at ``centre`` (fractions of height, width)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    return np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / 0.05).astype(np.float32)


@pytest.mark.parametrize("flipped", [False, True])
def test_same_picture_as_the_float_path_through_a_geometry(flipped: bool) -> None:
    original = film(400, 220)
    # the model saw the crop x 0..180 (against the film's left edge), y 20..380, resized to 64x64
    geometry = Geometry(original_hw=(400, 220), crop=(0, 20, 180, 380), flipped=flipped, output_hw=(64, 64))
    heat = blob()
    slow = display_overlay(original, geometry, geometry.to_original(heat), 0.7)
    fast = heatmap_picture(original, heat, geometry, 0.7)
    assert fast.shape == slow.shape == (400, 220, 3) and fast.dtype == np.uint8
    assert np.abs(fast.astype(int) - slow.astype(int)).max() <= LEVELS
    assert (fast != np.rint(original * 255).astype(np.uint8)[..., None]).any()  # the map is drawn


def test_same_picture_as_the_float_path_on_the_films_grid() -> None:
    grey = (film(120, 90) * 65535).astype(np.uint16)  # any film dtype: here 16-bit
    heat = blob(30)
    slow = composite(grey, film_overlay(grey, heat), 0.5)
    fast = heatmap_picture(grey, heat, opacity=0.5)
    assert np.abs(fast.astype(int) - slow.astype(int)).max() <= LEVELS


def test_same_size_as_promised() -> None:
    original = film(400, 220)
    geometry = Geometry(original_hw=(400, 220), crop=(10, 20, 210, 380), flipped=True, output_hw=(64, 64))
    heat = blob()
    small = heatmap_picture(original, heat, geometry, 0.5, max_side=100)
    assert small.shape[:2] == overlay_rgba(original, geometry, geometry.to_original(heat), max_side=100).shape[:2]
    assert small.shape == (*overlay_size(400, 220, 100), 3) == (100, 55, 3)
    assert heatmap_picture(original, heat, geometry, 0.5, max_side=1000).shape == (400, 220, 3)  # never enlarged


def test_air_labels_and_outside_the_crop_show_the_film_as_is() -> None:
    original = film()
    # the crop stops at y = 200: the breast below it was not seen by the model
    geometry = Geometry(original_hw=original.shape, crop=(0, 0, 160, 200), flipped=False, output_hw=(32, 32))
    picture = heatmap_picture(original, np.ones((32, 32), np.float32), geometry, 1.0)  # high everywhere
    grey = np.rint(original * 255).astype(np.uint8)
    unchanged = (picture == grey[..., None]).all(axis=2)
    air = ndimage.distance_transform_edt(original == 0) > 4  # the mask is found on a 256-px working copy
    assert unchanged[air].all()
    assert unchanged[5:15, -20:-6].all()  # the film label is not breast tissue
    assert unchanged[210:].all()  # outside the model's crop
    breast = (original > 0.3) & (ndimage.distance_transform_edt(original > 0.3) > 6)
    breast[:20] = False
    breast[180:] = False
    assert not unchanged[breast].any()  # inside the breast and the crop the map covers the film


def test_transparent_at_or_below_the_floor_and_coloured_above_it() -> None:
    original = film()
    grey = np.rint(original * 255).astype(np.uint8)
    low = heatmap_picture(original, np.full((32, 32), ALPHA_FLOOR, np.float32), opacity=1.0)
    assert (low == grey[..., None]).all()  # 0.3 everywhere: fully transparent
    high = heatmap_picture(original, np.full((32, 32), 0.6, np.float32), opacity=1.0)
    assert (high != grey[..., None]).any(axis=2)[original > 0.3].mean() > 0.9
    assert (heatmap_picture(original, np.zeros((32, 32), np.float32), opacity=1.0) == grey[..., None]).all()


def test_colours_are_the_colour_bars() -> None:
    # A flat map at 1, opacity 1, in the breast: the pixel is the colour bar's top stop (inferno), not the film.
    original = film()
    picture = heatmap_picture(original, np.ones((16, 16), np.float32), opacity=1.0)
    top = colorbar_spec("gradcam", "malignant")["colors"][-1]
    centre = picture[150, 30]
    assert f"#{centre[0]:02x}{centre[1]:02x}{centre[2]:02x}" == top
    bgr = heatmap_picture(original, np.ones((16, 16), np.float32), opacity=1.0, bgr=True)
    assert (bgr == picture[..., ::-1]).all()


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="opacity"):
        heatmap_picture(film(), np.zeros((8, 8)), opacity=1.5)
    with pytest.raises(ValueError, match="geometry"):
        geometry = Geometry(original_hw=(10, 10), crop=(0, 0, 10, 10), flipped=False, output_hw=(8, 8))
        heatmap_picture(film(), np.zeros((8, 8)), geometry)
    with pytest.raises(ValueError, match="2-D"):
        heatmap_picture(film(), np.zeros((2, 8, 8)))


@pytest.mark.parametrize("shape", [(1200, 900, 3), (1500, 800), (40, 30, 3), (1, 1), (2, 700, 3)])
def test_png_is_lossless_valid_and_as_small_as_opencvs(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    # A film-like picture (smooth gradient + noise) so that compression has something to do.
    base = np.linspace(0, 200, shape[1], dtype=np.float32)[None, :] + rng.normal(0, 3, size=shape[:2])
    picture = np.clip(base, 0, 255).astype(np.uint8)
    if len(shape) == 3:
        picture = np.stack([picture, picture // 2, 255 - picture], axis=2)
    png = encode_png(picture)
    assert len(png) > 0 and png.startswith(b"\x89PNG\r\n\x1a\n")
    start = png.index(b"IDAT")
    length = int.from_bytes(png[start - 4 : start], "big")
    zlib.decompress(png[start + 4 : start + 4 + length])  # checks the joined stream's Adler-32
    decoded = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    expected = picture[..., ::-1] if picture.ndim == 3 else picture  # OpenCV decodes to BGR
    assert decoded.shape == expected.shape and (decoded == expected).all()
    if picture.nbytes >= PARALLEL_PNG_MIN_BYTES:  # split into bands: still about OpenCV's size
        assert len(png) <= 1.02 * len(cv2.imencode(".png", expected)[1])


def test_png_refuses_what_it_cannot_encode() -> None:
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((4, 4, 4), np.uint8))
