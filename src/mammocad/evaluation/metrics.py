"""Classification metrics for a mammography classifier (the evaluation suite of Dahes (2025)).

Every function takes plain numpy arrays and returns JSON-serialisable values (Python floats, ints,
None, str, lists and dicts; never numpy scalars). A metric that is not defined for the data (a class
with no images, a class never predicted, ...) is ``None`` with a human-readable reason under
``undefined``, never a silent 0 and never an exception: small or skewed test sets hit these cases
all the time and a report must say so rather than print a misleading number.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score

# Probabilities are clipped before the log so a confident mistake costs a large, finite loss.
LOSS_EPS = 1e-7
# Softmax outputs in float32 (or averaged over folds/TTA) do not sum to exactly 1.
ROW_SUM_ATOL = 1e-3

_AVERAGED = ("precision", "recall", "f1", "auc")


def check_predictions(
    labels: np.ndarray, probs: np.ndarray, n_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Validate labels (N,) and class probabilities (N, C); return them as int64 and float64 arrays.

    Raises ``ValueError`` naming the problem: empty input, wrong dimensions, mismatched lengths,
    C != ``n_classes``, non-integer or out-of-range labels, probabilities outside [0, 1], non-finite,
    or rows not summing to 1.
    """
    labels_arr = np.asarray(labels)
    probs_arr = np.asarray(probs, dtype=np.float64)
    if labels_arr.ndim != 1:
        raise ValueError(f"labels must be a 1-D array of class indices, got shape {labels_arr.shape}")
    if probs_arr.ndim != 2:
        raise ValueError(f"probs must be a 2-D array (N, C), got shape {probs_arr.shape}")
    if labels_arr.size == 0:
        raise ValueError("no samples: labels and probs are empty")
    if probs_arr.shape[0] != labels_arr.shape[0]:
        raise ValueError(f"labels has {labels_arr.shape[0]} samples but probs has {probs_arr.shape[0]} rows")
    n_cols = probs_arr.shape[1]
    if n_cols < 1:
        raise ValueError("probs has no class columns")
    if n_classes is not None and n_cols != n_classes:
        raise ValueError(f"probs has {n_cols} columns but there are {n_classes} classes")

    if labels_arr.dtype == bool:
        labels_arr = labels_arr.astype(np.int64)
    if np.issubdtype(labels_arr.dtype, np.floating):
        # Labels read back from CSV/parquet are often floats; accept them only when integral.
        if not np.all(np.isfinite(labels_arr)) or not np.all(labels_arr == np.round(labels_arr)):
            raise ValueError("labels must be integer class indices")
        labels_arr = labels_arr.astype(np.int64)
    elif not np.issubdtype(labels_arr.dtype, np.integer):
        raise ValueError(f"labels must be integer class indices, got dtype {labels_arr.dtype}")
    labels_arr = labels_arr.astype(np.int64)
    bad = (labels_arr < 0) | (labels_arr >= n_cols)
    if bad.any():
        raise ValueError(
            f"label {int(labels_arr[bad][0])} is out of range for {n_cols} classes (valid: 0..{n_cols - 1})"
        )

    if not np.all(np.isfinite(probs_arr)):
        raise ValueError("probs contains NaN or infinite values")
    if probs_arr.min() < 0 or probs_arr.max() > 1:
        raise ValueError("probs must lie in [0, 1]")
    row_sums = probs_arr.sum(axis=1)
    off = np.abs(row_sums - 1) > ROW_SUM_ATOL
    if off.any():
        row = int(np.argmax(off))
        raise ValueError(f"probs rows must sum to 1 (row {row} sums to {row_sums[row]:.6g})")
    return labels_arr, probs_arr


def classification_metrics(labels: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """All the Dahes (2025) metrics of a classifier's probabilities; prediction is the argmax of ``probs``.

    ``labels``: (N,) class indices into ``classes``; ``probs``: (N, C) rows summing to 1.

    Returns a JSON-serialisable dict:

    - ``classes`` (list of names, the order of every per-class list), ``n``, ``accuracy``, ``loss``
      (mean negative log-likelihood of the true class, probabilities clipped to [1e-7, 1]);
    - ``per_class``: name -> ``precision``, ``recall``, ``f1``, ``support``, ``sensitivity`` (== recall),
      ``specificity`` (one-vs-rest TN/(TN+FP)), ``auc`` (one-vs-rest ROC AUC of ``probs[:, k]``);
    - ``precision_macro``, ``recall_macro``, ``f1_macro``, ``auc_macro``: means over the classes where the
      metric is defined, listed in ``macro_over`` (metric -> class names);
    - ``precision_weighted``, ``recall_weighted``, ``f1_weighted``: support-weighted over the same classes;
    - ``f1_std``, ``recall_std`` (population std across classes), ``recall_min``;
    - binary tasks only: ``sensitivity``, ``specificity``, ``auc`` of the positive class ``classes[1]``;
    - ``confusion_matrix``: rows = true class, columns = predicted class;
    - ``undefined``: dotted metric key (``"per_class.benign.recall"``, ``"auc_macro"``) -> reason.

    F1 is 2TP / (2TP + FP + FN): it equals 2PR/(P+R) when both are defined, 0 when P + R == 0, and 0
    when only one of them is defined (the other is then necessarily 0); it is undefined only when the
    class is neither in the labels nor predicted.
    """
    names = [str(c) for c in classes]
    if len(set(names)) != len(names):
        raise ValueError(f"class names must be unique, got {names}")
    labels_arr, probs_arr = check_predictions(labels, probs, n_classes=len(names))
    n, n_classes = probs_arr.shape
    preds = probs_arr.argmax(axis=1)
    cm = confusion_matrix(labels_arr, preds, labels=np.arange(n_classes))
    undefined: dict[str, str] = {}

    per_class: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(names):
        tp = int(cm[k, k])
        support = int(cm[k, :].sum())
        predicted = int(cm[:, k].sum())
        fp = predicted - tp
        fn = support - tp
        negatives = n - support
        tn = negatives - fp
        key = f"per_class.{name}"
        row: dict[str, Any] = {"support": support}

        if predicted > 0:
            row["precision"] = tp / predicted
        else:
            row["precision"] = None
            undefined[f"{key}.precision"] = f"{name} is never predicted"

        if support > 0:
            row["recall"] = row["sensitivity"] = tp / support
        else:
            row["recall"] = row["sensitivity"] = None
            undefined[f"{key}.recall"] = undefined[f"{key}.sensitivity"] = f"no {name} images in the labels"

        if support + predicted > 0:
            row["f1"] = 2 * tp / (2 * tp + fp + fn)
        else:
            row["f1"] = None
            undefined[f"{key}.f1"] = f"{name} is neither in the labels nor predicted"

        if negatives > 0:
            row["specificity"] = tn / negatives
        else:
            row["specificity"] = None
            undefined[f"{key}.specificity"] = f"no images other than {name} in the labels"

        if support == 0:
            row["auc"] = None
            undefined[f"{key}.auc"] = f"no {name} images in the labels"
        elif negatives == 0:
            row["auc"] = None
            undefined[f"{key}.auc"] = f"no images other than {name} in the labels"
        else:
            row["auc"] = float(roc_auc_score(labels_arr == k, probs_arr[:, k]))

        per_class[name] = {
            m: row[m] for m in ("precision", "recall", "f1", "support", "sensitivity", "specificity", "auc")
        }

    p_true = np.clip(probs_arr[np.arange(n), labels_arr], LOSS_EPS, 1.0)
    out: dict[str, Any] = {
        "classes": names,
        "n": int(n),
        "accuracy": float(np.trace(cm) / n),
        "loss": float(-np.mean(np.log(p_true))),
        "per_class": per_class,
    }

    supports = {name: per_class[name]["support"] for name in names}
    macro_over: dict[str, list[str]] = {}
    for metric in _AVERAGED:
        defined = {name: per_class[name][metric] for name in names if per_class[name][metric] is not None}
        macro_over[metric] = list(defined)
        macro_key = f"{metric}_macro"
        if defined:
            out[macro_key] = float(np.mean(list(defined.values())))
        else:
            out[macro_key] = None
            undefined[macro_key] = f"{metric} is undefined for every class"
        if metric == "auc":
            continue
        weighted_key = f"{metric}_weighted"
        total = sum(supports[name] for name in defined)
        if total > 0:
            out[weighted_key] = float(sum(value * supports[name] for name, value in defined.items()) / total)
        else:
            out[weighted_key] = None
            undefined[weighted_key] = f"no class with a defined {metric} has images in the labels"
    out["macro_over"] = macro_over

    for metric in ("f1", "recall"):
        values = [per_class[name][metric] for name in names if per_class[name][metric] is not None]
        std_key = f"{metric}_std"
        if values:
            out[std_key] = float(np.std(values, ddof=0))
        else:
            out[std_key] = None
            undefined[std_key] = f"{metric} is undefined for every class"
    recalls = [per_class[name]["recall"] for name in names if per_class[name]["recall"] is not None]
    out["recall_min"] = float(min(recalls)) if recalls else None
    if not recalls:
        undefined["recall_min"] = "recall is undefined for every class"

    if n_classes == 2:
        positive = names[1]
        for top, metric in (("sensitivity", "sensitivity"), ("specificity", "specificity"), ("auc", "auc")):
            out[top] = per_class[positive][metric]
            reason = undefined.get(f"per_class.{positive}.{metric}")
            if reason is not None:
                undefined[top] = reason

    out["confusion_matrix"] = [[int(v) for v in cm_row] for cm_row in cm]
    out["undefined"] = undefined
    return out


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else float(a - b)


def overfit_metrics(train: dict[str, Any], test: dict[str, Any]) -> dict[str, float | None]:
    """Train-vs-test gaps from two ``classification_metrics`` outputs; positive means worse on test.

    Returns ``overfit_acc`` (train - test accuracy), ``overfit_f1`` (train - test macro F1) and
    ``overfit_loss`` (test - train loss); each is None when either input value is None.
    """
    return {
        "overfit_acc": _difference(train["accuracy"], test["accuracy"]),
        "overfit_f1": _difference(train["f1_macro"], test["f1_macro"]),
        "overfit_loss": _difference(test["loss"], train["loss"]),
    }


_HEADLINE = ("accuracy", "loss", "f1_macro", "recall_min", "recall_std", "f1_std", "auc_macro")


def headline(metrics: dict[str, Any]) -> dict[str, float | None]:
    """The flat headline numbers of a ``classification_metrics`` output.

    Returns accuracy, loss, f1_macro, recall_min, recall_std, f1_std, auc_macro, plus sensitivity and
    specificity (of the positive class) for binary tasks.
    """
    keys = _HEADLINE + (("sensitivity", "specificity") if "sensitivity" in metrics else ())
    return {key: metrics[key] for key in keys}
