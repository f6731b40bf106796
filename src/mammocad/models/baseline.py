"""Baseline CNNs trained from scratch (the baseline CNN of Dahes (2025)).

Blocks: Conv 3x3 (same padding, no bias — BatchNorm follows) -> BatchNorm -> ReLU -> MaxPool 2x2.
- ``baseline_cnn``: 4 blocks (32, 64, 128, 256 filters), then GAP -> Dropout -> Dense (head ``gap``).
- ``baseline_cnn_flatten``: 3 blocks (32, 64, 128), then Flatten -> Dense(256, ReLU) -> Dropout(0.5)
  -> Dense (head ``flatten_dense``). Flatten's length is 128 * (input_size // 8)^2, so this model is
  built for ``input_size`` (kwarg, default 224) and refuses other sizes.

Normalisation: mean 0.5, std 0.25 per channel (maps [0, 1] to [-2, 2], zero-centred; the first
BatchNorm makes the exact choice unimportant). No pretrained weights exist; ``weights=PATH`` works.
All layers are plain Conv2d / BatchNorm2d / MaxPool2d, which run channels-last natively.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from torch import nn

from mammocad.errors import ConfigError
from mammocad.models.builders import register_model
from mammocad.models.net import MammoNet, assemble_net

BASELINE_MEAN = 0.5
BASELINE_STD = 0.25


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Conv 3x3 same -> BN -> ReLU -> MaxPool 2x2 (halves H and W, rounding down)."""
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            bn=nn.BatchNorm2d(out_channels),
            act=nn.ReLU(inplace=True),
            pool=nn.MaxPool2d(kernel_size=2),
        )
    )


class BaselineBackbone(nn.Sequential):
    """Stacked ``conv_block``s named ``block1``, ``block2``, ...; output (B, widths[-1], H/2^n, W/2^n)."""

    def __init__(self, in_chans: int, widths: Sequence[int]) -> None:
        blocks = OrderedDict()
        previous = in_chans
        for index, width in enumerate(widths, start=1):
            blocks[f"block{index}"] = conv_block(previous, width)
            previous = width
        super().__init__(blocks)
        self.num_features = previous
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")


def _build_baseline(
    *,
    name: str,
    widths: Sequence[int],
    num_classes: int,
    head: str,
    in_chans: int = 1,
    pretrained: bool | str = False,
    drop_rate: float = 0.5,
    se_reduction: int = 16,
    input_size: int = 224,
    **kwargs: object,
) -> MammoNet:
    if pretrained:
        raise ConfigError(f"{name} has no pretrained weights; train it from scratch or pass weights=PATH")
    if kwargs:
        raise ConfigError(f"{name}: unexpected options {sorted(kwargs)}")
    if input_size < 2 ** len(widths):
        raise ConfigError(f"{name}: input_size must be at least {2 ** len(widths)}, got {input_size}")
    backbone = BaselineBackbone(in_chans, widths)
    return assemble_net(
        name=name,
        backbone=backbone,
        channels=backbone.num_features,
        num_classes=num_classes,
        in_chans=in_chans,
        input_size=input_size,
        mean=(BASELINE_MEAN,) * in_chans,
        std=(BASELINE_STD,) * in_chans,
        head=head,
        drop_rate=drop_rate,
        se_reduction=se_reduction,
        stage_names=[f"backbone.{block}" for block, _ in backbone.named_children()],
    )


@register_model("baseline_cnn", default_head="gap")
def baseline_cnn(**kwargs: Any) -> MammoNet:
    """4-block baseline CNN (32-64-128-256) with the GAP head."""
    return _build_baseline(name="baseline_cnn", widths=(32, 64, 128, 256), **kwargs)


@register_model("baseline_cnn_flatten", default_head="flatten_dense")
def baseline_cnn_flatten(**kwargs: Any) -> MammoNet:
    """3-block baseline CNN (32-64-128) with the Flatten -> Dense(256) head, for a fixed input_size."""
    return _build_baseline(name="baseline_cnn_flatten", widths=(32, 64, 128), **kwargs)
