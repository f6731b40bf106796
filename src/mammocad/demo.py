"""The demo: every stage that exists, end to end on synthetic data, ending in an HTML report.

``mammocad demo`` synthesises a small dataset, imports it, splits it by patient, preprocesses it
(whole breast and mass-centred ROIs) and writes ``report.html`` in a new run directory. It grows
as stages land (training, evaluation, explanation).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from mammocad.data.images import read_image
from mammocad.data.importers import import_dataset
from mammocad.data.manifest import read_classes, read_manifest, resolve_path
from mammocad.data.split import SplitSpec, read_splits, split_dataset
from mammocad.data.synth import write_synthetic_dataset
from mammocad.preprocess import PreprocessConfig, load_preprocessed, preprocess_dataset, read_sample
from mammocad.reporting.html import HtmlReport, array_to_png, figure_to_png

StepFn = Callable[[str], None]


@dataclass
class DemoResult:
    """Where the demo wrote things and how long each step took (seconds)."""

    run_dir: Path
    report: Path
    timings: dict[str, float] = field(default_factory=dict)


def default_run_dir(root: str | Path = "demo-output") -> Path:
    """A new, timestamped directory under ``root`` (runs are never overwritten)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"demo-{stamp}"


def run_demo(
    run_dir: str | Path,
    n_per_class: int = 40,
    seed: int = 0,
    source_format: str = "csv",
    image_size: int = 224,
    workers: int = 2,
    on_step: StepFn | None = None,
) -> DemoResult:
    """Run the demo into ``run_dir`` (must not exist) and return where the report is."""
    run_dir = Path(run_dir)
    if run_dir.exists():
        raise FileExistsError(f"{run_dir}: already exists; the demo never overwrites a run")
    run_dir.mkdir(parents=True)
    timings: dict[str, float] = {}
    step = on_step or (lambda _message: None)

    def timed(name: str, message: str, fn: Callable[[], object]) -> object:
        step(message)
        start = time.perf_counter()
        value = fn()
        timings[name] = time.perf_counter() - start
        return value

    counts = {"normal": n_per_class, "benign": n_per_class, "malignant": n_per_class}
    source = timed(
        "synthesise",
        f"synthesising {3 * n_per_class} phantom mammograms ({source_format} format)",
        lambda: write_synthetic_dataset(run_dir / "source", source_format, n_per_class=counts, seed=seed),
    )
    dataset = run_dir / "dataset"
    summary = timed("import", "importing", lambda: import_dataset(source_format, source, dataset))
    timed("split", "splitting by patient (5 folds)", lambda: split_dataset(dataset, SplitSpec(folds=5, seed=seed)))
    full_cfg = PreprocessConfig(mode="full", image_size=image_size)
    roi_cfg = PreprocessConfig(mode="roi", image_size=image_size)
    timed(
        "preprocess_full", "preprocessing whole breasts", lambda: preprocess_dataset(dataset, full_cfg, workers=workers)
    )
    timed(
        "preprocess_cached",
        "preprocessing again (cache hit)",
        lambda: preprocess_dataset(dataset, full_cfg, workers=workers),
    )
    timed(
        "preprocess_roi", "extracting mass-centred ROIs", lambda: preprocess_dataset(dataset, roi_cfg, workers=workers)
    )
    step("writing the report")
    report_path = _write_report(run_dir, dataset, summary, full_cfg, roi_cfg, timings)
    return DemoResult(run_dir=run_dir, report=report_path, timings=timings)


def _write_report(
    run_dir: Path,
    dataset: Path,
    summary: object,
    full_cfg: PreprocessConfig,
    roi_cfg: PreprocessConfig,
    timings: dict[str, float],
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    manifest = read_manifest(dataset)
    classes = read_classes(dataset)
    splits = read_splits(dataset).merge(manifest[["image_id"]], on="image_id")
    report = HtmlReport("mammocad demo — synthetic data")
    report.paragraph(
        "All images in this report are SYNTHETIC phantoms from `mammocad synth`, not patient data. "
        "The demo shows the pipeline, not clinical performance.",
        note=True,
    )

    report.heading("Dataset")
    report.paragraph(
        f"{len(manifest)} images of {manifest['patient_id'].nunique()} patients, "
        f"{int(manifest['n_lesions'].sum())} annotated lesions; {len(summary.skipped)} items skipped at import."
    )
    table = pd.crosstab(splits["split"], splits["label_name"]).reindex(columns=classes, fill_value=0)
    table["patients"] = splits.groupby("split")["patient_id"].nunique()
    report.table(table)
    figure, axis = plt.subplots(figsize=(5, 2.8))
    table[classes].plot.bar(stacked=True, ax=axis, color=["#68a357", "#e0a030", "#c0392b"][: len(classes)])
    axis.set_ylabel("images")
    axis.set_title("images per split and class (patient-grouped)")
    report.figure(figure_to_png(figure), "Images per split and class")

    report.heading("Preprocessing: whole breast")
    report.preformatted(full_cfg.model_dump_json(indent=1))
    samples = load_preprocessed(dataset, full_cfg)
    report.gallery(_before_after(dataset, manifest, samples, classes), width=300)

    report.heading("Preprocessing: mass-centred ROIs")
    report.preformatted(roi_cfg.model_dump_json(indent=1))
    rois = load_preprocessed(dataset, roi_cfg)
    items = []
    for _, row in rois.groupby("label_name").head(4).iterrows():
        pixels = read_sample(row["image"])
        mask = read_sample(row["mask"]) if isinstance(row.get("mask"), str | Path) else None
        items.append((array_to_png(_overlay(pixels, mask)), f"{row['label_name']} ROI of {row['image_id']}"))
    report.gallery(items, width=160)

    report.heading("Timings")
    report.table(pd.DataFrame({"seconds": timings}).rename_axis("step"))
    return report.write(run_dir / "report.html")


def _before_after(
    dataset: Path, manifest: pd.DataFrame, samples: pd.DataFrame, classes: list[str]
) -> list[tuple[bytes, str]]:
    """Original next to preprocessed (lesion mask outlined), two images per class."""
    items = []
    merged = samples.merge(manifest[["image_id", "image_path"]], on="image_id")
    for cls in classes:
        for _, row in merged[merged["label_name"] == cls].head(2).iterrows():
            original = read_image(resolve_path(dataset, row["image_path"])).pixels
            original8 = (original.astype(np.float32) * (255.0 / max(int(original.max()), 1))).astype(np.uint8)
            after = read_sample(row["image"])
            mask = read_sample(row["mask"]) if isinstance(row.get("mask"), str | Path) else None
            pair = _side_by_side(original8, _overlay(after, mask))
            items.append((array_to_png(pair), f"{cls}: original | preprocessed ({row['image_id']})"))
    return items


def _overlay(pixels: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """RGB image with the mask's outline in red."""
    import cv2

    grey = pixels if pixels.dtype == np.uint8 else (pixels / 257).astype(np.uint8)
    rgb = np.stack([grey] * 3, axis=-1)
    if mask is not None and mask.any():
        contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(rgb, contours, -1, (255, 40, 40), 1)
    return rgb


def _side_by_side(left: np.ndarray, right: np.ndarray, height: int = 256) -> np.ndarray:
    import cv2

    def fit(img: np.ndarray) -> np.ndarray:
        rgb = img if img.ndim == 3 else np.stack([img] * 3, axis=-1)
        width = max(1, round(rgb.shape[1] * height / rgb.shape[0]))
        return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)

    gap = np.full((height, 6, 3), 255, dtype=np.uint8)
    return np.concatenate([fit(left), gap, fit(right)], axis=1)
