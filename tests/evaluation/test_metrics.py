"""classification_metrics against sklearn, hand-computed cases, undefined handling, overfit and headline."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
)

from mammocad.evaluation.metrics import classification_metrics, headline, overfit_metrics

THREE = ["normal", "benign", "malignant"]


def _random_case(seed: int, n_classes: int, n: int = 120) -> tuple[np.ndarray, np.ndarray]:
    """Random labels and informative-but-noisy softmax probs where every class is present and predicted."""
    rng = np.random.default_rng(seed)
    while True:
        labels = rng.integers(0, n_classes, size=n)
        logits = rng.normal(size=(n, n_classes)) + 1.5 * np.eye(n_classes)[labels]
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        preds = probs.argmax(axis=1)
        if len(set(labels)) == n_classes and len(set(preds)) == n_classes and (preds != labels).any():
            return labels, probs


def _none_paths(obj: Any, prefix: str = "") -> list[str]:
    """Dotted keys of every None value in a nested dict (lists of values are not expected to hold None)."""
    paths = []
    for key, value in obj.items():
        path = f"{prefix}{key}"
        if value is None:
            paths.append(path)
        elif isinstance(value, dict) and key not in ("undefined", "macro_over"):
            paths.extend(_none_paths(value, path + "."))
    return paths


def _check_contract(out: dict[str, Any]) -> None:
    """JSON-safe, no numpy types, no NaN, and every None is explained under `undefined` (and only those)."""
    text = json.dumps(out, allow_nan=False)
    assert json.loads(text) == out
    assert sorted(_none_paths(out)) == sorted(out["undefined"])
    assert all(isinstance(reason, str) and reason for reason in out["undefined"].values())


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_sklearn_when_well_defined(seed: int, n_classes: int) -> None:
    labels, probs = _random_case(seed, n_classes)
    classes = THREE if n_classes == 3 else ["benign", "malignant"]
    out = classification_metrics(labels, probs, classes)
    preds = probs.argmax(axis=1)

    assert out["n"] == len(labels)
    assert out["undefined"] == {}
    assert out["accuracy"] == pytest.approx(accuracy_score(labels, preds))
    assert out["loss"] == pytest.approx(log_loss(labels, probs, labels=list(range(n_classes))))
    assert out["confusion_matrix"] == confusion_matrix(labels, preds).tolist()

    p, r, f, s = precision_recall_fscore_support(labels, preds, labels=list(range(n_classes)), zero_division=np.nan)
    for k, name in enumerate(classes):
        row = out["per_class"][name]
        assert row["precision"] == pytest.approx(p[k])
        assert row["recall"] == pytest.approx(r[k])
        assert row["sensitivity"] == pytest.approx(r[k])
        assert row["f1"] == pytest.approx(f[k])
        assert row["support"] == s[k]
        assert row["auc"] == pytest.approx(roc_auc_score(labels == k, probs[:, k]))
    for average in ("macro", "weighted"):
        p_avg, r_avg, f_avg, _ = precision_recall_fscore_support(labels, preds, average=average)
        assert out[f"precision_{average}"] == pytest.approx(p_avg)
        assert out[f"recall_{average}"] == pytest.approx(r_avg)
        assert out[f"f1_{average}"] == pytest.approx(f_avg)
    assert out["f1_std"] == pytest.approx(np.std(f))
    assert out["recall_std"] == pytest.approx(np.std(r))
    assert out["recall_min"] == pytest.approx(r.min())
    assert out["macro_over"] == {metric: classes for metric in ("precision", "recall", "f1", "auc")}

    if n_classes == 3:
        assert out["auc_macro"] == pytest.approx(roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
        per_class_auc = roc_auc_score(labels, probs, multi_class="ovr", average=None)
        assert [out["per_class"][c]["auc"] for c in classes] == pytest.approx(per_class_auc)
        assert "sensitivity" not in out and "auc" not in out
    else:
        auc = roc_auc_score(labels, probs[:, 1])
        assert out["auc"] == pytest.approx(auc)
        assert out["auc_macro"] == pytest.approx(auc)  # with rows summing to 1 both one-vs-rest AUCs are equal
        assert out["sensitivity"] == pytest.approx(r[1])
    _check_contract(out)


def test_hand_computed_three_class() -> None:
    labels = np.array([0, 0, 1, 1, 2])
    probs = np.array(
        [
            [0.7, 0.2, 0.1],  # true 0, predicted 0
            [0.3, 0.6, 0.1],  # true 0, predicted 1
            [0.1, 0.8, 0.1],  # true 1, predicted 1
            [0.2, 0.5, 0.3],  # true 1, predicted 1
            [0.1, 0.1, 0.8],  # true 2, predicted 2
        ]
    )
    out = classification_metrics(labels, probs, THREE)
    normal, benign, malignant = (out["per_class"][c] for c in THREE)

    assert out["accuracy"] == pytest.approx(4 / 5)
    assert out["loss"] == pytest.approx(
        -(math.log(0.7) + math.log(0.3) + math.log(0.8) + math.log(0.5) + math.log(0.8)) / 5
    )
    assert out["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [0, 0, 1]]

    # recall: normal 1/2, benign 2/2, malignant 1/1
    assert (normal["recall"], benign["recall"], malignant["recall"]) == pytest.approx((0.5, 1.0, 1.0))
    assert out["recall_min"] == pytest.approx(0.5)
    # mean 5/6; deviations -1/3, 1/6, 1/6 -> variance (1/9 + 1/36 + 1/36) / 3 = 1/18
    assert out["recall_std"] == pytest.approx(math.sqrt(1 / 18))
    # precision: normal 1/1, benign 2/3, malignant 1/1
    assert (normal["precision"], benign["precision"], malignant["precision"]) == pytest.approx((1.0, 2 / 3, 1.0))
    # f1 = 2PR/(P+R): normal 2/3, benign 0.8, malignant 1
    f1 = [2 / 3, 0.8, 1.0]
    assert [normal["f1"], benign["f1"], malignant["f1"]] == pytest.approx(f1)
    mean_f1 = sum(f1) / 3
    assert out["f1_std"] == pytest.approx(math.sqrt(sum((v - mean_f1) ** 2 for v in f1) / 3))
    assert out["f1_macro"] == pytest.approx(mean_f1)
    # weighted by support 2, 2, 1
    assert out["f1_weighted"] == pytest.approx((2 * 2 / 3 + 2 * 0.8 + 1 * 1.0) / 5)
    # specificity: normal has 3 negatives, none predicted normal; benign has 3 negatives, one predicted benign
    assert normal["specificity"] == pytest.approx(1.0)
    assert benign["specificity"] == pytest.approx(2 / 3)
    assert malignant["specificity"] == pytest.approx(1.0)
    # AUC: benign positives score 0.8, 0.5 vs negatives 0.2, 0.6, 0.1 -> 5 of 6 pairs ordered
    assert (normal["auc"], benign["auc"], malignant["auc"]) == pytest.approx((1.0, 5 / 6, 1.0))
    assert out["auc_macro"] == pytest.approx((1 + 5 / 6 + 1) / 3)
    _check_contract(out)


def test_binary_sensitivity_specificity_by_hand() -> None:
    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.3, 0.6, 0.9, 0.4])  # predicted 0, 0, 1, 1, 0
    probs = np.stack([1 - scores, scores], axis=1)
    out = classification_metrics(labels, probs, ["benign", "malignant"])
    assert out["sensitivity"] == pytest.approx(1 / 2)  # malignant: 1 of 2 found
    assert out["specificity"] == pytest.approx(2 / 3)  # benign: 2 of 3 cleared
    assert out["per_class"]["malignant"]["sensitivity"] == out["sensitivity"]
    assert out["per_class"]["benign"]["sensitivity"] == out["specificity"]
    # malignant 0.9 beats all three benign, 0.4 beats 0.1 and 0.3 -> 5 of 6 pairs
    assert out["auc"] == pytest.approx(5 / 6)
    assert out["auc_macro"] == pytest.approx(5 / 6)
    _check_contract(out)


def test_class_absent_from_labels() -> None:
    labels = np.array([0, 0, 2, 2, 0])
    probs = np.array(
        [
            [0.8, 0.1, 0.1],  # true normal, predicted normal
            [0.2, 0.5, 0.3],  # true normal, predicted benign
            [0.1, 0.2, 0.7],  # true malignant, predicted malignant
            [0.6, 0.1, 0.3],  # true malignant, predicted normal
            [0.7, 0.2, 0.1],  # true normal, predicted normal
        ]
    )
    out = classification_metrics(labels, probs, THREE)
    benign = out["per_class"]["benign"]
    assert benign["support"] == 0
    for metric in ("recall", "sensitivity", "auc"):
        assert benign[metric] is None
        assert out["undefined"][f"per_class.benign.{metric}"] == "no benign images in the labels"
    # benign is predicted once, wrongly: precision 0 and F1 0 are defined, and specificity is 4/5
    assert benign["precision"] == 0.0
    assert benign["f1"] == 0.0
    assert benign["specificity"] == pytest.approx(4 / 5)

    assert out["macro_over"]["recall"] == ["normal", "malignant"]
    assert out["macro_over"]["auc"] == ["normal", "malignant"]
    assert out["macro_over"]["precision"] == THREE
    assert out["macro_over"]["f1"] == THREE
    normal, malignant = out["per_class"]["normal"], out["per_class"]["malignant"]
    assert normal["recall"] == pytest.approx(2 / 3)
    assert malignant["recall"] == pytest.approx(1 / 2)
    assert out["recall_macro"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert out["recall_min"] == pytest.approx(1 / 2)
    assert out["recall_std"] == pytest.approx(np.std([2 / 3, 1 / 2]))
    assert out["auc_macro"] == pytest.approx((normal["auc"] + malignant["auc"]) / 2)
    assert out["f1_macro"] == pytest.approx((normal["f1"] + 0.0 + malignant["f1"]) / 3)
    assert out["recall_weighted"] == pytest.approx(out["accuracy"])  # support-weighted recall is accuracy
    assert "auc_macro" not in out["undefined"]
    _check_contract(out)


def test_class_absent_and_never_predicted() -> None:
    labels = np.array([0, 2, 2, 0])
    probs = np.array([[0.9, 0.05, 0.05], [0.2, 0.1, 0.7], [0.6, 0.1, 0.3], [0.55, 0.05, 0.4]])
    out = classification_metrics(labels, probs, THREE)
    benign = out["per_class"]["benign"]
    assert benign["precision"] is None and benign["recall"] is None and benign["f1"] is None
    assert out["undefined"]["per_class.benign.precision"] == "benign is never predicted"
    assert "per_class.benign.f1" in out["undefined"]
    assert out["macro_over"]["f1"] == ["normal", "malignant"]
    assert out["f1_std"] == pytest.approx(np.std([out["per_class"][c]["f1"] for c in ("normal", "malignant")]))
    _check_contract(out)


def test_class_never_predicted() -> None:
    labels = np.array([0, 1, 2, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.1, 0.2, 0.7], [0.1, 0.3, 0.6]])
    out = classification_metrics(labels, probs, THREE)
    benign = out["per_class"]["benign"]
    assert benign["precision"] is None
    assert out["undefined"]["per_class.benign.precision"] == "benign is never predicted"
    assert benign["recall"] == 0.0
    assert benign["f1"] == 0.0  # recall defined and 0: F1 is 0, not undefined
    assert out["macro_over"]["precision"] == ["normal", "malignant"]
    assert out["precision_macro"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert out["precision_weighted"] == pytest.approx((1 * 1.0 + 2 * 2 / 3) / 3)
    assert out["recall_min"] == 0.0
    _check_contract(out)


def test_single_class_in_labels_binary() -> None:
    labels = np.array([1, 1, 1])
    probs = np.array([[0.2, 0.8], [0.6, 0.4], [0.1, 0.9]])
    out = classification_metrics(labels, probs, ["benign", "malignant"])
    assert out["sensitivity"] == pytest.approx(2 / 3)
    assert out["specificity"] is None
    assert out["undefined"]["specificity"] == "no images other than malignant in the labels"
    assert out["auc"] is None and out["auc_macro"] is None
    assert "auc" in out["undefined"] and "auc_macro" in out["undefined"]
    _check_contract(out)


def test_overfit_metrics_signs() -> None:
    train = {"accuracy": 0.95, "f1_macro": 0.9, "loss": 0.1}
    test = {"accuracy": 0.8, "f1_macro": 0.7, "loss": 0.5}
    gaps = overfit_metrics(train, test)
    assert gaps["overfit_acc"] == pytest.approx(0.15)
    assert gaps["overfit_f1"] == pytest.approx(0.2)
    assert gaps["overfit_loss"] == pytest.approx(0.4)
    assert all(v > 0 for v in gaps.values())  # a model that is better on train has positive gaps

    reversed_gaps = overfit_metrics(test, train)
    assert all(v < 0 for v in reversed_gaps.values())
    assert overfit_metrics(train, {**test, "f1_macro": None})["overfit_f1"] is None


def test_overfit_from_real_outputs() -> None:
    labels, probs = _random_case(7, 3)
    train = classification_metrics(labels, probs, THREE)
    assert overfit_metrics(train, train) == {"overfit_acc": 0.0, "overfit_f1": 0.0, "overfit_loss": 0.0}


def test_headline_keys() -> None:
    labels, probs = _random_case(0, 3)
    multi = headline(classification_metrics(labels, probs, THREE))
    assert list(multi) == ["accuracy", "loss", "f1_macro", "recall_min", "recall_std", "f1_std", "auc_macro"]
    labels, probs = _random_case(0, 2)
    out = classification_metrics(labels, probs, ["normal", "abnormal"])
    binary = headline(out)
    assert list(binary)[-2:] == ["sensitivity", "specificity"]
    assert binary["sensitivity"] == out["per_class"]["abnormal"]["recall"]
    json.dumps(binary, allow_nan=False)


@pytest.mark.parametrize(
    ("labels", "probs", "classes", "match"),
    [
        (np.array([], dtype=int), np.zeros((0, 3)), THREE, "empty"),
        (np.array([0, 1]), np.full((3, 3), 1 / 3), THREE, "3 rows"),
        (np.array([0, 3]), np.full((2, 3), 1 / 3), THREE, "out of range"),
        (np.array([-1, 0]), np.full((2, 3), 1 / 3), THREE, "out of range"),
        (np.array([0, 1]), np.full((2, 2), 0.5), THREE, "2 columns but there are 3 classes"),
        (np.array([0, 1]), np.array([0.5, 0.5]), THREE, "2-D"),
        (np.array([[0, 1]]), np.full((2, 3), 1 / 3), THREE, "1-D"),
        (np.array([0.5, 1.0]), np.full((2, 3), 1 / 3), THREE, "integer"),
        (np.array(["a", "b"]), np.full((2, 3), 1 / 3), THREE, "integer"),
        (np.array([0, 1]), np.array([[0.5, 0.2, 0.2], [0.3, 0.3, 0.4]]), THREE, "sum to 1"),
        (np.array([0, 1]), np.array([[1.5, -0.5, 0.0], [0.3, 0.3, 0.4]]), THREE, r"\[0, 1\]"),
        (np.array([0, 1]), np.array([[np.nan, 0.5, 0.5], [0.3, 0.3, 0.4]]), THREE, "NaN"),
        (np.array([0, 1]), np.full((2, 3), 1 / 3), ["a", "a", "b"], "unique"),
    ],
)
def test_validation_errors(labels, probs, classes, match) -> None:
    with pytest.raises(ValueError, match=match):
        classification_metrics(labels, probs, classes)


def test_integral_float_labels_accepted() -> None:
    labels, probs = _random_case(3, 3)
    assert classification_metrics(labels.astype(float), probs, THREE) == classification_metrics(labels, probs, THREE)
