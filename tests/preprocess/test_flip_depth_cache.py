"""Preprocessing details found on real data: thin strips, flip by laterality, 16-bit CLAHE, geometry
tables, failures not retried, per-lesion ROI labels. Fixtures are tiny MIAS-format datasets."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from mammocad.data.images import MammoImage, read_image
from mammocad.data.importers import import_dataset
from mammocad.preprocess import (
    Geometry,
    PreprocessConfig,
    load_preprocessed,
    preprocess_dataset,
    preprocess_image,
    read_sample,
)
from mammocad.preprocess.breast import breast_bbox, breast_mask_small, chest_wall_side, tissue_balance
from tests.conftest import write_pgm


def breast(height: int = 256, width: int = 256, chest_wall: str = "left", seed: int = 0) -> np.ndarray:
    """A textured half-ellipse breast against one side on a dark background (uint8)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    dist = xx if chest_wall == "left" else width - 1 - xx
    inside = (dist / (0.55 * width)) ** 2 + ((yy - height / 2) / (0.42 * height)) ** 2 <= 1
    image = np.full((height, width), 6, dtype=np.float32)
    image[inside] = 110 + 40 * np.sin(xx[inside] / 5.0) * np.cos(yy[inside] / 7.0)
    return (image + rng.normal(0, 2, image.shape)).clip(0, 255).astype(np.uint8)


def test_thin_bright_strip_touching_the_breast_is_cut_off():
    image = breast()
    image[:, 250:254] = 250  # scanner border along the right edge
    image[60:63, 100:] = 250  # a 3-pixel bright line (a film edge) joins it to the breast
    mask = breast_mask_small(image)
    assert mask[128, 40] and not mask[61, 200] and not mask[128, 252]
    x0, y0, x1, y1 = breast_bbox(mask, margin=0)
    assert x0 == 0 and abs(x1 - 141) <= 4 and abs(y0 - 20) <= 4 and abs(y1 - 236) <= 4


def test_mask_is_the_same_for_8_and_16_bit_and_blank_images_are_kept_whole():
    image = breast(seed=3)
    assert np.array_equal(breast_mask_small(image), breast_mask_small(image.astype(np.uint16) * 257))
    for blank in (np.zeros((300, 200), np.uint8), np.full((300, 200), 4000, np.uint16)):
        mask = breast_mask_small(blank)
        assert mask.all() and breast_bbox(mask, image_hw=(300, 200)) == (0, 0, 200, 300)


def test_flip_side_content_first_laterality_when_ambiguous():
    right = breast_mask_small(breast(chest_wall="right"))
    assert tissue_balance(right) < -0.5
    assert chest_wall_side(right) == "right" and chest_wall_side(right, "L") == "right"  # clear content wins
    filled = np.ones((100, 80), dtype=bool)  # a breast filling the film: both halves equal
    assert chest_wall_side(filled, "R") == "right" and chest_wall_side(filled, "l") == "left"
    assert chest_wall_side(filled) == "left" and chest_wall_side(filled, "unknown") == "left"
    flat = MammoImage(np.full((64, 64), 120, np.uint8), 255, "png", laterality="R")
    assert preprocess_image(flat, PreprocessConfig(image_size=32)).geometry.flipped  # from the tag
    assert not preprocess_image(flat, PreprocessConfig(image_size=32), laterality="L").geometry.flipped
    image = MammoImage(breast(chest_wall="right"), 255, "pgm", laterality="L")
    assert preprocess_image(image, PreprocessConfig(image_size=32)).geometry.flipped  # content beats the tag


def test_16_bit_output_has_the_8_bit_clahe_look_and_keeps_precision_without_clahe():
    image = MammoImage(breast(seed=5), 255, "pgm")
    base = PreprocessConfig(image_size=(96, 80))
    eight = preprocess_image(image, base).pixels.astype(np.float64)
    sixteen = preprocess_image(image, base.model_copy(update={"output_bits": 16})).pixels
    plain = preprocess_image(image, base.model_copy(update={"clahe": False})).pixels.astype(np.float64)
    assert sixteen.dtype == np.uint16 and sixteen.shape == (96, 80)
    assert np.abs(sixteen / 257.0 - eight).mean() < 1.5  # same equalisation at both depths
    assert np.abs(eight - plain).mean() > 5  # and CLAHE did change the image
    fine = (breast(seed=6).astype(np.uint16) * 257 + np.arange(256, dtype=np.uint16)[None, :] % 200).astype(np.uint16)
    raw16 = preprocess_image(
        MammoImage(fine, 65535, "dicom"), base.model_copy(update={"output_bits": 16, "clahe": False})
    ).pixels
    assert (raw16 % 257 != 0).mean() > 0.5  # values between the 8-bit levels survive


def test_geometry_points_round_trip_and_table_record():
    image = MammoImage(breast(200, 160, chest_wall="right", seed=2), 255, "pgm")
    out = preprocess_image(image, PreprocessConfig(image_size=(64, 48)))
    geometry = out.geometry
    assert geometry.flipped and Geometry.from_record(geometry.as_record()) == geometry
    x0, y0, x1, y1 = geometry.crop
    points = np.array([[x0 + 3.0, y0 + 5.0], [x1 - 4.0, y1 - 2.0], [(x0 + x1) / 2, (y0 + y1) / 2]])
    back = geometry.to_original(geometry.points_to_output(points))
    assert np.allclose(back, points, atol=1e-6)
    # the chest wall (right edge of the original) is on the left of the flipped output
    assert geometry.points_to_output(np.array([x1 - 1.0, y0]))[0] < 1
    heat = np.zeros((64, 48), np.float32)
    heat[30:34, 2:6] = 1.0
    mapped = geometry.to_original(heat)
    ys, xs = np.nonzero(mapped > 0.5)
    cx, cy = geometry.to_original(3.5, 31.5)
    assert mapped.shape == (200, 160) and abs(xs.mean() - cx) < 2 and abs(ys.mean() - cy) < 2


def write_mias(folder: Path, rows: list[str], images: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Info.txt").write_text("\n".join(rows) + "\n")
    for name, pixels in images.items():
        write_pgm(folder / f"{name}.pgm", pixels)
    return folder


@pytest.fixture
def mias_dataset(tmp_path) -> Path:
    """4 images (192x192): a normal, one benign + malignant pair of masses, one spread calcification."""
    rows = [
        "The size of ALL the images is 192 pixels x 192 pixels.",  # MIAS's own note: coordinates are in this frame
        "mdb001 G NORM",
        "mdb002 F CIRC B 50 120 10",  # bottom-left origin: row 192-1-120 = 71
        "mdb002 F SPIC M 60 60 14",
        "mdb003 D CALC B",  # no coordinates: no ROI, listed as skipped in roi mode
        "mdb004 G CIRC B 40 100 12",
    ]
    sides = {"mdb001": "right", "mdb002": "left", "mdb003": "right", "mdb004": "left"}  # odd = R
    images = {name: breast(192, 192, side, seed=i) for i, (name, side) in enumerate(sides.items())}
    source = write_mias(tmp_path / "mias", rows, images)
    import_dataset("mias", source, tmp_path / "ds")
    return tmp_path / "ds"


def test_bad_image_is_not_decoded_again_until_its_file_changes(mias_dataset, monkeypatch):
    path = Path(pd.read_parquet(mias_dataset / "manifest.parquet").set_index("image_id").loc["mdb004", "image_path"])
    good = path.read_bytes()
    path.write_bytes(good[:500])  # truncated after the import checked it
    config = PreprocessConfig(image_size=32)
    first = preprocess_dataset(mias_dataset, config, workers=1)
    assert first.n_samples == 3 and [s["item"] for s in first.skipped] == ["mdb004"]
    assert "truncated" in first.skipped[0]["reason"]

    def no_decoding(*_args, **_kwargs):
        raise AssertionError("nothing may be decoded: the good images are cached, the bad one unchanged")

    monkeypatch.setattr("mammocad.preprocess.jobs.read_image", no_decoding)
    second = preprocess_dataset(mias_dataset, config, workers=1)
    assert second.n_processed == 0 and second.n_from_cache == 3 and second.skipped == first.skipped
    monkeypatch.setattr("mammocad.preprocess.jobs.read_image", read_image)
    path.write_bytes(good)  # fixed: retried, and the failure record goes
    third = preprocess_dataset(mias_dataset, config, workers=1)
    assert third.n_processed == 1 and third.n_samples == 4 and not third.skipped
    assert json.loads((third.cache_dir / "skipped.json").read_text()) == []


def test_roi_samples_take_their_lesions_pathology(mias_dataset):
    config = PreprocessConfig(mode="roi", image_size=48, roi_min_size=64)
    result = preprocess_dataset(mias_dataset, config, workers=1)
    samples = load_preprocessed(mias_dataset, config).set_index("sample_id")
    assert list(samples.index) == ["mdb002__l0", "mdb002__l1", "mdb004__l0"]
    assert (
        samples.loc["mdb002__l0", "label_name"] == "benign" and samples.loc["mdb002__l1", "label_name"] == "malignant"
    )
    assert samples.loc["mdb002__l0", "pathology"] == "malignant"  # the image's own label is kept alongside
    assert [s["item"] for s in result.skipped] == ["mdb003 lesion 0"]
    assert result.per_class == {"normal": 0, "benign": 2, "malignant": 1}
    # the lesion sits at the centre of its ROI: map the output centre back to the original
    row = samples.loc["mdb002__l0"]
    centre = Geometry.from_record(row).to_original(23.5, 23.5)
    assert abs(centre[0] - 50) < 2 and abs(centre[1] - 71) < 2
    mask = read_sample(row["mask"])
    assert set(np.unique(mask)) == {0, 255} and mask[24, 24] == 255


def test_16_bit_cache_round_trip_and_geometry_columns(mias_dataset):
    config = PreprocessConfig(image_size=(40, 32), output_bits=16)
    preprocess_dataset(mias_dataset, config, workers=1)
    samples = load_preprocessed(mias_dataset, config).set_index("image_id")
    row = samples.loc["mdb001"]
    cached = read_sample(row["image"])
    manifest = pd.read_parquet(mias_dataset / "manifest.parquet").set_index("image_id")
    direct = preprocess_image(read_image(manifest.loc["mdb001", "image_path"]), config, laterality="R")
    assert cached.dtype == np.uint16 and np.array_equal(cached, direct.pixels)
    assert Geometry.from_record(row) == direct.geometry and row["output_height"] == 40
    assert bool(row["flipped"]) and not bool(samples.loc["mdb002", "flipped"])  # R flipped to the left, L kept
    assert samples["mask"].notna().sum() == 2 and samples.loc["mdb004", "laterality"] == "L"


def test_jpeg_masks_keep_their_outline(tmp_path):
    """Re-releases store masks as JPEG: the ringing around the edge must not grow the lesion."""
    from mammocad.preprocess.lesion_masks import read_mask

    mask = np.zeros((120, 100), np.uint8)
    mask[30:70, 20:60] = 255
    cv2.imwrite(str(tmp_path / "mask.jpg"), mask, [cv2.IMWRITE_JPEG_QUALITY, 75])
    read = read_mask(tmp_path, "mask.jpg", (120, 100))
    assert abs(int(read.sum()) - 40 * 40) <= 40  # within one pixel row of the true outline
    ones = (mask > 0).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "ones.png"), ones)  # 0/1 masks as some tools save them
    assert read_mask(tmp_path, "ones.png", (120, 100)).sum() == 1600
