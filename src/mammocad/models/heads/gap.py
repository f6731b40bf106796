"""GAP head: global average pooling -> Dropout -> Linear (the plain transfer-learning top).

The penultimate vector (input to the final Linear, used by the Feature Smoothing Loss) is the pooled
vector itself.
"""

from __future__ import annotations

import torch
from torch import nn


class GlobalAvgPool(nn.Module):
    """(B, C, H, W) -> (B, C): mean over the spatial axes."""

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        """Average ``fmap`` over H and W."""
        return fmap.mean(dim=(2, 3))


class GapHead(nn.Module):
    """GAP -> Dropout(drop_rate) -> Linear(C, num_classes).

    ``features(fmap)`` is the pooled (B, C) vector; ``classify(features)`` maps it to logits, so
    ``forward(fmap) == classify(features(fmap))``.
    """

    def __init__(self, in_channels: int, num_classes: int, drop_rate: float = 0.5) -> None:
        super().__init__()
        self.pool = GlobalAvgPool()
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_channels, num_classes)

    def feature_layers(self) -> list[str]:
        """Latent stages (the head contract): the pooled vector; dropout and the final Linear are not."""
        return ["pool"]

    def features(self, fmap: torch.Tensor) -> torch.Tensor:
        """Penultimate vector: the pooled (B, C) features."""
        return self.pool(fmap)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) from the penultimate vector."""
        return self.fc(self.drop(features))

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) from a (B, C, H, W) feature map."""
        return self.classify(self.features(fmap))
