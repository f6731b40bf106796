"""Patch sampling for the lesion-aware model: where patches come from, their labels, mining, refusals."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from mammocad.errors import DatasetError
from mammocad.io import atomic_write_png
from mammocad.training.patches import PatchDataset, PatchSpec, crop_patch, load_films, refuse_without_lesions

CLASSES = ["normal", "benign", "malignant"]


def _film(tmp_path, name: str, lesion_xy: tuple[int, int] | None, target: int) -> dict:
    pixels = np.zeros((160, 120), dtype=np.uint8)
    cv2.ellipse(pixels, (0, 80), (100, 75), 0, -90, 90, 120, -1)  # breast against the left edge
    image = tmp_path / f"{name}.png"
    mask_path = None
    if lesion_xy is not None:
        cv2.circle(pixels, lesion_xy, 6, 250, -1)
        mask = np.zeros_like(pixels)
        cv2.circle(mask, lesion_xy, 6, 255, -1)
        mask_path = tmp_path / f"{name}.mask.png"
        atomic_write_png(mask_path, mask)
    atomic_write_png(image, pixels)
    return {"image": str(image), "mask": None if mask_path is None else str(mask_path), "target": target}


@pytest.fixture
def frame(tmp_path):
    rows = [
        _film(tmp_path, "normal", None, 0),
        _film(tmp_path, "benign", (40, 60), 1),
        _film(tmp_path, "malignant", (50, 100), 2),
        _film(tmp_path, "unlocated", None, 2),  # abnormal without a mask: no patch at all
    ]
    return pd.DataFrame(rows)


def test_films_are_counted_and_unlocated_lesions_left_out(frame):
    films, counts = load_films(frame, CLASSES, 0, patch_size=24)
    assert counts == {"lesion_films": 2, "normal_films": 1, "unlocated_lesion_films": 1, "no_breast_films": 0}
    assert [f.patch_class for f in films] == [0, 1, 2]


def test_lesion_patches_show_the_lesion_and_background_patches_stay_away(frame):
    films, _ = load_films(frame, CLASSES, 0, patch_size=24)
    spec = PatchSpec(patch_size=24, lesion_patches=6, background_patches=10, hard_negative_fraction=0.0, jitter=0.1)
    data = PatchDataset(films, spec, augment=True, seed=1)
    assert data.class_counts(3) == [30, 6, 6]
    for index, (film_index, x, y, *_pose, label) in enumerate(data.items):
        image, target = data[index]
        assert image.shape == (1, 24, 24) and int(target) == label
        lesion = films[film_index].lesion_points
        if label:
            assert image.max() > 0.95  # the bright lesion is in view
        elif len(lesion):
            assert np.min(np.hypot(lesion[:, 0] - x, lesion[:, 1] - y)) > 12  # half a patch from any lesion pixel


def test_validation_patches_are_fixed_and_centred(frame):
    films, _ = load_films(frame, CLASSES, 0, patch_size=24)
    data = PatchDataset(films, PatchSpec(patch_size=24), augment=False, seed=0)
    first = list(data.items)
    data.resample(5)
    assert data.items == first
    lesion_items = [item for item in first if item[-1]]
    assert all(item[3:6] == (0.0, 1.0, False) for item in lesion_items)  # no rotation, zoom or mirror


def test_hard_negatives_are_drawn_where_the_model_sees_a_lesion(frame):
    films, _ = load_films(frame.iloc[[0]], CLASSES, 0, patch_size=24)
    spec = PatchSpec(patch_size=24, lesion_patches=1, background_patches=40, hard_negative_fraction=1.0)
    data = PatchDataset(films, spec, augment=True, seed=0)
    heat = np.zeros((10, 10), dtype=np.float32)
    heat[8, 2] = 1.0  # the only false alarm: bottom-left, rows 128-143 / cols 24-35 of the 160x120 film
    data.hard_maps = [heat]
    data.resample(1)
    points = np.array([(x, y) for _, x, y, *_ in data.items])
    assert ((points[:, 1] >= 128) & (points[:, 1] < 144) & (points[:, 0] >= 24) & (points[:, 0] < 36)).all()


def test_a_dataset_without_located_lesions_is_refused_with_counts(frame):
    _, counts = load_films(frame.iloc[[0, 3]], CLASSES, 0, patch_size=24)
    with pytest.raises(DatasetError, match="0 films with a lesion mask, 1 abnormal films without a location, 1 normal"):
        refuse_without_lesions(counts, "ds")


def test_crop_patch_centres_rotates_and_pads():
    pixels = np.zeros((50, 50), dtype=np.uint16)
    pixels[20, 30] = 60000
    patch = crop_patch(pixels, (30, 20), 9)
    assert patch.dtype == np.uint16 and patch[4, 4] == 60000
    corner = crop_patch(pixels, (0, 0), 10, angle=90, scale=1.0)
    assert corner.shape == (10, 10) and corner[:4, :4].max() == 0  # outside the film is black


def test_contralateral_pairs_match_patient_view_and_side():
    from mammocad.training.lesion import contralateral_index

    frame = pd.DataFrame(
        {
            "patient_id": ["a", "a", "a", "a", "b", "c"],
            "view": ["CC", "CC", "MLO", "MLO", "CC", "CC"],
            "laterality": ["L", "R", "L", "R", "L", None],
        }
    )
    assert contralateral_index(frame).tolist() == [1, 0, 3, 2, -1, -1]


def test_a_film_without_breast_is_skipped_with_the_reason(frame, tmp_path):
    blank = tmp_path / "blank.png"
    atomic_write_png(blank, np.zeros((160, 120), dtype=np.uint8))
    rows = pd.concat([frame, pd.DataFrame([{"image": str(blank), "mask": None, "target": 0}])], ignore_index=True)
    rows["sample_id"] = [f"s{i}" for i in range(len(rows))]
    films, counts = load_films(rows, CLASSES, 0, patch_size=24)
    assert len(films) == 3 and counts["no_breast_films"] == 1
    assert counts["skipped"] == [{"sample_id": "s4", "reason": "no breast tissue found (the film is blank)"}]
