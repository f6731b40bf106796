"""The variants of an ablation study: toggles that remove one component, custom overrides, the ablations file.

Each toggle (:data:`TOGGLES`) turns a config into the overrides that remove its component, and
refuses (ConfigError) a config that has nothing to remove; :func:`variants` validates every variant
before anything trains.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mammocad.errors import ConfigError
from mammocad.io import read_config_file
from mammocad.models.heads import head_without, heads_with
from mammocad.training.config import RunConfig, flatten_dotted, load_run_config

#: The full model's variant name (every other variant is compared with it).
REFERENCE = "full"


def _head(config: RunConfig) -> str:
    """The head the model will really use (its default when ``model.head`` is unset)."""
    if config.model.head:
        return config.model.head
    from mammocad.models import default_head, model_input_size

    return default_head(config.model.name, model_input_size(config.preprocess.image_size))


def _dropout(config: RunConfig) -> dict[str, Any]:
    if config.model.drop_rate == 0:
        raise ConfigError("dropout: model.drop_rate is 0 already")
    return {"model.drop_rate": 0.0}


def _batch_norm(config: RunConfig) -> dict[str, Any]:
    if not config.model.batch_norm:
        raise ConfigError("batch_norm: model.batch_norm is false already")
    return {"model.batch_norm": False}


def _augmentation(config: RunConfig) -> dict[str, Any]:
    lesion = config.lesion_options()
    if lesion is not None:  # patches are augmented by their sampling: shift, rotation, zoom
        if not (lesion.rotate or lesion.scale or lesion.jitter):
            raise ConfigError("augmentation: lesion.rotate, lesion.scale and lesion.jitter are off already")
        return {"lesion.rotate": False, "lesion.scale": 0.0, "lesion.jitter": 0.0}
    fields = ("hflip", "vflip", "rotate_p", "brightness_p", "contrast_p")
    if not any(getattr(config.augment, f) for f in fields):
        raise ConfigError("augmentation: every augment probability is 0 already")
    return {f"augment.{f}": 0.0 for f in fields}


def _clahe(config: RunConfig) -> dict[str, Any]:
    if not config.preprocess.clahe:
        raise ConfigError("clahe: preprocess.clahe is false already")
    return {"preprocess.clahe": False}


def _class_weights(config: RunConfig) -> dict[str, Any]:
    train = config.train
    if not train.class_weights and train.sampler == "none" and not train.target_share:
        raise ConfigError("class_weights: no class weighting, weighted sampler or oversampling to remove")
    return {"train.class_weights": False, "train.sampler": "none", "train.target_share": None}


def _without(config: RunConfig, component: str, what: str) -> dict[str, Any]:
    """The head override that removes ``component`` from the model's head (each head declares it)."""
    head = _head(config)
    replacement = head_without(head, component)
    if replacement is None:
        raise ConfigError(
            f"{component}: head {head!r} has no {what} (heads with it: {', '.join(heads_with(component))})"
        )
    return {"model.head": replacement}


def _gagm(config: RunConfig) -> dict[str, Any]:
    return _without(config, "gagm", "GAGM pooling")


def _sevector(config: RunConfig) -> dict[str, Any]:
    return _without(config, "sevector", "SEVector")


def _fsl(config: RunConfig) -> dict[str, Any]:
    if config.train.lambda_fs == 0:
        raise ConfigError("fsl: train.lambda_fs is 0 already (set it > 0 in the full model to ablate FSL)")
    return {"train.lambda_fs": 0.0}


def _knowledge_transfer(config: RunConfig) -> dict[str, Any]:
    if config.train.kt_beta == 0:
        raise ConfigError("knowledge_transfer: train.kt_beta is 0 already (set it > 0 in the full model to ablate KT)")
    return {"train.kt_beta": 0.0}


def _lesion(config: RunConfig, toggle: str) -> Any:
    options = config.lesion_options()
    if options is None:
        raise ConfigError(f"{toggle}: only the lesion_aware model has it (model.name is {config.model.name!r})")
    return options


def _hard_negatives(config: RunConfig) -> dict[str, Any]:
    if _lesion(config, "hard_negatives").hard_negative_fraction == 0:
        raise ConfigError("hard_negatives: lesion.hard_negative_fraction is 0 already")
    return {"lesion.hard_negative_fraction": 0.0}


def _flip_tta(config: RunConfig) -> dict[str, Any]:
    if not _lesion(config, "flip_tta").tta_flip:
        raise ConfigError("flip_tta: lesion.tta_flip is false already")
    return {"lesion.tta_flip": False}


def _learned_aggregation(config: RunConfig) -> dict[str, Any]:
    if _lesion(config, "learned_aggregation").aggregation != "learned":
        raise ConfigError("learned_aggregation: lesion.aggregation is not 'learned'")
    return {"lesion.aggregation": "topk", "lesion.bilateral": False}  # bilateral reading needs the learned stage


def _bilateral(config: RunConfig) -> dict[str, Any]:
    if not _lesion(config, "bilateral").bilateral:
        raise ConfigError("bilateral: lesion.bilateral is false already")
    return {"lesion.bilateral": False}


# toggle name -> config overrides that remove the component from ``config`` (ConfigError: nothing to remove)
TOGGLES: dict[str, Callable[[RunConfig], dict[str, Any]]] = {
    "dropout": _dropout,
    "batch_norm": _batch_norm,
    "augmentation": _augmentation,
    "clahe": _clahe,
    "class_weights": _class_weights,
    "gagm": _gagm,
    "sevector": _sevector,
    "fsl": _fsl,
    "knowledge_transfer": _knowledge_transfer,
    "hard_negatives": _hard_negatives,
    "flip_tta": _flip_tta,
    "learned_aggregation": _learned_aggregation,
    "bilateral": _bilateral,
}


class CustomAblation(BaseModel):
    """A named variant: any config overrides (dotted field -> value)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Variant (and directory) name.")
    set: dict[str, Any] = Field(..., min_length=1, description="Dotted config overrides, e.g. train.lr: 1.0e-3.")


class AblationSpec(BaseModel):
    """An ablations file."""

    model_config = ConfigDict(extra="forbid")
    folds: int | None = Field(None, ge=2)
    seed: int = 0
    ablations: list[str | CustomAblation] = Field(..., min_length=1)


def load_ablations(source: str | Path) -> AblationSpec:
    """An ablations file (YAML/JSON), or a comma-separated list of toggle names (``gagm,sevector,fsl``)."""
    path = Path(source)
    if path.suffix.lower() in (".yaml", ".yml", ".json") or path.exists():
        values = read_config_file(path)
    else:
        values = {"ablations": [name.strip() for name in str(source).split(",") if name.strip()]}
    try:
        return AblationSpec(**values)
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]
        raise ConfigError(f"{source}: invalid ablations\n" + "\n".join(lines)) from exc


def variants(config: RunConfig, spec: AblationSpec) -> dict[str, dict[str, Any]]:
    """``{variant name: overrides}``, the full model (no overrides) first; each variant validated."""
    found: dict[str, dict[str, Any]] = {REFERENCE: {}}
    base = config.model_dump(mode="json")
    for entry in spec.ablations:
        if isinstance(entry, str):
            if entry not in TOGGLES:
                raise ConfigError(f"unknown ablation {entry!r}; toggles: {', '.join(TOGGLES)} (or a custom name + set)")
            name, overrides = f"without-{entry}", TOGGLES[entry](config)
        else:
            name, overrides = entry.name, entry.set
        if name in found:
            raise ConfigError(f"ablation {name!r} is listed twice")
        try:
            variant = load_run_config(None, {**flat_config(base), **overrides})
        except ConfigError as exc:
            raise ConfigError(f"ablation {name!r}: {exc}") from exc
        if variant == config:
            raise ConfigError(f"ablation {name!r} changes nothing in the config")
        found[name] = overrides
    return found


def flat_config(values: dict[str, Any]) -> dict[str, Any]:
    """A config as dotted keys, ``train.target_share`` kept as one mapping (what a variant overrides)."""
    return flatten_dotted(values, keep=("target_share",))


__all__ = [
    "REFERENCE",
    "TOGGLES",
    "AblationSpec",
    "CustomAblation",
    "flat_config",
    "load_ablations",
    "variants",
]
