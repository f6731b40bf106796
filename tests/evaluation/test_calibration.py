"""Brier scores, reliability table, ECE and the calibration summary."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss

from mammocad.evaluation.calibration import (
    binary_brier,
    brier_score,
    calibration_summary,
    expected_calibration_error,
    reliability_table,
)

# Four binary samples: confidences 0.9 (right), 0.8 (wrong), 0.6 (right), 0.7 (right).
HAND_LABELS = np.array([0, 1, 1, 1])
HAND_PROBS = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7]])


def _random_probs(seed: int, n: int, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(n_classes), size=n)
    labels = rng.integers(0, n_classes, size=n)
    return labels, probs


def test_hand_example() -> None:
    table = reliability_table(HAND_LABELS, HAND_PROBS, n_bins=4)
    assert table["count"].tolist() == [0, 0, 2, 2]
    assert table["bin_low"].tolist() == [0.0, 0.25, 0.5, 0.75]
    assert table["bin_high"].tolist() == [0.25, 0.5, 0.75, 1.0]
    # [0.5, 0.75): 0.6 and 0.7, both right; [0.75, 1]: 0.9 right, 0.8 wrong
    assert table["mean_confidence"].iloc[2:].tolist() == pytest.approx([0.65, 0.85])
    assert table["accuracy"].iloc[2:].tolist() == pytest.approx([1.0, 0.5])
    assert table["mean_confidence"].iloc[:2].isna().all() and table["accuracy"].iloc[:2].isna().all()
    # ECE = 2/4 * |1 - 0.65| + 2/4 * |0.5 - 0.85| = 0.35
    assert expected_calibration_error(HAND_LABELS, HAND_PROBS, n_bins=4) == pytest.approx(0.35)
    # per-sample sum of squared errors: 0.02, 1.28, 0.32, 0.18 -> mean 0.45; binary Brier is half
    assert brier_score(HAND_LABELS, HAND_PROBS) == pytest.approx(0.45)
    assert binary_brier(HAND_LABELS, HAND_PROBS[:, 1]) == pytest.approx(0.225)


def test_three_class_brier_by_hand() -> None:
    labels = np.array([0, 2])
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    # (0.25 + 0.09 + 0.04) and (0.01 + 0.01 + 0.04)
    assert brier_score(labels, probs) == pytest.approx((0.38 + 0.06) / 2)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_perfectly_calibrated_has_zero_ece(n_classes: int) -> None:
    # In each bin every sample has confidence c and exactly a fraction c of them is right.
    rows, labels = [], []
    for c in (0.55, 0.65, 0.75, 0.85, 0.95):
        rest = (1 - c) / (n_classes - 1)
        for i in range(100):
            rows.append([c] + [rest] * (n_classes - 1))  # argmax is class 0
            labels.append(0 if i < round(c * 100) else 1)
    probs, labels = np.array(rows), np.array(labels)
    assert expected_calibration_error(labels, probs, n_bins=10) == pytest.approx(0.0, abs=1e-12)
    table = reliability_table(labels, probs, n_bins=10)
    filled = table[table["count"] > 0]
    assert filled["count"].tolist() == [100] * 5
    np.testing.assert_allclose(filled["accuracy"], filled["mean_confidence"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_brier_matches_sklearn(seed: int) -> None:
    labels, probs = _random_probs(seed, 200, 2)
    expected = brier_score_loss(labels, probs[:, 1])
    assert binary_brier(labels, probs[:, 1]) == pytest.approx(expected)
    assert brier_score(labels, probs) == pytest.approx(2 * expected)


@pytest.mark.parametrize("n_bins", [1, 5, 10, 15])
def test_table_counts_sum_to_n(n_bins: int) -> None:
    labels, probs = _random_probs(4, 137, 3)
    table = reliability_table(labels, probs, n_bins=n_bins)
    assert list(table.columns) == ["bin_low", "bin_high", "count", "mean_confidence", "accuracy"]
    assert len(table) == n_bins
    assert int(table["count"].sum()) == 137
    assert pd.api.types.is_integer_dtype(table["count"])
    # confidences on edges (including exactly 1) land in a bin
    edge_probs = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.2, 0.2, 0.6]])
    edge_table = reliability_table(np.array([0, 1, 2]), edge_probs, n_bins=n_bins)
    assert int(edge_table["count"].sum()) == 3


def test_edge_value_goes_to_upper_bin() -> None:
    table = reliability_table(np.array([0, 0]), np.array([[0.5, 0.5], [1.0, 0.0]]), n_bins=2)
    assert table["count"].tolist() == [0, 2]


def test_ece_bounds_and_single_bin() -> None:
    labels, probs = _random_probs(5, 300, 3)
    ece = expected_calibration_error(labels, probs, n_bins=10)
    assert 0.0 <= ece <= 1.0
    # one bin: |accuracy - mean confidence|
    acc = np.mean(probs.argmax(axis=1) == labels)
    assert expected_calibration_error(labels, probs, n_bins=1) == pytest.approx(abs(acc - probs.max(axis=1).mean()))


def test_summary_is_json_safe() -> None:
    summary = calibration_summary(HAND_LABELS, HAND_PROBS, n_bins=4)
    assert set(summary) == {"brier", "ece", "n_bins", "bins"}
    assert summary["n_bins"] == 4
    assert summary["brier"] == pytest.approx(0.45)
    assert summary["ece"] == pytest.approx(0.35)
    assert summary["bins"][0] == {
        "bin_low": 0.0,
        "bin_high": 0.25,
        "count": 0,
        "mean_confidence": None,
        "accuracy": None,
    }
    assert summary["bins"][3]["accuracy"] == pytest.approx(0.5)
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary


@pytest.mark.parametrize("n_bins", [0, -1, 2.5, True])
def test_bad_bins(n_bins) -> None:
    with pytest.raises(ValueError, match="n_bins"):
        reliability_table(HAND_LABELS, HAND_PROBS, n_bins=n_bins)


@pytest.mark.parametrize(
    ("labels", "probs"),
    [
        (np.array([], dtype=int), np.zeros((0, 2))),
        (np.array([0, 1, 1]), np.full((2, 2), 0.5)),
        (np.array([0, 2]), np.full((2, 2), 0.5)),
        (np.array([0, 1]), np.array([[0.9, 0.9], [0.5, 0.5]])),
    ],
)
def test_validation_errors(labels, probs) -> None:
    for fn in (brier_score, reliability_table, expected_calibration_error, calibration_summary):
        with pytest.raises(ValueError):
            fn(labels, probs)


@pytest.mark.parametrize(
    ("labels01", "scores", "match"),
    [
        (np.array([]), np.array([]), "empty"),
        (np.array([0, 1]), np.array([0.5]), "samples"),
        (np.array([0, 2]), np.array([0.5, 0.5]), "only 0 and 1"),
        (np.array([0, 1]), np.array([0.5, 1.5]), r"\[0, 1\]"),
        (np.array([[0, 1]]), np.array([[0.5, 0.5]]), "1-D"),
    ],
)
def test_binary_brier_validation(labels01, scores, match) -> None:
    with pytest.raises(ValueError, match=match):
        binary_brier(labels01, scores)
