"""Training the lesion-aware model: the patch stage's data and mining, then the film stage.

Patch stage (Lightning, ``train.epochs``): patches from :mod:`mammocad.training.patches`, fresh every
epoch; every ``lesion.hard_negative_every`` epochs the current model scores every training film and
the next epoch's hard negatives are drawn where it wrongly sees a lesion. Validation scores fixed,
centred patches of the val films (the history's ``val_*`` columns are patch-level).

Film stage: with the patch network frozen, each training film's heatmap statistics (the head's
``features``) are computed once; the learned aggregation (``aggregation: learned``) is fitted on them
by L-BFGS with class-balanced cross-entropy and an L2 penalty. Film-level scores of the training
and val films are recorded in ``run.json`` for every aggregation.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from mammocad.models.lesion_aware import LesionAwareNet
from mammocad.models.losses import balanced_class_weights
from mammocad.models.modes import evaluation_mode
from mammocad.preprocess import read_sample
from mammocad.training.config import LesionConfig, RunConfig
from mammocad.training.data import TaskData
from mammocad.training.patches import PatchDataset, PatchSpec, load_films, refuse_without_lesions
from mammocad.training.predict import pixels_to_input

FILM_BATCH = 8


def negative_class(classes: list[str]) -> int | None:
    """The task class that means "no lesion" (``normal``), or None (every class is a lesion class)."""
    return classes.index("normal") if "normal" in classes else None


def patch_spec(options: LesionConfig) -> PatchSpec:
    """The sampling fields of the ``lesion`` config section (same names) as a :class:`PatchSpec`."""
    return PatchSpec(**options.model_dump(include={field.name for field in dataclasses.fields(PatchSpec)}))


class PatchData:
    """The patch stage's datasets and their counts."""

    def __init__(self, task: TaskData, config: RunConfig) -> None:
        options = config.lesion_options()
        assert options is not None
        neg = negative_class(task.classes)
        seed = config.train.seed
        train_films, self.train_counts = load_films(task.train, task.classes, neg, options.patch_size, seed)
        refuse_without_lesions(self.train_counts, str(config.data.dataset))
        val_films, self.val_counts = load_films(task.val, task.classes, neg, options.patch_size, seed)
        spec = patch_spec(options)
        self.train = PatchDataset(train_films, spec, config.model.in_chans, augment=True, seed=seed)
        self.val = PatchDataset(val_films, spec, config.model.in_chans, augment=False, seed=seed)
        self.options = options

    def summary(self, num_patch_classes: int) -> dict[str, Any]:
        return {
            "train_films": self.train_counts,
            "val_films": self.val_counts,
            "patches_per_epoch": self.train.class_counts(num_patch_classes),
            "val_patches": self.val.class_counts(num_patch_classes),
        }

    def loaders(self, config: RunConfig) -> tuple[DataLoader, DataLoader]:
        generator = torch.Generator().manual_seed(config.train.seed)
        common = {"batch_size": config.train.batch_size, "num_workers": 0}
        train = DataLoader(self.train, shuffle=True, generator=generator, drop_last=True, **common)
        # Fixed-length val set: with no located lesion in the val films it is background only.
        val = DataLoader(self.val if len(self.val) else self.train, shuffle=False, **common)
        return train, val


def patch_class_weights(data: PatchData, num_patch_classes: int) -> torch.Tensor:
    return balanced_class_weights(data.train.class_counts(num_patch_classes))


class PatchEpochs(L.Callback):
    """Draws each epoch's patches and mines hard negatives with the current model."""

    def __init__(self, data: PatchData, model: LesionAwareNet) -> None:
        self.data = data
        self.model = model

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.data.train.resample(trainer.current_epoch)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The hard negatives mined at the end of the checkpoint's epoch are not in the checkpoint: a
        # resumed fit mines them again with the restored weights (the same maps, when that epoch mined).
        if trainer.current_epoch > 0:
            self._mine(trainer.current_epoch - 1)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._mine(trainer.current_epoch)

    def _mine(self, epoch: int) -> None:
        options = self.data.options
        if options.hard_negative_fraction <= 0 or (epoch + 1) % options.hard_negative_every:
            return
        films = self.data.train.films
        maps = lesion_maps(self.model, [f.pixels for f in films], self.data.train.in_chans, tta=False)
        self.data.train.hard_maps = list(maps)


def _film_batches(pixels: list[np.ndarray], in_chans: int) -> list[torch.Tensor]:
    """Films grouped by size into float batches (B, in_chans, H, W) in [0, 1]."""
    batches: list[torch.Tensor] = []
    for start in range(0, len(pixels), FILM_BATCH):
        group = pixels[start : start + FILM_BATCH]
        batches.append(torch.stack([pixels_to_input(p, in_chans) for p in group]))
    return batches


@torch.no_grad()
def lesion_maps(model: LesionAwareNet, pixels: list[np.ndarray], in_chans: int, tta: bool = False) -> np.ndarray:
    """P(any lesion) maps (N, h, w) of cached films (all the same size), model in eval mode meanwhile."""
    was_tta = model.tta_flip
    model.tta_flip = tta
    try:
        with evaluation_mode(model):
            device = next(model.parameters()).device
            maps = [model.lesion_map(batch.to(device)).float().cpu() for batch in _film_batches(pixels, in_chans)]
    finally:
        model.tta_flip = was_tta
    return torch.cat(maps).numpy() if maps else np.zeros((0, 1, 1), np.float32)


def contralateral_index(frame: pd.DataFrame) -> np.ndarray:
    """For each row of ``frame``, the row of the same patient's other breast in the same view (and
    study, when known), or -1. Needs ``patient_id`` and ``laterality`` (L/R); ``view`` and ``study_id`` when present."""
    index = np.full(len(frame), -1, dtype=np.int64)
    if not {"patient_id", "laterality"} <= set(frame.columns):
        return index
    keys: dict[tuple[object, ...], int] = {}
    rows = frame.reset_index(drop=True)

    def key(row: pd.Series, side: object) -> tuple[object, ...]:
        known = (None if pd.isna(row.get(c)) else row.get(c) for c in ("patient_id", "study_id", "view"))
        return (*known, side)

    for position, row in rows.iterrows():
        if row["laterality"] in ("L", "R"):
            keys.setdefault(key(row, row["laterality"]), int(position))
    for position, row in rows.iterrows():
        if row["laterality"] in ("L", "R"):
            index[int(position)] = keys.get(key(row, "R" if row["laterality"] == "L" else "L"), -1)
    return index


def paired_features(head: torch.nn.Module, own: torch.Tensor, pairs: np.ndarray) -> torch.Tensor:
    """The head's penultimate vectors from each film's own features and its pair's (``pairs[i]`` = -1: none)."""
    if not getattr(head, "bilateral", False):
        return own
    other = own[torch.as_tensor(np.clip(pairs, 0, None))]
    other = torch.where(torch.as_tensor(pairs >= 0)[:, None], other, own)  # no pair: zero difference
    return head.combine(own, other)


@torch.no_grad()
def film_features(model: LesionAwareNet, frame: pd.DataFrame, in_chans: int) -> torch.Tensor:
    """The head's penultimate vectors (N, 4K; 8K when bilateral, paired within ``frame``) for its films."""
    with evaluation_mode(model):
        device = next(model.parameters()).device
        pixels = [read_sample(path) for path in frame["image"]]
        features = [
            model.head.own_features(model.heatmap(batch.to(device))).float().cpu()
            for batch in _film_batches(pixels, in_chans)
        ]
    if not features:
        return torch.zeros((0, 0))
    return paired_features(model.head, torch.cat(features), contralateral_index(frame))


def fit_second_stage(
    head_layer: torch.nn.Linear, features: torch.Tensor, labels: torch.Tensor, num_classes: int, weight_decay: float
) -> None:
    """Fit the learned aggregation (a Linear layer) by L-BFGS: balanced cross-entropy + L2 on its weights."""
    counts = torch.bincount(labels, minlength=num_classes).tolist()
    weights = balanced_class_weights(counts)
    mean = features.mean(dim=0)
    std = features.std(dim=0).clamp_min(1e-3) if len(features) > 1 else torch.ones_like(mean)
    scaled = (features - mean) / std  # standardised inputs: one L2 strength fits every statistic
    layer = torch.nn.Linear(features.shape[1], num_classes)
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    optimizer = torch.optim.LBFGS(layer.parameters(), lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(layer(scaled), labels, weight=weights)
        loss = loss + weight_decay * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():  # fold the standardisation into the layer
        head_layer.weight.copy_(layer.weight / std)
        head_layer.bias.copy_(layer.bias - (layer.weight * (mean / std)).sum(dim=1))


def film_stage(model: LesionAwareNet, task: TaskData, config: RunConfig) -> dict[str, Any]:
    """Fit the learned aggregation on the training films (if chosen) and score train/val films.

    Returns ``{"aggregation", "fitted", "train": {...}, "val": {...}}`` with each split's film count,
    accuracy, macro-AUC and loss.
    """
    from mammocad.training.module import macro_auc

    options = config.lesion_options()
    assert options is not None
    in_chans = config.model.in_chans
    train_features = film_features(model, task.train, in_chans)
    train_labels = torch.as_tensor(task.train["target"].to_numpy(dtype=np.int64, copy=True))
    fitted = options.aggregation == "learned"
    if fitted:
        fit_second_stage(
            model.head.second_stage, train_features, train_labels, len(task.classes), options.film_weight_decay
        )
    summary: dict[str, Any] = {"aggregation": options.aggregation, "fitted": fitted}
    if options.bilateral:
        summary["paired_train_films"] = int((contralateral_index(task.train) >= 0).sum())
    for split, features, frame in (
        ("train", train_features, task.train),
        ("val", film_features(model, task.val, in_chans) if len(task.val) else None, task.val),
    ):
        if features is None or not len(frame):
            continue
        with torch.no_grad():
            logits = model.head.classify(features)
        labels = frame["target"].to_numpy(dtype=np.int64, copy=True)
        probs = torch.softmax(logits, dim=1).numpy()
        summary[split] = {
            "films": len(labels),
            "accuracy": float(np.mean(probs.argmax(1) == labels)),
            "auc_macro": macro_auc(labels, probs),
            "loss": float(torch.nn.functional.cross_entropy(logits, torch.as_tensor(labels))),
        }
    return summary
