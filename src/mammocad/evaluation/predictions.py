"""Predictions of a trained run on one split of a dataset, read from the preprocessing cache.

The run's own config says how the images were preprocessed and which task (classes) it learned;
evaluation reuses that config with the dataset to evaluate swapped in, so the same cache entries
training read are scored (no re-decoding, no drift between training and evaluation inputs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from mammocad.devices import inference_autocast
from mammocad.errors import DatasetError, MammocadError
from mammocad.models.heads.dense import DenseClassifier
from mammocad.training.config import RunConfig, load_run_config
from mammocad.training.data import CachedImageDataset, partition, task_frame
from mammocad.training.lesion import contralateral_index, paired_features
from mammocad.training.predict import LoadedRun, load_run

SPLITS = ("train", "val", "test", "blind", "all")


@dataclass
class SplitPredictions:
    """Per-sample predictions of one split, and (optionally) features from named layers.

    ``frame`` columns: ``sample_id``, ``image_id``, ``patient_id``, ``split``, ``label`` (class
    index), ``label_name``, ``p_<class>`` for every class, ``prediction`` (index),
    ``prediction_name``, ``confidence`` (max probability), ``correct``, ``loss`` (negative
    log-likelihood of the true class) and ``image`` (the cached preprocessed PNG).
    ``features`` maps a layer name to an (N, D) array in ``frame`` order.
    """

    classes: list[str]
    split: str
    frame: pd.DataFrame
    features: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def labels(self) -> np.ndarray:
        return self.frame["label"].to_numpy()

    @property
    def probs(self) -> np.ndarray:
        return self.frame[[f"p_{c}" for c in self.classes]].to_numpy(dtype=np.float64)


def run_config(run_dir: str | Path) -> RunConfig:
    """The resolved config a run was trained with (``config.yaml`` in its directory)."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise MammocadError(f"{run_dir}: not a run directory (no config.yaml)")
    return load_run_config(path)


def split_frames(
    run: LoadedRun, config: RunConfig, dataset: str | Path | None, splits: tuple[str, ...]
) -> dict[str, pd.DataFrame]:
    """The cached samples of each of ``splits`` (train/val/test/blind/all) for the run's task on ``dataset``.

    The manifest, split table and cache index are read once for all of them. Raises
    :class:`DatasetError` when the dataset's task classes differ from the run's or a split is
    unknown; a split with no image for the task comes back empty (see :func:`split_frame`).
    """
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise DatasetError(f"unknown split {unknown[0]!r}; choose from {', '.join(SPLITS)}")
    data = config.data.model_copy(update={"dataset": Path(dataset)}) if dataset is not None else config.data
    # Scoring a whole dataset needs no split: an external test set can be imported and evaluated as is.
    classes, frame = task_frame(data, config.preprocess, allow_unsplit="all" in splits)
    if classes != run.classes:
        raise DatasetError(
            f"{data.dataset}: task {data.task!r} gives classes {classes}, but {run.run_dir.name} was trained on "
            f"{run.classes}; evaluate on a dataset with the same classes"
        )
    unsplit = (frame["split"] == "unsplit").all()
    parts = {s: frame.iloc[:0] for s in SPLITS} if unsplit else partition(frame, data.fold, data.split)
    parts["all"] = frame.reset_index(drop=True)
    return {split: parts[split] for split in splits}


def split_frame(run: LoadedRun, config: RunConfig, dataset: str | Path | None, split: str) -> pd.DataFrame:
    """The cached samples of one split; raises :class:`DatasetError` when it holds no image for the task."""
    part = split_frames(run, config, dataset, (split,))[split]
    if part.empty:
        where = dataset if dataset is not None else config.data.dataset
        raise DatasetError(f"{where}: the {split} split has no images for task {config.data.task!r}")
    return part


def default_feature_layers(model: nn.Module) -> list[str]:
    """Layers worth a latent-space look: the backbone's output and each vector stage of the head.

    For the papers' heads that is the pooled vector (GAP or GAGM), the SEVector output and the
    Dense(256) layer; the final classifier and dropout are left out.
    """
    layers = ["backbone"]
    latent = getattr(model.head, "latent_children", None)  # a head may name its own latent stages
    if latent is not None:
        return layers + [f"head.{name}" for name in latent]
    for name, module in model.head.named_children():
        if isinstance(module, (nn.Dropout, nn.Identity)) or name == "fc":
            continue
        layers.append(f"head.{name}.hidden" if isinstance(module, DenseClassifier) else f"head.{name}")
    return layers


@torch.inference_mode()
def predict_frame(
    run: LoadedRun, part: pd.DataFrame, layers: list[str] | None = None, batch_size: int = 32
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Calibrated class probabilities (N, C) for the cached images of ``part`` (the run's temperature
    applied) and the named layers' features.

    Feature maps (B, C, H, W) are global-average pooled to (B, C) so every layer gives vectors.
    """
    logits, features = frame_logits(run, part, layers, batch_size)
    probs = torch.softmax(torch.from_numpy(logits) / getattr(run, "temperature", 1.0), dim=1).numpy()
    return probs, features


@torch.inference_mode()
def frame_logits(
    run: LoadedRun, part: pd.DataFrame, layers: list[str] | None = None, batch_size: int = 32
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The model's raw logits (N, C) for the cached images of ``part`` (before any temperature), and features."""
    model = run.model.eval()
    modules = dict(model.named_modules())
    unknown = [name for name in layers or [] if name not in modules]
    if unknown:
        raise MammocadError(f"unknown layer(s) {unknown}; the model's layers include {default_feature_layers(model)}")
    captured: dict[str, list[np.ndarray]] = {name: [] for name in layers or []}
    seen: set[str] = set()  # layers already captured for the current batch

    def hook_for(name: str) -> Callable[[nn.Module, object, torch.Tensor], None]:
        def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            if name in seen:  # a second pass in one forward (flip TTA): keep the first, unflipped one
                return
            seen.add(name)
            value = output.float()
            if value.ndim == 4:
                value = value.mean(dim=(2, 3))
            captured[name].append(value.flatten(1).cpu().numpy())

        return hook

    handles = [modules[name].register_forward_hook(hook_for(name)) for name in captured]
    dataset = CachedImageDataset(part, model.in_chans, None, in_memory=False)
    # A bilateral lesion-aware model reads each film with its other breast's: first every film's own
    # heatmap statistics, then the pairs (both breasts of a patient are always in the same split).
    bilateral = getattr(getattr(model, "head", None), "bilateral", False)
    outputs: list[torch.Tensor] = []
    try:
        for start in range(0, len(dataset), batch_size):
            batch = torch.stack([dataset[i][0] for i in range(start, min(start + batch_size, len(dataset)))])
            seen.clear()
            with inference_autocast():  # the precision the server predicts in, so metrics describe it
                outputs.append(model.head.own_features(model.heatmap(batch)) if bilateral else model(batch))
    finally:
        for handle in handles:
            handle.remove()
    logits = torch.cat([output.float() for output in outputs])
    if bilateral:
        logits = model.head.classify(paired_features(model.head, logits, contralateral_index(part)))
    return logits.detach().numpy(), {name: np.concatenate(chunks) for name, chunks in captured.items()}


def predict_split(
    run_dir: str | Path,
    dataset: str | Path | None = None,
    split: str = "test",
    layers: list[str] | None = None,
    which: str | None = None,
    batch_size: int = 32,
) -> SplitPredictions:
    """Score ``split`` of ``dataset`` (default: the run's own dataset) with a run's ``which`` weights."""
    run = load_run(run_dir, which)
    config = run_config(run_dir)
    part = split_frame(run, config, dataset, split)
    probs, features = predict_frame(run, part, layers, batch_size)
    return SplitPredictions(run.classes, split, predictions_table(part, probs, run.classes), features)


def predictions_table(part: pd.DataFrame, probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """The per-sample table of :class:`SplitPredictions` from a split's samples and probabilities."""
    labels = part["target"].to_numpy()
    predicted = probs.argmax(axis=1)
    frame = pd.DataFrame(
        {
            "sample_id": part["sample_id"].to_numpy(),
            "image_id": part["image_id"].to_numpy(),
            "patient_id": part["patient_id"].astype(str).to_numpy(),
            "split": part["split"].to_numpy(),
            "label": labels,
            "label_name": [classes[k] for k in labels],
        }
    )
    for k, name in enumerate(classes):
        frame[f"p_{name}"] = probs[:, k]
    frame["prediction"] = predicted
    frame["prediction_name"] = [classes[k] for k in predicted]
    frame["confidence"] = probs.max(axis=1)
    frame["correct"] = predicted == labels
    frame["loss"] = -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0))
    frame["image"] = part["image"].astype(str).to_numpy()
    return frame
