"""What a run records about itself before it trains: ``model.json`` and ``provenance.json``.

``model.json`` is what rebuilds the model for inference (architecture, classes, preprocessing, weight
files); ``provenance.json`` is what the model card says the run was trained on, so the card never
re-reads a dataset that moved.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import torch

from mammocad.errors import MammocadError
from mammocad.io import _json_default, now_iso
from mammocad.training.config import RunConfig
from mammocad.training.data import TaskData
from mammocad.training.run_dir import RunDir


def _model_description(config: RunConfig, task: TaskData, model: torch.nn.Module) -> dict[str, Any]:
    """What a resumed run must keep: the architecture, task and preprocessing."""
    return {
        "model": model.config(),
        "classes": task.classes,
        "task": config.data.task,
        "preprocess": config.preprocess.model_dump(mode="json"),
    }


def check_same_model(run: RunDir, config: RunConfig, task: TaskData, model: torch.nn.Module) -> None:
    """Refuse (nothing written yet) to resume a run into another architecture, task or preprocessing."""
    if not run.has_model():
        return
    saved = run.require_model()
    now = json.loads(json.dumps(_model_description(config, task, model), default=_json_default))  # as written
    changed = [key for key, value in now.items() if key in saved and saved[key] != value]
    if changed:
        raise MammocadError(
            f"{run.path}: the {', '.join(changed)} of this config differ from the run's {run.MODEL}; a resumed run "
            "must train the same thing: undo the change or start a new run"
        )


def write_model_description(run: RunDir, config: RunConfig, task: TaskData, model: torch.nn.Module) -> None:
    """``model.json``: enough to rebuild the model and preprocess its inputs, and its weight files."""
    run.write_model(
        _model_description(config, task, model)
        | {
            "weights": {
                "best": RunDir.weights_name("best"),
                "last": RunDir.weights_name("last"),
                # the weights the run ends with, used by predict/evaluate unless told otherwise
                "final": "best" if config.train.restore_best_weights else "last",
            },
        }
    )


def _split_summary(frame: pd.DataFrame, classes: list[str]) -> dict[str, Any]:
    counts = frame["target"].value_counts() if len(frame) else pd.Series(dtype=int)
    return {
        "n_images": len(frame),
        "n_patients": int(frame["patient_id"].nunique()) if "patient_id" in frame and len(frame) else 0,
        "per_class": {name: int(counts.get(k, 0)) for k, name in enumerate(classes)},
    }


def write_provenance(run: RunDir, config: RunConfig, task: TaskData) -> None:
    """``provenance.json``: what the run was trained on, so its model card never re-reads a dataset that moved."""
    from mammocad.data.provenance import dataset_provenance

    found = dataset_provenance(config.data.dataset)
    splits = {name: getattr(task, name) for name in ("train", "val", "test")}
    everything = (
        pd.concat([frame for frame in splits.values() if len(frame)]) if any(map(len, splits.values())) else None
    )
    per_split = {name: _split_summary(frame, task.classes) for name, frame in splits.items()}
    run.write_provenance(
        found
        | {
            "split": config.data.split,
            "fold": config.data.fold,
            "task": config.data.task,
            "refit": config.data.refit,
            "n_images": sum(s["n_images"] for s in per_split.values()),
            "n_patients": int(everything["patient_id"].nunique()) if everything is not None else 0,
            "per_class": {c: sum(s["per_class"][c] for s in per_split.values()) for c in task.classes},
            "per_split": per_split,
            "recorded_at": now_iso(),
        }
    )


__all__ = ["check_same_model", "write_model_description", "write_provenance"]
