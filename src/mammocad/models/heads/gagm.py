"""GAGM: global average + global max pooling fusion (Xia et al. (2025)'s improved head, first step).

For a feature map F (B x C x H x W): ``u = [GAP(F); GMP(F)]`` in R^{2C} — the average summarises
the whole map, the max keeps the strongest local response (a small lesion that averaging dilutes).
"""

from __future__ import annotations

import torch
from torch import nn


class GAGM(nn.Module):
    """Concatenate global average and global max pooling: (B, C, H, W) -> (B, 2C), average first."""

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        """Pool ``fmap`` (B, C, H, W) into u = [mean over H,W ; max over H,W], shape (B, 2C)."""
        avg = fmap.mean(dim=(2, 3))
        peak = fmap.amax(dim=(2, 3))
        return torch.cat([avg, peak], dim=1)

    @staticmethod
    def out_features(channels: int) -> int:
        """Length of u for a C-channel map: 2C."""
        return 2 * channels
