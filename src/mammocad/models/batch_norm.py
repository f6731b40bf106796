"""Batch-norm ablation: swap every BatchNorm for a per-channel affine layer (no normalisation).

Dahes (2025) ablates batch normalisation. Deleting the layers outright would also delete their learned
scale and shift (convolutions before BatchNorm have no bias), so each BatchNorm becomes a
:class:`ChannelAffine` that keeps ``weight * x + bias`` and drops only the normalisation by batch
statistics. Pretrained running statistics are lost, so a pretrained backbone without batch norm is
effectively re-initialised in its scale; that is the point of the ablation.
"""

from __future__ import annotations

import torch
from torch import nn

from mammocad.errors import ConfigError


class ChannelAffine(nn.Module):
    """``weight[c] * x + bias[c]`` over the channel dimension (dim 1) of any (B, C, ...) tensor."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.weight.view(shape) + self.bias.view(shape)


def remove_batch_norm(model: nn.Module) -> int:
    """Replace every BatchNorm layer of ``model`` in place; returns how many were replaced.

    Raises ConfigError when the model has none (the ablation would change nothing).
    """
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                affine = ChannelAffine(child.num_features)
                if child.affine:
                    with torch.no_grad():
                        affine.weight.copy_(child.weight)
                        affine.bias.copy_(child.bias)
                setattr(parent, name, affine)
                replaced += 1
    if not replaced:
        raise ConfigError(f"{type(model).__name__} has no BatchNorm layers: batch_norm=false would change nothing")
    return replaced
