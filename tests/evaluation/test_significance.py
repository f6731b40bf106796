"""DeLong's AUC test and McNemar's test: published reference values, brute force and edge cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mammocad.evaluation.significance import (
    MCNEMAR_EXACT_BELOW,
    METHOD_CHI2,
    METHOD_EXACT,
    DelongResult,
    McNemarResult,
    auc_confidence_interval,
    delong_auc,
    delong_test,
    mcnemar_test,
)

# pROC's example data set ``aSAH`` (Turck et al. 2010, Intensive Care Medicine 36(1):107-115; shipped
# with the R package pROC): 113 patients after aneurysmal subarachnoid haemorrhage, in the package's
# row order. Only the three columns the example uses: outcome (1 = "Poor", 0 = "Good"), the s100b
# biomarker, and the WFNS grade (an ordered factor 1..5, as.numeric in R; heavily tied).
ASAH_POOR = np.array([
    0, 0, 0, 0, 1, 1, 0, 1, 0, 0, 1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0, 1, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 1, 0, 0, 1, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 0,
    0, 0, 1, 0, 1, 0, 0, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1, 1, 0, 0, 0, 1, 1, 0, 1, 0, 0, 0,
    0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 0, 0,
    0,
])  # fmt: skip
ASAH_S100B = np.array([
    0.13, 0.14, 0.10, 0.04, 0.13, 0.10, 0.47, 0.16, 0.18, 0.10, 0.12, 0.10, 0.44, 0.71,
    0.04, 0.08, 0.49, 0.04, 0.07, 0.33, 0.09, 0.09, 0.07, 0.11, 0.07, 0.17, 0.07, 0.11,
    0.13, 0.19, 0.05, 0.16, 0.41, 0.14, 0.34, 0.35, 0.48, 0.09, 0.96, 0.25, 0.50, 0.46,
    0.16, 0.07, 0.43, 0.45, 0.11, 0.08, 0.09, 0.86, 0.52, 0.08, 0.06, 0.13, 2.07, 0.10,
    0.14, 0.15, 0.07, 0.06, 0.77, 0.05, 0.09, 0.30, 0.03, 0.09, 0.04, 0.23, 0.70, 0.09,
    0.27, 0.71, 0.08, 0.26, 0.08, 0.16, 0.09, 0.13, 0.10, 0.08, 0.11, 0.33, 0.11, 0.28,
    0.07, 0.10, 0.32, 0.22, 0.07, 0.05, 0.24, 0.38, 0.10, 0.15, 0.08, 0.14, 0.10, 0.07,
    0.04, 0.19, 0.56, 0.14, 0.58, 0.32, 0.82, 0.74, 0.15, 0.47, 0.17, 0.44, 0.15, 0.50,
    0.48,
])  # fmt: skip
ASAH_WFNS = np.array([
    1, 1, 1, 1, 3, 2, 5, 4, 1, 2, 5, 2, 5, 5, 1, 2, 5, 2, 2, 5, 2, 1, 1, 1, 1, 2, 1, 2,
    1, 1, 3, 4, 2, 1, 4, 5, 4, 1, 4, 2, 5, 5, 1, 1, 2, 4, 1, 1, 2, 5, 5, 2, 1, 2, 5, 1,
    2, 2, 2, 1, 5, 1, 1, 2, 5, 2, 1, 4, 5, 2, 4, 4, 1, 4, 1, 2, 1, 4, 2, 1, 2, 3, 2, 4,
    2, 1, 4, 5, 1, 1, 5, 4, 2, 2, 1, 1, 1, 3, 1, 2, 5, 2, 2, 5, 5, 5, 2, 4, 4, 5, 1, 1,
    1,
])  # fmt: skip


# ---------------------------------------------------------------------------------------------
# DeLong: the published pROC example
# ---------------------------------------------------------------------------------------------


def test_asah_data_shape() -> None:
    assert ASAH_POOR.size == ASAH_S100B.size == ASAH_WFNS.size == 113
    assert int(ASAH_POOR.sum()) == 41  # 41 "Poor", 72 "Good" outcomes


def test_delong_reproduces_proc_roc_test_example() -> None:
    # pROC's documented example:
    #   roc.test(roc(aSAH$outcome, aSAH$s100b), roc(aSAH$outcome, aSAH$wfns))
    #   DeLong's test for two correlated ROC curves: Z = -2.209, p-value = 0.02718
    #   sample estimates: AUC of roc1 0.7313686, AUC of roc2 0.8236789
    result = delong_test(ASAH_POOR, ASAH_S100B, ASAH_WFNS)
    assert round(result.auc_a, 4) == 0.7314
    assert round(result.auc_b, 4) == 0.8237
    assert result.auc_a == pytest.approx(0.7313686, abs=5e-8)
    assert result.auc_b == pytest.approx(0.8236789, abs=5e-8)
    assert round(result.z, 3) == -2.209
    assert round(result.p_value, 5) == 0.02718
    assert result.difference == pytest.approx(result.auc_a - result.auc_b)
    assert (result.n_positive, result.n_negative) == (41, 72)


def test_auc_ci_reproduces_proc_ci_example() -> None:
    # pROC: ci(roc(aSAH$outcome, aSAH$s100b)) -> "95% CI: 0.6301-0.8326 (DeLong)"
    low, high = auc_confidence_interval(ASAH_POOR, ASAH_S100B)
    assert (round(low, 4), round(high, 4)) == (0.6301, 0.8326)


def test_delong_test_is_antisymmetric() -> None:
    forward = delong_test(ASAH_POOR, ASAH_S100B, ASAH_WFNS)
    backward = delong_test(ASAH_POOR, ASAH_WFNS, ASAH_S100B)
    assert backward.z == pytest.approx(-forward.z)
    assert backward.p_value == pytest.approx(forward.p_value)
    assert backward.std_error == pytest.approx(forward.std_error)


# ---------------------------------------------------------------------------------------------
# DeLong: independent brute force
# ---------------------------------------------------------------------------------------------


def _brute_force_components(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's V10 (per positive) and V01 (per negative) from the full n_pos x n_neg kernel matrix."""
    pos = scores[labels == 1]
    neg = scores[labels == 0]
    kernel = (pos[:, None] > neg[None, :]).astype(float) + 0.5 * (pos[:, None] == neg[None, :])
    return kernel.mean(axis=1), kernel.mean(axis=0)


def _brute_force_delong(
    labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray
) -> tuple[float, float, float, float, float]:
    """(auc_a, auc_b, var_a, var_b, cov_ab) straight from DeLong et al. (1988), eqs. for S10 / S01."""
    v10_a, v01_a = _brute_force_components(labels, scores_a)
    v10_b, v01_b = _brute_force_components(labels, scores_b)
    m, n = v10_a.size, v01_a.size
    s10 = np.cov(np.stack([v10_a, v10_b]))  # ddof = 1, as in the paper
    s01 = np.cov(np.stack([v01_a, v01_b]))
    cov = s10 / m + s01 / n
    return float(v10_a.mean()), float(v10_b.mean()), float(cov[0, 0]), float(cov[1, 1]), float(cov[0, 1])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_delong_matches_brute_force_on_random_tied_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 150 + 40 * seed
    labels = (rng.random(n) < 0.35).astype(int)
    # Rounding forces many ties within and across classes (the midrank path must handle them).
    scores_a = np.round(labels * 0.8 + rng.normal(0, 1, n), 1)
    scores_b = np.round(0.6 * scores_a + rng.normal(0, 0.7, n), 1) if seed % 2 else rng.integers(0, 4, n)
    auc_a, auc_b, var_a, var_b, cov_ab = _brute_force_delong(labels, scores_a, scores_b)

    auc, var = delong_auc(labels, scores_a)
    assert auc == pytest.approx(auc_a, abs=1e-12)
    assert var == pytest.approx(var_a, rel=1e-10)
    assert auc == pytest.approx(roc_auc_score(labels, scores_a), abs=1e-12)

    result = delong_test(labels, scores_a, scores_b)
    assert result.auc_a == pytest.approx(auc_a, abs=1e-12)
    assert result.auc_b == pytest.approx(auc_b, abs=1e-12)
    expected_se = math.sqrt(var_a + var_b - 2 * cov_ab)
    assert result.std_error == pytest.approx(expected_se, rel=1e-9)
    expected_z = (auc_a - auc_b) / expected_se
    assert result.z == pytest.approx(expected_z, rel=1e-9)
    assert result.p_value == pytest.approx(math.erfc(abs(expected_z) / math.sqrt(2)), rel=1e-9)


def test_delong_auc_hand_computed() -> None:
    # positives 0.8, 0.5, 0.5; negatives 0.5, 0.2.
    # V10 (per positive, share of negatives below, ties 1/2) = [1, 3/4, 3/4]  -> AUC = 5/6
    # V01 (per negative, share of positives above, ties 1/2) = [2/3, 1]
    # var = var(V10)/3 + var(V01)/2 = (1/24)/3 + (1/18)/2 = 1/144 + 4/144 = 5/144
    labels = np.array([1, 1, 1, 0, 0])
    scores = np.array([0.8, 0.5, 0.5, 0.5, 0.2])
    auc, var = delong_auc(labels, scores)
    assert auc == pytest.approx(5 / 6)
    assert var == pytest.approx(5 / 144)


def test_all_tied_scores_give_auc_one_half() -> None:
    auc, var = delong_auc(np.array([1, 0, 1, 0, 1]), np.full(5, 0.3))
    assert auc == 0.5
    assert var == 0.0


def test_bool_labels_and_integer_scores_accepted() -> None:
    labels = ASAH_POOR.astype(bool)
    assert delong_auc(labels, ASAH_WFNS)[0] == pytest.approx(delong_auc(ASAH_POOR, ASAH_WFNS.astype(float))[0])


# ---------------------------------------------------------------------------------------------
# DeLong: degenerate cases and validation
# ---------------------------------------------------------------------------------------------


def test_identical_scores_give_z_zero_p_one() -> None:
    result = delong_test(ASAH_POOR, ASAH_S100B, ASAH_S100B.copy())
    assert result.difference == 0.0
    assert result.std_error == 0.0
    assert result.z == 0.0
    assert result.p_value == 1.0


def test_zero_variance_with_a_difference_reports_p_zero() -> None:
    # A perfect model against a constant one: every structural component is constant, so the
    # difference (0.5) has zero estimated variance.
    labels = np.array([0, 0, 0, 1, 1, 1])
    perfect = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    constant = np.full(6, 0.5)
    result = delong_test(labels, perfect, constant)
    assert result.difference == 0.5
    assert result.std_error == 0.0
    assert result.z == math.inf
    assert result.p_value == 0.0
    as_dict = result.to_dict()
    assert as_dict["z"] is None
    json.dumps(as_dict, allow_nan=False)


def test_delong_result_to_dict_is_json_safe_plain_types() -> None:
    result = delong_test(ASAH_POOR, ASAH_S100B, ASAH_WFNS)
    as_dict = result.to_dict()
    assert set(as_dict) == {
        "auc_a",
        "auc_b",
        "difference",
        "std_error",
        "z",
        "p_value",
        "n_positive",
        "n_negative",
    }
    assert all(type(v) in (float, int) for v in as_dict.values())
    assert json.loads(json.dumps(as_dict, allow_nan=False)) == as_dict
    assert isinstance(result, DelongResult)
    with pytest.raises(AttributeError):
        result.z = 0.0  # type: ignore[misc]  # frozen


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (np.array([0, 1, 2, 1]), "binary"),
        (np.array([-1, 1, -1, 1]), "binary"),
        (np.array(["Good", "Poor", "Good", "Poor"]), "binary"),
        (np.array([0.0, 1.0, np.nan, 1.0]), "binary"),
        (np.array([0, 0, 0, 0]), "no positives"),
        (np.array([1, 1, 1, 1]), "no negatives"),
    ],
)
def test_delong_rejects_bad_labels(labels: np.ndarray, match: str) -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match=match):
        delong_auc(labels, scores)
    with pytest.raises(ValueError, match=match):
        delong_test(labels, scores, scores)
    with pytest.raises(ValueError, match=match):
        auc_confidence_interval(labels, scores)


def test_delong_rejects_mismatched_lengths_and_bad_scores() -> None:
    labels = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="same cases"):
        delong_auc(labels, np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="scores_b"):
        delong_test(labels, np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        delong_auc(labels, np.array([0.1, np.nan, 0.3, 0.4]))
    with pytest.raises(ValueError, match="1-D"):
        delong_auc(labels, np.ones((2, 2)))


def test_delong_variance_needs_two_cases_per_class() -> None:
    with pytest.raises(ValueError, match="at least 2 positives"):
        delong_auc(np.array([1, 0, 0, 0]), np.array([0.9, 0.1, 0.2, 0.3]))


def test_auc_ci_confidence_levels_and_clipping() -> None:
    narrow = auc_confidence_interval(ASAH_POOR, ASAH_WFNS, confidence=0.80)
    wide = auc_confidence_interval(ASAH_POOR, ASAH_WFNS, confidence=0.99)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]
    # Near-perfect separation on few cases: the normal interval would pass 1, so it is clipped.
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.75, 0.7, 0.8, 0.9])
    low, high = auc_confidence_interval(labels, scores)
    assert high == 1.0
    assert 0.0 <= low < delong_auc(labels, scores)[0]
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="confidence"):
            auc_confidence_interval(labels, scores, confidence=bad)


# ---------------------------------------------------------------------------------------------
# McNemar
# ---------------------------------------------------------------------------------------------


def _paired(both: int, b: int, c: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Correctness vectors with the given 2x2 cell counts (b: only A right, c: only B right)."""
    correct_a = np.array([True] * both + [True] * b + [False] * c + [False] * neither)
    correct_b = np.array([True] * both + [False] * b + [True] * c + [False] * neither)
    return correct_a, correct_b


def test_mcnemar_exact_hand_computed() -> None:
    # b = 1, c = 9: two-sided binomial p = 2 * (C(10,0) + C(10,1)) / 2^10 = 22 / 1024
    result = mcnemar_test(*_paired(30, 1, 9, 5))
    assert (result.b, result.c) == (1, 9)
    assert result.method == METHOD_EXACT
    assert result.statistic == 1.0
    assert result.p_value == pytest.approx(22 / 1024, rel=1e-12)


def test_mcnemar_exact_balanced_is_p_one() -> None:
    result = mcnemar_test(*_paired(10, 5, 5, 3))
    assert result.method == METHOD_EXACT
    assert result.p_value == pytest.approx(1.0)


def test_mcnemar_chi_square_textbook_example() -> None:
    # Agresti (Categorical Data Analysis), presidential approval in two surveys of the same 1600
    # people: 794 approve/approve, 150 approve/disapprove, 86 disapprove/approve, 570 both disapprove.
    # Continuity-corrected McNemar: (|150 - 86| - 1)^2 / 236 = 3969 / 236 = 16.8178
    result = mcnemar_test(*_paired(794, 150, 86, 570))
    assert (result.b, result.c) == (150, 86)
    assert result.method == METHOD_CHI2
    assert result.statistic == pytest.approx(3969 / 236)
    assert round(result.statistic, 4) == 16.8178
    # chi-square with 1 df: P(X > s) = erfc(sqrt(s / 2)), an identity independent of scipy.
    assert result.p_value == pytest.approx(math.erfc(math.sqrt(result.statistic / 2)), rel=1e-10)
    assert result.p_value < 1e-4


def test_mcnemar_chi_square_known_value() -> None:
    # b = 18, c = 7: (11 - 1)^2 / 25 = 4.0, and P(chi2_1 > 4) = 0.0455003 (standard table value).
    result = mcnemar_test(*_paired(0, 18, 7, 0))
    assert result.method == METHOD_CHI2
    assert result.statistic == 4.0
    assert result.p_value == pytest.approx(0.04550026389635842, rel=1e-10)


def test_mcnemar_auto_threshold_and_forced_methods() -> None:
    below = mcnemar_test(*_paired(5, 16, MCNEMAR_EXACT_BELOW - 1 - 16, 5))
    at = mcnemar_test(*_paired(5, 16, MCNEMAR_EXACT_BELOW - 16, 5))
    assert below.method == METHOD_EXACT
    assert at.method == METHOD_CHI2
    assert mcnemar_test(*_paired(0, 150, 86, 0), exact=True).method == METHOD_EXACT
    forced_chi2 = mcnemar_test(*_paired(0, 1, 9, 0), exact=False)
    assert forced_chi2.method == METHOD_CHI2
    assert forced_chi2.statistic == pytest.approx(49 / 10)


def test_mcnemar_no_discordant_pairs_and_balanced_chi_square() -> None:
    for exact in (None, True, False):
        result = mcnemar_test(*_paired(20, 0, 0, 4), exact=exact)
        assert (result.statistic, result.p_value) == (0.0, 1.0)
    # b == c: the continuity correction must not push the statistic above 0.
    balanced = mcnemar_test(*_paired(0, 20, 20, 0))
    assert balanced.method == METHOD_CHI2
    assert (balanced.statistic, balanced.p_value) == (0.0, 1.0)


def test_mcnemar_is_symmetric_in_the_classifiers() -> None:
    a, b = _paired(40, 12, 3, 5)
    forward, backward = mcnemar_test(a, b), mcnemar_test(b, a)
    assert (backward.b, backward.c) == (forward.c, forward.b)
    assert backward.p_value == pytest.approx(forward.p_value)


def test_mcnemar_accepts_01_ints_and_to_dict() -> None:
    a, b = _paired(40, 12, 3, 5)
    result = mcnemar_test(a.astype(int), b.astype(int))
    assert isinstance(result, McNemarResult)
    as_dict = result.to_dict()
    assert as_dict == {
        "b": 12,
        "c": 3,
        "statistic": 3.0,
        "p_value": pytest.approx(result.p_value),
        "method": METHOD_EXACT,
    }
    json.dumps(as_dict, allow_nan=False)


def test_mcnemar_validation() -> None:
    with pytest.raises(ValueError, match="paired"):
        mcnemar_test(np.array([True, False]), np.array([True]))
    with pytest.raises(ValueError, match="0/1"):
        mcnemar_test(np.array([0, 2]), np.array([1, 1]))
    with pytest.raises(ValueError, match="no paired items"):
        mcnemar_test(np.array([], dtype=bool), np.array([], dtype=bool))


# ---- paired tests across folds --------------------------------------------------------------------

FOLD_A = [0.61, 0.58, 0.66, 0.71, 0.55]
FOLD_B = [0.52, 0.57, 0.60, 0.64, 0.56]


def test_paired_t_test_matches_scipy():
    from scipy import stats

    from mammocad.evaluation.significance import paired_t_test

    result = paired_t_test(FOLD_A, FOLD_B)
    expected = stats.ttest_rel(FOLD_A, FOLD_B)
    assert result.statistic == pytest.approx(expected.statistic)
    assert result.p_value == pytest.approx(expected.pvalue)
    assert result.n == 5 and result.mean_difference == pytest.approx(np.mean(np.subtract(FOLD_A, FOLD_B)))


def test_wilcoxon_matches_scipy_and_names_the_floor():
    from scipy import stats

    from mammocad.evaluation.significance import wilcoxon_test

    result = wilcoxon_test(FOLD_A, FOLD_B)
    expected = stats.wilcoxon(FOLD_A, FOLD_B)
    assert result.statistic == pytest.approx(expected.statistic)
    assert result.p_value == pytest.approx(expected.pvalue)
    assert "0.0625" in result.note  # 5 folds: the exact test cannot reach p < 0.05


def test_paired_tests_degenerate_cases():
    from mammocad.evaluation.significance import paired_t_test, wilcoxon_test

    same = paired_t_test(FOLD_A, FOLD_A)
    assert same.p_value == 1.0 and "identical" in same.note
    assert wilcoxon_test(FOLD_A, FOLD_A).p_value == 1.0
    with_nan = paired_t_test([*FOLD_A, np.nan], [*FOLD_B, 0.5])
    assert with_nan.n == 5 and "1 fold" in with_nan.note
    assert paired_t_test([0.5], [0.4]).p_value is None
    with pytest.raises(ValueError, match="equal length"):
        paired_t_test([0.1, 0.2], [0.1])
