"""A new head added exactly the way docs/contributing.md ("Adding a head") says, touching no other file.

The head is a module with ``features``/``classify``/``forward`` and ``feature_layers()``, registered
by name with ``register_head``; every model can then use it, and evaluation finds its latent layers
through the declaration alone.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from mammocad.evaluation.predictions import default_feature_layers
from mammocad.models import create_model, list_heads
from mammocad.models.heads import GlobalAvgPool, register_head, unregister_head

HEAD = "test_gap_bottleneck"


class GapBottleneckHead(nn.Module):
    """GAP -> Linear(C, 8) -> ReLU -> Linear(8, num_classes); its stages have names no other head uses."""

    def __init__(self, channels: int, num_classes: int, drop_rate: float = 0.5) -> None:
        super().__init__()
        self.squash = GlobalAvgPool()
        self.bottleneck = nn.Linear(channels, 8)
        self.drop = nn.Dropout(drop_rate)
        self.out = nn.Linear(8, num_classes)

    def feature_layers(self) -> list[str]:
        return ["squash", "bottleneck"]

    def features(self, fmap: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bottleneck(self.squash(fmap)))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(features))

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(fmap))


def build_gap_bottleneck(
    channels: int, num_classes: int, drop_rate: float, se_reduction: int, fmap_hw: tuple[int, int] | None
) -> nn.Module:
    return GapBottleneckHead(channels, num_classes, drop_rate)


@pytest.fixture
def registered_head() -> Iterator[str]:
    register_head(HEAD, build_gap_bottleneck)
    yield HEAD
    unregister_head(HEAD)
    assert HEAD not in list_heads()


def test_new_head_builds_runs_and_declares_its_latent_layers(registered_head):
    assert registered_head in list_heads()
    net = create_model("baseline_cnn", num_classes=3, head=registered_head, input_size=32).eval()
    assert net.head_name == registered_head and net.config()["head"] == registered_head

    batch = torch.rand(2, 1, 32, 32)
    logits, features = net.forward_with_features(batch)
    assert logits.shape == (2, 3) and features.shape == (2, 8)
    torch.testing.assert_close(logits, net(batch))

    layers = default_feature_layers(net)  # what evaluation reads
    assert layers == ["backbone", "head.squash", "head.bottleneck"]
    captured: dict[str, torch.Tensor] = {}
    hooks = [
        net.get_submodule(name).register_forward_hook(lambda _m, _i, out, name=name: captured.__setitem__(name, out))
        for name in layers
    ]
    try:
        net(batch)
    finally:
        for hook in hooks:
            hook.remove()
    assert set(captured) == set(layers)
    assert captured["head.bottleneck"].shape == (2, 8)
