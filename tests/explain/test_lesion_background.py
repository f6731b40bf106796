"""GLCM variance maps and the Lesion/Background interpretation (Li & Zwiggelaar (2024))."""

from __future__ import annotations

import json
import time
from collections import OrderedDict

import numpy as np
import pytest
import torch
from skimage.feature import graycomatrix, graycoprops
from torch import nn

from mammocad.errors import ConfigError
from mammocad.explain.glcm import glcm_variance_map, quantise
from mammocad.explain.lesion_background import (
    LesionBackgroundResult,
    background_image,
    lesion_background,
    lesion_image,
    lesion_region,
)
from mammocad.models import create_model

ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def skimage_variance(quantised: np.ndarray, row: int, col: int, window: int, symmetric: bool, levels: int) -> float:
    """scikit-image's GLCM variance (mean over the angles) of the window centred on (row, col)."""
    pad = window // 2
    padded = np.pad(quantised, pad, mode="reflect")
    patch = padded[row : row + window, col : col + window]
    matrix = graycomatrix(patch, [1], ANGLES, levels=levels, symmetric=symmetric, normed=True)
    return float(graycoprops(matrix, "variance").mean())


@pytest.mark.parametrize("window", [5, 7])
@pytest.mark.parametrize("symmetric", [True, False])
def test_glcm_variance_matches_scikit_image(window: int, symmetric: bool) -> None:
    image = np.random.default_rng(window + symmetric).integers(0, 256, size=(37, 45), dtype=np.uint8)
    levels = 16
    ours = glcm_variance_map(image, window=window, levels=levels, symmetric=symmetric)
    assert ours.shape == image.shape and ours.dtype == np.float32
    quantised = quantise(image, levels)
    # interior pixels and the corners (which use the reflected border)
    for row, col in [(10, 12), (18, 22), (30, 7), (5, 40), (0, 0), (36, 44)]:
        expected = skimage_variance(quantised, row, col, window, symmetric, levels)
        assert abs(float(ours[row, col]) - expected) < 1e-5, (row, col, ours[row, col], expected)


def test_quantise_ranges() -> None:
    assert quantise(np.array([[0, 15, 16, 255]], dtype=np.uint8), 16).tolist() == [[0, 0, 1, 15]]
    assert quantise(np.array([[0, 4095, 4096, 65535]], dtype=np.uint16), 16).tolist() == [[0, 0, 1, 15]]
    assert quantise(np.array([[0.0, 0.0624, 0.0625, 1.0]]), 16).tolist() == [[0, 0, 1, 15]]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        quantise(np.array([[1.5]]), 16)
    with pytest.raises(ConfigError, match="levels"):
        quantise(np.zeros((3, 3), np.uint8), 1)


def test_glcm_rejects_bad_options() -> None:
    image = np.zeros((16, 16), np.uint8)
    with pytest.raises(ConfigError, match="odd"):
        glcm_variance_map(image, window=4)
    with pytest.raises(ConfigError, match="levels"):
        glcm_variance_map(image, levels=300)
    with pytest.raises(ValueError, match="2-D"):
        glcm_variance_map(np.zeros((2, 16, 16), np.uint8))


def test_glcm_time_224() -> None:
    """Information only: the GLCM variance map of a 224² uint8 ROI (no assertion on the time)."""
    roi = np.random.default_rng(0).integers(0, 256, size=(224, 224), dtype=np.uint8)
    glcm_variance_map(roi)
    repeats = 20
    start = time.perf_counter()
    for _ in range(repeats):
        glcm_variance_map(roi)
    print(f"GLCM variance map, 224² uint8: {(time.perf_counter() - start) / repeats * 1000:.2f} ms")


def test_lesion_image_of_a_flat_roi_is_zero_and_keeps_the_shape() -> None:
    flat = np.full((40, 56), 128, dtype=np.uint8)
    lesion = lesion_image(flat)
    assert lesion.shape == (40, 56) and lesion.dtype == np.float32 and not lesion.any()
    assert not lesion_region(lesion).any()
    textured = np.random.default_rng(1).random((40, 56))
    lesion = lesion_image(textured)
    assert lesion.shape == (40, 56) and lesion.max() == pytest.approx(1.0) and lesion.min() >= 0


def test_region_and_background() -> None:
    roi = np.full((64, 64), 0.4, dtype=np.float32)
    noise = np.random.default_rng(2).random((20, 20)).astype(np.float32)
    roi[20:40, 20:40] = noise  # a textured square "lesion" on a flat field
    region = lesion_region(lesion_image(roi))
    assert region[30, 30] and not region[2, 2] and not region[60, 60]
    background = background_image(roi, region)
    assert background.dtype == np.float32 and background.shape == roi.shape
    np.testing.assert_array_equal(background[~region], roi[~region])  # unchanged outside the region
    assert background[region].std() < noise.std() / 3  # the texture is gone inside
    mask = np.zeros((64, 64), np.uint8)
    mask[5:10, 5:10] = 255
    np.testing.assert_array_equal(lesion_region(lesion_image(roi), mask=mask), mask > 0)  # the mask wins
    np.testing.assert_array_equal(lesion_region(lesion_image(roi), mask=np.zeros((64, 64))), region)  # empty: Otsu


def texture_net() -> nn.Module:
    """Fixed weights: a Laplacian and its negative (ReLU: |Laplacian| split in two), pooled to 8×8 cells at 64²."""
    conv = nn.Conv2d(1, 2, kernel_size=3, padding=1, bias=False)
    laplacian = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
    with torch.no_grad():
        conv.weight.copy_(torch.stack([laplacian, -laplacian])[:, None])
    return nn.Sequential(OrderedDict(conv=conv, act=nn.ReLU(), pool=nn.AvgPool2d(8)))


def half_and_half() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(roi, lesion, background): the ROI's left half is the lesion image, its right half the background."""
    rows, cols = np.indices((64, 64))
    lesion = np.where((rows + cols) % 2 == 0, 0.9, 0.1).astype(np.float32)  # checkerboard texture
    background = np.full((64, 64), 0.5, dtype=np.float32)  # flat grey
    roi = np.concatenate([lesion[:, :32], background[:, 32:]], axis=1)
    return roi, lesion, background


def test_labels_flip_between_the_lesion_and_the_background_half() -> None:
    roi, lesion, background = half_and_half()
    model = texture_net()
    result = lesion_background(model, roi, layer="pool", lesion=lesion, background=background)
    assert isinstance(result, LesionBackgroundResult)
    assert result.layer == "pool" and result.activation.shape == (8, 8)
    assert result.dis_lesion.shape == result.dis_background.shape == (8, 8)
    for dis in (result.dis_lesion, result.dis_background):
        assert np.isfinite(dis).all() and (dis >= 0).all()
    # left half: the lesion window is the ROI itself -> disᴸ = 0 < disᴮ; right half the other way round
    np.testing.assert_allclose(result.dis_lesion[:, :4], 0, atol=1e-6)
    np.testing.assert_allclose(result.dis_background[:, 4:], 0, atol=1e-6)
    assert (result.dis_background[:, :4] > 1e-3).all() and (result.dis_lesion[:, 4:] > 1e-3).all()
    expected = np.zeros((8, 8), dtype=bool)
    expected[:, :4] = True
    np.testing.assert_array_equal(result.is_lesion(), expected)

    assert len(result.cell_boxes) == 64 and result.cell_boxes[0] == (0, 0, 8, 8)
    assert result.cell_boxes[9] == (8, 8, 16, 16)  # row-major: row 1, column 1
    document = json.loads(json.dumps(result.to_json()))
    assert document["grid"] == [8, 8] and document["roi_size"] == [64, 64] and document["layer"] == "pool"
    assert document["lesion_cells"] == 32 and document["background_cells"] == 32
    cell = document["cells"][9]
    assert (cell["row"], cell["col"], cell["box"], cell["label"]) == (1, 1, [8, 8, 16, 16], "lesion")
    assert document["cells"][7]["label"] == "background"
    assert result.figure_png().startswith(PNG_SIGNATURE)


def test_chunked_batches_give_the_same_distances() -> None:
    roi, lesion, background = half_and_half()
    model = texture_net()
    whole = lesion_background(model, roi, layer="pool", lesion=lesion, background=background)
    chunked = lesion_background(model, roi, layer="pool", lesion=lesion, background=background, batch_size=7)
    np.testing.assert_allclose(chunked.dis_lesion, whole.dis_lesion, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(chunked.dis_background, whole.dis_background, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="batch_size"):
        lesion_background(model, roi, layer="pool", batch_size=0)


def test_a_mammocad_model_uses_its_own_feature_grid() -> None:
    torch.manual_seed(0)
    model = create_model("baseline_cnn", num_classes=2).train()
    roi = (np.random.default_rng(3).random((3, 64, 64)) * 255).astype(np.uint8)  # channels are averaged
    mask = np.zeros((128, 128), np.uint8)
    mask[40:90, 50:100] = 1  # on a finer grid: resized to the ROI
    start = time.perf_counter()
    result = lesion_background(model, torch.from_numpy(roi), mask=mask)
    print(f"lesion_background, baseline_cnn at 64²: {time.perf_counter() - start:.3f} s")
    with torch.no_grad():
        grid = model.eval().forward_features(torch.rand(1, 1, 64, 64)).shape[-2:]
    assert result.layer == "backbone.block4" and result.activation.shape == tuple(grid) == (4, 4)
    assert result.region[32, 37] and not result.region[5, 5]
    assert np.isfinite(result.dis_lesion).all() and np.isfinite(result.dis_background).all()
    assert result.to_json()["lesion_cells"] + result.to_json()["background_cells"] == 16


def test_training_mode_is_restored() -> None:
    model = create_model("baseline_cnn", num_classes=2).train()
    model.backbone.block1.bn.eval()  # a frozen BatchNorm stays frozen
    lesion_background(model, np.random.default_rng(4).random((32, 32)))
    assert model.training and model.backbone.block2.bn.training and not model.backbone.block1.bn.training


@pytest.mark.slow
def test_densenet121_at_224_has_a_7x7_grid() -> None:
    torch.manual_seed(0)
    model = create_model("densenet121", num_classes=2)
    roi = np.random.default_rng(5).random((224, 224)).astype(np.float32)
    start = time.perf_counter()
    result = lesion_background(model, roi)
    print(f"lesion_background, densenet121 at 224²: {time.perf_counter() - start:.2f} s")
    assert result.activation.shape == (7, 7) and len(result.cell_boxes) == 49
    assert result.cell_boxes[-1] == (192, 192, 224, 224)


def test_bad_inputs() -> None:
    model = texture_net()
    roi, _, _ = half_and_half()
    with pytest.raises(ConfigError, match="layer groups: conv"):
        lesion_background(model, roi, layer="no_such_layer")
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        lesion_background(model, np.zeros(64, np.float32), layer="pool")
    with pytest.raises(ValueError, match="lesion image shape"):
        lesion_background(model, roi, layer="pool", lesion=np.zeros((32, 32), np.float32))
    with pytest.raises(ValueError, match="dtype"):
        lesion_background(model, roi.astype(np.int32), layer="pool")
    flat = nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 2, 3), flat=nn.Flatten()))
    with pytest.raises(ConfigError, match="not a \\(B, C, H, W\\)"):
        lesion_background(flat, roi, layer="flat")
