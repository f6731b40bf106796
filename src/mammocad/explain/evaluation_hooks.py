"""The explain stage's hooks into ``mammocad evaluate``: heatmaps over the report's galleries, and the
maps its localization scores (pointing game, FROC) are computed on.

The evaluation stage cannot import explain (explain comes later), so the CLI passes these in:
``evaluate_run(..., gallery_pictures=gallery_pictures_for("gradcam"), localization_maps=localization_maps_for("gradcam"))``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from mammocad.errors import ConfigError
from mammocad.explain.cam import (
    CAM_METHODS,
    check_method,
    class_activation_maps,
    lesion_heatmaps,
    localization_maps,
    overlay,
)
from mammocad.explain.overlay import ALPHA_FLOOR, COLORMAP, heatmap_meaning
from mammocad.explain.subjects import BATCH
from mammocad.preprocess import read_sample
from mammocad.training.predict import LoadedRun, pixels_to_input


def gallery_overlays(
    run: LoadedRun, rows: pd.DataFrame, method: str = "gradcam", opacity: float = 0.45
) -> list[np.ndarray]:
    """RGB overlays of each row's heatmap (for its predicted class) on its cached image.

    ``rows``: prediction-table rows (``image`` = cached sample path, ``prediction`` = class index).
    A lesion-aware run shows its own P(lesion) heatmap whatever ``method`` says.
    This is the evaluation report's ``gallery_pictures`` hook: ``evaluate_run(..., gallery_pictures=gallery_overlays)``.
    """
    lesion_aware = callable(getattr(run.model, "lesion_map", None))
    if method not in CAM_METHODS and not (method == "lesion" and lesion_aware):
        raise ConfigError(f"gallery heatmaps need a CAM method ({', '.join(CAM_METHODS)}), got {method!r}")
    pictures: list[np.ndarray] = []
    records = rows.to_dict("records")
    for start in range(0, len(records), BATCH):
        chunk = records[start : start + BATCH]
        pixels = [read_sample(r["image"]) for r in chunk]
        batch = torch.stack([pixels_to_input(p, run.model.in_chans) for p in pixels]).float()
        if lesion_aware:
            maps = lesion_heatmaps(run.model, batch)
        else:
            maps = class_activation_maps(run.model, batch, method, [int(r["prediction"]) for r in chunk])
        pictures += [overlay(p, m, opacity) for p, m in zip(pixels, maps, strict=True)]
    return pictures


def gallery_pictures_for(method: str | None) -> Callable[[LoadedRun, pd.DataFrame], list[np.ndarray]] | None:
    """The evaluation report's gallery hook for a CAM ``method`` (None or "none": plain images)."""
    if method is None or method.lower() == "none":
        return None
    name = check_method(method)
    if name not in CAM_METHODS and name != "lesion":
        raise ConfigError(f"gallery heatmaps need a CAM method ({', '.join(CAM_METHODS)}), got {method!r}")

    def draw(run: LoadedRun, rows: pd.DataFrame) -> list[np.ndarray]:
        return gallery_overlays(run, rows, name)

    draw.meaning = lambda run: gallery_meaning(run, name)  # type: ignore[attr-defined]
    return draw


def gallery_meaning(run: LoadedRun, method: str) -> str:
    """The galleries' caption: which map, what its colours mean (a lesion-aware run shows its P(lesion) map)."""
    shown = "lesion" if callable(getattr(run.model, "lesion_map", None)) else method
    meaning = heatmap_meaning(shown, "the predicted class")
    return f"Heatmaps: {shown} ({meaning}), {COLORMAP} colours, transparent below {ALPHA_FLOOR:.1f} and outside the breast."


def localization_maps_for(method: str | None) -> Callable[[LoadedRun, torch.Tensor], np.ndarray] | None:
    """The evaluation's localization hook: lesion heatmaps, or CAM ``method`` maps for whole-film models."""
    if method is None or method.lower() == "none":
        return None
    name = check_method(method)
    if name not in CAM_METHODS and name != "lesion":
        raise ConfigError(f"localization maps need a CAM method or 'lesion', got {method!r}")
    cam = name if name in CAM_METHODS else "gradcam"
    return lambda run, batch: localization_maps(run.model, batch, run.classes, cam)
