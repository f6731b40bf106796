"""Save and load model weights: safetensors out, safetensors or (tensor-only) PyTorch files in.

Rules:
- Saving writes ``.safetensors`` atomically (a crash never leaves half a file); a MammoNet's
  ``config()`` goes into the file's metadata (``read_weights_config``) so the architecture can be
  rebuilt from the file alone.
- Loading never unpickles arbitrary objects: PyTorch files are read with
  ``torch.load(..., weights_only=True)``, which refuses anything but tensors and plain containers.
- A file may hold a plain state dict or a dict with a ``"state_dict"`` / ``"model"`` /
  ``"model_state_dict"`` entry; ``module.`` (DataParallel) and ``_orig_mod.`` (torch.compile)
  prefixes are stripped, and so is one wrapper prefix shared by every key (e.g. a Lightning
  module's ``model.``) when that is what makes the keys fit.
- A file that does not fit raises ConfigError naming the missing, unexpected and shape-mismatched
  keys (the first 10 of each, with counts).
"""

from __future__ import annotations

import json
import pickle
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mammocad.errors import ConfigError
from mammocad.io import atomic_write_bytes

CONFIG_METADATA_KEY = "mammocad_config"
_WRAPPER_ENTRIES = ("state_dict", "model", "model_state_dict")
_ALWAYS_STRIPPED = ("module.", "_orig_mod.")
_SHOWN = 10


@dataclass(frozen=True)
class LoadResult:
    """Keys the model expected but the file lacked, and keys the file had that the model lacks."""

    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)


def save_weights(model: nn.Module, path: str | Path, metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``model``'s state dict to ``path`` as safetensors, atomically; returns the path.

    A MammoNet's ``config()`` is stored as JSON under the metadata key ``mammocad_config``;
    ``metadata`` adds string entries of your own.
    """
    from safetensors.torch import save

    # clone: safetensors refuses tensors that share storage (tied weights, views)
    tensors = {key: value.detach().to("cpu").contiguous().clone() for key, value in model.state_dict().items()}
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    config = getattr(model, "config", None)
    if callable(config):
        meta[CONFIG_METADATA_KEY] = json.dumps(config(), sort_keys=True, default=str)
    return atomic_write_bytes(path, save(tensors, metadata=meta or None))


def read_weights_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a ``.safetensors`` file ({} when it has none)."""
    from safetensors import SafetensorError, safe_open

    path = _existing_file(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise ConfigError(f"{path}: not a readable safetensors file ({err})") from err


def read_weights_config(path: str | Path) -> dict[str, Any] | None:
    """The MammoNet ``config()`` stored by ``save_weights`` in a safetensors file, or None."""
    text = read_weights_metadata(path).get(CONFIG_METADATA_KEY)
    if text is None:
        return None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: metadata {CONFIG_METADATA_KEY!r} is not valid JSON ({err})") from err
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: metadata {CONFIG_METADATA_KEY!r} is not a JSON object")
    return config


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict (name -> tensor, on CPU) from a ``.safetensors`` or PyTorch file.

    Raises ConfigError naming the file when it is missing, corrupt, holds pickled non-tensor
    objects (refused: weights_only), or is not a mapping of names to tensors.
    """
    path = _existing_file(path)
    if _looks_like_safetensors(path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise ConfigError(f"{path}: corrupt or unreadable safetensors file ({err})") from err
    else:
        state = _torch_load_tensors_only(path)
    return _strip_prefixes(_unwrap(state, path))


def load_weights(model: nn.Module, path: str | Path, strict: bool = True) -> LoadResult:
    """Load the weights in ``path`` into ``model`` (any nn.Module, usually a whole MammoNet).

    ``strict=True``: every key must be present on both sides. ``strict=False``: missing and
    unexpected keys are allowed and reported in the result. Shape mismatches always raise.
    Raises ConfigError naming the file and the offending keys.
    """
    state = read_state_dict(path)
    state = _fit_wrapper_prefix(state, model.state_dict().keys())
    return load_checked(model, state, strict=strict, source=str(path), target=_describe(model))


def load_net_or_backbone_weights(net: nn.Module, path: str | Path) -> str:
    """Load ``path`` into a whole MammoNet, or into its backbone only; returns ``"net"`` or ``"backbone"``.

    The file is a whole-net checkpoint when its keys (after prefix stripping) start with
    ``backbone.`` or ``head.`` — then it must fit the net exactly. Otherwise it is taken as a
    backbone checkpoint (e.g. timm/ImageNet weights): the classifier of the original model is
    dropped, an RGB first conv is adapted to ``in_chans`` (summed over colour channels for grey
    input, as timm does) and the rest must fit the backbone exactly.
    """
    state = read_state_dict(path)
    state = _fit_wrapper_prefix(state, net.state_dict().keys())
    if any(key.startswith(("backbone.", "head.")) for key in state):
        load_checked(net, state, strict=True, source=str(path), target=_describe(net))
        return "net"
    backbone = net.get_submodule("backbone")
    load_checked(
        backbone,
        fit_backbone_state_dict(backbone, state),
        strict=True,
        source=str(path),
        target=f"the backbone of {_describe(net)}",
    )
    return "backbone"


def fit_backbone_state_dict(backbone: nn.Module, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Adapt a full-model checkpoint to a headless backbone.

    Drops the original classifier (``pretrained_cfg["classifier"]``) and timm ``pre_logits`` keys
    that the backbone lacks, and adapts the first conv's input channels with timm's
    ``adapt_input_conv`` (RGB -> grey: sum over the colour channels). Other keys are untouched, so
    a checkpoint that really does not fit still fails the strict load that follows.
    """
    expected = backbone.state_dict()
    cfg = getattr(backbone, "pretrained_cfg", None) or {}
    head_prefixes = [f"{name}." for name in _as_names(cfg.get("classifier"))] + ["pre_logits."]
    fitted = {
        key: value
        for key, value in state.items()
        if key in expected or not any(key.startswith(prefix) for prefix in head_prefixes)
    }
    first_convs = _as_names(cfg.get("first_conv")) or _first_conv_guess(expected)
    for conv in first_convs:
        key = f"{conv}.weight"
        if key not in fitted or key not in expected:
            continue
        have, want = fitted[key], expected[key]
        only_input_channels_differ = (
            have.ndim == 4
            and want.ndim == 4
            and have.shape[1] != want.shape[1]
            and have.shape[0] == want.shape[0]
            and have.shape[2:] == want.shape[2:]
        )
        if only_input_channels_differ:
            from timm.models import adapt_input_conv

            fitted[key] = adapt_input_conv(int(want.shape[1]), have, base_chans=int(have.shape[1]))
    return fitted


def load_checked(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    strict: bool = True,
    source: str = "state dict",
    target: str = "the model",
) -> LoadResult:
    """``module.load_state_dict(state)`` with a ConfigError that lists what does not fit.

    BatchNorm ``num_batches_tracked`` counters may be absent from ``state`` (older checkpoints
    and converted weights omit them); they are not reported as missing.
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in state
        if k in expected and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if mismatched or (strict and (missing or unexpected)):
        parts = [f"{source}: weights do not fit {target}"]
        if missing:
            parts.append(_listing("missing keys", missing))
        if unexpected:
            parts.append(_listing("unexpected keys", unexpected))
        if mismatched:
            parts.append(_listing("shape mismatches", mismatched))
        raise ConfigError("; ".join(parts))
    module.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    return LoadResult(missing_keys=missing, unexpected_keys=unexpected)


# --- helpers -----------------------------------------------------------------------------------


def _existing_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: weights file not found")
    if not path.is_file():
        raise ConfigError(f"{path}: not a file (expected a .safetensors or PyTorch weights file)")
    return path


def _looks_like_safetensors(path: Path) -> bool:
    """By suffix, or by content: an 8-byte little-endian header length, then a JSON header."""
    if path.suffix.lower() == ".safetensors":
        return True
    with path.open("rb") as handle:
        head = handle.read(9)
    if len(head) < 9:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and 8 + header_len <= path.stat().st_size


def _torch_load_tensors_only(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" not in str(err):  # malformed pickle data, not a refused object
            raise ConfigError(f"{path}: not a readable PyTorch weights file ({_weights_only_reason(err)})") from err
        raise ConfigError(
            f"{path}: refused: the file holds pickled Python objects other than tensors "
            f"(mammocad loads weights with weights_only=True and never unpickles arbitrary code; "
            f"re-save it as a plain state dict or .safetensors) [{_weights_only_reason(err)}]"
        ) from err
    except Exception as err:  # torch.load meets garbage with many error types (IndexError, RuntimeError ...)
        raise ConfigError(f"{path}: not a readable PyTorch weights file ({type(err).__name__}: {err})") from err


def _weights_only_reason(err: BaseException) -> str:
    """The one informative line of torch's long weights_only message."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if "Unsupported" in line:
            return line.split(" was not an allowed global")[0]
    return lines[-1] if lines else type(err).__name__


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and not _all_tensors(obj.values()):
        for entry in _WRAPPER_ENTRIES:
            inner = obj.get(entry)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if not isinstance(obj, Mapping):
        raise ConfigError(f"{path}: expected a state dict (name -> tensor), found {type(obj).__name__}")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ConfigError(f"{path}: not a state dict: {len(bad)} entries are not name -> tensor (e.g. {bad[:3]})")
    if not obj:
        raise ConfigError(f"{path}: the state dict is empty")
    return dict(obj)


def _all_tensors(values: Iterable[Any]) -> bool:
    return all(isinstance(v, torch.Tensor) for v in values)


def _strip_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in _ALWAYS_STRIPPED:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        out[key] = value
    return out


def _fit_wrapper_prefix(state: dict[str, torch.Tensor], expected: Iterable[str]) -> dict[str, torch.Tensor]:
    """Strip one leading component shared by every key (``model.``, ``net.`` ...) if that makes keys fit."""
    expected = set(expected)
    if not state or any(key in expected for key in state):
        return state
    first = {key.split(".", 1)[0] for key in state}
    if len(first) != 1 or not all("." in key for key in state):
        return state
    stripped = {key.split(".", 1)[1]: value for key, value in state.items()}
    return stripped if any(key in expected for key in stripped) else state


def _as_names(value: Any) -> list[str]:
    if not value:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _first_conv_guess(expected: Mapping[str, torch.Tensor]) -> list[str]:
    for key, value in expected.items():
        if key.endswith(".weight") and value.ndim == 4:
            return [key[: -len(".weight")]]
    return []


def _describe(model: nn.Module) -> str:
    name = getattr(model, "name", None)
    return f"model {name!r}" if isinstance(name, str) else type(model).__name__


def _listing(label: str, keys: list[str]) -> str:
    more = f", ... ({len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
    return f"{len(keys)} {label}: {', '.join(keys[:_SHOWN])}{more}"
