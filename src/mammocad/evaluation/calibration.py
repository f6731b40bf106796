"""Calibration of class probabilities: Brier score, top-label reliability table, expected calibration error.

Inputs are the same as for ``classification_metrics``: labels (N,) class indices and probs (N, C) rows
summing to 1. Outputs are plain floats, a pandas DataFrame, or a JSON-safe dict.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from mammocad.evaluation.metrics import check_predictions

RELIABILITY_COLUMNS = ("bin_low", "bin_high", "count", "mean_confidence", "accuracy")


def brier_score(labels: np.ndarray, probs: np.ndarray) -> float:
    """Multi-class Brier score: mean over samples of sum_k (p_k - onehot_k)^2, in [0, 2].

    For two classes this is twice the usual binary Brier score (each sample's error is counted once per
    column); use ``binary_brier(labels, probs[:, 1])`` for the binary definition.
    """
    labels_arr, probs_arr = check_predictions(labels, probs)
    onehot = np.eye(probs_arr.shape[1])[labels_arr]
    return float(np.mean(np.sum((probs_arr - onehot) ** 2, axis=1)))


def binary_brier(labels01: np.ndarray, scores: np.ndarray) -> float:
    """Binary Brier score: mean (score - label)^2 with labels in {0, 1}, scores in [0, 1]; in [0, 1].

    Same value as ``sklearn.metrics.brier_score_loss`` with the positive class 1.
    """
    y = np.asarray(labels01)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1:
        raise ValueError(f"labels01 and scores must be 1-D, got shapes {y.shape} and {s.shape}")
    if y.size == 0:
        raise ValueError("no samples: labels01 and scores are empty")
    if y.shape != s.shape:
        raise ValueError(f"labels01 has {y.size} samples but scores has {s.size}")
    if not np.all(np.isin(y, (0, 1))):
        raise ValueError("labels01 must contain only 0 and 1")
    if not np.all(np.isfinite(s)) or s.min() < 0 or s.max() > 1:
        raise ValueError("scores must be finite and lie in [0, 1]")
    return float(np.mean((s - y.astype(np.float64)) ** 2))


def _check_bins(n_bins: int) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    return int(n_bins)


def reliability_table(labels: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Top-label reliability: samples binned by confidence (max probability) into equal-width bins on [0, 1].

    Returns one row per bin with columns ``bin_low``, ``bin_high``, ``count`` (int), ``mean_confidence``
    and ``accuracy`` (fraction of the bin whose argmax is the true class); the last two are NaN for empty
    bins. Bins are [low, high) except the last, which includes 1.
    """
    n_bins = _check_bins(n_bins)
    labels_arr, probs_arr = check_predictions(labels, probs)
    confidence = probs_arr.max(axis=1)
    correct = probs_arr.argmax(axis=1) == labels_arr
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Bin with the same edges the table reports, so a value on an edge lands where the table says.
    index = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, n_bins - 1)
    counts = np.bincount(index, minlength=n_bins)
    conf_sum = np.bincount(index, weights=confidence, minlength=n_bins)
    correct_sum = np.bincount(index, weights=correct.astype(np.float64), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(counts > 0, conf_sum / counts, np.nan)
        accuracy = np.where(counts > 0, correct_sum / counts, np.nan)
    return pd.DataFrame(
        {
            "bin_low": edges[:-1],
            "bin_high": edges[1:],
            "count": counts.astype(np.int64),
            "mean_confidence": mean_conf,
            "accuracy": accuracy,
        },
        columns=list(RELIABILITY_COLUMNS),
    )


def _ece_from_table(table: pd.DataFrame) -> float:
    filled = table[table["count"] > 0]
    weights = filled["count"].to_numpy() / filled["count"].sum()
    gaps = np.abs(filled["accuracy"].to_numpy() - filled["mean_confidence"].to_numpy())
    return float(np.sum(weights * gaps))


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> float:
    """Top-label ECE: sum over non-empty bins of (n_b / N) * |accuracy_b - mean_confidence_b|, in [0, 1]."""
    return _ece_from_table(reliability_table(labels, probs, n_bins))


def calibration_summary(labels: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> dict[str, Any]:
    """Calibration numbers for a report, JSON-safe.

    Returns ``brier`` (multi-class Brier, see ``brier_score``), ``ece``, ``n_bins`` and ``bins``: the
    reliability table as a list of row dicts with NaN (empty bins) written as None.
    """
    table = reliability_table(labels, probs, n_bins)
    bins = [
        {
            "bin_low": float(row["bin_low"]),
            "bin_high": float(row["bin_high"]),
            "count": int(row["count"]),
            "mean_confidence": None if math.isnan(row["mean_confidence"]) else float(row["mean_confidence"]),
            "accuracy": None if math.isnan(row["accuracy"]) else float(row["accuracy"]),
        }
        for row in table.to_dict("records")
    ]
    return {
        "brier": brier_score(labels, probs),
        "ece": _ece_from_table(table),
        "n_bins": len(bins),
        "bins": bins,
    }
