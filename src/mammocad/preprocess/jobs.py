"""The preprocessing work of one dataset, one image per job: which samples to cut, and cutting them.

Samples: full mode, one per image (``sample_id`` = image id); roi mode, one per located lesion
(``<image id>__l<k>``), labelled with the lesion's own pathology when it is one of the classes.
:func:`run_job` runs in a worker process: it gets plain picklable arguments and returns its
failures as records, never raising for one image's problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from mammocad.data.images import read_image
from mammocad.data.manifest import Lesion, lesions_of, resolve_path
from mammocad.errors import ConfigError, DatasetError, ImageReadError
from mammocad.io import atomic_write_json, atomic_write_png
from mammocad.preprocess.cache_dir import CacheDir
from mammocad.preprocess.config import PreprocessConfig
from mammocad.preprocess.lesion_masks import lesion_box, lesion_mask, union_mask
from mammocad.preprocess.pipeline import Preprocessed, preprocess_image, preprocess_roi

#: Per sample of a job: its id and None when it was written, else its skip record (item, reason).
Outcome = list[tuple[str, dict[str, str] | None]]


@dataclass
class Sample:
    """One sample to cut from an image."""

    sample_id: str
    lesion_index: int | None  # None: the whole image (full mode)


@dataclass
class Job:
    """One image to decode and the samples to cut from it."""

    image_id: str
    image_path: str
    row: dict[str, Any]
    samples: list[Sample]
    signature: list[Any]  # size/mtime of every file the job reads: a failure is retried when it changes


def plan_jobs(
    dataset_dir: Path, manifest: pd.DataFrame, config: PreprocessConfig
) -> tuple[list[Job], list[dict[str, str]]]:
    """The work for ``config``, and the lesions roi mode cannot use (no location)."""
    jobs, skipped = [], []
    for row in manifest.to_dict("records"):
        image_path = resolve_path(dataset_dir, row["image_path"])
        lesions = lesions_of(row)
        files = [image_path, resolve_path(dataset_dir, row.get("mask_path"))]
        files += [resolve_path(dataset_dir, lesion.mask_path) for lesion in lesions]
        if config.mode == "full":
            samples = [Sample(_safe(row["image_id"]), None)]
        else:
            samples = []
            for k, lesion in enumerate(lesions):
                if lesion.has_box or lesion.mask_path or lesion.center_x is not None:
                    samples.append(Sample(_safe(f"{row['image_id']}__l{k}"), k))
                else:
                    skipped.append(
                        {
                            "item": f"{row['image_id']} lesion {k}",
                            "reason": "lesion has no location (no box, mask or centre)",
                        }
                    )
        if samples:
            jobs.append(Job(row["image_id"], str(image_path), row, samples, _signature(files)))
    return jobs, skipped


def _safe(name: str) -> str:
    """A file-name-safe sample id (ids from source sheets can hold slashes and spaces)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _signature(paths: list[Path | None]) -> list[Any]:
    out: list[Any] = []
    for path in paths:
        try:
            stat = path.stat() if path is not None else None
        except OSError:
            stat = None
        out.append(None if stat is None else [stat.st_size, stat.st_mtime_ns])
    return out


def run_job(job: Job, cache: str, payload: dict[str, Any], classes: list[str]) -> Outcome:
    """Decode one image and write its samples; failures come back as skip records, never raised."""
    config = PreprocessConfig(**payload)
    cache_dir = CacheDir(cache)
    try:
        image = read_image(job.image_path)
    except BaseException as exc:  # a decoder's failure (a Rust panic too) is this image's, never the run's
        if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit, ConfigError)):
            raise  # a bad $MAMMOCAD_DECODE_BUDGET_MB is the run's, not a per-image failure to remember
        reason = (
            str(exc) if isinstance(exc, (ImageReadError, ValueError, cv2.error)) else f"{type(exc).__name__}: {exc}"
        )
        # Plain strings only: an exception object need not survive pickling back from a worker.
        return [(s.sample_id, {"item": _item(job, s), "reason": reason}) for s in job.samples]
    outcome: Outcome = []
    for sample in job.samples:
        try:
            _process(job, sample, image, cache_dir, config, classes)
            outcome.append((sample.sample_id, None))
        except (ImageReadError, DatasetError, ValueError, cv2.error) as exc:
            outcome.append((sample.sample_id, {"item": _item(job, sample), "reason": str(exc)}))
    return outcome


def _item(job: Job, sample: Sample) -> str:
    return job.image_id if sample.lesion_index is None else f"{job.image_id} lesion {sample.lesion_index}"


def _process(
    job: Job,
    sample: Sample,
    image: Any,
    cache: CacheDir,
    config: PreprocessConfig,
    classes: list[str],
) -> None:
    row = job.row
    shape = image.pixels.shape
    lesions = lesions_of(row)
    laterality = _text(row.get("laterality"))
    label, label_name = int(row["label"]), str(row["label_name"])
    lesion: Lesion | None = None
    if sample.lesion_index is None:
        mask = union_mask(cache.dataset_dir, row, lesions, shape)
        result: Preprocessed = preprocess_image(image, config, mask, laterality)
    else:
        lesion = lesions[sample.lesion_index]
        mask = lesion_mask(cache.dataset_dir, lesion, shape)
        box = lesion_box(lesion, mask, shape, _item(job, sample))
        result = preprocess_roi(image, config, box, mask, laterality)
        if lesion.pathology in classes:  # a benign mass in a malignant image is a benign sample
            label, label_name = classes.index(lesion.pathology), lesion.pathology
    sid = sample.sample_id
    mask_name = None
    if result.mask is not None and result.mask.any():
        mask_name = cache.mask_name(sid)
        atomic_write_png(cache.path / mask_name, result.mask)
    atomic_write_png(cache.path / cache.image_name(sid), result.pixels)
    meta = {
        "sample_id": sid,
        "image_id": row["image_id"],
        "lesion_index": -1 if sample.lesion_index is None else sample.lesion_index,
        "label": label,
        "label_name": label_name,
        "patient_id": row["patient_id"],
        "study_id": _text(row.get("study_id")),
        "official_split": _text(row.get("official_split")),
        "laterality": laterality,
        "view": _text(row.get("view")),
        "pathology": _text(row.get("pathology")),
        "lesion_type": lesion.lesion_type if lesion else None,
        "lesion_pathology": lesion.pathology if lesion else None,
        "image": cache.image_name(sid),
        "mask": mask_name,
        **result.geometry.as_record(),
    }
    atomic_write_json(cache.meta_path(sid), meta)  # last: marks the sample done


def _text(value: Any) -> str | None:
    """A manifest string cell, with pandas' missing values as None."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return str(value)


__all__ = ["Job", "Outcome", "Sample", "plan_jobs", "run_job"]
