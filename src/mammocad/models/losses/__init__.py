"""Losses: class-weighted cross-entropy with the Feature Smoothing Loss."""

from mammocad.models.losses.classification import ClassificationLoss, balanced_class_weights
from mammocad.models.losses.feature_smoothing import feature_smoothing_loss

__all__ = ["ClassificationLoss", "balanced_class_weights", "feature_smoothing_loss"]
