"""Inference from a run directory alone: load the model, preprocess any image, predict."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mammocad.data.images import read_image
from mammocad.errors import ImageReadError, MammocadError
from mammocad.models import create_model
from mammocad.models.weights import load_weights
from mammocad.preprocess import PreprocessConfig, preprocess_image


@dataclass
class LoadedRun:
    """A trained model ready for inference, with what it needs to preprocess inputs."""

    run_dir: Path
    model: torch.nn.Module
    classes: list[str]
    preprocess: PreprocessConfig
    meta: dict[str, Any]


def load_run(run_dir: str | Path, which: str = "best") -> LoadedRun:
    """Rebuild the model of a run directory (``which``: best or last weights), in eval mode."""
    run_dir = Path(run_dir)
    meta_path = run_dir / "model.json"
    if not meta_path.exists():
        raise MammocadError(f"{run_dir}: not a run directory (no model.json)")
    meta = json.loads(meta_path.read_text())
    weights = run_dir / meta["weights"].get(which, f"checkpoints/{which}.safetensors")
    if not weights.exists():
        raise MammocadError(f"{run_dir}: the run has no {which} checkpoint ({weights.name}); was it trained?")
    spec = dict(meta["model"])
    model = create_model(
        spec.pop("name"),
        num_classes=spec.pop("num_classes"),
        in_chans=spec.pop("in_chans"),
        pretrained=False,
        head=spec.pop("head", None),
        drop_rate=spec.pop("drop_rate", 0.5),
        se_reduction=spec.pop("se_reduction", 16),
    )
    load_weights(model, weights)
    model.eval()
    return LoadedRun(run_dir, model, list(meta["classes"]), PreprocessConfig(**meta["preprocess"]), meta)


def prepare(run: LoadedRun, path: str | Path) -> torch.Tensor:
    """Read and preprocess one image exactly as the training cache did (full mode)."""
    image = read_image(path)
    config = run.preprocess.model_copy(update={"mode": "full"})
    pixels = preprocess_image(image, config).pixels
    scale = 1.0 / (65535.0 if pixels.dtype == np.uint16 else 255.0)
    tensor = torch.from_numpy(pixels.astype(np.float32) * scale)[None]
    return tensor.expand(run.model.in_chans, -1, -1)


@torch.inference_mode()
def predict_tensors(run: LoadedRun, batch: torch.Tensor) -> np.ndarray:
    """Class probabilities for a batch of preprocessed inputs (N x C x H x W in [0, 1])."""
    return torch.softmax(run.model(batch), dim=1).float().numpy()


def predict_paths(run: LoadedRun, paths: list[str | Path], batch_size: int = 16) -> pd.DataFrame:
    """Per-image probabilities; unreadable files get an ``error`` and no prediction (others go on)."""
    rows: list[dict[str, Any]] = []
    pending: list[tuple[int, str, torch.Tensor]] = []

    def flush() -> None:
        if not pending:
            return
        probs = predict_tensors(run, torch.stack([t for _, _, t in pending]))
        for (order, name, _), p in zip(pending, probs, strict=True):
            row: dict[str, Any] = {
                "order": order,
                "path": name,
                "prediction": run.classes[int(p.argmax())],
                "error": None,
            }
            row.update({f"p_{c}": float(v) for c, v in zip(run.classes, p, strict=True)})
            rows.append(row)
        pending.clear()

    for order, path in enumerate(paths):
        try:
            pending.append((order, str(path), prepare(run, path)))
        except ImageReadError as exc:
            rows.append({"order": order, "path": str(path), "prediction": None, "error": exc.reason})
        if len(pending) >= batch_size:
            flush()
    flush()
    columns = ["path", "prediction", *(f"p_{c}" for c in run.classes), "error"]
    return pd.DataFrame(rows).sort_values("order").reindex(columns=columns).reset_index(drop=True)
