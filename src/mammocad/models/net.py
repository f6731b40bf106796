"""MammoNet: backbone (un-pooled feature map) + head (logits), with the input normalisation built in.

Inputs are float images in [0, 1] (what the preprocessing cache holds), B x in_chans x H x W; the
model normalises them itself (``normalize``), so callers never need to know each backbone's
mean/std. ``forward_with_features`` also returns the head's penultimate vector for the Feature
Smoothing Loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from mammocad.models.heads import NEEDS_FMAP_SIZE, build_head, head_feature_layers
from mammocad.models.modes import evaluation_mode


class MammoNet(nn.Module):
    """A classifier = ``backbone`` (B, in_chans, H, W) -> (B, C, h, w), then ``head`` -> (B, num_classes).

    Attributes:
        name: the registered (or timm) model name it was built from.
        num_classes, in_chans: output logits and input channels.
        input_size: the default square input side (299 for Inception-V3 models, else 224).
        mean, std: per-input-channel normalisation applied by ``normalize`` (tuples of floats).
        head_name, drop_rate, se_reduction: the head's configuration.

    The mean/std live in non-persistent buffers: they follow ``.to(device)`` but are not part of
    the state dict (they are a function of the model name, rebuilt by ``config()``).
    """

    def __init__(
        self,
        *,
        name: str,
        backbone: nn.Module,
        head: nn.Module,
        num_classes: int,
        in_chans: int,
        input_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        head_name: str,
        drop_rate: float,
        se_reduction: int,
        stage_names: Sequence[str],
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if len(mean) != in_chans or len(std) != in_chans:
            raise ValueError(f"mean/std need {in_chans} entries, got {len(mean)} and {len(std)}")
        self.backbone = backbone
        self.head = head
        self.name = name
        self.num_classes = int(num_classes)
        self.in_chans = int(in_chans)
        self.input_size = int(input_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.head_name = head_name
        self.drop_rate = float(drop_rate)
        self.se_reduction = int(se_reduction)
        self._stage_names = list(stage_names)
        self._extra_config = dict(extra_config or {})
        self.register_buffer("pixel_mean", torch.tensor(self.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(self.std).view(1, -1, 1, 1), persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map a [0, 1] float batch (B, in_chans, H, W) to the backbone's input scale.

        A uint8 batch is accepted too and scaled by 1/255 first. Raises ValueError on a wrong shape.
        """
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"{self.name} expects input (B, {self.in_chans}, H, W), got {tuple(x.shape)}")
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        elif not x.is_floating_point():
            raise ValueError(f"{self.name} expects a float image batch in [0, 1] (or uint8), got {x.dtype}")
        mean = self.pixel_mean.to(dtype=x.dtype)
        std = self.pixel_std.to(dtype=x.dtype)
        return (x - mean) / std

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's un-pooled feature map (B, C, h, w) for a [0, 1] batch."""
        fmap = self.backbone(self.normalize(x))
        if fmap.ndim != 4:
            raise ValueError(
                f"{self.name}: the backbone returned shape {tuple(fmap.shape)}, not a (B, C, H, W) feature map; "
                "mammocad's heads need a convolutional backbone"
            )
        return fmap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) for a [0, 1] batch (B, in_chans, H, W)."""
        return self.head(self.forward_features(x))

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, penultimate vector): the vector is the input to the head's final Linear."""
        features = self.head.features(self.forward_features(x))
        return self.head.classify(features), features

    def stage_names(self) -> list[str]:
        """The backbone's layer groups in order, as dotted names for ``self.get_submodule``.

        Names are relative to this MammoNet (e.g. ``"backbone.stages.3"``). Used by
        ``freeze_all_but_stages`` and by activation-map hooks (knowledge transfer, explanation).
        """
        return list(self._stage_names)

    def latent_layers(self) -> list[str]:
        """Layers worth a latent-space look, as dotted names for ``self.get_submodule``.

        The backbone's output, then the stages the head declares (``feature_layers()``, the head
        contract in ``mammocad.models.heads``), e.g. ``["backbone", "head.pool", "head.se",
        "head.dense.hidden"]``. Raises TypeError when the head declares none.
        """
        return ["backbone", *(f"head.{name}" for name in head_feature_layers(self.head))]

    def config(self) -> dict[str, Any]:
        """Everything ``create_model(**config)`` needs to rebuild this architecture (not its weights)."""
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "in_chans": self.in_chans,
            "head": self.head_name,
            "drop_rate": self.drop_rate,
            "se_reduction": self.se_reduction,
            "input_size": self.input_size,
            **self._extra_config,
        }

    def extra_repr(self) -> str:
        return f"name={self.name!r}, num_classes={self.num_classes}, in_chans={self.in_chans}, head={self.head_name!r}"


def measure_feature_map(backbone: nn.Module, in_chans: int, input_size: int) -> tuple[int, int, int]:
    """(C, H, W) of ``backbone``'s output for one ``input_size`` x ``input_size`` input (a dry run)."""
    # Eval mode: batch-1 BatchNorm in train mode fails on 1x1 maps and would update running stats.
    with evaluation_mode(backbone), torch.no_grad():
        param = next(backbone.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        out = backbone(torch.zeros(1, in_chans, input_size, input_size, device=device))
    if out.ndim != 4:
        raise ValueError(f"backbone output has shape {tuple(out.shape)}, not a (B, C, H, W) feature map")
    return int(out.shape[1]), int(out.shape[2]), int(out.shape[3])


def assemble_net(
    *,
    name: str,
    backbone: nn.Module,
    channels: int,
    num_classes: int,
    in_chans: int,
    input_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    head: str,
    drop_rate: float,
    se_reduction: int,
    stage_names: Sequence[str],
    extra_config: dict[str, Any] | None = None,
) -> MammoNet:
    """Build head ``head`` on ``backbone`` (whose maps have ``channels`` channels) and wrap both."""
    fmap_hw = None
    if head in NEEDS_FMAP_SIZE:
        _, height, width = measure_feature_map(backbone, in_chans, input_size)
        fmap_hw = (height, width)
    head_module = build_head(head, channels, num_classes, drop_rate, se_reduction, fmap_hw)
    return MammoNet(
        name=name,
        backbone=backbone,
        head=head_module,
        num_classes=num_classes,
        in_chans=in_chans,
        input_size=input_size,
        mean=mean,
        std=std,
        head_name=head,
        drop_rate=drop_rate,
        se_reduction=se_reduction,
        stage_names=stage_names,
        extra_config=extra_config,
    )
