"""Preprocess a whole dataset into an on-disk cache keyed by the preprocessing config.

``<dataset>/cache/<config.cache_key()>/`` holds ``config.json``, ``images/<sample>.png``,
``masks/<sample>.png``, ``meta/<sample>.json`` (label, geometry) and, once complete,
``samples.parquet``. A sample is done when its meta file exists (written last, atomically), so an
interrupted run resumes with the missing samples only, and a second run over a complete cache
decodes nothing: training epochs read these PNGs, never the DICOMs.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from mammocad.data.images import read_image
from mammocad.data.manifest import Lesion, lesions_of, read_classes, read_manifest, resolve_path
from mammocad.errors import DatasetError, ImageReadError
from mammocad.io import atomic_write_bytes, atomic_write_json, atomic_write_png
from mammocad.preprocess.config import PreprocessConfig
from mammocad.preprocess.pipeline import preprocess_image, preprocess_roi

CACHE_DIR = "cache"
SAMPLES_NAME = "samples.parquet"
ProgressFn = Callable[[int, int], None]


@dataclass
class PreprocessResult:
    """What a preprocessing call did: where the cache is, how many samples, what it skipped."""

    cache_dir: Path
    n_samples: int
    n_processed: int
    n_from_cache: int
    skipped: list[dict[str, str]] = field(default_factory=list)


@dataclass
class _Job:
    sample_id: str
    image_path: str
    row: dict[str, Any]
    lesion_index: int | None


def cache_dir_for(dataset_dir: str | Path, config: PreprocessConfig) -> Path:
    """The cache directory of ``config`` inside a dataset."""
    return Path(dataset_dir) / CACHE_DIR / config.cache_key()


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _jobs(
    dataset_dir: Path, manifest: pd.DataFrame, config: PreprocessConfig
) -> tuple[list[_Job], list[dict[str, str]]]:
    jobs, skipped = [], []
    for row in manifest.to_dict("records"):
        image_path = str(resolve_path(dataset_dir, row["image_path"]))
        if config.mode == "full":
            jobs.append(_Job(_safe(row["image_id"]), image_path, row, None))
            continue
        for k, lesion in enumerate(lesions_of(row)):
            if lesion.has_box or lesion.mask_path or lesion.center_x is not None:
                jobs.append(_Job(_safe(f"{row['image_id']}__l{k}"), image_path, row, k))
            else:
                skipped.append(
                    {
                        "item": f"{row['image_id']} lesion {k}",
                        "reason": "lesion has no location (no box, mask or centre)",
                    }
                )
    return jobs, skipped


def preprocess_dataset(
    dataset_dir: str | Path,
    config: PreprocessConfig,
    workers: int = 2,
    progress: ProgressFn | None = None,
) -> PreprocessResult:
    """Preprocess every image (full mode) or lesion (roi mode) of a dataset into its cache.

    Returns a :class:`PreprocessResult`; the cache's ``samples.parquet`` lists the samples.
    Unreadable items are skipped with the reason (``skipped.json``); the good ones are kept.
    """
    dataset_dir = Path(dataset_dir)
    manifest = read_manifest(dataset_dir)
    classes = read_classes(dataset_dir)
    cache = cache_dir_for(dataset_dir, config)
    jobs, skipped = _jobs(dataset_dir, manifest, config)
    if not jobs:
        raise DatasetError(
            f"{dataset_dir}: nothing to preprocess in {config.mode} mode"
            + (" (no located lesions)" if config.mode == "roi" else "")
        )
    atomic_write_json(cache / "config.json", {"config": config.model_dump(mode="json"), "classes": classes})
    todo = [job for job in jobs if not (cache / "meta" / f"{job.sample_id}.json").exists()]
    if not todo and (cache / SAMPLES_NAME).exists():
        previous = json.loads((cache / "skipped.json").read_text()) if (cache / "skipped.json").exists() else []
        return PreprocessResult(cache, len(pd.read_parquet(cache / SAMPLES_NAME)), 0, len(jobs), previous)

    done = len(jobs) - len(todo)
    if progress:
        progress(done, len(jobs))
    payload = config.model_dump(mode="json")
    args = [(job, str(dataset_dir), str(cache), payload) for job in todo]
    if workers > 1 and len(todo) > 1:
        # Processes, not threads: decoding and CLAHE hold the GIL for part of their time.
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = pool.map(_run_job, args, chunksize=max(1, min(16, len(todo) // (workers * 4))))
            for error in results:
                done += 1
                if error:
                    skipped.append(error)
                if progress:
                    progress(done, len(jobs))
    else:
        for arg in args:
            error = _run_job(arg)
            done += 1
            if error:
                skipped.append(error)
            if progress:
                progress(done, len(jobs))

    ids = [job.sample_id for job in jobs if (cache / "meta" / f"{job.sample_id}.json").exists()]
    metas = [json.loads((cache / "meta" / f"{sid}.json").read_text()) for sid in ids]
    samples = pd.DataFrame(metas)
    atomic_write_bytes(cache / SAMPLES_NAME, samples.to_parquet(index=False))
    atomic_write_json(cache / "skipped.json", skipped)
    return PreprocessResult(cache, len(samples), len(todo), len(jobs) - len(todo), skipped)


def _run_job(arg: tuple[_Job, str, str, dict[str, Any]]) -> dict[str, str] | None:
    """Process one sample in a worker; returns a skip record instead of raising."""
    job, dataset_dir, cache, payload = arg
    try:
        _process(job, Path(dataset_dir), Path(cache), PreprocessConfig(**payload))
    except (ImageReadError, DatasetError, ValueError, cv2.error) as exc:
        item = job.sample_id if job.lesion_index is None else f"{job.row['image_id']} lesion {job.lesion_index}"
        return {"item": item, "reason": str(exc)}
    return None


def _process(job: _Job, dataset_dir: Path, cache: Path, config: PreprocessConfig) -> None:
    image = read_image(job.image_path)
    shape = image.pixels.shape
    row = job.row
    lesions = lesions_of(row)
    if job.lesion_index is None:
        mask = _union_mask(dataset_dir, row, lesions, shape)
        result = preprocess_image(image, config, mask)
    else:
        lesion = lesions[job.lesion_index]
        mask = _lesion_mask(dataset_dir, lesion, shape)
        result = preprocess_roi(image, config, _lesion_box(lesion, mask, job), mask)
    sid = job.sample_id
    mask_rel = None
    if result.mask is not None and result.mask.any():
        mask_rel = f"masks/{sid}.png"
        atomic_write_png(cache / mask_rel, result.mask)
    atomic_write_png(cache / "images" / f"{sid}.png", result.pixels)
    geometry = result.geometry
    meta = {
        "sample_id": sid,
        "image_id": row["image_id"],
        "lesion_index": -1 if job.lesion_index is None else job.lesion_index,
        "label": int(row["label"]),
        "label_name": row["label_name"],
        "patient_id": row["patient_id"],
        "image": f"images/{sid}.png",
        "mask": mask_rel,
        "original_height": geometry.original_hw[0],
        "original_width": geometry.original_hw[1],
        "crop_x0": geometry.crop[0],
        "crop_y0": geometry.crop[1],
        "crop_x1": geometry.crop[2],
        "crop_y1": geometry.crop[3],
        "flipped": geometry.flipped,
    }
    if job.lesion_index is not None:
        meta["lesion_type"] = lesions[job.lesion_index].lesion_type
        meta["lesion_pathology"] = lesions[job.lesion_index].pathology
    atomic_write_json(cache / "meta" / f"{sid}.json", meta)  # last: marks the sample done


def _read_mask(dataset_dir: Path, value: str, shape: tuple[int, int]) -> np.ndarray:
    mask = read_image(resolve_path(dataset_dir, value)).pixels > 0
    if mask.shape != shape:
        # Source masks can be off by a few pixels (CBIS-DDSM); align them to the image grid.
        mask = cv2.resize(mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    return mask


def _drawn_mask(lesion: Lesion, shape: tuple[int, int]) -> np.ndarray | None:
    """A mask from geometry alone: the MIAS circle, else the box."""
    mask = np.zeros(shape, dtype=np.uint8)
    if lesion.radius is not None and lesion.center_x is not None:
        cv2.circle(mask, (round(lesion.center_x), round(lesion.center_y)), round(lesion.radius), 1, -1)
    elif lesion.has_box:
        mask[int(lesion.y0) : int(lesion.y1), int(lesion.x0) : int(lesion.x1)] = 1
    else:
        return None
    return mask > 0


def _lesion_mask(dataset_dir: Path, lesion: Lesion, shape: tuple[int, int]) -> np.ndarray | None:
    if lesion.mask_path:
        return _read_mask(dataset_dir, lesion.mask_path, shape)
    return _drawn_mask(lesion, shape)


def _union_mask(
    dataset_dir: Path, row: dict[str, Any], lesions: list[Lesion], shape: tuple[int, int]
) -> np.ndarray | None:
    if isinstance(row.get("mask_path"), str) and row["mask_path"]:
        return _read_mask(dataset_dir, row["mask_path"], shape)
    masks = [m for m in (_lesion_mask(dataset_dir, lesion, shape) for lesion in lesions) if m is not None]
    return np.logical_or.reduce(masks) if masks else None


def _lesion_box(lesion: Lesion, mask: np.ndarray | None, job: _Job) -> tuple[int, int, int, int]:
    if lesion.has_box:
        return int(lesion.x0), int(lesion.y0), int(lesion.x1), int(lesion.y1)
    if mask is not None and mask.any():
        ys, xs = np.nonzero(mask)
        return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    if lesion.center_x is not None:
        cx, cy = round(lesion.center_x), round(lesion.center_y)
        return cx, cy, cx + 1, cy + 1
    raise DatasetError(f"{job.row['image_id']} lesion {job.lesion_index}: no location")


def load_preprocessed(dataset_dir: str | Path, config: PreprocessConfig) -> pd.DataFrame:
    """The samples table of a complete cache, with ``image``/``mask`` as absolute paths."""
    cache = cache_dir_for(dataset_dir, config)
    path = cache / SAMPLES_NAME
    if not path.exists():
        raise DatasetError(f"{cache}: not preprocessed with this config yet; run `mammocad preprocess` first")
    samples = pd.read_parquet(path)
    samples["image"] = [str(cache / p) for p in samples["image"]]
    samples["mask"] = [str(cache / p) if isinstance(p, str) else None for p in samples["mask"]]
    return samples


def read_sample(path: str | Path) -> np.ndarray:
    """Read a cached sample PNG (uint8 or uint16, as written)."""
    pixels = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ImageReadError(path, "cached sample is missing or unreadable; delete the cache folder and rerun")
    return pixels
