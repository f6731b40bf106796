"""Class activation maps: shape, range, target/layer handling, and the answer on a toy where it is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mammocad.errors import ConfigError
from mammocad.explain.cam import CAM_METHODS, METHODS, check_method, class_activation_maps, overlay, target_layer
from mammocad.models import create_model

SIZE = 64
SQUARE = 14


def square_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
    """Noisy grey images; class 1 has a bright square somewhere (the only thing that decides the class)."""
    rng = np.random.default_rng(seed)
    images = np.clip(rng.normal(0.3, 0.06, size=(n, 1, SIZE, SIZE)), 0, 1).astype(np.float32)
    labels = np.arange(n) % 2
    corners = []
    for k in range(n):
        y, x = (int(v) for v in rng.integers(4, SIZE - SQUARE - 4, size=2))
        corners.append((y, x))
        if labels[k]:
            images[k, 0, y : y + SQUARE, x : x + SQUARE] = 0.95
    return torch.from_numpy(images), torch.from_numpy(labels), corners


@pytest.fixture(scope="module")
def toy_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model("baseline_cnn", num_classes=2, input_size=SIZE, batch_norm=False)
    images, labels, _ = square_images(192, seed=1)
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for _epoch in range(2):
        for start in range(0, len(images), 32):
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(images[start : start + 32]), labels[start : start + 32])
            loss.backward()
            optimiser.step()
    model.eval()
    test, test_labels, _ = square_images(64, seed=2)
    with torch.no_grad():
        accuracy = (model(test).argmax(1) == test_labels).float().mean().item()
    assert accuracy > 0.95, f"the toy model did not learn the square ({accuracy:.2f})"
    return model


@pytest.mark.parametrize("method", list(CAM_METHODS))
def test_cam_peaks_on_the_square(toy_model: torch.nn.Module, method: str) -> None:
    images, labels, corners = square_images(16, seed=3)
    positives = [k for k in range(16) if labels[k] == 1]
    maps = class_activation_maps(toy_model, images[positives], method, targets=[1] * len(positives))
    assert maps.shape == (len(positives), SIZE, SIZE)
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    cell = SIZE // 4  # the default layer's grid is 4x4 at 64²: a peak may land one cell off
    for heat, k in zip(maps, positives, strict=True):
        y, x = corners[k]
        inside = np.zeros_like(heat, dtype=bool)
        inside[y : y + SQUARE, x : x + SQUARE] = True
        assert heat[inside].mean() > 2 * heat[~inside].mean(), f"{method}: the map is not on the square"
        py, px = np.unravel_index(np.argmax(heat), heat.shape)
        assert y - cell <= py < y + SQUARE + cell and x - cell <= px < x + SQUARE + cell


def test_predicted_class_by_default_and_explicit_layer(toy_model: torch.nn.Module) -> None:
    images, _labels, _ = square_images(4, seed=4)
    default = class_activation_maps(toy_model, images)
    predicted = toy_model(images).argmax(1).tolist()
    explicit = class_activation_maps(toy_model, images, targets=predicted)
    np.testing.assert_allclose(default, explicit, atol=1e-6)
    earlier = class_activation_maps(toy_model, images, layer="block3")  # 'backbone.' may be left out
    assert earlier.shape == default.shape
    assert target_layer(toy_model) == "backbone.block4"
    assert target_layer(toy_model, "-2") == "backbone.block3"


def test_bad_method_layer_and_target_list_the_choices(toy_model: torch.nn.Module) -> None:
    images, _, _ = square_images(2, seed=5)
    with pytest.raises(ConfigError, match="choose from gradcam, gradcam\\+\\+"):
        check_method("smoothgrad")
    with pytest.raises(ConfigError, match="backbone.block4"):
        class_activation_maps(toy_model, images, layer="block9")
    with pytest.raises(ConfigError, match="2 classes"):
        class_activation_maps(toy_model, images, targets=[0, 5])
    assert "lesion-background" in METHODS and "activation" in METHODS


def test_other_sizes_and_channels() -> None:
    model = create_model("baseline_cnn", num_classes=3, in_chans=3).eval()
    maps = class_activation_maps(model, torch.rand(2, 3, 80, 112), "gradcam++")
    assert maps.shape == (2, 80, 112) and np.isfinite(maps).all()


def test_overlay_is_rgb_at_the_image_size() -> None:
    grey = (np.arange(40 * 60) % 255).astype(np.uint8).reshape(40, 60)
    picture = overlay(grey, np.random.default_rng(0).random((5, 7)), opacity=0.5)
    assert picture.shape == (40, 60, 3) and picture.dtype == np.uint8
    with pytest.raises(ValueError, match="opacity"):
        overlay(grey, np.zeros((5, 7)), opacity=2)
