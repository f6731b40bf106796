"""Paired significance tests for comparing two readers/models on the same cases.

- ``delong_auc`` / ``delong_test`` / ``auc_confidence_interval``: DeLong, DeLong & Clarke-Pearson
  (1988) nonparametric variance of the ROC AUC and the z test for two *correlated* AUCs (both models
  scored on the same cases), computed with the O(N log N) midrank algorithm of Sun & Xu (2014,
  IEEE Signal Processing Letters 21(11)) instead of the O(n_pos * n_neg) pairwise kernel.
  Ties count 1/2 (midranks), so the AUC equals the Mann-Whitney U / (n_pos * n_neg) and matches
  ``sklearn.metrics.roc_auc_score`` and R's pROC.
- ``mcnemar_test``: McNemar's test for the paired accuracy of two classifiers on the same images,
  exact binomial for few discordant pairs, chi-square with continuity correction otherwise.
- ``paired_t_test`` / ``wilcoxon_test``: two models' per-fold scores on the same cross-validation
  folds (scipy's ``ttest_rel`` and ``wilcoxon``), with the degenerate cases named instead of NaN.

Conventions: labels are 0/1 (1 = positive, e.g. malignant); a higher score means "more likely
positive". Every result is a frozen dataclass whose ``to_dict()`` holds only JSON-safe plain types.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

# Below this many discordant pairs the chi-square approximation is poor, so ``exact=None`` uses the
# exact binomial test (the usual rule of thumb, e.g. Agresti, Categorical Data Analysis).
MCNEMAR_EXACT_BELOW = 25

METHOD_EXACT = "exact binomial"
METHOD_CHI2 = "chi-square with continuity correction"


def _json_float(value: float) -> float | None:
    """A float JSON can hold: non-finite values (inf from a zero-variance test) become None."""
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class DelongResult:
    """DeLong's test of H0: AUC_a == AUC_b for two score vectors on the same cases.

    Fields: ``auc_a``, ``auc_b``; ``difference`` = auc_a - auc_b; ``std_error`` of that difference
    (DeLong, accounting for the correlation between the two AUCs); ``z`` = difference / std_error;
    ``p_value`` two-sided from the standard normal; ``n_positive``, ``n_negative`` case counts.
    When the difference has zero variance, ``z`` is 0 (p = 1) if the AUCs are equal and +/-inf
    (p = 0) otherwise.
    """

    auc_a: float
    auc_b: float
    difference: float
    std_error: float
    z: float
    p_value: float
    n_positive: int
    n_negative: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict of the fields (an infinite ``z`` becomes None)."""
        out = asdict(self)
        for key in ("auc_a", "auc_b", "difference", "std_error", "z", "p_value"):
            out[key] = _json_float(out[key])
        out["n_positive"] = int(self.n_positive)
        out["n_negative"] = int(self.n_negative)
        return out


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test of H0: the two classifiers are equally often right on the same items.

    Fields: ``b`` = items A got right and B got wrong; ``c`` = items A got wrong and B got right
    (only these discordant pairs carry information); ``statistic`` = min(b, c) for the exact test or
    the continuity-corrected chi-square (df = 1); ``p_value`` two-sided; ``method`` is
    ``"exact binomial"`` or ``"chi-square with continuity correction"``.
    """

    b: int
    c: int
    statistic: float
    p_value: float
    method: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict of the fields."""
        return {
            "b": int(self.b),
            "c": int(self.c),
            "statistic": _json_float(self.statistic),
            "p_value": _json_float(self.p_value),
            "method": str(self.method),
        }


def _check_labels(labels01: np.ndarray) -> np.ndarray:
    """Validate binary 0/1 labels with both classes present; returns a boolean (N,) mask of positives."""
    labels = np.asarray(labels01)
    if labels.ndim != 1:
        raise ValueError(f"labels must be a 1-D array, got shape {labels.shape}")
    if labels.size == 0:
        raise ValueError("labels are empty")
    if labels.dtype.kind not in "biuf" or not np.isin(labels, (0, 1)).all():
        bad = np.unique(labels[~np.isin(labels, (0, 1))])[:5] if labels.dtype.kind in "biuf" else labels[:5]
        raise ValueError(f"labels must be binary 0/1 (or bool); found values such as {bad.tolist()}")
    positive = labels.astype(bool)
    n_pos = int(positive.sum())
    if n_pos == 0:
        raise ValueError("labels contain no positives (1); the AUC is undefined")
    if n_pos == positive.size:
        raise ValueError("labels contain no negatives (0); the AUC is undefined")
    return positive


def _check_scores(scores: np.ndarray, n: int, name: str) -> np.ndarray:
    """Validate a finite 1-D score vector of length ``n``; returns it as float64."""
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {values.shape}")
    if values.size != n:
        raise ValueError(f"{name} has {values.size} entries but labels have {n}; they must be the same cases")
    if not np.isfinite(values).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return values


def _structural_components(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DeLong's structural components for K score vectors, by Sun & Xu's midrank algorithm.

    ``scores`` is (K, N). Returns ``(aucs (K,), v10 (K, m), v01 (K, n))`` where ``m``/``n`` are the
    positive/negative counts, ``v10[k, i]`` = fraction of negatives that positive ``i`` outscores
    (ties 1/2) and ``v01[k, j]`` = fraction of positives that outscore negative ``j`` (ties 1/2).
    AUC_k = mean(v10[k]) = mean(v01[k]).
    """
    pos = scores[:, positive]
    neg = scores[:, ~positive]
    m, n = pos.shape[1], neg.shape[1]
    # Midranks (average ranks for ties): within positives, within negatives and over all cases.
    # A positive's rank among all cases minus its rank among positives = how many negatives lie
    # below it (ties counted 1/2), which is exactly the pairwise kernel summed over negatives.
    rank_pos = stats.rankdata(pos, axis=1)
    rank_neg = stats.rankdata(neg, axis=1)
    rank_all = stats.rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    v10 = (rank_all[:, :m] - rank_pos) / n
    v01 = 1.0 - (rank_all[:, m:] - rank_neg) / m
    # Mann-Whitney form of the AUC straight from the positives' overall ranks (exact for ties).
    aucs = (rank_all[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
    return aucs, v10, v01


def _delong_variance(v10: np.ndarray, v01: np.ndarray) -> float:
    """DeLong variance of one AUC (or of an AUC difference) from its (m,) and (n,) components."""
    m, n = v10.size, v01.size
    if m < 2 or n < 2:
        # The sample variances below need two cases per class; with one the variance is undefined.
        raise ValueError(f"the DeLong variance needs at least 2 positives and 2 negatives (got {m} and {n})")
    return float(np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / n)


def delong_auc(labels01: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """AUC of ``scores`` for ``labels01`` and its DeLong variance.

    Returns ``(auc, variance)``: the AUC counts ties as 1/2 (so it equals ``roc_auc_score``) and the
    variance is var(V10)/n_pos + var(V01)/n_neg (sample variances, as in DeLong 1988 and pROC).
    Raises ValueError for non-binary labels, a missing class, fewer than 2 cases in a class,
    mismatched lengths or non-finite scores.
    """
    positive = _check_labels(labels01)
    values = _check_scores(scores, positive.size, "scores")
    aucs, v10, v01 = _structural_components(positive, values[None, :])
    return float(aucs[0]), _delong_variance(v10[0], v01[0])


def delong_test(labels01: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> DelongResult:
    """DeLong's two-sided z test for the difference of two correlated AUCs on the same cases.

    Returns a DelongResult (auc_a, auc_b, difference = auc_a - auc_b, std_error, z, p_value,
    n_positive, n_negative). Identical score vectors give z = 0 and p = 1.
    Raises ValueError as ``delong_auc`` does.
    """
    positive = _check_labels(labels01)
    a = _check_scores(scores_a, positive.size, "scores_a")
    b = _check_scores(scores_b, positive.size, "scores_b")
    aucs, v10, v01 = _structural_components(positive, np.stack([a, b]))
    difference = float(aucs[0] - aucs[1])
    # Var(A - B) = Var A + Var B - 2 Cov(A, B) equals the DeLong variance of the differenced
    # components; computing it that way is exactly 0 for identical inputs (no cancellation error).
    variance = _delong_variance(v10[0] - v10[1], v01[0] - v01[1])
    std_error = math.sqrt(max(variance, 0.0))
    if std_error > 0.0:
        z = difference / std_error
        p_value = float(2.0 * stats.norm.sf(abs(z)))
    elif difference == 0.0:
        z, p_value = 0.0, 1.0
    else:
        # A nonzero difference with no sampling variability (e.g. one model perfect, the other
        # constant): the evidence is as strong as it gets, so report it rather than divide by zero.
        z, p_value = math.copysign(math.inf, difference), 0.0
    return DelongResult(
        auc_a=float(aucs[0]),
        auc_b=float(aucs[1]),
        difference=difference,
        std_error=std_error,
        z=float(z),
        p_value=p_value,
        n_positive=int(positive.sum()),
        n_negative=int((~positive).sum()),
    )


def auc_confidence_interval(labels01: np.ndarray, scores: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided ``confidence`` interval for the AUC from the DeLong variance (normal approximation).

    Returns ``(low, high)`` = AUC -/+ z_{(1+confidence)/2} * sqrt(variance), clipped to [0, 1]
    (the same interval as pROC's ``ci.auc(method = "delong")``).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")
    auc, variance = delong_auc(labels01, scores)
    half_width = float(stats.norm.ppf(0.5 + confidence / 2.0)) * math.sqrt(max(variance, 0.0))
    return max(0.0, auc - half_width), min(1.0, auc + half_width)


def _check_correct(values: np.ndarray, name: str) -> np.ndarray:
    """Validate a 1-D per-item correctness vector (bool or 0/1); returns it as bool."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if arr.dtype.kind not in "biuf" or not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must be boolean or 0/1 (1 = classifier was right on the item)")
    return arr.astype(bool)


def mcnemar_test(correct_a: np.ndarray, correct_b: np.ndarray, exact: bool | None = None) -> McNemarResult:
    """McNemar's test comparing two classifiers' accuracy on the same items.

    ``correct_a[i]`` / ``correct_b[i]`` say whether classifier A / B was right on item ``i``.
    ``exact=None`` picks the exact binomial test (two-sided, p = 0.5 on the b + c discordant pairs)
    when b + c < 25 and the continuity-corrected chi-square ((|b - c| - 1)^2 / (b + c), df = 1)
    otherwise; True/False force one. Returns a McNemarResult; b + c == 0 gives statistic 0, p = 1.
    """
    a = _check_correct(correct_a, "correct_a")
    b_arr = _check_correct(correct_b, "correct_b")
    if a.size != b_arr.size:
        raise ValueError(f"correct_a has {a.size} items but correct_b has {b_arr.size}; they must be paired")
    if a.size == 0:
        raise ValueError("no paired items to compare")
    b = int(np.count_nonzero(a & ~b_arr))
    c = int(np.count_nonzero(~a & b_arr))
    discordant = b + c
    use_exact = discordant < MCNEMAR_EXACT_BELOW if exact is None else bool(exact)
    method = METHOD_EXACT if use_exact else METHOD_CHI2
    if discordant == 0:
        # No item separates the classifiers: no evidence of a difference (and 0/0 in the chi-square).
        return McNemarResult(b=b, c=c, statistic=0.0, p_value=1.0, method=method)
    if use_exact:
        p_value = float(stats.binomtest(b, discordant, 0.5, alternative="two-sided").pvalue)
        return McNemarResult(b=b, c=c, statistic=float(min(b, c)), p_value=min(p_value, 1.0), method=method)
    # Clamp at 0 so b == c gives statistic 0 and p = 1: the correction only shrinks |b - c| towards 0
    # and must not overshoot it into a spurious positive statistic.
    statistic = max(abs(b - c) - 1, 0) ** 2 / discordant
    p_value = float(stats.chi2.sf(statistic, df=1))
    return McNemarResult(b=b, c=c, statistic=float(statistic), p_value=p_value, method=method)


@dataclass(frozen=True)
class PairedResult:
    """A paired test of two models' per-fold scores (same folds, same order).

    Fields: ``test`` name; ``n`` pairs used (folds where either score is missing are dropped);
    ``mean_a``, ``mean_b`` and ``mean_difference`` (a - b) over those pairs; the test ``statistic``
    and two-sided ``p_value`` (None when the test cannot run); ``note`` says why, or what to know.
    """

    test: str
    n: int
    mean_a: float | None
    mean_b: float | None
    mean_difference: float | None
    statistic: float | None
    p_value: float | None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _paired(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray, str]:
    values_a = np.asarray(a, dtype=np.float64)
    values_b = np.asarray(b, dtype=np.float64)
    if values_a.ndim != 1 or values_a.shape != values_b.shape:
        raise ValueError(
            f"paired scores must be two 1-D arrays of equal length, got {values_a.shape} and {values_b.shape}"
        )
    keep = np.isfinite(values_a) & np.isfinite(values_b)
    dropped = int((~keep).sum())
    note = f"{dropped} fold(s) without a score dropped" if dropped else ""
    return values_a[keep], values_b[keep], note


def _result(
    test: str, a: np.ndarray, b: np.ndarray, statistic: float | None, p: float | None, note: str
) -> PairedResult:
    n = len(a)
    return PairedResult(
        test,
        n,
        _json_float(a.mean()) if n else None,
        _json_float(b.mean()) if n else None,
        _json_float((a - b).mean()) if n else None,
        None if statistic is None else _json_float(statistic),
        None if p is None else _json_float(p),
        note,
    )


def paired_t_test(scores_a: Any, scores_b: Any) -> PairedResult:
    """Paired (dependent-samples) t-test of H0: mean(a - b) == 0, as ``scipy.stats.ttest_rel``.

    Identical scores in every fold give p = 1 (scipy would return NaN); fewer than 2 pairs: no test.
    """
    a, b, note = _paired(scores_a, scores_b)
    if len(a) < 2:
        return _result("paired t-test", a, b, None, None, "; ".join(filter(None, [note, "fewer than 2 folds"])))
    differences = a - b
    if np.all(differences == differences[0]):
        if differences[0] == 0:
            return _result("paired t-test", a, b, 0.0, 1.0, "; ".join(filter(None, [note, "identical scores"])))
        return _result(
            "paired t-test", a, b, None, None, "; ".join(filter(None, [note, "constant non-zero difference"]))
        )
    result = stats.ttest_rel(a, b)
    return _result("paired t-test", a, b, float(result.statistic), float(result.pvalue), note)


def wilcoxon_test(scores_a: Any, scores_b: Any) -> PairedResult:
    """Wilcoxon signed-rank test of paired scores, as ``scipy.stats.wilcoxon`` (two-sided).

    scipy chooses the exact null distribution for small samples, so with 5 folds the smallest
    possible p is 2/32 = 0.0625: say so rather than let a reader wait for p < 0.05. All-zero
    differences give p = 1.
    """
    a, b, note = _paired(scores_a, scores_b)
    notes = [note]
    if len(a) < 2:
        return _result(
            "Wilcoxon signed-rank", a, b, None, None, "; ".join(filter(None, [*notes, "fewer than 2 folds"]))
        )
    nonzero = int(np.count_nonzero(a - b))
    if nonzero == 0:
        return _result("Wilcoxon signed-rank", a, b, 0.0, 1.0, "; ".join(filter(None, [*notes, "identical scores"])))
    if nonzero <= 6:
        notes.append(f"smallest possible p with {nonzero} non-zero differences is {2 / 2**nonzero:.4g}")
    result = stats.wilcoxon(a, b)
    return _result(
        "Wilcoxon signed-rank", a, b, float(result.statistic), float(result.pvalue), "; ".join(filter(None, notes))
    )
