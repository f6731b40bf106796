"""Training data: the preprocessing cache joined with the split and the task's labels.

Images come only from the preprocessing cache (never re-decoded); augmentation and oversampling
apply to the training split only, after splitting.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from mammocad.data.manifest import read_manifest
from mammocad.data.split import read_splits, split_exists
from mammocad.errors import DatasetError
from mammocad.preprocess import PreprocessConfig, load_preprocessed, preprocess_dataset, read_sample
from mammocad.training.config import AugmentConfig, DataConfig

PATHOLOGY_ORDER = ("normal", "benign", "malignant")


def task_classes(manifest: pd.DataFrame, task: str) -> tuple[list[str], pd.Series]:
    """The task's class names and each image's class (None: the image is not part of the task)."""
    pathology = manifest["pathology"]
    if task == "3class":
        target = pathology.where(pathology.isin(PATHOLOGY_ORDER))
        classes = list(PATHOLOGY_ORDER)
    elif task == "benign-malignant":
        target = pathology.where(pathology.isin(("benign", "malignant")))
        classes = ["benign", "malignant"]
    elif task == "normal-abnormal":
        target = pathology.map({"normal": "normal", "benign": "abnormal", "malignant": "abnormal"})
        classes = ["normal", "abnormal"]
    elif task == "birads":
        target = manifest["birads"].map(lambda b: None if pd.isna(b) else f"birads_{int(b)}")
        classes = sorted(target.dropna().unique(), key=lambda n: int(n.split("_")[1]))
    elif task == "label":
        target = manifest["label_name"]
        from mammocad.data.manifest import class_order

        classes = class_order(set(target))
    else:
        raise DatasetError(f"unknown task {task!r}")
    return classes, target.astype(object).where(target.notna(), None)


@dataclass
class TaskData:
    """Samples of each split with integer labels for the task."""

    classes: list[str]
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame

    def counts(self, split: str) -> list[int]:
        frame = getattr(self, split)
        counted = Counter(frame["target"])
        return [counted.get(k, 0) for k in range(len(self.classes))]


def task_frame(
    data: DataConfig, preprocess: PreprocessConfig, allow_unsplit: bool = False
) -> tuple[list[str], pd.DataFrame]:
    """The task's classes and every cached sample that has a task label, with its split and fold.

    Columns: the cache's sample table (``sample_id``, ``image_id``, ``patient_id``, ``image``, ...)
    plus ``target_name``, ``target`` (class index), ``split`` and ``fold``. Builds the preprocessing
    cache first when it is incomplete. ``allow_unsplit``: a dataset without the named split (e.g. an
    external test set scored whole) gets split ``unsplit`` and fold -1 for every image.
    """
    manifest = read_manifest(data.dataset)
    if allow_unsplit and not split_exists(data.dataset, data.split):
        splits = pd.DataFrame({"image_id": manifest["image_id"], "split": "unsplit", "fold": -1})
    else:
        splits = read_splits(data.dataset, data.split)
    preprocess_dataset(data.dataset, preprocess)  # no-op when the cache is complete
    samples = load_preprocessed(data.dataset, preprocess)
    classes, target = task_classes(manifest, data.task)
    labels = pd.DataFrame({"image_id": manifest["image_id"], "target_name": target})
    frame = samples.merge(labels, on="image_id").merge(splits[["image_id", "split", "fold"]], on="image_id")
    frame = frame[frame["target_name"].notna()]
    if frame.empty or not classes:
        raise DatasetError(
            f"{data.dataset}: no image has labels for task {data.task!r} "
            f"(dataset classes: {sorted(manifest['label_name'].unique())})"
        )
    frame = frame.assign(target=frame["target_name"].map({c: i for i, c in enumerate(classes)}).astype(int))
    return classes, frame


def partition(frame: pd.DataFrame, fold: int | None, split_name: str = "default") -> dict[str, pd.DataFrame]:
    """train/val/test/blind parts of a :func:`task_frame`.

    With ``fold`` (cross-validation), the folds cover every non-blind image: fold ``k`` is
    validation, the other folds train, and the blind holdout is the only test set (the split's own
    test images sit inside the folds, so using them would leak training images).
    """
    if fold is None:
        parts = {name: frame[frame["split"] == name] for name in ("train", "val", "test", "blind")}
    else:
        if (frame["fold"] < 0).all():
            raise DatasetError(f"split {split_name!r} has no folds; create it with `mammocad data split --folds K`")
        dev = frame[frame["split"] != "blind"]
        blind = frame[frame["split"] == "blind"]
        parts = {"train": dev[dev["fold"] != fold], "val": dev[dev["fold"] == fold], "test": blind, "blind": blind}
    return {name: part.reset_index(drop=True) for name, part in parts.items()}


def load_task_data(data: DataConfig, preprocess: PreprocessConfig) -> TaskData:
    """Join cache, split and task labels; stop with a clear error when the data do not fit the task."""
    classes, frame = task_frame(data, preprocess)
    parts = partition(frame, data.fold, data.split)
    if data.refit:  # the final model: every non-blind image trains; val is scored but is inside training
        parts["train"] = frame[frame["split"] != "blind"].reset_index(drop=True)
    task = TaskData(classes, parts["train"], parts["val"], parts["test"])
    for split in ("train", "val"):
        counts = task.counts(split)
        missing = [c for c, n in zip(classes, counts, strict=True) if n == 0]
        if missing:
            summary = ", ".join(f"{c}={n}" for c, n in zip(classes, counts, strict=True))
            raise DatasetError(
                f"the {split} split has no images of class(es) {missing} for task {data.task!r} ({summary}); "
                "the dataset's classes do not match the task"
            )
    return task


def build_augment(config: AugmentConfig) -> v2.Compose | None:
    """On-the-fly augmentation (training split only): flips, rotation, brightness, contrast."""
    steps: list[v2.Transform] = []
    if config.hflip:
        steps.append(v2.RandomHorizontalFlip(config.hflip))
    if config.vflip:
        steps.append(v2.RandomVerticalFlip(config.vflip))
    if config.rotate_p and config.rotate_degrees:
        steps.append(v2.RandomApply([v2.RandomRotation(config.rotate_degrees)], p=config.rotate_p))
    if config.brightness_p and config.brightness:
        jitter = v2.ColorJitter(brightness=(1 - config.brightness, 1 + config.brightness))
        steps.append(v2.RandomApply([jitter], p=config.brightness_p))
    if config.contrast_p and config.contrast:
        jitter = v2.ColorJitter(contrast=(1 - config.contrast, 1 + config.contrast))
        steps.append(v2.RandomApply([jitter], p=config.contrast_p))
    return v2.Compose(steps) if steps else None


class CachedImageDataset(Dataset):
    """Cached preprocessed images as float tensors in [0, 1] (C x H x W) with integer labels.

    With ``with_masks`` (knowledge transfer) an item is ``(image, label, mask, has_mask)``: the
    lesion mask (1 x H x W, 0/1 float; zeros for images without one) goes through the same flips and
    rotations as the image (torchvision's joint transforms), never through the colour jitter.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        in_chans: int = 1,
        augment: v2.Compose | None = None,
        in_memory: bool = True,
        with_masks: bool = False,
    ) -> None:
        self.paths = list(frame["image"])
        self.labels = torch.as_tensor(frame["target"].to_numpy(dtype=np.int64, copy=True), dtype=torch.long)
        self.in_chans = in_chans
        self.augment = augment
        self.images = [read_sample(p) for p in self.paths] if in_memory else None
        self.mask_paths: list[str | None] | None = None
        if with_masks:
            column = frame["mask"] if "mask" in frame else pd.Series([None] * len(frame))
            self.mask_paths = [p if isinstance(p, str) and p else None for p in column]
        self.masks = (
            [read_sample(p) if p else None for p in self.mask_paths]
            if self.mask_paths is not None and in_memory
            else None
        )

    def __len__(self) -> int:
        return len(self.paths)

    def _pixels(self, index: int) -> np.ndarray:
        return self.images[index] if self.images is not None else read_sample(self.paths[index])

    def _mask(self, index: int, shape: tuple[int, ...]) -> tuple[torch.Tensor, float]:
        assert self.mask_paths is not None
        pixels = self.masks[index] if self.masks is not None else None
        if pixels is None and self.masks is None and self.mask_paths[index]:
            pixels = read_sample(self.mask_paths[index])
        if pixels is None:
            return torch.zeros((1, *shape[-2:]), dtype=torch.float32), 0.0
        return torch.from_numpy((pixels > 0).astype(np.float32))[None], 1.0

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        pixels = self._pixels(index)
        scale = 1.0 / (65535.0 if pixels.dtype == np.uint16 else 255.0)
        image = torch.from_numpy(pixels.astype(np.float32) * scale)[None]
        if self.mask_paths is None:
            if self.augment is not None:
                image = self.augment(image).clamp_(0, 1)
            return self._channels(image), self.labels[index]
        mask, has_mask = self._mask(index, image.shape)
        if self.augment is not None:
            image, mask = self.augment(tv_tensors.Image(image), tv_tensors.Mask(mask))
            image, mask = image.as_subclass(torch.Tensor).clamp_(0, 1), mask.as_subclass(torch.Tensor)
        return self._channels(image), self.labels[index], self._channels(mask), torch.tensor(has_mask)

    def _channels(self, image: torch.Tensor) -> torch.Tensor:
        return image.expand(self.in_chans, -1, -1) if self.in_chans > 1 else image


def oversampled_indices(
    labels: np.ndarray, classes: list[str], target_share: dict[str, float], seed: int
) -> np.ndarray:
    """Indices of one training epoch where each named class reaches its target share by repetition.

    Repeated images differ through the on-the-fly augmentation (Dahes (2025) raised "normal" from 7.6%
    to 33.1% of the training set this way). Unnamed classes keep their images once.
    """
    unknown = set(target_share) - set(classes)
    if unknown:
        raise DatasetError(f"target_share names unknown classes {sorted(unknown)}; classes: {classes}")
    if sum(target_share.values()) >= 1:
        raise DatasetError("target_share values must sum to less than 1")
    rng = np.random.default_rng(seed)
    index = np.arange(len(labels))
    named = {classes.index(c): share for c, share in target_share.items()}
    rest = index[~np.isin(labels, list(named))]
    # n_c = share_c * total, with total = len(rest) / (1 - sum(shares)).
    total = len(rest) / (1 - sum(named.values()))
    parts = [rest]
    for k, share in named.items():
        members = index[labels == k]
        if len(members) == 0:
            raise DatasetError(f"target_share: class {classes[k]!r} has no training images to oversample")
        wanted = max(len(members), round(share * total))
        parts.append(np.concatenate([members, rng.choice(members, wanted - len(members), replace=True)]))
    return np.concatenate(parts)
