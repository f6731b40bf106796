"""Classification heads: a feature map (B, C, H, W) in, logits out.

The head contract. Every head is an ``nn.Module`` with

- ``forward(fmap) -> logits``;
- ``features(fmap) -> penultimate vector`` (the input to its final Linear, used by the Feature
  Smoothing Loss) and ``classify(features) -> logits``, with ``forward(fmap) == classify(features(fmap))``;
- ``feature_layers() -> list[str]``: its latent stages, as dotted submodule names relative to the
  head (e.g. ``["pool", "se", "dense.hidden"]``), in forward order; dropout and the final Linear are
  left out. ``MammoNet.latent_layers()`` puts ``backbone`` before them; evaluation's latent-space
  features and plots read exactly these layers. A head without the declaration is refused when built.

A head is registered by name with :func:`register_head` (``builder(channels, num_classes, drop_rate,
se_reduction, fmap_hw) -> head``); ``needs_fmap_size=True`` when its size depends on the feature
map's H x W (the model builder then measures it and passes ``fmap_hw``).

Registered heads (``list_heads()``):
- ``gap``: GAP -> Dropout -> Linear.
- ``gap_dense``: GAP -> Dense(256, ReLU) -> Dropout -> Linear.
- ``gagm_dense``: GAGM -> Dense(256, ReLU) -> Dropout -> Linear.
- ``gagm_se_dense``: GAGM -> SEVector -> Dense(256, ReLU) -> Dropout -> Linear (the improved head of
  Xia et al. (2025), as applied by Dahes (2025)).
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
    "HEAD_COMPONENTS",
    "HEAD_WITHOUT",
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
    "head_feature_layers",
    "head_without",
    "heads_with",
    "list_heads",
    "register_head",
    "unregister_head",
]


class Head(Protocol):
    """What MammoNet needs from a head (all heads here are nn.Modules with these methods)."""

    def features(self, fmap: torch.Tensor) -> torch.Tensor: ...

    def feature_layers(self) -> list[str]: ...

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
HEADS: dict[str, HeadBuilder] = {}

# Heads whose size depends on the feature map's H x W (the model builder measures it).
NEEDS_FMAP_SIZE: set[str] = set()


#: Ablation components a head can lose: head -> {component: the same head without it}.
HEAD_WITHOUT: dict[str, dict[str, str]] = {}
#: The components an ablation can remove from a head (``HEAD_WITHOUT``'s keys).
HEAD_COMPONENTS = ("gagm", "sevector")


def register_head(
    name: str, builder: HeadBuilder, *, needs_fmap_size: bool = False, without: dict[str, str] | None = None
) -> None:
    """Register head ``name``, built by ``builder(channels, num_classes, drop_rate, se_reduction, fmap_hw)``.

    ``needs_fmap_size``: the head is sized by the feature map's H x W (``fmap_hw`` is then passed).
    ``without``: for each component of :data:`HEAD_COMPONENTS` the head has, the registered head that
    is the same without it (``{"gagm": "gap_se_dense"}``); ``mammocad ablate`` reads it.
    A duplicate name raises ValueError.
    """
    if name in HEADS:
        raise ValueError(f"head {name!r} is already registered")
    unknown = sorted(set(without or {}) - set(HEAD_COMPONENTS))
    if unknown:
        raise ValueError(f"head {name!r}: unknown components {unknown}; known: {', '.join(HEAD_COMPONENTS)}")
    HEADS[name] = builder
    if needs_fmap_size:
        NEEDS_FMAP_SIZE.add(name)
    if without:
        HEAD_WITHOUT[name] = dict(without)


def unregister_head(name: str) -> None:
    """Remove head ``name`` from the registry (a plug-in's or a test's own head); KeyError when unknown."""
    del HEADS[name]
    NEEDS_FMAP_SIZE.discard(name)
    HEAD_WITHOUT.pop(name, None)


def head_without(head: str, component: str) -> str | None:
    """The registered head that is ``head`` without ``component`` (None when ``head`` has no such part)."""
    return HEAD_WITHOUT.get(head, {}).get(component)


def heads_with(component: str) -> list[str]:
    """The registered heads that have ``component`` (an ablation can remove it from them)."""
    return sorted(name for name, parts in HEAD_WITHOUT.items() if component in parts)


register_head("gap", _gap)
register_head("gap_dense", _gap_dense)
register_head("gagm_dense", _gagm_dense, without={"gagm": "gap_dense"})
register_head("gagm_se_dense", _gagm_se_dense, without={"gagm": "gap_se_dense", "sevector": "gagm_dense"})
register_head("gap_se_dense", _gap_se_dense, without={"sevector": "gap_dense"})
register_head("flatten_dense", _flatten_dense, needs_fmap_size=True)
register_head("lesion_map", _lesion_map)


def head_feature_layers(head: nn.Module) -> list[str]:
    """The latent stages ``head`` declares (``feature_layers()``), checked against its submodules.

    Raises TypeError when the head does not declare them and ValueError when a declared name is
    not one of its submodules: a head that names its layers differently must say so, never be guessed.
    """
    declare = getattr(head, "feature_layers", None)
    if not callable(declare):
        raise TypeError(
            f"head {type(head).__name__} does not declare feature_layers(); every head lists its latent "
            "stages as dotted submodule names (see mammocad.models.heads)"
        )
    layers = [str(name) for name in declare()]
    modules = dict(head.named_modules())
    missing = [name for name in layers if name not in modules]
    if missing:
        raise ValueError(
            f"head {type(head).__name__} declares feature layers {missing} that are not its submodules "
            f"(it has {[name for name in modules if name]})"
        )
    return layers


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
    Raises ConfigError for an unknown name (listing the valid ones) or bad sizes; TypeError or
    ValueError (from :func:`head_feature_layers`) when the built head breaks the head contract.
    """
    if name not in HEADS:
        raise ConfigError(f"unknown head {name!r}; valid heads: {', '.join(list_heads())}")
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    if not 0.0 <= drop_rate < 1.0:
        raise ConfigError(f"drop_rate must be in [0, 1), got {drop_rate}")
    if se_reduction < 1:
        raise ConfigError(f"se_reduction must be >= 1, got {se_reduction}")
    head = HEADS[name](channels, num_classes, drop_rate, se_reduction, fmap_hw)
    head_feature_layers(head)  # a head without the declaration fails here, when the model is built
    return head
