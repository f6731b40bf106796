"""Pointing game and FROC-style lesion sensitivity on constructed heatmaps and masks."""

from __future__ import annotations

import numpy as np
import pytest

from mammocad.evaluation.localization import localization_metrics


def _mask(shape=(64, 64), boxes=((8, 8, 16, 16),)):
    mask = np.zeros(shape, dtype=bool)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = True
    return mask


def _heat(points, shape=(8, 8)):
    heat = np.zeros(shape, dtype=np.float32)
    for (row, col), value in points.items():
        heat[row, col] = value
    return heat


def test_pointing_game_counts_peaks_inside_lesions():
    lesion = _mask()  # cells (1..1, 1..1) of an 8x8 grid over 64x64 pixels
    hit = _heat({(1, 1): 0.9, (6, 6): 0.2})
    miss = _heat({(6, 6): 0.9, (1, 1): 0.5})
    result = localization_metrics([hit, miss, _heat({(3, 3): 0.4})], [lesion, lesion, None])
    assert result["pointing_game"] == {"hits": 1, "films": 2, "hit_rate": 0.5}


def test_froc_sensitivity_at_false_positives_per_film():
    two_lesions = _mask(boxes=((8, 8, 16, 16), (48, 48, 56, 56)))
    films = [
        _heat({(1, 1): 0.9, (4, 1): 0.8}),  # film 0: lesion A found first, then a false positive
        _heat({(3, 4): 0.7}),  # normal film: a false positive
        _heat({(6, 6): 0.6, (1, 6): 0.95}),  # film 2: a false positive above its lesion B
    ]
    masks = [two_lesions, None, _mask(boxes=((48, 48, 56, 56),))]
    froc = localization_metrics(films, masks)["froc"]
    assert froc["lesions"] == 3 and froc["films"] == 3
    # From the top: 0.95 FP (1/3 FP/film), 0.9 A, 0.8 FP (2/3), 0.7 FP (1 FP/film), 0.6 B: still 1 FP/film.
    assert froc["sensitivity_at_0.5_fp"] == pytest.approx(1 / 3)
    assert froc["sensitivity_at_1_fp"] == pytest.approx(2 / 3)
    assert froc["sensitivity_at_2_fp"] == pytest.approx(2 / 3)
    assert froc["fp_per_film"][-1] == pytest.approx(1.0) and froc["sensitivity"][-1] == pytest.approx(2 / 3, abs=1e-3)


def test_a_second_hit_on_the_same_lesion_is_neither_true_nor_false():
    lesion = _mask(boxes=((0, 0, 32, 32),))  # covers cells (0..3, 0..3)
    heat = _heat({(0, 0): 0.9, (2, 2): 0.8})
    froc = localization_metrics([heat], [lesion])["froc"]
    assert froc["fp_per_film"] == [0.0, 0.0] and froc["sensitivity"] == [0.0, 1.0]


def test_nothing_to_score_gives_undefined_rates():
    result = localization_metrics([_heat({(1, 1): 0.5})], [None])
    assert result["pointing_game"]["hit_rate"] is None
    assert result["froc"]["sensitivity_at_1_fp"] is None
    with pytest.raises(ValueError, match="heatmaps"):
        localization_metrics([_heat({})], [None, None])
