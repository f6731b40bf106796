"""Patches for the lesion-aware model's patch stage, sampled afresh every epoch from cached films.

Lesion patches are centred on a random pixel of a lesion mask (MIAS circles, CBIS-DDSM/BCDR/INbreast
outlines, synthetic masks) moved by up to ``jitter`` of the patch side, rotated by any angle, scaled
by up to ``±scale`` and mirrored; their class is the film's lesion class. Background patches are
centred inside the breast at least half a patch away from every lesion; with hard-negative mining a
share of them is drawn where the current model sees a lesion that is not there. Abnormal films
without a mask (MIAS calcification clusters without coordinates) give no patch at all: where their
lesion is is unknown, so no background is safe either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from mammocad.errors import DatasetError
from mammocad.preprocess import read_sample

#: A pixel brighter than this (of 255) is breast: preprocessing fades the background to zero.
BREAST_LEVEL = 8
#: Share of random background patches centred anywhere on the film rather than inside the breast.
OUTSIDE_SHARE = 0.25


@dataclass(frozen=True)
class PatchSpec:
    """How patches are drawn (``LesionConfig`` carries the user's values)."""

    patch_size: int = 96
    lesion_patches: int = 8
    background_patches: int = 8
    hard_negative_fraction: float = 0.5
    jitter: float = 0.25
    scale: float = 0.15
    rotate: bool = True


@dataclass
class _Film:
    pixels: np.ndarray  # uint8/uint16 H x W
    lesion_points: np.ndarray  # (n, 2) x, y of lesion pixels (empty for normal films)
    background_points: np.ndarray  # (m, 2) x, y of admissible background centres inside the breast
    outside_points: np.ndarray  # (m, 2) x, y of centres anywhere on the film away from lesions
    patch_class: int  # patch class of its lesions (0 for a film without lesion)


def patch_label_map(classes: list[str], negative_class: int | None) -> dict[int, int]:
    """Task class index → patch class index (``background`` is 0)."""
    lesion = [i for i in range(len(classes)) if i != negative_class]
    mapping = {task: 1 + k for k, task in enumerate(lesion)}
    if negative_class is not None:
        mapping[negative_class] = 0
    return mapping


def _points(mask: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    points = np.stack([xs, ys], axis=1)
    if len(points) > limit:
        points = points[rng.choice(len(points), limit, replace=False)]
    return points.astype(np.float32)


def load_films(
    frame: pd.DataFrame, classes: list[str], negative_class: int | None, patch_size: int, seed: int = 0
) -> tuple[list[_Film], dict[str, Any]]:
    """The films of ``frame`` usable for patches, and counts of what was used and left out.

    Counts: ``lesion_films`` (with a mask), ``normal_films``, ``unlocated_lesion_films`` (abnormal
    without a mask: left out), ``no_breast_films`` (no breast found: left out; their sample ids are in
    ``skipped``, a list of ``{"sample_id", "reason"}``).
    """
    rng = np.random.default_rng(seed)
    label_map = patch_label_map(classes, negative_class)
    films: list[_Film] = []
    counts: dict[str, Any] = {"lesion_films": 0, "normal_films": 0, "unlocated_lesion_films": 0, "no_breast_films": 0}
    skipped: list[dict[str, str]] = []
    masks = frame["mask"] if "mask" in frame else pd.Series([None] * len(frame), index=frame.index)
    ids = frame["sample_id"] if "sample_id" in frame else pd.Series(frame["image"], index=frame.index)
    for sample_id, path, mask_path, target in zip(ids, frame["image"], masks, frame["target"], strict=True):
        patch_class = label_map[int(target)]
        has_mask = isinstance(mask_path, str) and bool(mask_path)
        if patch_class != 0 and not has_mask:
            counts["unlocated_lesion_films"] += 1
            continue
        pixels = read_sample(path)
        level = BREAST_LEVEL * (257 if pixels.dtype == np.uint16 else 1)
        breast = cv2.erode((pixels > level).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        if not breast.any():  # a blank or black film: its patches would teach nothing about tissue
            counts["no_breast_films"] += 1
            skipped.append({"sample_id": str(sample_id), "reason": "no breast tissue found (the film is blank)"})
            continue
        lesion = read_sample(mask_path) > 0 if has_mask else np.zeros(pixels.shape, dtype=bool)
        if lesion.shape != pixels.shape:
            lesion = cv2.resize(lesion.astype(np.uint8), pixels.shape[::-1], interpolation=cv2.INTER_NEAREST) > 0
        away = np.ones(pixels.shape, dtype=bool)
        if lesion.any():
            # Background centres keep half a patch from any lesion pixel.
            away = cv2.distanceTransform((~lesion).astype(np.uint8), cv2.DIST_L2, 5) > patch_size / 2
        background = breast & away
        if not background.any():
            background = away if away.any() else ~lesion
        lesion_points = _points(lesion, 4096, rng) if patch_class != 0 else np.zeros((0, 2), np.float32)
        if patch_class != 0 and len(lesion_points) == 0:
            counts["unlocated_lesion_films"] += 1
            continue
        outside = _points(away if away.any() else ~lesion, 4096, rng)
        films.append(_Film(pixels, lesion_points, _points(background, 20000, rng), outside, patch_class))
        counts["lesion_films" if patch_class != 0 else "normal_films"] += 1
    if skipped:
        counts["skipped"] = skipped
    return films, counts


def refuse_without_lesions(counts: dict[str, Any], where: str) -> None:
    """Stop with the counts when no film has a located lesion (a patch model cannot learn lesions)."""
    if counts["lesion_films"] == 0:
        raise DatasetError(
            f"{where}: the lesion-aware model learns from lesion annotations, but no training film has one "
            f"({counts['lesion_films']} films with a lesion mask, {counts['unlocated_lesion_films']} abnormal films "
            f"without a location, {counts['normal_films']} normal films). Use a dataset with masks, outlines, boxes "
            "or MIAS circles (MIAS, CBIS-DDSM, BCDR, INbreast, synthetic phantoms)."
        )


def crop_patch(
    pixels: np.ndarray, center: tuple[float, float], size: int, angle: float = 0.0, scale: float = 1.0
) -> np.ndarray:
    """A ``size × size`` patch centred on ``center`` (x, y), rotated by ``angle`` degrees and zoomed by
    ``scale`` (> 1 shows less of the film); zero outside the film. Keeps the dtype."""
    matrix = cv2.getRotationMatrix2D((float(center[0]), float(center[1])), angle, scale)
    matrix[:, 2] += (size / 2 - 0.5) - np.asarray(center, dtype=np.float64)
    return cv2.warpAffine(
        pixels, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )


class PatchDataset(Dataset):
    """Patches as ``(image, patch_class)``: image float (in_chans, P, P) in [0, 1].

    ``resample(epoch)`` draws the epoch's patches (deterministic in ``seed`` and ``epoch``);
    ``augment=False`` gives fixed, centred, unrotated patches (validation).
    ``hard_maps`` (one lesion-probability map per film, any resolution, or None) steer the hard
    negatives of the next ``resample``.
    """

    def __init__(
        self, films: list[_Film], spec: PatchSpec, in_chans: int = 1, augment: bool = True, seed: int = 0
    ) -> None:
        self.films = films
        self.spec = spec
        self.in_chans = in_chans
        self.augment = augment
        self.seed = seed
        self.hard_maps: list[np.ndarray | None] = [None] * len(films)
        self.items: list[tuple[int, float, float, float, float, bool, int]] = []
        self.resample(0)

    def __len__(self) -> int:
        return len(self.items)

    def class_counts(self, num_patch_classes: int) -> list[int]:
        labels = np.array([item[-1] for item in self.items], dtype=np.int64)
        return np.bincount(labels, minlength=num_patch_classes).tolist()

    def resample(self, epoch: int) -> None:
        spec = self.spec
        rng = np.random.default_rng([self.seed, epoch if self.augment else 0])
        items: list[tuple[int, float, float, float, float, bool, int]] = []
        for index, film in enumerate(self.films):
            if len(film.lesion_points):
                centroid = film.lesion_points.mean(axis=0)
                for k in range(spec.lesion_patches):
                    if self.augment:
                        point = film.lesion_points[rng.integers(len(film.lesion_points))]
                        # Half the patches around the lesion's centre, half on any lesion pixel.
                        base = centroid if k % 2 == 0 else point
                        offset = rng.uniform(-spec.jitter, spec.jitter, 2) * spec.patch_size
                        x, y = base + offset
                    else:
                        x, y = centroid
                    items.append((index, float(x), float(y), *self._pose(rng), film.patch_class))
            hard = round(spec.background_patches * spec.hard_negative_fraction) if self.augment else 0
            hard_points = self._hard_points(index, hard, rng) if hard else np.zeros((0, 2))
            random_count = spec.background_patches - len(hard_points)
            # A quarter anywhere on the film: whole-film windows also cover air, skin edge and film labels.
            outside = rng.random(random_count) < OUTSIDE_SHARE if self.augment else np.zeros(random_count, bool)
            chosen = np.concatenate(
                [
                    film.background_points[rng.integers(len(film.background_points), size=int((~outside).sum()))],
                    film.outside_points[rng.integers(len(film.outside_points), size=int(outside.sum()))],
                ]
            )
            for x, y in np.concatenate([hard_points, chosen]) if len(hard_points) else chosen:
                items.append((index, float(x), float(y), *self._pose(rng), 0))
        self.items = items

    def _pose(self, rng: np.random.Generator) -> tuple[float, float, bool]:
        if not self.augment:
            return 0.0, 1.0, False
        angle = float(rng.uniform(0, 360)) if self.spec.rotate else 0.0
        scale = float(rng.uniform(1 - self.spec.scale, 1 + self.spec.scale))
        return angle, scale, bool(rng.random() < 0.5)

    def _hard_points(self, index: int, count: int, rng: np.random.Generator) -> np.ndarray:
        """Background centres drawn with probability ∝ the model's lesion probability there."""
        heat = self.hard_maps[index]
        film = self.films[index]
        if heat is None or not len(film.background_points):
            return np.zeros((0, 2), np.float32)
        height, width = film.pixels.shape
        points = film.background_points
        gx = np.clip((points[:, 0] * heat.shape[1] / width).astype(int), 0, heat.shape[1] - 1)
        gy = np.clip((points[:, 1] * heat.shape[0] / height).astype(int), 0, heat.shape[0] - 1)
        weight = heat[gy, gx].astype(np.float64) ** 2
        if weight.sum() <= 0:
            return np.zeros((0, 2), np.float32)
        return points[rng.choice(len(points), size=count, p=weight / weight.sum())]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        film_index, x, y, angle, scale, mirror, label = self.items[index]
        pixels = self.films[film_index].pixels
        patch = crop_patch(pixels, (x, y), self.spec.patch_size, angle, scale)
        if mirror:
            patch = patch[:, ::-1]
        unit = 1.0 / (65535.0 if patch.dtype == np.uint16 else 255.0)
        image = torch.from_numpy(np.ascontiguousarray(patch, dtype=np.float32) * unit)[None]
        if self.in_chans > 1:
            image = image.expand(self.in_chans, -1, -1)
        return image, torch.tensor(label, dtype=torch.long)
