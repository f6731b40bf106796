"""Patient-level bootstrap confidence intervals of an evaluation's headline metrics, and the AUCs of the
binary questions inside a 3-class task (images of one patient are resampled together)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from mammocad.evaluation.bootstrap import cluster_bootstrap
from mammocad.evaluation.predictions import SplitPredictions


def fast_headline(labels: np.ndarray, probs: np.ndarray, n_classes: int) -> dict[str, float]:
    """accuracy, f1_macro, recall_min and auc_macro on one bootstrap resample, quickly.

    Same definitions as :func:`classification_metrics` (a class absent from the resample has no
    recall and is left out of the macro averages); NaN where nothing is defined.
    """
    predicted = probs.argmax(axis=1)
    confusion = np.bincount(labels * n_classes + predicted, minlength=n_classes**2).reshape(n_classes, n_classes)
    support, predicted_count, hits = confusion.sum(axis=1), confusion.sum(axis=0), np.diag(confusion)
    present = support > 0
    recall = np.divide(hits, support, out=np.full(n_classes, np.nan), where=present)
    # F1 = 2TP / (2TP + FP + FN); undefined only for a class neither present nor predicted.
    denominator = support + predicted_count
    f1 = np.divide(2 * hits, denominator, out=np.full(n_classes, np.nan), where=denominator > 0)
    aucs = []
    for k in range(n_classes):
        truth = labels == k
        if truth.any() and not truth.all():
            aucs.append(roc_auc_score(truth, probs[:, k]))
    result = {
        "accuracy": float(np.mean(predicted == labels)),
        "f1_macro": float(np.nanmean(f1)) if np.isfinite(f1).any() else np.nan,
        "recall_min": float(np.nanmin(recall)) if present.any() else np.nan,
        "auc_macro": float(np.mean(aucs)) if aucs else np.nan,
        # mean recall of the classes present (= recall_macro); chance is 1 / n_classes
        "balanced_accuracy": float(np.nanmean(recall)) if present.any() else np.nan,
    }
    if n_classes == 2:
        result["auc_macro"] = float(roc_auc_score(labels, probs[:, 1])) if 0 < labels.sum() < len(labels) else np.nan
        result["sensitivity"] = float(recall[1])
        result["specificity"] = float(recall[0])
    return result


def subtask_aucs(predictions: SplitPredictions, n_resamples: int = 1000, seed: int = 0) -> dict[str, dict[str, Any]]:
    """The binary questions inside a 3-class (normal/benign/malignant) task, each AUC with its patient CI.

    ``normal_vs_abnormal``: score 1 − p(normal) over every image; ``benign_vs_malignant``: score
    p(malignant) / (p(benign) + p(malignant)) over the abnormal images. Empty for other class sets.
    """
    classes = predictions.classes
    if len(classes) < 3 or not {"normal", "benign", "malignant"} <= set(classes):
        return {}
    labels, probs = predictions.labels, predictions.probs
    groups = predictions.frame["patient_id"].to_numpy()
    normal, benign, malignant = (classes.index(c) for c in ("normal", "benign", "malignant"))
    lesion = np.isin(labels, [benign, malignant])
    questions = {
        "normal_vs_abnormal": (np.ones(len(labels), bool), labels != normal, 1 - probs[:, normal]),
        "benign_vs_malignant": (
            lesion,
            labels == malignant,
            probs[:, malignant] / np.clip(probs[:, benign] + probs[:, malignant], 1e-12, None),
        ),
    }
    result: dict[str, dict[str, Any]] = {}
    for name, (rows, positive, score) in questions.items():
        index = np.flatnonzero(rows)

        def auc(indices: np.ndarray, positive: np.ndarray = positive, score: np.ndarray = score) -> float | None:
            truth = positive[indices]
            return float(roc_auc_score(truth, score[indices])) if 0 < truth.sum() < len(truth) else None

        point = auc(index)
        entry: dict[str, Any] = {"auc": point, "n_images": len(index)}
        if n_resamples and point is not None:
            ci = cluster_bootstrap(groups[index], lambda idx, index=index: auc(index[idx]), n_resamples, seed=seed)
            entry |= {"low": ci.low, "high": ci.high}
        result[name] = entry
    return result


def bootstrap_intervals(
    predictions: SplitPredictions, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Patient-level percentile bootstrap CIs of the headline metrics (images of a patient move together)."""
    labels, probs, n_classes = predictions.labels, predictions.probs, len(predictions.classes)
    groups = predictions.frame["patient_id"].to_numpy()
    cache: dict[bytes, dict[str, float]] = {}  # every metric sees the same resamples (same seed): score each once

    def scores(indices: np.ndarray) -> dict[str, float]:
        key = indices.tobytes()
        if key not in cache:
            cache[key] = fast_headline(labels[indices], probs[indices], n_classes)
        return cache[key]

    names = ["accuracy", "balanced_accuracy", "f1_macro", "recall_min", "auc_macro"] + (
        ["sensitivity", "specificity"] if n_classes == 2 else []
    )
    intervals = {}
    for name in names:
        result = cluster_bootstrap(
            groups, lambda idx, name=name: scores(idx)[name], n_resamples=n_resamples, confidence=confidence, seed=seed
        )
        intervals[name] = result.to_dict()
    return intervals
