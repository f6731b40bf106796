"""Predictions of a trained run on one split of a dataset, read from the preprocessing cache.

The run's own config says how the images were preprocessed and which task (classes) it learned;
evaluation reuses that config with the dataset to evaluate swapped in, so the same cache entries
training read are scored (no re-decoding, no drift between training and evaluation inputs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mammocad.training.predict import LoadedRun, load_run
from mammocad.training.scoring import (  # scoring a split is training's too (calibration); re-exported here
    SPLITS,
    default_feature_layers,
    frame_logits,
    run_config,
    split_frame,
    split_frames,
)


@dataclass
class SplitPredictions:
    """Per-sample predictions of one split, and (optionally) features from named layers.

    ``frame`` columns: ``sample_id``, ``image_id``, ``patient_id``, ``split``, ``label`` (class
    index), ``label_name``, ``p_<class>`` for every class, ``prediction`` (index),
    ``prediction_name``, ``confidence`` (max probability), ``correct``, ``loss`` (negative
    log-likelihood of the true class) and ``image`` (the cached preprocessed PNG).
    ``features`` maps a layer name to an (N, D) array in ``frame`` order.
    """

    classes: list[str]
    split: str
    frame: pd.DataFrame
    features: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def labels(self) -> np.ndarray:
        return self.frame["label"].to_numpy()

    @property
    def probs(self) -> np.ndarray:
        return self.frame[[f"p_{c}" for c in self.classes]].to_numpy(dtype=np.float64)


@torch.inference_mode()
def predict_frame(
    run: LoadedRun, part: pd.DataFrame, layers: list[str] | None = None, batch_size: int = 32
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Calibrated class probabilities (N, C) for the cached images of ``part`` (the run's temperature
    applied) and the named layers' features.

    Feature maps (B, C, H, W) are global-average pooled to (B, C) so every layer gives vectors.
    """
    logits, features = frame_logits(run, part, layers, batch_size)
    probs = torch.softmax(torch.from_numpy(logits) / getattr(run, "temperature", 1.0), dim=1).numpy()
    return probs, features


def predict_split(
    run_dir: str | Path,
    dataset: str | Path | None = None,
    split: str = "test",
    layers: list[str] | None = None,
    which: str | None = None,
    batch_size: int = 32,
) -> SplitPredictions:
    """Score ``split`` of ``dataset`` (default: the run's own dataset) with a run's ``which`` weights."""
    run = load_run(run_dir, which)
    config = run_config(run_dir)
    part = split_frame(run, config, dataset, split)
    probs, features = predict_frame(run, part, layers, batch_size)
    return SplitPredictions(run.classes, split, predictions_table(part, probs, run.classes), features)


def predictions_table(part: pd.DataFrame, probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """The per-sample table of :class:`SplitPredictions` from a split's samples and probabilities."""
    labels = part["target"].to_numpy()
    predicted = probs.argmax(axis=1)
    frame = pd.DataFrame(
        {
            "sample_id": part["sample_id"].to_numpy(),
            "image_id": part["image_id"].to_numpy(),
            "patient_id": part["patient_id"].astype(str).to_numpy(),
            "split": part["split"].to_numpy(),
            "label": labels,
            "label_name": [classes[k] for k in labels],
        }
    )
    for k, name in enumerate(classes):
        frame[f"p_{name}"] = probs[:, k]
    frame["prediction"] = predicted
    frame["prediction_name"] = [classes[k] for k in predicted]
    frame["confidence"] = probs.max(axis=1)
    frame["correct"] = predicted == labels
    frame["loss"] = -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0))
    frame["image"] = part["image"].astype(str).to_numpy()
    return frame


__all__ = [
    "SPLITS",
    "SplitPredictions",
    "default_feature_layers",
    "frame_logits",
    "predict_frame",
    "predict_split",
    "predictions_table",
    "run_config",
    "split_frame",
    "split_frames",
]
