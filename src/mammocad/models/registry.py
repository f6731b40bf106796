"""``create_model``: build a registered model (or any timm name) by name, as a MammoNet.

Builders are registered with their default head in ``models/builders.py``
(``register_model(name, default_head=...)``); a builder is called as ``builder(num_classes=,
in_chans=, pretrained=, head=, drop_rate=, se_reduction=, **kwargs)`` with ``head`` already resolved
(the registered default when the caller gave none) and returns a MammoNet. Names not registered
but known to timm (``timm.list_models()``) pass through to timm with the ``gap`` head.
"""

from __future__ import annotations

import difflib
import functools
import operator
from pathlib import Path
from typing import Any

from mammocad.errors import ConfigError
from mammocad.models.backbones import build_timm_net
from mammocad.models.batch_norm import remove_batch_norm
from mammocad.models.builders import (
    TIMM_DEFAULT_HEAD,
    ModelBuilder,
    RegisteredModel,
    list_models,
    register_model,
    registered_model,
)
from mammocad.models.heads import HEADS, list_heads
from mammocad.models.net import MammoNet
from mammocad.models.weights import load_net_or_backbone_weights

__all__ = [
    "ModelBuilder",
    "create_model",
    "default_head",
    "is_timm_model",
    "list_models",
    "model_input_size",
    "register_model",
]


def is_timm_model(name: str) -> bool:
    """Whether ``name`` (optionally ``arch.tag``) is a timm architecture."""
    import timm

    arch = name.split(".", 1)[0]
    return arch in set(timm.list_models())


def create_model(
    name: str,
    num_classes: int,
    in_chans: int = 1,
    pretrained: bool | str = False,
    weights: str | Path | None = None,
    head: str | None = None,
    drop_rate: float = 0.5,
    se_reduction: int = 16,
    batch_norm: bool = True,
    **kwargs: Any,
) -> MammoNet:
    """Build model ``name`` as a MammoNet.

    Args:
        name: a registered name (``list_models()``) or any timm model name.
        num_classes: number of output logits.
        in_chans: input channels (1 for grey mammograms).
        pretrained: False, True (ImageNet weights via timm's hub; EfficientNet-Lite0 falls back to
            its offline copy) or ``"offline"`` (offline weights only). Ignored when ``weights`` is given.
        weights: a local ``.safetensors`` / PyTorch state-dict file. Loaded into the whole MammoNet
            when its keys are MammoNet keys (``backbone.*``, ``head.*``), else into the backbone only
            (e.g. a timm ImageNet checkpoint; the original classifier is dropped, the first conv
            adapted to ``in_chans``).
        head: a head name (``list_heads()``); None = the model's default.
        drop_rate: dropout before the final Linear.
        se_reduction: SEVector reduction r (heads with SE).
        batch_norm: False replaces every BatchNorm with a per-channel affine layer (the batch-norm
            ablation; see ``models/batch_norm.py``).
        kwargs: ``input_size`` (default input side; the Flatten head is built for it) and, for timm
            models, extra ``timm.create_model`` keywords (e.g. ``drop_path_rate``).

    Raises ConfigError for unknown names, bad values or a weights file that does not fit;
    MammocadError when pretrained weights cannot be fetched.
    """
    num_classes = _positive_int("num_classes", num_classes)
    in_chans = _positive_int("in_chans", in_chans)
    if head is not None and head not in HEADS:
        raise ConfigError(f"unknown head {head!r}; valid heads: {', '.join(list_heads())}")
    if weights is not None:
        pretrained = False  # the local file replaces any download
    model = _resolve(name)
    net = model.builder(
        num_classes=num_classes,
        in_chans=in_chans,
        pretrained=pretrained,
        head=head or model.default_head,
        drop_rate=drop_rate,
        se_reduction=se_reduction,
        **kwargs,
    )
    if not batch_norm:
        remove_batch_norm(net)
        net._extra_config["batch_norm"] = False  # model.json rebuilds the same architecture
    if weights is not None:
        load_net_or_backbone_weights(net, weights)
    return net


def model_input_size(image_size: int | tuple[int, int] | list[int]) -> int | None:
    """The model's ``input_size`` for a preprocessing ``image_size`` (an int or ``(h, w)``).

    The one rule every stage uses: a square input gives its side (the Flatten head is built for
    it); a non-square input gives None (heads that need a fixed size refuse it when built).
    """
    if isinstance(image_size, int):
        return image_size
    height, width = (int(v) for v in image_size)
    return height if height == width else None


def default_head(name: str, input_size: int | None = None) -> str:
    """The head ``create_model(name)`` uses when no ``head`` is given (a registry look-up, nothing built).

    Only a model registered without a ``default_head`` is built to learn it, on the meta device (no
    weights allocated), with ``input_size`` if given. Raises ConfigError for a name that is neither
    registered nor a timm model.
    """
    declared = _resolve(name).default_head
    if declared is not None:
        return declared
    import torch

    extra: dict[str, Any] = {} if input_size is None else {"input_size": input_size}
    with torch.device("meta"):
        return create_model(name, num_classes=2, in_chans=1, **extra).head_name


def _resolve(name: str) -> RegisteredModel:
    """The registration of ``name``; a timm name that is not registered passes through with the ``gap`` head."""
    model = registered_model(name)
    if model is not None:
        return model
    if not is_timm_model(name):
        raise ConfigError(_unknown_model_message(name))
    return RegisteredModel(functools.partial(build_timm_net, name=name, timm_name=name), TIMM_DEFAULT_HEAD)


def _positive_int(field: str, value: Any) -> int:
    """``value`` as an int >= 1 (numpy integers accepted; bools and floats refused)."""
    try:
        number = operator.index(value)
    except TypeError:
        number = None
    if number is None or isinstance(value, bool) or number < 1:
        raise ConfigError(f"{field} must be a positive integer, got {value!r}")
    return number


def _unknown_model_message(name: str) -> str:
    import timm

    candidates = list_models() + timm.list_models()
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.75)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return (
        f"unknown model {name!r}; registered models: {', '.join(list_models())}. "
        f"Any timm model name (timm.list_models()) also works, but {name!r} is not one either.{hint}"
    )
