"""Classification heads: a feature map (B, C, H, W) in, logits out.

Every head has ``forward(fmap) -> logits``, ``features(fmap) -> penultimate vector`` (the input to
its final Linear, used by the Feature Smoothing Loss) and ``classify(features) -> logits``, with
``forward(fmap) == classify(features(fmap))``.

Registered heads (``list_heads()``):
- ``gap``: GAP -> Dropout -> Linear.
- ``gap_dense``: GAP -> Dense(256, ReLU) -> Dropout -> Linear.
- ``gagm_dense``: GAGM -> Dense(256, ReLU) -> Dropout -> Linear.
- ``gagm_se_dense``: GAGM -> SEVector -> Dense(256, ReLU) -> Dropout -> Linear (report A's improved head).
- ``gap_se_dense``: GAP -> SEVector -> Dense(256, ReLU) -> Dropout -> Linear (the improved head without
  GAGM, for the ablation).
- ``flatten_dense``: Flatten -> Dense(256, ReLU) -> Dropout -> Linear (fixed input size).
- ``lesion_map``: a 1×1 patch classifier applied densely, its heatmap aggregated into image classes
  (``heads/lesion_map.py``; the ``lesion_aware`` model builds it with its patch size and aggregation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import nn

from mammocad.errors import ConfigError
from mammocad.models.heads.dense import DENSE_UNITS, DenseClassifier, FlattenDenseHead, PooledDenseHead
from mammocad.models.heads.gagm import GAGM
from mammocad.models.heads.gap import GapHead, GlobalAvgPool
from mammocad.models.heads.lesion_map import LesionMapHead
from mammocad.models.heads.se_vector import SEVector

__all__ = [
    "DENSE_UNITS",
    "GAGM",
    "HEADS",
    "NEEDS_FMAP_SIZE",
    "DenseClassifier",
    "FlattenDenseHead",
    "GapHead",
    "GlobalAvgPool",
    "Head",
    "LesionMapHead",
    "PooledDenseHead",
    "SEVector",
    "build_head",
    "list_heads",
]


class Head(Protocol):
    """What MammoNet needs from a head (all heads here are nn.Modules with these methods)."""

    def features(self, fmap: torch.Tensor) -> torch.Tensor: ...

    def classify(self, features: torch.Tensor) -> torch.Tensor: ...

    def __call__(self, fmap: torch.Tensor) -> torch.Tensor: ...


def _gap(
    channels: int, num_classes: int, drop_rate: float, se_reduction: int, fmap_hw: tuple[int, int] | None
) -> nn.Module:
    return GapHead(channels, num_classes, drop_rate)


def _gap_dense(
    channels: int, num_classes: int, drop_rate: float, se_reduction: int, fmap_hw: tuple[int, int] | None
) -> nn.Module:
    return PooledDenseHead(GlobalAvgPool(), channels, num_classes, drop_rate)


def _gagm_dense(
    channels: int, num_classes: int, drop_rate: float, se_reduction: int, fmap_hw: tuple[int, int] | None
) -> nn.Module:
    return PooledDenseHead(GAGM(), GAGM.out_features(channels), num_classes, drop_rate)


def _gagm_se_dense(
    channels: int, num_classes: int, drop_rate: float, se_reduction: int, fmap_hw: tuple[int, int] | None
) -> nn.Module:
    pooled = GAGM.out_features(channels)
    return PooledDenseHead(GAGM(), pooled, num_classes, drop_rate, SEVector(pooled, reduction=se_reduction))


def _gap_se_dense(
    channels: int, num_classes: int, drop_rate: float, se_reduction: int, fmap_hw: tuple[int, int] | None
) -> nn.Module:
    return PooledDenseHead(
        GlobalAvgPool(), channels, num_classes, drop_rate, SEVector(channels, reduction=se_reduction)
    )


def _flatten_dense(
    channels: int, num_classes: int, drop_rate: float, se_reduction: int, fmap_hw: tuple[int, int] | None
) -> nn.Module:
    if fmap_hw is None:
        raise ConfigError("head 'flatten_dense' needs the feature-map size (built from the model's input_size)")
    return FlattenDenseHead((channels, *fmap_hw), num_classes, drop_rate)


def _lesion_map(
    channels: int, num_classes: int, drop_rate: float, se_reduction: int, fmap_hw: tuple[int, int] | None
) -> nn.Module:
    # Defaults only: class 0 is the negative class, top-4 mean; the lesion_aware model sets the rest.
    return LesionMapHead(channels, num_classes, negative_class=0 if num_classes > 1 else None, drop_rate=drop_rate)


HeadBuilder = Callable[[int, int, float, int, "tuple[int, int] | None"], nn.Module]

# name -> builder(channels, num_classes, drop_rate, se_reduction, fmap_hw)
HEADS: dict[str, HeadBuilder] = {
    "gap": _gap,
    "gap_dense": _gap_dense,
    "gagm_dense": _gagm_dense,
    "gagm_se_dense": _gagm_se_dense,
    "gap_se_dense": _gap_se_dense,
    "flatten_dense": _flatten_dense,
    "lesion_map": _lesion_map,
}

# Heads whose size depends on the feature map's H x W (the model builder measures it).
NEEDS_FMAP_SIZE = frozenset({"flatten_dense"})


def list_heads() -> list[str]:
    """Names of the registered heads, sorted."""
    return sorted(HEADS)


def build_head(
    name: str,
    channels: int,
    num_classes: int,
    drop_rate: float = 0.5,
    se_reduction: int = 16,
    fmap_hw: tuple[int, int] | None = None,
) -> nn.Module:
    """Build head ``name`` for a ``channels``-channel feature map and ``num_classes`` logits.

    ``fmap_hw`` (the feature map's H, W) is needed only by heads in ``NEEDS_FMAP_SIZE``.
    Raises ConfigError for an unknown name (listing the valid ones) or bad sizes.
    """
    if name not in HEADS:
        raise ConfigError(f"unknown head {name!r}; valid heads: {', '.join(list_heads())}")
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    if not 0.0 <= drop_rate < 1.0:
        raise ConfigError(f"drop_rate must be in [0, 1), got {drop_rate}")
    if se_reduction < 1:
        raise ConfigError(f"se_reduction must be >= 1, got {se_reduction}")
    return HEADS[name](channels, num_classes, drop_rate, se_reduction, fmap_hw)
