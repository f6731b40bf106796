"""The binary questions inside a 3-class task: normal vs abnormal and benign vs malignant AUCs with CIs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mammocad.evaluation.evaluate import subtask_aucs
from mammocad.evaluation.predictions import SplitPredictions

CLASSES = ["normal", "benign", "malignant"]


def _predictions(labels, probs, classes=CLASSES):
    frame = pd.DataFrame({"label": labels, "patient_id": [f"p{i // 2}" for i in range(len(labels))]})
    for k, name in enumerate(classes):
        frame[f"p_{name}"] = np.asarray(probs)[:, k]
    return SplitPredictions(classes, "val", frame)


def test_subtask_aucs_score_each_question_on_its_own_images():
    labels = [0, 0, 1, 1, 2, 2, 0, 2]
    probs = [
        [0.8, 0.1, 0.1],
        [0.6, 0.3, 0.1],
        [0.2, 0.5, 0.3],  # benign: p_mal / (p_ben + p_mal) = 0.375
        [0.7, 0.2, 0.1],  # benign scored as rather normal: a normal-vs-abnormal miss
        [0.1, 0.2, 0.7],
        [0.3, 0.4, 0.3],  # malignant: 0.43 > both benign ratios (0.375, 0.33)
        [0.9, 0.05, 0.05],
        [0.2, 0.1, 0.7],
    ]
    result = subtask_aucs(_predictions(labels, probs), n_resamples=200)
    normal = result["normal_vs_abnormal"]
    # abnormal scores 1 - p_normal: 0.8, 0.3, 0.9, 0.7, 0.8 vs normal 0.2, 0.4, 0.1: one pair of 15 inverted
    assert normal["auc"] == pytest.approx(14 / 15) and normal["n_images"] == 8
    assert normal["low"] <= normal["auc"] <= normal["high"]
    malignant = result["benign_vs_malignant"]
    assert malignant["auc"] == pytest.approx(1.0) and malignant["n_images"] == 5


def test_subtasks_need_the_three_pathology_classes():
    binary = _predictions([0, 1], [[0.7, 0.3], [0.4, 0.6]], ["normal", "abnormal"])
    assert subtask_aucs(binary) == {}
