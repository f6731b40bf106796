"""Feature Smoothing Loss (Xia et al. (2025), as applied by Dahes (2025)): pull each class's feature vectors together.

On a batch of penultimate vectors f (B x D) with integer labels, for each class c present:
``f̄_c = mean_i f_ci`` and ``L_fs = (1/C_b) Σ_c (1/N_c) Σ_i ||f_ci − f̄_c||²`` (squared L2 norm),
averaged over the C_b classes present in the batch. An empty batch gives 0.
"""

from __future__ import annotations

import torch


def feature_smoothing_loss(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_fs for ``features`` (B, D) and integer class ``labels`` (B,); a scalar tensor.

    Gradients flow through both the features and the class means (as in the formula).
    Raises ValueError on mismatched shapes or non-integer labels.
    """
    if features.ndim != 2:  # (B,) or (B, C, H, W): one flat vector per sample
        features = features.reshape(features.shape[0], -1)
    if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(
            f"labels must be (B,) for features (B, D); got {tuple(labels.shape)} and {tuple(features.shape)}"
        )
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels must be integer class indices, got {labels.dtype}")
    if features.shape[0] == 0:
        return features.sum() * 0.0  # zero, still attached to the graph
    features = features.float()  # sums of squares in half precision lose too much
    classes, index, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    sums = torch.zeros(classes.numel(), features.shape[1], dtype=features.dtype, device=features.device)
    sums = sums.index_add(0, index, features)
    means = sums / counts.unsqueeze(1).to(features.dtype)
    squared = ((features - means[index]) ** 2).sum(dim=1)
    per_class = torch.zeros(classes.numel(), dtype=features.dtype, device=features.device).index_add(0, index, squared)
    return (per_class / counts.to(features.dtype)).mean()
