"""GAGM, SEVector and the heads against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from mammocad.errors import ConfigError
from mammocad.models.heads import (
    GAGM,
    FlattenDenseHead,
    GapHead,
    PooledDenseHead,
    SEVector,
    build_head,
    list_heads,
)


def sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value))


def tiny_map() -> torch.Tensor:
    # channel 0: mean 2.5, max 4; channel 1: mean 0.5, max 5
    return torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[-1.0, 0.0], [5.0, -2.0]]]])


def test_gagm_concatenates_average_then_max():
    u = GAGM()(tiny_map())
    assert u.shape == (1, 4)
    assert torch.allclose(u, torch.tensor([[2.5, 0.5, 4.0, 5.0]]))
    assert GAGM.out_features(768) == 1536


def test_se_vector_matches_hand_computation():
    se = SEVector(4, reduction=16, floor=2)
    assert se.hidden == 2  # max(2, 4 // 16)
    with torch.no_grad():
        se.squeeze.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]))
        se.squeeze.bias.copy_(torch.tensor([0.0, -10.0]))
        se.excite.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0], [-1.0, 0.0], [0.0, 1.0]]))
        se.excite.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0]))
    u = torch.tensor([[2.5, 0.5, 4.0, 5.0]])
    # W1 u + b1 = [2.5, -5] -> ReLU [2.5, 0]; W2 h = [2.5, 0, -2.5, 0]
    gates = [sigmoid(2.5), 0.5, sigmoid(-2.5), 0.5]
    expected = torch.tensor([[2.5 * gates[0], 0.5 * gates[1], 4.0 * gates[2], 5.0 * gates[3]]])
    assert torch.allclose(se.gates(u), torch.tensor([gates]), atol=1e-6)
    assert torch.allclose(se(u), expected, atol=1e-6)


def test_se_vector_bottleneck_width_and_bias():
    assert SEVector(4).hidden == 8  # floor of 8
    assert SEVector(1536, reduction=16).hidden == 96
    assert SEVector(1536, reduction=16).squeeze.bias is not None  # Keras Dense has a bias
    with pytest.raises(ValueError):
        SEVector(0)


def test_gap_head_features_are_the_pooled_vector():
    head = GapHead(2, 3, drop_rate=0.5).eval()
    with torch.no_grad():
        head.fc.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        head.fc.bias.zero_()
    assert torch.allclose(head.features(tiny_map()), torch.tensor([[2.5, 0.5]]))
    assert torch.allclose(head(tiny_map()), torch.tensor([[2.5, 0.5, 3.0]]))


def test_gagm_se_dense_head_composes_the_hand_computed_steps():
    head = build_head("gagm_se_dense", channels=2, num_classes=3, drop_rate=0.5, se_reduction=16).eval()
    assert isinstance(head, PooledDenseHead) and isinstance(head.se, SEVector)
    assert head.se.channels == 4 and head.dense.hidden.in_features == 4 and head.dense.hidden.out_features == 256
    fmap = tiny_map()
    u = torch.tensor([[2.5, 0.5, 4.0, 5.0]])
    v = head.se(u)
    expected_features = torch.relu(head.dense.hidden(v))
    assert torch.allclose(head.features(fmap), expected_features)
    assert torch.allclose(head(fmap), head.dense.fc(expected_features))
    # dropout sits between the penultimate vector and the final Linear (train mode only)
    assert head.dense.drop.p == 0.5


def test_gap_dense_and_gagm_dense_input_widths():
    assert build_head("gap_dense", 768, 3).dense.hidden.in_features == 768
    gagm = build_head("gagm_dense", 768, 3)
    assert gagm.dense.hidden.in_features == 1536
    assert not isinstance(gagm.se, SEVector)


def test_flatten_head_refuses_other_map_sizes():
    head = FlattenDenseHead((2, 2, 2), num_classes=3)
    assert head.dense.hidden.in_features == 8
    assert head(tiny_map()).shape == (1, 3)
    with pytest.raises(ValueError, match=r"built for feature maps \(2, 2, 2\)"):
        head(torch.zeros(1, 2, 3, 3))
    with pytest.raises(ConfigError, match="feature-map size"):
        build_head("flatten_dense", 2, 3)


def test_unknown_head_lists_valid_names():
    assert list_heads() == [
        "flatten_dense",
        "gagm_dense",
        "gagm_se_dense",
        "gap",
        "gap_dense",
        "gap_se_dense",
        "lesion_map",
    ]
    with pytest.raises(ConfigError) as info:
        build_head("gagm_se", 8, 2)
    for name in list_heads():
        assert name in str(info.value)
