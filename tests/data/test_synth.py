"""The synthetic phantom generator: deterministic, and its ground truth means what it says."""

from __future__ import annotations

from collections import Counter

import cv2
import numpy as np
import pytest

from mammocad.data.synth import generate_case, power_law_noise, write_synthetic_dataset
from mammocad.data.synth.writers import plan_images, written_counts

SMALL = {"height": 256, "width": 192}


def test_same_seed_same_case_and_different_seed_different():
    a = generate_case(7, "malignant", "MLO", "L")
    b = generate_case(7, "malignant", "MLO", "L")
    c = generate_case(8, "malignant", "MLO", "L")
    assert np.array_equal(a.pixels, b.pixels) and np.array_equal(a.breast_mask, b.breast_mask)
    assert [lesion.box for lesion in a.lesions] == [lesion.box for lesion in b.lesions]
    assert all(np.array_equal(x.mask, y.mask) for x, y in zip(a.lesions, b.lesions, strict=True))
    assert a.label_box == b.label_box and a.density == b.density
    assert not np.array_equal(a.pixels, c.pixels)


def test_anatomy_does_not_depend_on_pathology():
    normal = generate_case(11, "normal", "CC", "L", **SMALL)
    malignant = generate_case(11, "malignant", "CC", "L", **SMALL)
    assert np.array_equal(normal.breast_mask, malignant.breast_mask) and normal.density == malignant.density
    assert normal.label_box == malignant.label_box


@pytest.mark.parametrize("bits", [8, 16])
def test_shapes_dtypes_and_dark_background(bits):
    case = generate_case(1, "benign", height=200, width=150, bits=bits)
    assert case.pixels.shape == case.breast_mask.shape == (200, 150)
    assert case.pixels.dtype == (np.uint16 if bits == 16 else np.uint8) and case.breast_mask.dtype == bool
    assert all(lesion.mask.shape == (200, 150) and lesion.mask.dtype == bool for lesion in case.lesions)
    top = 65535 if bits == 16 else 255
    background = case.pixels[~case.breast_mask].astype(float)
    assert np.median(background) < 0.1 * top < 0.3 * top < np.median(case.pixels[case.breast_mask])


def test_16_bit_is_the_same_picture_at_more_depth():
    low = generate_case(4, "benign", bits=8, **SMALL).pixels.astype(float)
    high = generate_case(4, "benign", bits=16, **SMALL).pixels.astype(float) / 257.0
    assert np.abs(low - high).max() <= 1.0


def test_lesions_per_pathology_lie_inside_the_breast_with_consistent_geometry():
    shapes: dict[str, Counter[str]] = {"benign": Counter(), "malignant": Counter()}
    for seed in range(40):
        for pathology in ("benign", "malignant"):
            case = generate_case(seed, pathology, "MLO" if seed % 2 else "CC", "LR"[seed % 3 == 0], **SMALL)
            assert 1 <= len(case.lesions) <= 2, "abnormal cases carry one or two findings"
            for lesion in case.lesions:
                shapes[pathology][lesion.shape] += 1
                assert lesion.pathology == pathology
                assert lesion.kind == ("calcification" if lesion.shape in ("coarse", "clustered-fine") else "mass")
                assert not (lesion.mask & ~case.breast_mask).any(), "a lesion pixel outside the breast"
                if case.pectoral_mask is not None:
                    assert not (lesion.mask & case.pectoral_mask).any(), "a lesion on the pectoral muscle"
                ys, xs = np.nonzero(lesion.mask)
                assert lesion.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
                distances = np.hypot(xs - lesion.center[0], ys - lesion.center[1])
                assert distances.max() <= lesion.radius < distances.max() + 1.0
                x0, y0, x1, y1 = lesion.box
                assert x0 <= lesion.center[0] < x1 and y0 <= lesion.center[1] < y1
    assert set(shapes["benign"]) == {"round", "oval", "coarse"}
    assert set(shapes["malignant"]) == {"irregular", "spiculated", "clustered-fine"}


def test_lesions_are_brighter_than_their_surroundings():
    for seed in range(12):
        case = generate_case(seed, "malignant" if seed % 2 else "benign", **SMALL)
        for lesion in case.lesions:
            ring = cv2.dilate(lesion.mask.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool) & ~lesion.mask
            ring &= case.breast_mask
            inside = np.percentile(case.pixels[lesion.mask], 90)
            assert inside > np.median(case.pixels[ring])


def test_calcification_grains_fine_for_malignant_coarse_for_benign():
    def grain_count(pathology: str, shape: str) -> list[int]:
        counts = []
        for seed in range(30):
            case = generate_case(seed, pathology)
            for lesion in case.lesions:
                if lesion.shape == shape:
                    # Grains are the small bright spots of the region: a top-hat isolates them.
                    x0, y0, x1, y1 = lesion.box
                    rows, cols = slice(max(0, y0 - 8), y1 + 8), slice(max(0, x0 - 8), x1 + 8)
                    region = case.pixels[rows, cols].astype(np.float32)
                    tophat = region - cv2.morphologyEx(region, cv2.MORPH_OPEN, np.ones((9, 9), np.uint8))
                    spots = (tophat > 18) & lesion.mask[rows, cols]
                    counts.append(cv2.connectedComponents(spots.astype(np.uint8))[0] - 1)
        return counts

    fine, coarse = grain_count("malignant", "clustered-fine"), grain_count("benign", "coarse")
    assert fine and coarse
    assert np.median(fine) >= 5 > np.median(coarse)


def test_normals_have_no_lesion():
    for seed in range(10):
        case = generate_case(seed, "normal", "MLO" if seed % 2 else "CC", **SMALL)
        assert case.lesions == [] and not case.lesion_mask.any()


def test_pectoral_muscle_only_on_mlo_in_the_bright_chest_wall_corner():
    for seed in range(6):
        cc = generate_case(seed, "normal", "CC", "L", **SMALL)
        assert cc.pectoral_mask is None
        for laterality in ("L", "R"):
            mlo = generate_case(seed, "normal", "MLO", laterality, **SMALL)
            muscle = mlo.pectoral_mask
            assert muscle is not None and muscle.any() and not (muscle & ~mlo.breast_mask).any()
            corner = muscle[:20, :20] if laterality == "L" else muscle[:20, -20:]
            assert corner.all(), "the muscle fills the top chest-wall corner"
            assert not muscle[-20:].any(), "and stays in the upper part"
            tissue = mlo.breast_mask & ~muscle
            assert np.median(mlo.pixels[muscle]) > np.median(mlo.pixels[tissue]) + 15
        # The same breast seen CC has no bright corner (film background or ordinary tissue there).
        assert (
            generate_case(seed, "normal", "MLO", "L", **SMALL).pixels[:20, :20].mean() > cc.pixels[:20, :20].mean() + 40
        )


def test_right_breast_is_the_mirror_image_of_the_left():
    left = generate_case(3, "benign", "CC", "L", **SMALL)
    right = generate_case(3, "benign", "CC", "R", **SMALL)
    assert np.array_equal(right.breast_mask, left.breast_mask[:, ::-1])
    assert left.breast_mask[:, :3].sum() > 0 == left.breast_mask[:, -3:].sum()  # chest wall on the left for L
    width = right.pixels.shape[1]
    for a, b in zip(left.lesions, right.lesions, strict=True):
        assert b.box == (width - a.box[2], a.box[1], width - a.box[0], a.box[3])
        assert b.center == (width - 1 - a.center[0], a.center[1])
        assert np.array_equal(b.mask, a.mask[:, ::-1])


def test_film_label_is_a_bright_box_away_from_the_breast():
    with_label = 0
    for seed in range(16):
        case = generate_case(seed, "normal", "MLO" if seed % 2 else "CC", "LR"[seed % 3 == 0], **SMALL)
        if case.label_box is None:
            assert (case.pixels[~case.breast_mask] > 150).sum() == 0
            continue
        with_label += 1
        x0, y0, x1, y1 = case.label_box
        grown = cv2.dilate(case.breast_mask.astype(np.uint8), np.ones((5, 5), np.uint8))
        assert not grown[y0:y1, x0:x1].any(), "the label touches the breast"
        label = case.pixels[y0:y1, x0:x1]
        assert np.median(label) > 180 and label.min() < np.median(label) - 60  # bright paper, dark letters
    assert 3 <= with_label <= 13  # about half the images


def test_density_follows_the_argument_and_varies_otherwise():
    drawn = {generate_case(seed, "normal", **SMALL).density for seed in range(30)}
    assert drawn == {"A", "B", "C", "D"}
    fatty = [generate_case(s, "normal", density="A", **SMALL) for s in range(6)]
    dense = [generate_case(s, "normal", density="D", **SMALL) for s in range(6)]
    assert {case.density for case in fatty} == {"A"}

    def mean_tissue(cases):
        return np.mean([case.pixels[case.breast_mask].mean() for case in cases])

    assert mean_tissue(dense) > mean_tissue(fatty) + 20


def test_class_is_not_readable_from_global_brightness():
    """Mean breast brightness of normal and malignant cases overlaps (rank AUC near 0.5)."""

    def breast_mean(seed: int, pathology: str) -> float:
        case = generate_case(seed, pathology, **SMALL)
        return float(case.pixels[case.breast_mask].mean())

    means = {
        pathology: [breast_mean(seed, pathology) for seed in range(100, 130)] for pathology in ("normal", "malignant")
    }
    normal, malignant = np.array(means["normal"]), np.array(means["malignant"])
    auc = (malignant[:, None] > normal[None, :]).mean()
    assert 0.3 < auc < 0.7


def test_bad_arguments_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="pathology"):
        generate_case(0, "cancer")
    with pytest.raises(ValueError, match="view"):
        generate_case(0, "normal", view="ML")
    with pytest.raises(ValueError, match="laterality"):
        generate_case(0, "normal", laterality="B")
    with pytest.raises(ValueError, match="bits"):
        generate_case(0, "normal", bits=12)
    with pytest.raises(ValueError, match="size"):
        generate_case(0, "normal", height=20, width=20)
    with pytest.raises(ValueError, match="density"):
        generate_case(0, "normal", density="E")


def test_power_law_noise_spectrum_slope():
    noise = power_law_noise(np.random.default_rng(0), (256, 256), beta=3.0)
    assert abs(noise.mean()) < 1e-4 and noise.std() == pytest.approx(1.0, abs=1e-3)
    spectrum = np.abs(np.fft.rfft2(noise)) ** 2
    fy = np.fft.fftfreq(256)[:, None]
    fx = np.fft.rfftfreq(256)[None, :]
    freq = np.sqrt(fx**2 + fy**2)
    band = (freq > 0.02) & (freq < 0.3)
    slope = np.polyfit(np.log(freq[band]), np.log(spectrum[band]), 1)[0]
    assert slope == pytest.approx(-3.0, abs=0.2)


def test_patient_plan_has_exact_counts_and_a_normal_other_breast():
    counts = {"normal": 7, "benign": 5, "malignant": 4}
    plan = plan_images(counts, seed=3)
    assert Counter(item.pathology for item in plan) == counts
    by_patient: dict[int, list] = {}
    for item in plan:
        by_patient.setdefault(item.patient, []).append(item)
    for items in by_patient.values():
        assert len({(item.laterality, item.view) for item in items}) == len(items) <= 4
        assert len({item.density for item in items}) == 1  # one patient, one breast density
        sick = {item.laterality for item in items if item.pathology != "normal"}
        assert len(sick) <= 1, "a finding lives in one breast"
        assert len({item.pathology for item in items} - {"normal"}) <= 1
    # Normals go first to the other breast of patients with a finding.
    assert any(len({item.pathology for item in items}) == 2 for items in by_patient.values())
    assert len({item.seed for item in plan}) == len(plan)
    assert plan == plan_images(counts, seed=3) and plan != plan_images(counts, seed=4)
    mias = plan_images(counts, seed=3, views=("MLO",))
    assert Counter(item.pathology for item in mias) == counts and {item.view for item in mias} == {"MLO"}


def test_written_counts_drop_normals_only_where_the_source_has_none():
    asked = {"normal": 3, "benign": 2, "malignant": 1}
    assert written_counts("csv", asked) == asked
    assert written_counts("cbis-ddsm", asked) == written_counts("bcdr", asked) == {**asked, "normal": 0}
    assert written_counts("csv", None) == {"normal": 20, "benign": 20, "malignant": 20}
    with pytest.raises(ValueError, match="unknown classes"):
        written_counts("csv", {"cancer": 2})
    with pytest.raises(ValueError, match=">= 0"):
        written_counts("csv", {"benign": -1})


def test_writer_refuses_bad_format_existing_output_and_nothing_to_write(tmp_path):
    with pytest.raises(ValueError, match="valid formats: mias, folders, csv"):
        write_synthetic_dataset(tmp_path / "x", "dicom-zip")
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not overwriting"):
        write_synthetic_dataset(full, "csv", {"normal": 1})
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
    with pytest.raises(ValueError, match="no normal images"):
        write_synthetic_dataset(tmp_path / "cbis", "cbis-ddsm", {"normal": 3})
    assert not (tmp_path / "cbis").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    path = write_synthetic_dataset(empty, "csv", {"normal": 1}, height=64, width=64)
    assert path == empty / "labels.csv" and path.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]  # no staging debris


def test_writer_is_deterministic(tmp_path):
    a = write_synthetic_dataset(tmp_path / "a", "folders", {"benign": 2, "normal": 1}, seed=9, height=64, width=64)
    b = write_synthetic_dataset(tmp_path / "b", "folders", {"benign": 2, "normal": 1}, seed=9, height=64, width=64)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*.png")) and len(files_a) == 3
    assert all((a / rel).read_bytes() == (b / rel).read_bytes() for rel in files_a)
