"""SEVector: squeeze-and-excitation on a pooled vector (Xia et al. (2025)'s improved head, second step).

``w = sigmoid(W2 · ReLU(W1 · u))``, ``v = u ⊙ w`` with W1: C -> max(floor, C // r), W2: -> C.
Both are Dense layers with bias, as Keras' ``Dense`` has by default.
"""

from __future__ import annotations

import torch
from torch import nn


class SEVector(nn.Module):
    """Re-weight the entries of a (B, C) vector by learnt gates in (0, 1).

    Args:
        channels: C, the vector length (2 x backbone channels after GAGM).
        reduction: r; the bottleneck has ``max(floor, channels // reduction)`` units.
        floor: lower bound on the bottleneck width so tiny vectors keep some capacity.
    """

    def __init__(self, channels: int, reduction: int = 16, floor: int = 8) -> None:
        super().__init__()
        if channels < 1 or reduction < 1 or floor < 1:
            raise ValueError(f"SEVector needs channels, reduction, floor >= 1; got {channels}, {reduction}, {floor}")
        self.channels = channels
        self.hidden = max(floor, channels // reduction)
        self.squeeze = nn.Linear(channels, self.hidden, bias=True)  # W1
        self.excite = nn.Linear(self.hidden, channels, bias=True)  # W2

    def gates(self, u: torch.Tensor) -> torch.Tensor:
        """The gate vector w = sigmoid(W2 ReLU(W1 u)), shape (B, C)."""
        return torch.sigmoid(self.excite(torch.relu(self.squeeze(u))))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """v = u * w, shape (B, C)."""
        return u * self.gates(u)
