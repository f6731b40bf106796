"""Classification loss: (class-weighted, optionally label-smoothed) cross-entropy + λ_fs · L_fs.

Class weights: ``n_samples / (n_classes * count_c)`` ("balanced", as scikit-learn). With these
weights PyTorch's weighted-mean cross-entropy (Σ w_i l_i / Σ w_i per batch) equals the unweighted
mean on a class-balanced set; Keras' ``class_weight`` divides by the batch size instead — the two
agree over a whole epoch because Σ_i w_i = n_samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional

from mammocad.models.losses.feature_smoothing import feature_smoothing_loss


def balanced_class_weights(counts: Sequence[int]) -> torch.Tensor:
    """Per-class weights ``n_samples / (n_present * count_c)`` as a float32 tensor (len(counts),).

    A class with zero samples gets weight 0 (it never appears as a target, and 1/0 is no weight),
    and ``n_present`` counts only classes with samples, so Σ_i w_i over the data stays n_samples.
    Raises ValueError for negative counts or when every count is zero.
    """
    values = [int(c) for c in counts]
    if not values or any(c < 0 for c in values):
        raise ValueError(f"class counts must be non-negative and not empty, got {list(counts)}")
    total = sum(values)
    present = sum(1 for c in values if c > 0)
    if total == 0:
        raise ValueError("every class count is zero; no class weights can be computed")
    return torch.tensor([total / (present * c) if c > 0 else 0.0 for c in values], dtype=torch.float32)


class ClassificationLoss(nn.Module):
    """``L = CE(logits, labels; class_weights, label_smoothing) + lambda_fs * L_fs(features, labels)``.

    Args:
        class_weights: (n_classes,) weights for the cross-entropy (e.g. ``balanced_class_weights``),
            or None. Stored as a buffer, so it follows ``.to(device)``.
        label_smoothing: cross-entropy label smoothing in [0, 1).
        lambda_fs: weight of the Feature Smoothing Loss; 0 disables it (it is still measured when
            features are given, for logging).

    ``forward(logits, labels, features=None)`` returns ``(total, parts)`` with ``parts["ce"]`` and
    ``parts["fs"]`` detached scalars (``fs`` is 0 when no features were given).
    """

    def __init__(
        self, class_weights: torch.Tensor | None = None, label_smoothing: float = 0.0, lambda_fs: float = 0.0
    ) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if lambda_fs < 0:
            raise ValueError(f"lambda_fs must be >= 0, got {lambda_fs}")
        weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32).flatten()
        self.register_buffer("class_weights", weights)
        self.label_smoothing = float(label_smoothing)
        self.lambda_fs = float(lambda_fs)

    def forward(
        self, logits: torch.Tensor, labels: torch.Tensor, features: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(total loss, {"ce": ..., "fs": ...}) for logits (B, K), integer labels (B,), features (B, D)."""
        weight = None if self.class_weights is None else self.class_weights.to(logits.dtype)
        if weight is not None and weight.numel() != logits.shape[1]:
            raise ValueError(f"{weight.numel()} class weights for {logits.shape[1]} logits")
        ce = functional.cross_entropy(logits, labels, weight=weight, label_smoothing=self.label_smoothing)
        if features is None:
            if self.lambda_fs > 0:
                raise ValueError("lambda_fs > 0 needs the penultimate features (model.forward_with_features)")
            fs = torch.zeros((), dtype=ce.dtype, device=ce.device)
            total = ce
        elif self.lambda_fs > 0:
            fs = feature_smoothing_loss(features, labels)
            total = ce + self.lambda_fs * fs
        else:
            with torch.no_grad():
                fs = feature_smoothing_loss(features, labels)
            total = ce
        return total, {"ce": ce.detach(), "fs": fs.detach()}
