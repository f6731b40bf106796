"""Activation maps and the knowledge-transfer distance d^j against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mammocad.errors import ConfigError
from mammocad.models import create_model
from mammocad.models.activation_maps import activation_map, activation_maps, recording, resolve_layers
from mammocad.models.losses.knowledge_transfer import knowledge_transfer_loss, map_distance


def test_activation_map_is_the_channel_mean_of_squares() -> None:
    activations = torch.tensor([[[[1.0, -2.0]], [[3.0, 0.0]]]])  # (1, 2, 1, 2)
    expected = torch.tensor([[[(1 + 9) / 2, (4 + 0) / 2]]])
    torch.testing.assert_close(activation_map(activations), expected)
    with pytest.raises(ValueError, match="B, C, H, W"):
        activation_map(torch.zeros(2, 3))


def test_distance_is_zero_for_identical_or_scaled_maps_and_matches_a_hand_computation() -> None:
    a = torch.tensor([[1.0, 2.0], [0.0, 2.0]])
    assert float(map_distance(a, a)) == 0.0
    assert float(map_distance(a, 5 * a)) == pytest.approx(0.0, abs=1e-7)
    b = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    # unit vectors: a/3 = (1/3, 2/3, 0, 2/3); b/5 = (0, 0, 3/5, 4/5)
    hand = math.sqrt((1 / 3) ** 2 + (2 / 3) ** 2 + (3 / 5) ** 2 + (2 / 3 - 4 / 5) ** 2)
    assert float(map_distance(a, b)) == pytest.approx(hand, rel=1e-6)
    batch = map_distance(torch.stack([a, a]), torch.stack([a, b]))
    assert batch.shape == (2,) and float(batch[1]) == pytest.approx(hand, rel=1e-6)
    assert torch.isfinite(map_distance(torch.zeros(2, 2), a))  # a silent map does not divide by zero
    with pytest.raises(ValueError, match="differ in shape"):
        map_distance(a, torch.zeros(3, 3))


def test_loss_is_half_beta_times_the_summed_distances_and_only_the_roi_branch_learns() -> None:
    torch.manual_seed(0)
    mask_acts = {"x": torch.rand(3, 4, 5, 5, requires_grad=True), "y": torch.rand(3, 2, 3, 3, requires_grad=True)}
    roi_acts = {"x": torch.rand(3, 4, 5, 5, requires_grad=True), "y": torch.rand(3, 2, 3, 3, requires_grad=True)}
    loss, parts = knowledge_transfer_loss(mask_acts, roi_acts, beta=0.8)
    per_sample = sum(map_distance(activation_map(mask_acts[k]), activation_map(roi_acts[k])) for k in ("x", "y"))
    assert loss.item() == pytest.approx(0.4 * per_sample.detach().mean().item(), rel=1e-6)
    assert float(parts["x"]) == pytest.approx(
        (map_distance(activation_map(mask_acts["x"]), activation_map(roi_acts["x"])).mean().item()), rel=1e-6
    )
    loss.backward()
    assert mask_acts["x"].grad is None and roi_acts["x"].grad is not None  # mask maps are targets


def test_samples_without_a_mask_add_nothing() -> None:
    torch.manual_seed(1)
    mask_acts, roi_acts = {"x": torch.rand(2, 3, 4, 4)}, {"x": torch.rand(2, 3, 4, 4)}
    only_first, _ = knowledge_transfer_loss(mask_acts, roi_acts, 2.0, weights=torch.tensor([1.0, 0.0]))
    first, _ = knowledge_transfer_loss({"x": mask_acts["x"][:1]}, {"x": roi_acts["x"][:1]}, 2.0)
    assert float(only_first) == pytest.approx(float(first), rel=1e-6)
    none, _ = knowledge_transfer_loss(mask_acts, roi_acts, 2.0, weights=torch.zeros(2))
    assert float(none) == 0.0
    with pytest.raises(ValueError, match="beta"):
        knowledge_transfer_loss(mask_acts, roi_acts, -1.0)


def test_layers_resolve_by_name_prefix_or_index_and_unknown_names_list_the_groups() -> None:
    model = create_model("baseline_cnn", num_classes=2)
    assert resolve_layers(model, None) == ["backbone.block4"]
    assert resolve_layers(model, ["block2", "backbone.block3", "-1", "0"]) == [
        "backbone.block2",
        "backbone.block3",
        "backbone.block4",
        "backbone.block1",
    ]
    with pytest.raises(ConfigError, match="backbone.block1, backbone.block2"):
        resolve_layers(model, ["denseblock4"])
    maps = activation_maps(model.eval(), torch.rand(2, 1, 64, 64))
    assert [tuple(m.shape) for m in maps.values()] == [(2, 32, 32), (2, 16, 16), (2, 8, 8), (2, 4, 4)]


def test_recorder_removes_its_hooks() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    with recording(model, ["0"]) as recorder:
        model(torch.rand(1, 1, 8, 8))
    assert recorder.outputs["0"].shape == (1, 2, 6, 6)
    assert not model[0]._forward_hooks
