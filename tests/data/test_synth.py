"""The synthetic phantom generator: deterministic, and its ground truth means what it says."""

from __future__ import annotations

import numpy as np
import pytest

from mammocad.data.synth import generate_case, power_law_noise, write_synthetic_dataset


def test_same_seed_same_image_and_different_seed_different():
    a = generate_case(7, "malignant", "MLO", "L")
    b = generate_case(7, "malignant", "MLO", "L")
    c = generate_case(8, "malignant", "MLO", "L")
    assert np.array_equal(a.pixels, b.pixels) and not np.array_equal(a.pixels, c.pixels)
    assert [lesion.box for lesion in a.lesions] == [lesion.box for lesion in b.lesions]


@pytest.mark.parametrize("bits", [8, 16])
def test_shapes_dtypes_and_dark_background(bits):
    case = generate_case(1, "benign", height=256, width=192, bits=bits)
    assert case.pixels.shape == (256, 192) and case.breast_mask.shape == (256, 192)
    assert case.pixels.dtype == (np.uint16 if bits == 16 else np.uint8)
    top = 65535 if bits == 16 else 255
    background = case.pixels[~case.breast_mask].astype(float)
    assert np.median(background) < 0.1 * top < np.median(case.pixels[case.breast_mask])


def test_lesions_per_pathology_lie_inside_the_breast():
    kinds = {"benign": set(), "malignant": set()}
    for seed in range(30):
        for pathology in ("benign", "malignant"):
            case = generate_case(seed, pathology, height=256, width=192)
            assert case.lesions, "abnormal cases always carry a lesion"
            for lesion in case.lesions:
                kinds[pathology].add(lesion.shape)
                assert lesion.pathology == pathology
                inside = case.breast_mask[lesion.mask].mean()
                assert inside > 0.9
                x0, y0, x1, y1 = lesion.box
                assert lesion.mask[y0:y1, x0:x1].sum() == lesion.mask.sum()
    assert kinds["benign"] <= {"round", "oval", "coarse"} and {"round", "oval"} & kinds["benign"]
    assert kinds["malignant"] <= {"irregular", "spiculated", "clustered-fine"}
    assert {"spiculated", "clustered-fine"} <= kinds["malignant"]


def test_normals_have_no_lesion():
    for seed in range(10):
        assert generate_case(seed, "normal").lesions == []


def test_pectoral_muscle_only_on_mlo_in_the_chest_wall_corner():
    corner = (slice(2, 25), slice(2, 20))  # top-left: the chest wall side of an L breast
    mlo = [generate_case(s, "normal", "MLO", "L").pixels[corner].mean() for s in range(8)]
    cc = [generate_case(s, "normal", "CC", "L").pixels[corner].mean() for s in range(8)]
    assert np.mean(mlo) > np.mean(cc) + 40


def test_right_breast_is_mirrored():
    case = generate_case(3, "benign", laterality="R")
    width = case.pixels.shape[1]
    assert case.breast_mask[:, -5:].sum() > case.breast_mask[:, :5].sum()
    assert all(lesion.box[2] <= width for lesion in case.lesions)


def test_film_label_sits_in_the_background():
    found = 0
    for seed in range(12):
        case = generate_case(seed, "normal")
        bright_background = (case.pixels > 180) & ~case.breast_mask
        if bright_background.sum() > 50:
            found += 1
    assert 2 <= found <= 11  # some images carry a label, some do not


def test_power_law_noise_spectrum_slope():
    noise = power_law_noise(np.random.default_rng(0), (256, 256), beta=3.0)
    spectrum = np.abs(np.fft.rfft2(noise)) ** 2
    fy = np.fft.fftfreq(256)[:, None]
    fx = np.fft.rfftfreq(256)[None, :]
    freq = np.sqrt(fx**2 + fy**2)
    band = (freq > 0.02) & (freq < 0.3)
    slope = np.polyfit(np.log(freq[band]), np.log(spectrum[band]), 1)[0]
    assert slope == pytest.approx(-3.0, abs=0.2)


def test_writer_refuses_bad_format_and_existing_output(tmp_path):
    with pytest.raises(ValueError, match="valid formats"):
        write_synthetic_dataset(tmp_path / "x", "dicom-zip")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f.txt").write_text("x")
    with pytest.raises(FileExistsError):
        write_synthetic_dataset(tmp_path / "full", "csv")
