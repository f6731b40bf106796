"""ImageNet backbones from timm, registered under the papers' names.

Each backbone is ``timm.create_model(name, num_classes=0, global_pool="", in_chans=...)`` — the
original top removed, returning the un-pooled feature map (for ConvNeXt this includes its final
LayerNorm; for VGG16 timm's ``pre_logits`` ConvMlp (the old fc6/fc7) is removed too, so the map is
the 512-channel conv output, like Keras' ``include_top=False``).

Default heads: the transfer-learned backbones of Dahes (2025) were topped with Dense(256) + Dropout,
so the registered backbones default to ``gap_dense``; ``icnt`` (ConvNeXt-Tiny) and ``iiv3``
(Inception-V3) are Dahes (2025)'s improved models with ``gagm_se_dense``; any other timm name gets
``gap``.

Default input side: 224, except Inception-V3 (299) and EfficientNet-Lite1/Lite2 (240/260: the
resolutions their ImageNet weights were trained and evaluated at, timm's ``pretrained_cfg``).
EfficientNet-Lite0/1/2 have ImageNet weights offline (see ``mammocad.models.pretrained``).

Normalisation: timm's ``pretrained_cfg`` mean/std for the architecture; for grey input
(``in_chans=1``) the RGB values are averaged (ImageNet: mean 0.449, std 0.226; Inception /
EfficientNet-Lite / ResNetV2: 0.5, 0.5), matching the summed first-conv weights.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from torch import nn

from mammocad.errors import ConfigError
from mammocad.models.builders import register_model
from mammocad.models.net import MammoNet, assemble_net, measure_feature_map
from mammocad.models.pretrained import create_timm_backbone


@dataclass(frozen=True)
class TimmBackboneSpec:
    """A registered timm backbone: its timm name, default head and default input side."""

    timm_name: str
    default_head: str = "gap_dense"
    input_size: int = 224


TIMM_BACKBONES: dict[str, TimmBackboneSpec] = {
    "convnext_tiny": TimmBackboneSpec("convnext_tiny"),
    "inception_v3": TimmBackboneSpec("inception_v3", input_size=299),
    "vgg16": TimmBackboneSpec("vgg16"),
    "resnet50": TimmBackboneSpec("resnet50"),
    "resnet50v2": TimmBackboneSpec("resnetv2_50"),
    "efficientnet_b0": TimmBackboneSpec("efficientnet_b0"),
    "mobilenetv2": TimmBackboneSpec("mobilenetv2_100"),
    "densenet121": TimmBackboneSpec("densenet121"),
    "efficientnet_lite0": TimmBackboneSpec("tf_efficientnet_lite0"),
    "efficientnet_lite1": TimmBackboneSpec("tf_efficientnet_lite1", input_size=240),
    "efficientnet_lite2": TimmBackboneSpec("tf_efficientnet_lite2", input_size=260),
    "icnt": TimmBackboneSpec("convnext_tiny", default_head="gagm_se_dense"),
    "iiv3": TimmBackboneSpec("inception_v3", default_head="gagm_se_dense", input_size=299),
}


def build_timm_net(
    *,
    name: str,
    timm_name: str,
    num_classes: int,
    head: str,
    in_chans: int = 1,
    pretrained: bool | str = False,
    drop_rate: float = 0.5,
    se_reduction: int = 16,
    input_size: int | None = None,
    registered_input_size: int | None = None,
    **timm_kwargs: Any,
) -> MammoNet:
    """Build a MammoNet on timm backbone ``timm_name`` (see the module docstring for conventions).

    ``head`` is the head name (``create_model`` resolves the registered default).
    ``input_size`` overrides the default side (``registered_input_size`` for registered names,
    else timm's ``pretrained_cfg`` input size); ``timm_kwargs`` go to ``timm.create_model`` and
    into ``config()``.
    """
    backbone = create_timm_backbone(timm_name, in_chans=in_chans, pretrained=pretrained, label=name, **timm_kwargs)
    _remove_pre_logits(backbone)
    cfg = getattr(backbone, "pretrained_cfg", None) or {}
    if input_size is None:
        input_size = registered_input_size or int((cfg.get("input_size") or (3, 224, 224))[-1])
    if registered_input_size is not None:
        channels = int(backbone.num_features)
    else:  # an arbitrary timm model: measure what its headless forward really returns
        try:
            channels = measure_feature_map(backbone, in_chans, input_size)[0]
        except ValueError as err:
            raise ConfigError(f"timm model {name!r} cannot be used: {err}") from err
    mean, std = grey_normalisation(
        cfg.get("mean", (0.485, 0.456, 0.406)), cfg.get("std", (0.229, 0.224, 0.225)), in_chans
    )
    return assemble_net(
        name=name,
        backbone=backbone,
        channels=channels,
        num_classes=num_classes,
        in_chans=in_chans,
        input_size=input_size,
        mean=mean,
        std=std,
        head=head,
        drop_rate=drop_rate,
        se_reduction=se_reduction,
        stage_names=timm_stage_names(backbone),
        extra_config=dict(timm_kwargs),
    )


def grey_normalisation(mean: Any, std: Any, in_chans: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std for ``in_chans`` inputs from the RGB values a backbone was trained with.

    3 channels: unchanged. Otherwise every channel gets the average over the RGB values (a grey
    pixel g fed to summed RGB filters matches an RGB pixel (g, g, g) normalised by the averages).
    """
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if in_chans == len(mean):
        return mean, std
    return (sum(mean) / len(mean),) * in_chans, (sum(std) / len(std),) * in_chans


def timm_stage_names(backbone: nn.Module, prefix: str = "backbone.") -> list[str]:
    """Layer groups of a timm backbone, in definition order, as dotted names (with ``prefix``).

    From ``backbone.feature_info``: each tapped module, plus its parameterised siblings (so
    DenseNet's ``denseblock4`` and Inception's ``Mixed_7a/7b`` are groups too), plus
    parameterised top-level modules outside those (stem, EfficientNet's ``conv_head``, ConvNeXt's
    final norm in ``head``). Groups are disjoint; a model without feature_info gets its
    parameterised top-level children.
    """
    taps = [str(info["module"]) for info in getattr(backbone, "feature_info", None) or [] if info.get("module")]
    chosen: set[str] = set(taps)
    for tap in taps:
        parent_name = tap.rpartition(".")[0]
        parent = backbone.get_submodule(parent_name) if parent_name else backbone
        for child_name, child in parent.named_children():
            if _has_params(child):
                chosen.add(f"{parent_name}.{child_name}" if parent_name else child_name)
    for child_name, child in backbone.named_children():
        covered = any(name == child_name or name.startswith(child_name + ".") for name in chosen)
        if _has_params(child) and not covered:
            chosen.add(child_name)
    order = {name: index for index, (name, _) in enumerate(backbone.named_modules())}
    disjoint = [n for n in chosen if not any(n.startswith(other + ".") for other in chosen if other != n)]
    return [prefix + name for name in sorted((n for n in disjoint if n in order), key=order.__getitem__)]


def _has_params(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def _remove_pre_logits(backbone: nn.Module) -> None:
    """Drop timm's VGG ``pre_logits`` ConvMlp (fc6/fc7 as convs): it is part of the original top."""
    from timm.models.vgg import VGG

    if isinstance(backbone, VGG) and _has_params(backbone.pre_logits):
        backbone.pre_logits = nn.Identity()


def _register(alias: str, spec: TimmBackboneSpec) -> None:
    builder = functools.partial(
        build_timm_net, name=alias, timm_name=spec.timm_name, registered_input_size=spec.input_size
    )
    register_model(alias, default_head=spec.default_head)(builder)


for _alias, _spec in TIMM_BACKBONES.items():
    _register(_alias, _spec)
