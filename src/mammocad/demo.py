"""The demo: every stage, end to end on synthetic data, ending in an HTML report.

``mammocad demo`` synthesises a small dataset, imports it, splits it by patient, preprocesses it
(whole breast and mass-centred ROIs), trains the baseline CNN, ICNT, the ImageNet-pretrained
EfficientNet-Lite0 with the improved head and the lesion-aware model briefly, evaluates each on the
test split (with where each model looks), compares them and writes ``report.html`` in a new directory. ``quick=True`` is the same pipeline at toy sizes
(for tests and CI).
"""

from __future__ import annotations

import html
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
from mammocad.evaluation.compare import ComparisonResult, compare_runs
from mammocad.evaluation.evaluate import EvaluationResult, evaluate_run
from mammocad.explain import gallery_overlays, localization_maps_for
from mammocad.preprocess import PreprocessConfig, load_preprocessed, preprocess_dataset, read_sample
from mammocad.progress import ProgressFn
from mammocad.reporting.html import HtmlReport, array_to_png, figure_to_png
from mammocad.training.config import load_run_config
from mammocad.training.run import RunResult, train
from mammocad.training.run_dir import EvaluationDir

# (label, config overrides, epochs at full size): Dahes (2025)'s baseline and ICNT, the ImageNet-pretrained
# EfficientNet-Lite0 with the improved GAGM + SEVector head (Xia et al. (2025), as applied by Dahes (2025)),
# and the lesion-aware model (patches from the masks, a heatmap over the whole film; its patch is a third
# of the film side).
DEMO_MODELS: list[tuple[str, dict[str, object], int]] = [
    ("baseline", {"model.name": "baseline_cnn", "train.lr": 1e-3}, 8),
    ("icnt", {"model.name": "icnt", "train.lr": 1e-4}, 3),
    (
        "lite0",
        {"model.name": "efficientnet_lite0", "model.pretrained": True, "model.head": "gagm_se_dense", "train.lr": 3e-4},
        6,
    ),
    (
        "lesion",
        {
            "model.name": "lesion_aware",
            "model.backbone": "efficientnet_lite0",
            "model.pretrained": True,
            "train.lr": 3e-4,
            "train.batch_size": 32,
        },
        6,
    ),
]


@dataclass
class DemoResult:
    """Where the demo wrote things and how long each step took (seconds)."""

    run_dir: Path
    report: Path
    timings: dict[str, float] = field(default_factory=dict)
    runs: dict[str, Path] = field(default_factory=dict)
    evaluations: dict[str, Path] = field(default_factory=dict)
    comparison: Path | None = None


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
    on_step: ProgressFn | None = None,
    quick: bool = False,
) -> DemoResult:
    """Run the demo into ``run_dir`` (must not exist) and return where the report is.

    ``quick``: 96-pixel images, one epoch per model, 200 bootstrap resamples: the whole pipeline
    in about a minute, for tests and CI.
    """
    if quick:
        image_size = min(image_size, 96)
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

    runs: dict[str, RunResult] = {}
    for label, overrides, epochs in DEMO_MODELS:
        n_epochs = 1 if quick else epochs
        config = load_run_config(
            None,
            {
                "data.dataset": str(dataset),
                "data.task": "3class",
                "preprocess.image_size": image_size,
                "train.epochs": n_epochs,
                "train.batch_size": 8,
                "train.seed": seed,
                "output.runs_dir": str(run_dir / "runs"),
                "output.name": label,
                "output.mlflow": not quick,
                **overrides,
                **(
                    {"lesion.patch_size": max(32, image_size // 3)} if overrides["model.name"] == "lesion_aware" else {}
                ),
            },
        )

        def report_epoch(row: dict[str, object], label: str = label, n_epochs: int = n_epochs) -> None:
            step(
                f"{label}: epoch {int(row['epoch']) + 1}/{n_epochs} · train loss {row['train_loss']:.3f} · "
                f"val loss {row['val_loss']:.3f} · val macro-AUC {row['val_auc_macro']:.3f} ({row['seconds']:.0f} s)"
            )

        runs[label] = timed(
            f"train_{label}",
            f"training {label} ({overrides['model.name']}, {n_epochs} epoch(s), {image_size}px)",
            lambda config=config, report_epoch=report_epoch: train(config, progress=False, on_epoch=report_epoch),
        )
    evaluations: dict[str, EvaluationResult] = {}
    for label, result in runs.items():
        evaluations[label] = timed(
            f"evaluate_{label}",
            f"evaluating {label} on the test split",
            lambda result=result: evaluate_run(
                result.run_dir,
                split="test",
                n_resamples=200 if quick else 1000,
                gallery_pictures=gallery_overlays,
                localization_maps=localization_maps_for("gradcam"),
            ),
        )
    comparison = timed(
        "compare",
        "comparing the models (tables, DeLong, McNemar)",
        lambda: compare_runs([r.run_dir for r in runs.values()], run_dir / "comparison", split="test"),
    )
    step("writing the report")
    report_path = _write_report(run_dir, dataset, summary, full_cfg, roi_cfg, timings, runs, evaluations, comparison)
    return DemoResult(
        run_dir=run_dir,
        report=report_path,
        timings=timings,
        runs={k: v.run_dir for k, v in runs.items()},
        evaluations={k: v.out_dir for k, v in evaluations.items()},
        comparison=comparison.out_dir,
    )


def _write_report(
    run_dir: Path,
    dataset: Path,
    summary: object,
    full_cfg: PreprocessConfig,
    roi_cfg: PreprocessConfig,
    timings: dict[str, float],
    runs: dict[str, RunResult],
    evaluations: dict[str, EvaluationResult],
    comparison: ComparisonResult,
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

    _training_sections(report, run_dir, runs, evaluations, comparison)

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


def _localization_table(report: HtmlReport, evaluations: dict[str, EvaluationResult]) -> None:
    """Where each model looks on the test films: the lesion model's heatmap, Grad-CAM for the others."""
    rows = []
    for label, evaluation in evaluations.items():
        located = evaluation.metrics.get("localization")
        if not located:
            continue
        pointing, froc = located["pointing_game"], located["froc"]
        rate = pointing["hit_rate"]
        row: dict[str, object] = {
            "model": label,
            "heatmap": "lesion heatmap" if evaluation.metrics["model"].get("name") == "lesion_aware" else "Grad-CAM",
            "pointing game": f"{pointing['hits']}/{pointing['films']}" + ("" if rate is None else f" ({rate:.0%})"),
        }
        for fp in (0.5, 1, 2):
            value = froc.get(f"sensitivity_at_{fp:g}_fp")
            row[f"sensitivity @ {fp:g} FP/film"] = "undefined" if value is None else f"{value:.2f}"
        rows.append(row)
    if rows:
        report.heading("Where the models look")
        report.paragraph(
            "On the test films with an annotated lesion: the pointing game (is the heatmap's peak inside the "
            "lesion?) and FROC-style lesion sensitivity at 0.5/1/2 false positives per film. Each model's report "
            "shows its heatmaps in the galleries (the lesion model: its own lesion heatmap; the others: Grad-CAM)."
        )
        report.table(pd.DataFrame(rows), index=False)


def _training_sections(
    report: HtmlReport,
    run_dir: Path,
    runs: dict[str, RunResult],
    evaluations: dict[str, EvaluationResult],
    comparison: ComparisonResult,
) -> None:
    """Training, test-split evaluation and comparison, with links to each full report."""
    report.heading("Training (3-class: normal / benign / malignant)")
    rows = []
    for label, result in runs.items():
        history = result.history
        best = history.loc[history["epoch"] == result.best_epoch].iloc[0]
        rows.append(
            {
                "model": label,
                "run": result.run_dir.name,
                "epochs": len(history),
                "best epoch": result.best_epoch,
                "val loss": best["val_loss"],
                "val macro-F1": best["val_f1_macro"],
                "val macro-AUC": best["val_auc_macro"],
                "seconds": history["seconds"].sum(),
            }
        )
    report.table(pd.DataFrame(rows), index=False)

    report.heading("Test split: each model")
    rows = []
    for label, evaluation in evaluations.items():
        head, cis = evaluation.metrics["headline"], evaluation.metrics["confidence_intervals"]
        row: dict[str, object] = {"model": label}
        for metric in ("accuracy", "f1_macro", "recall_min", "auc_macro"):
            ci = cis.get(metric, {})
            value = head.get(metric)
            interval = f" [{ci['low']:.2f}, {ci['high']:.2f}]" if ci.get("low") is not None else ""
            row[metric] = "undefined" if value is None else f"{value:.3f}{interval}"
        row["report"] = evaluation.report.relative_to(run_dir).as_posix()
        rows.append(row)
    report.paragraph("Values with their 95% patient-level bootstrap confidence intervals.")
    report.table(pd.DataFrame(rows), index=False)
    _localization_table(report, evaluations)
    figures_dir = {label: EvaluationDir(evaluation.out_dir).figures_dir for label, evaluation in evaluations.items()}
    items = []
    for label, folder in figures_dir.items():
        for name in ("confusion_normalised", "roc"):
            items.append(((folder / f"{name}.png").read_bytes(), f"{label}: {name.replace('_', ' ')}"))
    report.gallery(items, width=300)

    report.heading("Comparison")
    report.table(comparison.table1)
    report.table(comparison.table2)
    report.table(comparison.significance, index=False)
    for name in ("scatter_pairs", "radar_triplets", "f1_recall_bars"):
        report.figure((comparison.out_dir / "figures" / f"{name}.png").read_bytes(), name.replace("_", " "))
    links = {label: e.report.relative_to(run_dir).as_posix() for label, e in evaluations.items()}
    links["comparison"] = comparison.report.relative_to(run_dir).as_posix()
    report.raw(
        "<p>Full reports (latent space, galleries, calibration, learning curves): "
        + ", ".join(f'<a href="{html.escape(path)}">{html.escape(label)}</a>' for label, path in links.items())
        + ".</p>"
    )
