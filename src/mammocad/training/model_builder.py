"""The model a run trains, built from its config: architecture, head, lesion-aware options, frozen layers."""

from __future__ import annotations

from typing import Any

import torch

from mammocad.errors import ConfigError
from mammocad.models import create_model, model_input_size
from mammocad.models.freeze import freeze_all_but_last, freeze_all_but_stages
from mammocad.training.config import RunConfig
from mammocad.training.lesion import negative_class


def build_model(config: RunConfig, classes: list[str]) -> torch.nn.Module:
    """A new model for ``config`` with one output per class (ConfigError for contradictory settings)."""
    m = config.model
    num_classes = len(classes)
    input_size = model_input_size(config.preprocess.image_size)
    extra: dict[str, Any] = {"input_size": input_size} if input_size is not None else {}  # the Flatten head needs it
    lesion = config.lesion_options()
    if lesion is not None:
        extra |= {
            "backbone": m.backbone or "efficientnet_lite0",
            "patch_size": lesion.patch_size,
            "aggregation": lesion.aggregation,
            "top_k": lesion.top_k,
            "tta_flip": lesion.tta_flip,
            "bilateral": lesion.bilateral,
            "negative_class": negative_class(classes),
        }
    elif m.backbone is not None:
        raise ConfigError("model.backbone is for model.name: lesion_aware")
    model = create_model(
        m.name,
        num_classes=num_classes,
        in_chans=m.in_chans,
        pretrained=m.pretrained,
        weights=m.weights,
        head=m.head,
        drop_rate=m.drop_rate,
        se_reduction=m.se_reduction,
        batch_norm=m.batch_norm,
        **extra,
    )
    if m.freeze_all_but_last is not None and m.trainable_stages:
        raise ConfigError("model.freeze_all_but_last and model.trainable_stages exclude each other; set one")
    if m.freeze_all_but_last is not None:
        freeze_all_but_last(model, m.freeze_all_but_last)
    elif m.trainable_stages:
        freeze_all_but_stages(model, m.trainable_stages)
    if config.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


__all__ = ["build_model"]
