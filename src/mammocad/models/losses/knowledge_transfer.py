"""Mask-guided knowledge transfer (Li & Zwiggelaar (2024)).

The lesion's binary mask M and the ROI image R both go through the network. For each chosen layer
j, with activation maps ``F^j = (1/C) Σ_c |A_c|²``::

    d^j = || vec(F^j(M)) / ||vec(F^j(M))||₂ − vec(F^j(R)) / ||vec(F^j(R))||₂ ||₂
    L   = L_CE(R) + (β/2) Σ_{j∈Ω} d^j

The mask's maps are targets: computed without gradient, so only the ROI branch learns to put its
activation where the lesion is.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from mammocad.models.activation_maps import activation_map

#: Keeps the normalisation finite for an all-zero map (e.g. a mask branch that is silent).
EPS = 1e-12


def map_distance(mask_map: torch.Tensor, roi_map: torch.Tensor) -> torch.Tensor:
    """``d^j`` per sample for activation maps (B, H, W) (or (H, W)); returns (B,) (or a scalar).

    Both maps are flattened and scaled to unit L2 norm; ``d`` is the L2 distance between them, in
    [0, 2] (0 for maps equal up to a positive scale). Maps of different sizes are refused.
    """
    if mask_map.shape != roi_map.shape:
        raise ValueError(f"activation maps differ in shape: {tuple(mask_map.shape)} vs {tuple(roi_map.shape)}")
    single = mask_map.ndim == 2
    mask_flat = mask_map.reshape(1 if single else mask_map.shape[0], -1).float()
    roi_flat = roi_map.reshape(1 if single else roi_map.shape[0], -1).float()
    mask_unit = mask_flat / mask_flat.norm(dim=1, keepdim=True).clamp_min(EPS)
    roi_unit = roi_flat / roi_flat.norm(dim=1, keepdim=True).clamp_min(EPS)
    distance = (mask_unit - roi_unit).norm(dim=1)
    return distance[0] if single else distance


def knowledge_transfer_loss(
    mask_activations: Mapping[str, torch.Tensor],
    roi_activations: Mapping[str, torch.Tensor],
    beta: float,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(β/2) Σ_j d^j`` averaged over the batch, and the per-layer mean ``d^j`` (detached).

    Args:
        mask_activations: layer name -> activations (B, C, H, W) of the mask images (detached here).
        roi_activations: the same layers' activations of the ROI images (gradients flow).
        beta: the weight β (>= 0).
        weights: optional (B,) 0/1 weights: samples without a lesion mask get 0 and add nothing;
            the mean is over the weighted samples (0 when none has a mask).

    Returns:
        (loss scalar, {layer: mean d^j over the weighted samples}).
    """
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if set(mask_activations) != set(roi_activations):
        raise ValueError(f"layers differ: {sorted(mask_activations)} vs {sorted(roi_activations)}")
    if not roi_activations:
        raise ValueError("knowledge transfer needs at least one layer")
    per_sample: torch.Tensor | None = None
    parts: dict[str, torch.Tensor] = {}
    for name, roi in roi_activations.items():
        target = activation_map(mask_activations[name].detach())
        distance = map_distance(target, activation_map(roi))
        per_sample = distance if per_sample is None else per_sample + distance
        parts[name] = _weighted_mean(distance.detach(), weights)
    assert per_sample is not None
    return 0.5 * beta * _weighted_mean(per_sample, weights), parts


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:
        return values.mean()
    weights = weights.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)
