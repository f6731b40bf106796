"""One pydantic config describes a training run; the run directory keeps its resolved copy."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mammocad.errors import ConfigError
from mammocad.io import read_config_file
from mammocad.parse import echo, parse_int
from mammocad.preprocess import PreprocessConfig

#: The classification tasks a run can learn (``training.data.task_classes`` maps each to its classes).
Task = Literal["3class", "benign-malignant", "normal-abnormal", "birads", "label"]
TASKS: tuple[str, ...] = get_args(Task)


class _Strict(BaseModel):
    # No NaN or infinity anywhere: "--set train.lr=.inf" would train on garbage and fail epochs later.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class DataConfig(_Strict):
    dataset: Path = Field(..., description="Dataset directory (from `mammocad data import`).")
    split: str = Field("default", description="Split name under <dataset>/splits/.")
    fold: int | None = Field(
        None, description="Cross-validation fold held out for validation (uses the split's `fold` column)."
    )
    task: Task = Field(
        "3class",
        description="3class: normal/benign/malignant; benign-malignant and normal-abnormal: binary; "
        "birads: BI-RADS classes; label: the dataset's own label_name classes.",
    )
    cache_in_memory: bool = Field(True, description="Hold the decoded cached images in RAM.")
    refit: bool = Field(
        False,
        description="Final-model protocol: train on every non-blind image (train + val + test) for a fixed number "
        "of epochs chosen by cross-validation. The val split is still scored each epoch, but it is inside the "
        "training data, so early stopping must be off (train.early_stopping_patience: null).",
    )


class ModelConfig(_Strict):
    name: str = Field("baseline_cnn", description="Registered model name or any timm model name.")
    head: str | None = Field(None, description="Head name (None: the model's default head).")
    pretrained: bool | Literal["offline"] = Field(
        False, description="Load ImageNet weights (hub; offline source for efficientnet_lite0)."
    )
    weights: Path | None = Field(None, description="Local .safetensors/.pth weights to start from.")
    drop_rate: float = Field(0.5, ge=0, lt=1)
    se_reduction: int = Field(16, ge=1)
    batch_norm: bool = Field(True, description="False: BatchNorm layers become per-channel affine (ablation).")
    in_chans: int = Field(1, ge=1, le=3)
    freeze_all_but_last: int | None = Field(None, ge=0, description="Train only the backbone's last N layers (+ head).")
    trainable_stages: list[str] | None = Field(None, description="Train only these backbone stages (+ head).")
    backbone: str | None = Field(
        None, description="lesion_aware only: the backbone run densely over the film (default efficientnet_lite0)."
    )


class AugmentConfig(_Strict):
    hflip: float = Field(0.5, ge=0, le=1, description="Probability of a horizontal flip.")
    vflip: float = Field(0.5, ge=0, le=1, description="Probability of a vertical flip.")
    rotate_p: float = Field(0.5, ge=0, le=1)
    rotate_degrees: float = Field(15.0, ge=0, le=180)
    brightness_p: float = Field(0.5, ge=0, le=1)
    brightness: float = Field(0.1, ge=0, le=1, description="Max additive brightness shift (in [0,1] units).")
    contrast_p: float = Field(0.5, ge=0, le=1)
    contrast: float = Field(0.2, ge=0, le=1, description="Max relative contrast change.")


class TrainConfig(_Strict):
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    lr_patience: int = Field(5, ge=0, description="ReduceLROnPlateau patience (epochs).")
    lr_factor: float = Field(0.5, gt=0, lt=1)
    early_stopping_patience: int | None = Field(
        10, ge=1, description="Epochs without val-loss improvement (None: off)."
    )
    restore_best_weights: bool = Field(
        True,
        description="End with the weights of the lowest validation loss (Keras' restore_best_weights). False: keep "
        "the last epoch's weights, so scoring the validation split involves no choice made on it (fixed-epoch CV).",
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    lambda_fs: float = Field(0.0, ge=0, description="Weight of the Feature Smoothing Loss.")
    kt_beta: float = Field(
        0.0,
        ge=0,
        description="Mask-guided knowledge transfer weight β (Li & Zwiggelaar, 2024): adds (β/2) Σ_j d^j between the activation "
        "maps of each image's lesion mask and of the image; 0 = off. Needs a dataset with lesion masks.",
    )
    kt_layers: list[str] | None = Field(
        None,
        description="Layer groups Ω for knowledge transfer (names from the model's stage_names(), with or without "
        "'backbone.', or indices such as -1); None = the last layer group, as in Li & Zwiggelaar (2024).",
    )
    class_weights: bool = Field(True, description="Balanced class weights in the cross-entropy.")
    sampler: Literal["none", "weighted"] = Field(
        "none", description="weighted: oversample rare classes (with augmentation)."
    )
    target_share: dict[str, float] | None = Field(
        None, description="Oversample these classes (with augmentation) up to this share of each training epoch."
    )
    accumulate_grad_batches: int = Field(1, ge=1)
    precision: str = Field(
        "auto",
        description="auto: bf16-mixed (fp32 master weights) on GPUs and on CPUs with native bf16 (AVX-512 BF16, "
        "AMX), 32-true elsewhere; or any Lightning precision. A new run's config.yaml records what auto chose.",
    )
    accelerator: str = Field("auto")
    devices: int | str | list[int] = Field("auto")
    strategy: str = Field("auto", description="Lightning strategy, e.g. ddp for several GPUs.")
    num_nodes: int = Field(
        1,
        ge=1,
        description="Machines taking part in DDP (torchrun --nnodes); train.devices counts the processes per machine.",
    )
    num_workers: int = Field(0, ge=0)
    seed: int = 0
    deterministic: bool = False
    channels_last: bool = Field(True, description="NHWC memory format (faster convolutions on CPU and GPU).")
    compile: bool = Field(
        False,
        description="torch.compile the model: faster steps after a one-off compile (tens of seconds to minutes); "
        "pays on long runs (see `mammocad bench train --compile`).",
    )

    @field_validator("devices")
    @classmethod
    def _devices(cls, value: int | str | list[int]) -> int | str | list[int]:
        accepted = "give auto, a device count (1, 2, ...; -1: all) or device indices such as [0, 1] or '0,1'"
        if isinstance(value, list):
            if not value or any(index < 0 for index in value):
                raise ValueError(accepted)
            return value
        if isinstance(value, str):
            text = value.strip()
            if text == "auto":
                return text
            count = parse_int(text)  # ASCII digits only ("²".isdigit() is True, int("²") raises)
            if count is None:
                indices = [parse_int(part) for part in text.split(",") if part.strip()]
                if not indices or any(index is None or index < 0 for index in indices):
                    raise ValueError(f"{echo(value)}: {accepted}")
                return text
            value = count
        if value < 1 and value != -1:
            raise ValueError(f"{value} devices: {accepted}")
        return value

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, value: str) -> str:
        if value in _COMMON_STRATEGIES:
            return value
        from lightning.pytorch.strategies import StrategyRegistry  # only for unusual names: a slow import

        known = StrategyRegistry.available_strategies()
        if value not in known:
            raise ValueError(f"unknown Lightning strategy {echo(value)}; choose auto or one of {', '.join(known)}")
        return value


# Strategy names accepted without importing Lightning to check its registry.
_COMMON_STRATEGIES = frozenset(
    {"auto", "ddp", "ddp_spawn", "ddp_fork", "ddp_notebook", "fsdp", "deepspeed", "single_device"}
)


class LesionConfig(_Strict):
    """The lesion-aware model (``model.name: lesion_aware``): patch stage, then film stage.

    The patch stage trains for ``train.epochs`` on patches cut from the cached films (so the
    preprocessing ``image_size`` is the working resolution); the film stage fits the learned
    aggregation on whole-film labels with the patch network frozen.
    """

    patch_size: int = Field(96, ge=16, le=1024, description="Patch side in preprocessed pixels (the heatmap window).")
    aggregation: Literal["max", "topk", "noisy_or", "learned"] = Field(
        "learned", description="Heatmap → image classes: max, top-k mean, noisy-OR over top-k, or a learned stage."
    )
    top_k: int = Field(4, ge=1, description="Windows used by topk and noisy_or.")
    tta_flip: bool = Field(True, description="Average the heatmaps of the film and its mirror image.")
    lesion_patches: int = Field(8, ge=1, description="Patches per located lesion film per epoch.")
    background_patches: int = Field(8, ge=1, description="Background patches per film per epoch.")
    hard_negative_fraction: float = Field(
        0.5, ge=0, le=1, description="Share of background patches drawn where the model sees a lesion (mining)."
    )
    hard_negative_every: int = Field(1, ge=1, description="Re-mine hard negatives every N epochs.")
    jitter: float = Field(0.25, ge=0, le=1, description="Max shift of a lesion patch centre, in patch sides.")
    scale: float = Field(0.15, ge=0, lt=1, description="Max relative zoom of a patch.")
    rotate: bool = Field(True, description="Rotate patches by a random angle.")
    film_weight_decay: float = Field(
        0.01, ge=0, description="L2 penalty of the learned aggregation (the film stage fits few films)."
    )
    bilateral: bool = Field(
        False,
        description="The learned aggregation also reads the other breast's film (same patient and view): "
        "its heatmap statistics minus this film's. Needs aggregation: learned.",
    )


class PredictConfig(_Strict):
    """How predictions are reported (stored in the run's calibration.json at the end of training)."""

    calibrate: bool = Field(
        True, description="Fit a temperature on the val split at the end of training (calibrated probabilities)."
    )
    min_probability: float = Field(
        0.5, ge=0.0, le=1.0, description="Below this top probability a prediction is reported as 'indeterminate'."
    )
    min_margin: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="Below this margin between the top two probabilities a prediction is 'indeterminate'.",
    )


class OutputConfig(_Strict):
    runs_dir: Path = Field(Path("runs"), description="Parent folder of run directories.")
    name: str | None = Field(None, description="Run name prefix (default: the model name).")
    mlflow: bool = True
    mlflow_tracking_uri: str | None = Field(
        None, description="Default: $MLFLOW_TRACKING_URI, else sqlite:///<runs_dir>/mlflow.db."
    )
    experiment: str = "mammocad"


class RunConfig(_Strict):
    """Everything a training run needs; saved as ``config.yaml`` in the run directory."""

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        if self.data.refit and self.data.fold is not None:
            raise ValueError("data.refit trains on every fold; it cannot be combined with data.fold")
        if self.data.refit and (self.train.early_stopping_patience or self.train.restore_best_weights):
            raise ValueError(
                "data.refit puts the val split inside training: set train.early_stopping_patience: null and "
                "train.restore_best_weights: false (the epoch count comes from cross-validation)"
            )
        if self.model.name == "lesion_aware" and self.train.lambda_fs > 0:
            raise ValueError(
                "lesion_aware trains on patches; the Feature Smoothing Loss (train.lambda_fs) does not apply"
            )
        if self.model.name == "lesion_aware" and self.train.kt_beta > 0:
            raise ValueError("lesion_aware learns from the masks directly; set train.kt_beta: 0")
        if self.lesion is not None and self.model.name != "lesion_aware":
            raise ValueError("the lesion section needs model.name: lesion_aware")
        if self.lesion is not None and self.lesion.bilateral and self.lesion.aggregation != "learned":
            raise ValueError("lesion.bilateral is read by the learned aggregation: set lesion.aggregation: learned")
        return self

    data: DataConfig
    preprocess: PreprocessConfig = PreprocessConfig()
    model: ModelConfig = ModelConfig()
    augment: AugmentConfig = AugmentConfig()
    train: TrainConfig = TrainConfig()
    lesion: LesionConfig | None = Field(None, description="lesion_aware options (None: the defaults).")
    output: OutputConfig = OutputConfig()
    predict: PredictConfig = PredictConfig()

    def lesion_options(self) -> LesionConfig | None:
        """The lesion-aware options when the model is ``lesion_aware`` (defaults if unset), else None."""
        if self.model.name != "lesion_aware":
            return None
        return self.lesion or LesionConfig()


def set_dotted(values: dict[str, Any], dotted: str, value: Any) -> None:
    """``set_dotted(d, "train.lr", 1e-3)`` sets ``d["train"]["lr"]``."""
    keys = dotted.split(".")
    node = values
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {key!r} is not a section")
    node[keys[-1]] = value


def flatten_dotted(
    values: dict[str, Any], prefix: str = "", *, keep: tuple[str, ...] = (), empty_as_value: bool = True
) -> dict[str, Any]:
    """Nested dicts as one level of dotted keys (``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}``); the
    inverse of :func:`set_dotted`.

    ``keep``: keys whose dict value stays one value (``target_share``: a class -> share mapping).
    ``empty_as_value``: an empty dict is a value of its own (False: it disappears).
    """
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and key not in keep and (value or not empty_as_value):
            flat.update(flatten_dotted(value, f"{name}.", keep=keep, empty_as_value=empty_as_value))
        else:
            flat[name] = value
    return flat


def load_run_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML/JSON run config and apply dotted overrides; errors name the field and why."""
    values: dict[str, Any] = read_config_file(path) if path is not None else {}
    for key, value in (overrides or {}).items():
        set_dotted(values, key, value)
    try:
        return RunConfig(**values)
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]
        raise ConfigError("invalid run configuration\n" + "\n".join(lines)) from exc


def dump_run_config(config: RunConfig) -> str:
    """The resolved config as YAML."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
