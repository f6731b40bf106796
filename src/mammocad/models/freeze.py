"""Partial fine-tuning: freeze the backbone except its last layers or named stages.

- ``freeze_all_but_last(model, n)``: Dahes (2025)'s "unfreeze the last 20 layers". A *layer* is a
  module that directly owns parameters (the analogue of a Keras layer with weights: a conv, a
  BatchNorm, a Linear, a block's layer-scale), counted in definition order (``named_modules``).
  Parameter-free layers (activations, pooling) are not counted, unlike Keras.
- ``freeze_all_but_stages(model, stages)``: Li & Zwiggelaar (2024)'s "only the last dense block + classifier";
  names come from ``model.stage_names()``.
- The head always stays trainable. Both return the number of trainable parameters.

BatchNorm in frozen parts: like Keras, frozen BatchNorm layers should run in inference mode (use
their running statistics, not update them). ``model.train()`` switches every BN back to training
mode, so the trainer calls ``set_frozen_bn_eval(model)`` right after each ``model.train()``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mammocad.errors import ConfigError


def parameterised_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) for every module under ``module`` that directly owns parameters, in definition order."""
    return [
        (name, sub) for name, sub in module.named_modules() if next(sub.parameters(recurse=False), None) is not None
    ]


def count_trainable(model: nn.Module) -> int:
    """Number of parameter elements with ``requires_grad``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def unfreeze_all(model: nn.Module) -> int:
    """Make every parameter trainable; returns the trainable count."""
    for param in model.parameters():
        param.requires_grad_(True)
    return count_trainable(model)


def freeze_all_but_last(model: nn.Module, n_layers: int) -> int:
    """Freeze ``model.backbone`` except its last ``n_layers`` parameterised layers; head trainable.

    ``n_layers=0`` trains the head only; more layers than the backbone has trains everything.
    Returns the number of trainable parameters.
    """
    if not isinstance(n_layers, int) or n_layers < 0:
        raise ConfigError(f"n_layers must be a non-negative integer, got {n_layers!r}")
    backbone = _backbone(model)
    _set_trainable(backbone, False)
    layers = parameterised_layers(backbone)
    for _, layer in layers[len(layers) - n_layers :] if n_layers else []:
        for param in layer.parameters(recurse=False):
            param.requires_grad_(True)
    _set_trainable(_head(model), True)
    return count_trainable(model)


def freeze_all_but_stages(model: nn.Module, stages: Sequence[str]) -> int:
    """Freeze ``model.backbone`` except the named stages (from ``model.stage_names()``); head trainable.

    Raises ConfigError for a name that is not a stage, listing the valid ones. Returns the number
    of trainable parameters.
    """
    valid = list(model.stage_names())
    unknown = [stage for stage in stages if stage not in valid]
    if unknown:
        raise ConfigError(
            f"unknown stage(s) {unknown} for {getattr(model, 'name', 'model')}; valid: {', '.join(valid)}"
        )
    _set_trainable(_backbone(model), False)
    for stage in stages:
        _set_trainable(model.get_submodule(stage), True)
    _set_trainable(_head(model), True)
    return count_trainable(model)


def set_frozen_bn_eval(model: nn.Module) -> int:
    """Put every BatchNorm whose parameters are all frozen into eval mode; returns how many.

    Call after ``model.train()`` (which resets them to training mode). Frozen BN layers then use
    and keep their running statistics, as Keras does for non-trainable BatchNormalization.
    BatchNorm layers without affine parameters count as frozen when their parent's parameters are.
    """
    switched = 0
    for module in model.modules():
        for child in module.children():
            if not isinstance(child, nn.modules.batchnorm._BatchNorm):
                continue
            params = list(child.parameters())
            owner = params or list(module.parameters())
            if owner and not any(p.requires_grad for p in owner):
                child.eval()
                switched += 1
    return switched


def _backbone(model: nn.Module) -> nn.Module:
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise ConfigError(f"{type(model).__name__} has no .backbone to freeze")
    return backbone


def _head(model: nn.Module) -> nn.Module:
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Module):
        raise ConfigError(f"{type(model).__name__} has no .head")
    return head


def _set_trainable(module: nn.Module, trainable: bool) -> None:
    for param in module.parameters():
        param.requires_grad_(trainable)
