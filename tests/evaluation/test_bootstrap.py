"""Patient-level (cluster) percentile bootstrap."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import numpy as np
import pytest

from mammocad.evaluation.bootstrap import BootstrapResult, cluster_bootstrap


def _mean_of(values: np.ndarray) -> Callable[[np.ndarray], float]:
    """statistic(indices) = mean of ``values`` over the resampled items."""
    return lambda idx: float(values[idx].mean())


def _width(result: BootstrapResult) -> float:
    assert result.low is not None and result.high is not None
    return result.high - result.low


def test_ci_contains_the_point_estimate_for_mean_and_accuracy() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(200), 2)
    values = rng.normal(3.0, 1.0, groups.size)
    result = cluster_bootstrap(groups, _mean_of(values), n_resamples=500)
    assert result.estimate == pytest.approx(values.mean())
    assert result.low < result.estimate < result.high
    assert (result.n_resamples, result.n_valid, result.confidence) == (500, 500, 0.95)
    assert (result.n_groups, result.n_items) == (200, 400)
    assert result.note is None

    correct = rng.random(groups.size) < 0.8
    accuracy = cluster_bootstrap(groups, _mean_of(correct.astype(float)), n_resamples=500)
    assert accuracy.low < correct.mean() < accuracy.high
    assert accuracy.low >= 0.0 and accuracy.high <= 1.0


def test_ci_width_shrinks_with_more_groups() -> None:
    rng = np.random.default_rng(1)
    widths = {}
    for n_groups in (50, 800):
        groups = np.repeat(np.arange(n_groups), 2)
        values = rng.normal(0.0, 1.0, groups.size)
        widths[n_groups] = _width(cluster_bootstrap(groups, _mean_of(values), n_resamples=400))
    # Standard error scales as 1/sqrt(groups): 16x the groups -> about a quarter of the width.
    assert widths[800] < 0.5 * widths[50]


def test_higher_confidence_gives_a_wider_interval() -> None:
    rng = np.random.default_rng(2)
    groups = np.arange(300)
    values = rng.normal(size=300)
    narrow = cluster_bootstrap(groups, _mean_of(values), confidence=0.8)
    wide = cluster_bootstrap(groups, _mean_of(values), confidence=0.99)
    assert wide.low < narrow.low < narrow.high < wide.high


def test_deterministic_for_a_fixed_seed() -> None:
    rng = np.random.default_rng(3)
    groups = rng.integers(0, 60, 150)
    values = rng.normal(size=150)
    first = cluster_bootstrap(groups, _mean_of(values), n_resamples=200, seed=7)
    again = cluster_bootstrap(groups, _mean_of(values), n_resamples=200, seed=7)
    other = cluster_bootstrap(groups, _mean_of(values), n_resamples=200, seed=8)
    assert first == again
    assert (other.low, other.high) != (first.low, first.high)


def test_each_resample_is_a_union_of_whole_groups() -> None:
    rng = np.random.default_rng(4)
    groups = rng.integers(0, 40, 130)  # unequal group sizes, items of a group scattered
    seen: list[np.ndarray] = []

    def record(idx: np.ndarray) -> float:
        seen.append(idx.copy())
        return float(idx.size)

    cluster_bootstrap(groups, record, n_resamples=50)
    full, resamples = seen[0], seen[1:]
    np.testing.assert_array_equal(full, np.arange(groups.size))
    assert len(resamples) == 50
    unique_groups = np.unique(groups)
    for idx in resamples:
        assert idx.dtype.kind == "i"
        copies = np.bincount(idx, minlength=groups.size)
        times_drawn = 0
        for g in unique_groups:
            members = copies[groups == g]
            # Every item of a group appears exactly as often as the group was drawn.
            assert (members == members[0]).all()
            times_drawn += int(members[0])
        assert times_drawn == unique_groups.size  # G groups drawn with replacement


def test_cluster_interval_is_wider_than_item_level_for_correlated_items() -> None:
    # Every patient has 5 identical images: only 60 independent values, not 300. Resampling images
    # independently (each image its own group) pretends otherwise and gives a ~sqrt(5)x narrower CI.
    rng = np.random.default_rng(5)
    n_patients, per_patient = 60, 5
    patient_ids = np.repeat(np.arange(n_patients), per_patient)
    values = np.repeat(rng.normal(size=n_patients), per_patient)
    by_patient = cluster_bootstrap(patient_ids, _mean_of(values), n_resamples=1000)
    by_image = cluster_bootstrap(np.arange(values.size), _mean_of(values), n_resamples=1000)
    assert by_patient.estimate == by_image.estimate
    assert _width(by_patient) > 1.6 * _width(by_image)


def test_string_patient_ids() -> None:
    ids = np.array(["P003", "P001", "P003", "P002", "P001", "P002"])
    values = np.array([1.0, 2.0, 1.0, 3.0, 2.0, 3.0])
    result = cluster_bootstrap(ids, _mean_of(values), n_resamples=300)
    assert result.n_groups == 3
    assert result.estimate == pytest.approx(2.0)
    assert 1.0 <= result.low <= 2.0 <= result.high <= 3.0


def test_partly_undefined_statistic_is_skipped_with_a_note() -> None:
    # AUC-like statistic undefined when a resample holds only one class: rare positives make that
    # happen on some resamples, but on well under half of them.
    groups = np.arange(40)
    labels = np.zeros(40, dtype=int)
    labels[:3] = 1

    def positive_rate(idx: np.ndarray) -> float | None:
        picked = labels[idx]
        return None if picked.min() == picked.max() else float(picked.mean())

    result = cluster_bootstrap(groups, positive_rate, n_resamples=500)
    assert 0.5 * 500 <= result.n_valid < 500
    assert result.low is not None and result.high is not None
    assert result.note is not None and "left out" in result.note


@pytest.mark.parametrize("undefined", [None, math.nan, math.inf])
def test_mostly_undefined_statistic_gives_no_interval(undefined: float | None) -> None:
    groups = np.arange(30)
    counter = {"calls": 0}

    def sometimes(idx: np.ndarray) -> float | None:
        counter["calls"] += 1
        # defined on the full data and on every 4th resample only (25% < 50%)
        return float(idx.size) if counter["calls"] % 4 == 1 else undefined

    result = cluster_bootstrap(groups, sometimes, n_resamples=100)
    assert result.estimate == 30.0
    assert result.n_valid == 25
    assert result.low is None and result.high is None
    assert result.note is not None and "25 of 100" in result.note
    json.dumps(result.to_dict(), allow_nan=False)


def test_statistic_undefined_everywhere() -> None:
    result = cluster_bootstrap(np.arange(10), lambda idx: None, n_resamples=20)
    assert (result.estimate, result.low, result.high, result.n_valid) == (None, None, None, 0)
    assert "undefined on the full data" in result.note


def test_min_valid_fraction_is_configurable() -> None:
    def every_third() -> Callable[[np.ndarray], float | None]:
        counter = {"calls": 0}

        def statistic(idx: np.ndarray) -> float | None:
            counter["calls"] += 1
            # defined on the full data (call 1) and on 33 of the 100 resamples
            return float(counter["calls"]) if counter["calls"] % 3 == 1 else None

        return statistic

    strict = cluster_bootstrap(np.arange(10), every_third(), n_resamples=100)
    lenient = cluster_bootstrap(np.arange(10), every_third(), n_resamples=100, min_valid_fraction=0.2)
    assert strict.n_valid == lenient.n_valid == 33
    assert strict.low is None
    assert lenient.low is not None and lenient.high is not None


def test_to_dict_is_json_safe_plain_types() -> None:
    result = cluster_bootstrap(np.repeat(np.arange(20), 3), lambda idx: float(idx.mean()), n_resamples=50)
    as_dict = result.to_dict()
    assert set(as_dict) == {
        "estimate",
        "low",
        "high",
        "n_resamples",
        "n_valid",
        "confidence",
        "n_groups",
        "n_items",
        "note",
    }
    assert all(type(v) in (float, int, str, type(None)) for v in as_dict.values())
    assert json.loads(json.dumps(as_dict, allow_nan=False)) == as_dict
    with pytest.raises(AttributeError):
        result.low = 0.0  # type: ignore[misc]  # frozen


def test_validation() -> None:
    stat = _mean_of(np.ones(4))
    with pytest.raises(ValueError, match="empty"):
        cluster_bootstrap(np.array([]), stat)
    with pytest.raises(ValueError, match="1-D"):
        cluster_bootstrap(np.zeros((2, 2)), stat)
    with pytest.raises(ValueError, match="n_resamples"):
        cluster_bootstrap(np.arange(4), stat, n_resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        cluster_bootstrap(np.arange(4), stat, confidence=1.0)
    with pytest.raises(ValueError, match="min_valid_fraction"):
        cluster_bootstrap(np.arange(4), stat, min_valid_fraction=1.5)
