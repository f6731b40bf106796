"""Preprocessing: breast crop, flip, CLAHE, ROI boxes, geometry, and the config-keyed cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mammocad.data.images import MammoImage
from mammocad.data.importers import import_dataset
from mammocad.data.synth import generate_case, write_synthetic_dataset
from mammocad.errors import DatasetError
from mammocad.preprocess import (
    PreprocessConfig,
    cache_dir_for,
    load_preprocessed,
    preprocess_dataset,
    preprocess_image,
    preprocess_roi,
    read_sample,
)
from mammocad.preprocess.breast import breast_bbox, breast_mask, chest_wall_side
from mammocad.preprocess.roi import extract_roi, roi_box
from tests.conftest import write_pgm


def phantom_with_label() -> np.ndarray:
    image = np.full((200, 160), 8, dtype=np.uint8)
    yy, xx = np.mgrid[:200, :160]
    image[((xx / 110) ** 2 + ((yy - 100) / 80) ** 2) <= 1] = 120  # breast on the left edge
    image[10:25, 120:150] = 250  # film label, separate from the breast
    return image


def test_breast_mask_keeps_breast_and_drops_label():
    mask = breast_mask(phantom_with_label())
    assert mask[100, 50] and not mask[15, 135] and not mask[190, 150]
    x0, y0, x1, y1 = breast_bbox(mask, margin=0)
    assert x0 == 0 and abs(x1 - 111) <= 3 and abs(y0 - 20) <= 3 and abs(y1 - 181) <= 3
    assert chest_wall_side(mask) == "left" and chest_wall_side(mask[:, ::-1]) == "right"


def test_constant_image_is_not_cropped():
    mask = breast_mask(np.zeros((50, 40), dtype=np.uint8))
    assert mask.all() and breast_bbox(mask) == (0, 0, 40, 50)


def test_full_pipeline_crops_flips_and_resizes():
    pixels = phantom_with_label()[:, ::-1].copy()  # chest wall on the right
    out = preprocess_image(MammoImage(pixels, 255, "png"), PreprocessConfig(image_size=(64, 48)))
    assert out.pixels.shape == (64, 48) and out.pixels.dtype == np.uint8
    assert out.geometry.flipped
    assert out.pixels[:, :5].mean() > out.pixels[:, -5:].mean()  # chest wall now on the left
    assert out.pixels.max() < 255 or (out.pixels == 255).mean() < 0.01  # label gone
    kept = preprocess_image(MammoImage(pixels, 255, "png"), PreprocessConfig(flip_to=None, crop_breast=False))
    assert not kept.geometry.flipped and kept.geometry.crop == (0, 0, 160, 200)


def test_clahe_raises_local_contrast_and_16_bit_output():
    rng = np.random.default_rng(0)
    low_contrast = (100 + rng.normal(0, 3, (128, 128))).clip(0, 255).astype(np.uint8)
    image = MammoImage(low_contrast, 255, "png")
    base = PreprocessConfig(crop_breast=False, flip_to=None, image_size=128)
    plain = preprocess_image(image, base.model_copy(update={"clahe": False})).pixels
    equalised = preprocess_image(image, base).pixels
    assert equalised.std() > 2 * plain.std()
    sixteen = preprocess_image(
        MammoImage(low_contrast.astype(np.uint16) * 257, 65535, "dicom"), base.model_copy(update={"output_bits": 16})
    )
    assert sixteen.pixels.dtype == np.uint16 and sixteen.pixels.max() > 255


@pytest.mark.parametrize(
    ("box", "shape", "expected"),
    [
        ((100, 100, 120, 130), (1000, 1000), (0, 3, 224, 227)),  # small lesion near the edge: 224 box, shifted inside
        ((100, 200, 400, 460), (1000, 1000), (100, 200, 400, 460)),  # 300x260 lesion keeps its size
        ((0, 0, 20, 20), (1000, 1000), (0, 0, 224, 224)),  # at the corner: shifted inside
        ((40, 40, 60, 60), (100, 100), (-62, -62, 162, 162)),  # image smaller than ROI: centred, padded
    ],
)
def test_roi_box(box, shape, expected):
    got = roi_box(box, shape, 224)
    assert got[2] - got[0] == max(224, box[2] - box[0]) and got[3] - got[1] == max(224, box[3] - box[1])
    if shape[0] >= 224:
        assert got[0] >= 0 and got[1] >= 0 and got[2] <= shape[1] and got[3] <= shape[0]
    if expected[0] >= 0:
        assert got == expected
    else:  # padded: the lesion centre stays at the ROI centre
        assert ((got[0] + got[2]) / 2, (got[1] + got[3]) / 2) == ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


def test_roi_box_small_lesion_away_from_border_is_centred():
    assert roi_box((490, 500, 510, 520), (1000, 1000), 224) == (388, 398, 612, 622)


def test_extract_roi_mask_stays_binary():
    image = np.random.default_rng(1).integers(0, 255, (300, 300), dtype=np.uint8)
    mask = np.zeros((300, 300), dtype=np.uint8)
    mask[100:150, 120:170] = 1
    roi, roi_mask = extract_roi(image, mask, (50, 50, 274, 274), (112, 112))
    assert roi.shape == roi_mask.shape == (112, 112) and set(np.unique(roi_mask)) == {0, 1}


def test_geometry_maps_output_back_to_original():
    case = generate_case(4, "malignant", "CC", "R", height=256, width=192)
    union = case.lesion_mask
    out = preprocess_image(MammoImage(case.pixels, 255, "png"), PreprocessConfig(image_size=96), union.astype(np.uint8))
    assert out.geometry.flipped  # R breast: chest wall on the right, flipped to the left
    back = out.geometry.map_to_original(out.mask.astype(np.float32) / 255) > 0.5
    overlap = (back & union).sum() / max(union.sum(), 1)
    assert back.shape == union.shape and overlap > 0.7
    ys, xs = np.nonzero(out.mask)
    ox, oy = out.geometry.to_original(xs.mean(), ys.mean())
    ty, tx = np.nonzero(union)
    assert abs(ox - tx.mean()) < 6 and abs(oy - ty.mean()) < 6


def test_roi_pipeline_centres_lesion():
    case = generate_case(2, "benign", height=512, width=384)
    lesion = case.lesions[0]
    out = preprocess_roi(
        MammoImage(case.pixels, 255, "png"),
        PreprocessConfig(mode="roi", image_size=112),
        lesion.box,
        lesion.mask.astype(np.uint8),
    )
    ys, xs = np.nonzero(out.mask)
    assert out.pixels.shape == (112, 112) and abs(xs.mean() - 56) < 20 and abs(ys.mean() - 56) < 20


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="image_size"):
        PreprocessConfig(image_size=4)
    with pytest.raises(ValueError, match="mode"):
        PreprocessConfig(mode="tiles")
    assert PreprocessConfig(image_size=224).image_size == (224, 224)
    assert PreprocessConfig().cache_key() == PreprocessConfig().cache_key() != PreprocessConfig(clahe=False).cache_key()


@pytest.fixture
def dataset(tmp_path):
    source = write_synthetic_dataset(
        tmp_path / "src", "csv", {"normal": 3, "benign": 3, "malignant": 3}, seed=1, height=160, width=128
    )
    import_dataset("csv", source, tmp_path / "ds")
    return tmp_path / "ds"


def test_cache_second_run_decodes_nothing(dataset, monkeypatch):
    config = PreprocessConfig(image_size=64)
    first = preprocess_dataset(dataset, config, workers=1)
    assert first.n_samples == 9 and first.n_processed == 9 and not first.skipped

    def no_decoding(*_args, **_kwargs):
        raise AssertionError("a cached run must not decode any image")

    monkeypatch.setattr("mammocad.preprocess.jobs.read_image", no_decoding)
    second = preprocess_dataset(dataset, config, workers=1)
    assert second.n_processed == 0 and second.n_from_cache == 9
    samples = load_preprocessed(dataset, config)
    assert len(samples) == 9 and read_sample(samples["image"][0]).shape == (64, 64)
    assert samples["mask"].notna().sum() == 6  # benign + malignant carry masks
    # A dataset named relative to the working directory still gives absolute paths (predictions and
    # the dashboard read them from elsewhere).
    monkeypatch.chdir(dataset.parent)
    relative = load_preprocessed(dataset.name, config)
    assert all(Path(p).is_absolute() and Path(p).exists() for p in relative["image"])
    other = PreprocessConfig(image_size=32)
    assert cache_dir_for(dataset, other) != first.cache_dir


def test_cache_resumes_after_interruption_and_parallel_matches(dataset):
    config = PreprocessConfig(image_size=48)
    full = preprocess_dataset(dataset, config, workers=2)
    reference = {p.name: read_sample(p) for p in (full.cache_dir / "images").iterdir()}
    # Simulate a crash: two samples never finished (no meta), the table not written.
    victims = sorted((full.cache_dir / "meta").iterdir())[:2]
    for meta in victims:
        meta.unlink()
    (full.cache_dir / "samples.parquet").unlink()
    resumed = preprocess_dataset(dataset, config, workers=1)
    assert resumed.n_processed == 2 and resumed.n_samples == 9
    for name, pixels in reference.items():
        assert np.array_equal(read_sample(full.cache_dir / "images" / name), pixels)


def test_bad_image_is_skipped_and_listed(dataset):
    manifest = pd.read_parquet(dataset / "manifest.parquet")
    write_pgm(dataset / "broken.pgm", np.zeros((32, 32), dtype=np.uint8))
    (dataset / "broken.pgm").write_bytes((dataset / "broken.pgm").read_bytes()[:100])  # truncate after import
    manifest.loc[0, "image_path"] = str(dataset / "broken.pgm")
    manifest.to_parquet(dataset / "manifest.parquet", index=False)
    result = preprocess_dataset(dataset, PreprocessConfig(image_size=32), workers=2)
    assert result.n_samples == 8 and len(result.skipped) == 1 and "truncated" in result.skipped[0]["reason"]
    assert json.loads((result.cache_dir / "skipped.json").read_text())[0]["item"] == manifest.loc[0, "image_id"]


def test_roi_mode_one_sample_per_located_lesion(dataset):
    result = preprocess_dataset(dataset, PreprocessConfig(mode="roi", image_size=64, roi_min_size=64), workers=1)
    samples = load_preprocessed(dataset, PreprocessConfig(mode="roi", image_size=64, roi_min_size=64))
    assert result.n_samples == len(samples) >= 6
    assert set(samples["label_name"]) == {"benign", "malignant"} and (samples["lesion_index"] >= 0).all()


def test_roi_mode_without_lesions_is_refused(tmp_path):
    source = write_synthetic_dataset(tmp_path / "src", "csv", {"normal": 3}, height=96, width=96)
    import_dataset("csv", source, tmp_path / "ds")
    with pytest.raises(DatasetError, match="nothing to preprocess"):
        preprocess_dataset(tmp_path / "ds", PreprocessConfig(mode="roi"))


@pytest.mark.realdata
def test_real_mias_crop_keeps_lesions(mias_dir, tmp_path):
    import_dataset("mias", mias_dir, tmp_path / "ds")
    result = preprocess_dataset(tmp_path / "ds", PreprocessConfig(image_size=128), workers=2)
    samples = pd.read_parquet(result.cache_dir / "samples.parquet")
    manifest = pd.read_parquet(tmp_path / "ds" / "manifest.parquet").set_index("image_id")
    assert result.n_samples == 160 and not result.skipped
    inside = 0
    total = 0
    for _, row in samples.iterrows():
        for lesion in manifest.loc[row["image_id"], "lesions"]:
            if lesion["x0"] is None or np.isnan(lesion["x0"]):
                continue
            total += 1  # the whole circle (its box, clipped to the image) must survive the crop
            inside += (
                row["crop_x0"] <= lesion["x0"]
                and row["crop_y0"] <= lesion["y0"]
                and lesion["x1"] <= row["crop_x1"]
                and lesion["y1"] <= row["crop_y1"]
            )
    assert total >= 55 and inside == total
    # MIAS follows the display convention (R: chest wall on the right), so with flip_to="left"
    # exactly the right breasts are mirrored, including mdb151/152 whose breast fills the film.
    assert (samples["flipped"] == (samples["laterality"] == "R")).all()
    # the crop removes background: the breast fills most of the cropped area
    areas = (samples["crop_x1"] - samples["crop_x0"]) * (samples["crop_y1"] - samples["crop_y0"])
    assert (areas / (1024 * 1024)).median() < 0.8
