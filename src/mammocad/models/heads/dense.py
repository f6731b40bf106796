"""Dense(256, ReLU) -> Dropout -> Linear: the classifier block every "dense" head ends in.

Dahes (2025)'s head: ``v -> Dense(256, ReLU) -> Dropout -> Dense(n_classes, softmax)`` (softmax lives in
the loss / at inference). The penultimate vector (``features``) is the 256-unit ReLU activation
*before* dropout, so the Feature Smoothing Loss sees the deterministic features, not dropout noise.

Heads built from it:
- ``PooledDenseHead``: pool (GAP or GAGM) -> [SEVector] -> DenseClassifier
  (``gap_dense``, ``gagm_dense``, ``gagm_se_dense``).
- ``FlattenDenseHead``: Flatten -> DenseClassifier (the baseline CNN's Flatten variant). Flatten ties
  the head to one feature-map size, so it is built for a fixed input size and refuses other sizes.
"""

from __future__ import annotations

import torch
from torch import nn

DENSE_UNITS = 256  # Dahes (2025) and the baseline CNNs: Dense(256, ReLU)


class DenseClassifier(nn.Module):
    """Linear(in, 256) -> ReLU -> Dropout(drop_rate) -> Linear(256, num_classes)."""

    def __init__(self, in_features: int, num_classes: int, drop_rate: float = 0.5, units: int = DENSE_UNITS) -> None:
        super().__init__()
        self.hidden = nn.Linear(in_features, units)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(units, num_classes)

    def features(self, vector: torch.Tensor) -> torch.Tensor:
        """Penultimate vector: ReLU(hidden(vector)), shape (B, units), before dropout."""
        return torch.relu(self.hidden(vector))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from the penultimate vector."""
        return self.fc(self.drop(features))

    def forward(self, vector: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) from a (B, in_features) vector."""
        return self.classify(self.features(vector))


class PooledDenseHead(nn.Module):
    """pool(fmap) -> [SEVector] -> Dense(256, ReLU) -> Dropout -> Linear.

    Args:
        pool: maps (B, C, H, W) to (B, pooled_features): ``GlobalAvgPool`` or ``GAGM``.
        pooled_features: length of the pooled vector (C for GAP, 2C for GAGM).
        num_classes: number of output logits.
        drop_rate: dropout before the final Linear.
        squeeze_excite: an ``SEVector`` over the pooled vector, or None to skip it.
    """

    def __init__(
        self,
        pool: nn.Module,
        pooled_features: int,
        num_classes: int,
        drop_rate: float = 0.5,
        squeeze_excite: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.pool = pool
        self.se = squeeze_excite if squeeze_excite is not None else nn.Identity()
        self.dense = DenseClassifier(pooled_features, num_classes, drop_rate)

    def feature_layers(self) -> list[str]:
        """Latent stages (the head contract): the pooled vector, the SEVector output (when present)
        and the Dense(256) layer."""
        squeeze_excite = [] if isinstance(self.se, nn.Identity) else ["se"]
        return ["pool", *squeeze_excite, "dense.hidden"]

    def features(self, fmap: torch.Tensor) -> torch.Tensor:
        """Penultimate (B, 256) vector: Dense(256, ReLU) of the (re-weighted) pooled vector."""
        return self.dense.features(self.se(self.pool(fmap)))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from the penultimate vector."""
        return self.dense.classify(features)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) from a (B, C, H, W) feature map."""
        return self.classify(self.features(fmap))


class FlattenDenseHead(nn.Module):
    """Flatten -> Dense(256, ReLU) -> Dropout -> Linear, for one fixed feature-map shape (C, H, W).

    Flatten's length is C * H * W, so the head is built for the feature map that the model's
    ``input_size`` produces; any other size raises a ValueError naming both shapes.
    """

    def __init__(self, fmap_shape: tuple[int, int, int], num_classes: int, drop_rate: float = 0.5) -> None:
        super().__init__()
        channels, height, width = fmap_shape
        if min(fmap_shape) < 1:
            raise ValueError(f"FlattenDenseHead needs a non-empty feature map, got {fmap_shape}")
        self.fmap_shape = (int(channels), int(height), int(width))
        self.dense = DenseClassifier(channels * height * width, num_classes, drop_rate)

    def feature_layers(self) -> list[str]:
        """Latent stages (the head contract): the Dense(256) layer (the flattened map is just the input)."""
        return ["dense.hidden"]

    def features(self, fmap: torch.Tensor) -> torch.Tensor:
        """Penultimate (B, 256) vector from the flattened map."""
        if tuple(fmap.shape[1:]) != self.fmap_shape:
            raise ValueError(
                f"flatten head was built for feature maps {self.fmap_shape} (C, H, W) but got "
                f"{tuple(fmap.shape[1:])}; feed images of the model's input_size or use a pooling head"
            )
        return self.dense.features(fmap.flatten(1))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from the penultimate vector."""
        return self.dense.classify(features)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) from a (B, C, H, W) feature map."""
        return self.classify(self.features(fmap))
