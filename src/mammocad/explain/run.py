"""Explain a run's predictions on image files or on a split of its dataset; files land in one new folder.

Output directory (new, never overwritten; default ``RUN/explain/<method>``)::

    explanations.json                 what was explained: per input the prediction, target, layer, files or error
    report.html                       overlays (or figures) of every input, one page
    <name>.<method>.png               CAM methods: the heatmap over the original image (crop, flip, resize undone)
    <name>.<method>.npy               ... the map itself on the original image grid (float32 in [0, 1])
    <name>.<method>.input.png         ... the heatmap over the model input
    <name>.activation.png / .npz      activation maps at every layer group (figure, raw maps by layer)
    <name>.lesion-background.png/.json   Lesion/Background interpretation (figure, dis^L / dis^B per cell)

The folder's fixed file names live in :class:`~mammocad.explain.layout.ExplainDir`. This module
orchestrates; the pieces live beside it and stay importable from here: the inputs
(:mod:`~mammocad.explain.subjects`), overlay drawing (:mod:`~mammocad.explain.display`), the
evaluation's hooks (:mod:`~mammocad.explain.evaluation_hooks`) and the side-by-side comparison
of runs (:mod:`~mammocad.explain.activation_comparison`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mammocad.errors import ConfigError, ImageReadError, MammocadError
from mammocad.explain.activation import activation_figure, layer_activation_maps
from mammocad.explain.activation_comparison import compare_activations
from mammocad.explain.cam import (
    CAM_METHODS,
    check_method,
    class_activation_maps,
    lesion_heatmaps,
    overlay,
    target_layer,
)
from mammocad.explain.display import MAX_OVERLAY_SIDE, display_overlay, overlay_rgba
from mammocad.explain.evaluation_hooks import (
    gallery_meaning,
    gallery_overlays,
    gallery_pictures_for,
    localization_maps_for,
)
from mammocad.explain.layout import ExplainDir
from mammocad.explain.overlay import colorbar_png, heatmap_meaning, is_class_agnostic
from mammocad.explain.subjects import BATCH, Subject, cached_subjects, safe_name, unique_names
from mammocad.io import atomic_write_bytes, atomic_write_json, atomic_write_text, unique_new_dir
from mammocad.parse import parse_int
from mammocad.preprocess.pipeline import to_unit
from mammocad.progress import ProgressFn
from mammocad.reporting.html import HtmlReport, array_to_png
from mammocad.training.predict import Box, LoadedRun, load_run, prepare_image

#: Lesion/Background inputs sent through the network at once.
LESION_BACKGROUND_ONE_PASS = 128


@dataclass
class ExplainResult:
    """The output directory and one record per input (``status`` ok/error)."""

    out_dir: Path
    items: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [item for item in self.items if item["status"] != "ok"]

    @property
    def report(self) -> Path:
        return ExplainDir(self.out_dir).report_path


def explain_images(
    run_dir: str | Path,
    images: Sequence[str | Path],
    *,
    method: str = "gradcam",
    target: str | int | None = None,
    layer: str | None = None,
    boxes: Sequence[Box | None] | None = None,
    out_dir: str | Path | None = None,
    opacity: float = 0.45,
    progress: ProgressFn | None = None,
) -> ExplainResult:
    """Explain image files (DICOM, PNG, JPEG, PGM, TIFF) with a run's model.

    Args:
        run_dir: a trained run directory.
        images: image files; unreadable ones are reported in ``explanations.json`` and skipped.
        method: one of :data:`~mammocad.explain.cam.METHODS`.
        target: class name or index the CAM explains (None: each image's predicted class).
        layer: layer for CAMs / Lesion-Background (None: the last layer group); activation maps
            use every layer group unless a layer is given.
        boxes: one lesion box (x0, y0, x1, y1, original pixels) per image, needed by ROI runs.
        out_dir: output directory (must not exist; default ``RUN/explain/<method>``, made unique).
        opacity: heatmap weight in the overlays.
        progress: called with a message per step.

    Returns:
        :class:`ExplainResult`; raises ConfigError for a bad method, layer or target before any work.
    """
    run = load_run(run_dir)
    method = _check(run, method, layer)
    if boxes is not None and len(boxes) != len(images):
        raise ConfigError(f"{len(boxes)} boxes for {len(images)} images")
    subjects: list[Subject] = []
    failures: list[dict[str, Any]] = []
    for index, path in enumerate(images):
        try:
            tensor, result, image = prepare_image(run, path, boxes[index] if boxes is not None else None)
            original = to_unit(image, run.preprocess)
            subjects.append(Subject(Path(path).stem, str(path), tensor, result.geometry, original, None))
        except (ImageReadError, MammocadError) as exc:
            failures.append({"source": str(path), "status": "error", "reason": getattr(exc, "reason", str(exc))})
    return _explain(run, subjects, failures, method, target, layer, out_dir, opacity, progress)


def explain_split(
    run_dir: str | Path,
    split: str = "test",
    *,
    dataset: str | Path | None = None,
    limit: int | None = None,
    method: str = "gradcam",
    target: str | int | None = None,
    layer: str | None = None,
    out_dir: str | Path | None = None,
    opacity: float = 0.45,
    progress: ProgressFn | None = None,
) -> ExplainResult:
    """Explain the cached samples of one split of the run's dataset (first ``limit`` of them).

    The inputs are exactly what the model was scored on (the preprocessing cache); their lesion masks
    (when the dataset has them) outline the lesion in the figures and guide Lesion/Background.
    """
    # Here, not at the top: it imports the training data stack, which serving (engine) does not need.
    from mammocad.evaluation.predictions import run_config, split_frame

    run = load_run(run_dir)
    method = _check(run, method, layer)
    part = split_frame(run, run_config(run_dir), dataset, split)
    if limit is not None:
        part = part.head(limit)
    subjects, failures = cached_subjects(run, part, dataset or run_config(run_dir).data.dataset)
    return _explain(run, subjects, failures, method, target, layer, out_dir, opacity, progress)


def _check(run: LoadedRun, method: str, layer: str | None) -> str:
    method = check_method(method)
    if method == "lesion" and not callable(getattr(run.model, "lesion_map", None)):
        raise ConfigError(
            f"method 'lesion' needs a lesion-aware run; {run.run_dir} is {run.model.name}: use a CAM method"
        )
    if layer is not None:
        target_layer(run.model, layer)  # unknown names fail here, listing the layer groups
    return method


def _target_index(run: LoadedRun, target: str | int | None) -> int | None:
    if target is None or (isinstance(target, str) and target.lower() == "predicted"):
        return None
    if isinstance(target, str) and parse_int(target) is not None:  # ASCII digits only ("²".isdigit() is True)
        target = parse_int(target)
    if isinstance(target, int):
        if not 0 <= target < len(run.classes):
            raise ConfigError(f"target class {target} out of range; classes: {', '.join(run.classes)}")
        return target
    if target not in run.classes:
        raise ConfigError(f"unknown target class {target!r}; classes: {', '.join(run.classes)}")
    return run.classes.index(target)


def _explain(
    run: LoadedRun,
    subjects: list[Subject],
    failures: list[dict[str, Any]],
    method: str,
    target: str | int | None,
    layer: str | None,
    out_dir: str | Path | None,
    opacity: float,
    progress: ProgressFn | None,
) -> ExplainResult:
    step = progress or (lambda _message: None)
    wanted = _target_index(run, target)
    out = unique_new_dir(Path(out_dir) if out_dir is not None else ExplainDir.default(run.run_dir, method))
    layout = ExplainDir(out)
    result = ExplainResult(out, list(failures))
    names = unique_names([s.name for s in subjects])
    report = HtmlReport(f"Explanations · {run.run_dir.name} · {method}")
    gallery: list[tuple[bytes, str]] = []
    for start in range(0, len(subjects), BATCH):
        chunk = subjects[start : start + BATCH]
        step(f"{method}: inputs {start + 1}-{start + len(chunk)} of {len(subjects)}")
        batch = torch.stack([s.tensor for s in chunk]).float()
        with torch.inference_mode():
            probs = torch.softmax(run.model(batch).float() / run.temperature, dim=1).numpy()  # calibrated
        targets = [wanted if wanted is not None else int(p.argmax()) for p in probs]
        heatmaps = None
        if method in CAM_METHODS:
            heatmaps = class_activation_maps(run.model, batch, method, targets, layer)
        elif method == "lesion":
            heatmaps = lesion_heatmaps(run.model, batch)
        for k, subject in enumerate(chunk):
            name = names[start + k]
            record: dict[str, Any] = {
                "source": subject.source,
                "name": name,
                "status": "ok",
                "label": subject.label,
                "prediction": run.classes[int(probs[k].argmax())],
                "probabilities": {c: round(float(v), 6) for c, v in zip(run.classes, probs[k], strict=True)},
            }
            try:
                files, picture = _write_one(run, subject, name, method, targets[k], layer, heatmaps, k, opacity, out)
            except (MammocadError, ValueError) as exc:
                result.items.append({**record, "status": "error", "reason": str(exc)})
                continue
            record.update(files)
            result.items.append(record)
            caption = f"{name} · {record['prediction']} p={probs[k].max():.2f}"
            if subject.label is not None:
                caption += f" · true {subject.label}"
            if is_class_agnostic(method):
                caption += " · class-agnostic map"
            gallery.append((picture, caption))
    document = {
        "run": str(run.run_dir),
        "method": method,
        "layer": target_layer(run.model, layer) if method != "activation" or layer else "every layer group",
        "target": "predicted class" if wanted is None else run.classes[wanted],
        "classes": run.classes,
        "items": result.items,
    }
    if heatmaps is not None or method == "activation":
        document["class_agnostic"] = is_class_agnostic(method)
        document["meaning"] = heatmap_meaning(method, document["target"])
    atomic_write_json(layout.explanations_path, document)
    report.paragraph(
        f"Run {run.run_dir} · method {method} · layer {document['layer']} · target {document['target']} · "
        f"{len(gallery)} explained, {len(result.failed)} failed."
    )
    if "meaning" in document:
        report.paragraph(f"Colours: {document['meaning']}.")
    if heatmaps is not None:
        bar = colorbar_png(method, document["target"])
        atomic_write_bytes(layout.colorbar_path, bar)
        report.figure(bar, "colour bar", width=520)
    if gallery:
        report.gallery(gallery, width=420 if method in ("activation", "lesion-background") else 260)
    if result.failed:
        report.table(pd.DataFrame(result.failed)[["source", "reason"]], index=False)
    atomic_write_text(layout.report_path, report.render())
    return result


def _write_one(
    run: LoadedRun,
    subject: Subject,
    name: str,
    method: str,
    target: int,
    layer: str | None,
    heatmaps: np.ndarray | None,
    index: int,
    opacity: float,
    out: Path,
) -> tuple[dict[str, Any], bytes]:
    """Write one input's files; returns (record fields, the PNG shown in the report)."""
    grey = subject.tensor[0].numpy()
    if heatmaps is not None:
        heat = heatmaps[index]
        files: dict[str, Any] = (
            {"target": "any lesion", "layer": "lesion heatmap"}
            if method == "lesion"
            else {"target": run.classes[target], "layer": target_layer(run.model, layer)}
        )
        files["class_agnostic"] = is_class_agnostic(method)
        files["meaning"] = heatmap_meaning(method, files["target"])
        input_png = array_to_png(overlay(grey, heat, opacity))
        atomic_write_bytes(out / f"{name}.{method}.input.png", input_png)
        files["input_overlay"] = f"{name}.{method}.input.png"
        if subject.geometry is not None:
            on_original = subject.geometry.map_to_original(heat)
            _write_npy(out / f"{name}.{method}.npy", on_original)
            files["map"] = f"{name}.{method}.npy"
            if subject.original is not None:
                atomic_write_bytes(
                    out / f"{name}.{method}.png",
                    array_to_png(display_overlay(subject.original, subject.geometry, on_original, opacity)),
                )
                files["overlay"] = f"{name}.{method}.png"
        return files, input_png
    if method == "activation":
        maps = layer_activation_maps(run.model, subject.tensor, None if layer is None else [layer])
        png = activation_figure(grey, maps, title=name)
        atomic_write_bytes(out / f"{name}.activation.png", png)
        buffer = _npz_bytes({safe_name(k): v for k, v in maps.items()})
        atomic_write_bytes(out / f"{name}.activation.npz", buffer)
        return {"figure": f"{name}.activation.png", "maps": f"{name}.activation.npz", "layers": list(maps)}, png
    from mammocad.explain.lesion_background import lesion_background

    interpretation = lesion_background(
        run.model, subject.tensor, layer=layer, mask=subject.mask, batch_size=_lesion_background_batch(run, layer)
    )
    png = interpretation.figure_png()
    atomic_write_bytes(out / f"{name}.lesion-background.png", png)
    document = {"source": subject.source, **interpretation.to_json()}
    atomic_write_json(out / f"{name}.lesion-background.json", document)
    files = {
        "figure": f"{name}.lesion-background.png",
        "cells": f"{name}.lesion-background.json",
        "layer": interpretation.layer,
        "lesion_cells": document["lesion_cells"],
        "background_cells": document["background_cells"],
    }
    return files, png


def _lesion_background_batch(run: LoadedRun, layer: str | None) -> int | None:
    """One forward pass for the 2·g² + 1 inputs (Li & Zwiggelaar (2024)'s 7×7 grid: 99) unless that is too big for memory
    (the baseline CNN's 14×14 grid at 224² makes 393 inputs, about 6 GB in one pass)."""
    from mammocad.models.activation_maps import activation_maps

    side = run.preprocess.image_size
    probe = torch.zeros(1, run.model.in_chans, *side)
    grid = next(iter(activation_maps(run.model, probe, [target_layer(run.model, layer)]).values())).shape[-2:]
    return None if 2 * grid[0] * grid[1] + 1 <= LESION_BACKGROUND_ONE_PASS else LESION_BACKGROUND_ONE_PASS


def _write_npy(path: Path, array: np.ndarray) -> None:
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array, dtype=np.float32), allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


__all__ = [
    "BATCH",
    "LESION_BACKGROUND_ONE_PASS",
    "MAX_OVERLAY_SIDE",
    "ExplainResult",
    "Subject",
    "cached_subjects",
    "compare_activations",
    "display_overlay",
    "explain_images",
    "explain_split",
    "gallery_meaning",
    "gallery_overlays",
    "gallery_pictures_for",
    "localization_maps_for",
    "overlay_rgba",
]
