"""Preprocess a whole dataset into an on-disk cache keyed by the preprocessing config.

``<dataset>/cache/<config.cache_key()>/`` holds:

- ``config.json``: the config, pipeline version and class names;
- ``images/<sample>.png`` and ``masks/<sample>.png`` (uint8 0/255; only samples with a lesion mask);
- ``meta/<sample>.json``: one row of the samples table, written last (atomically), so it marks the
  sample done;
- ``samples.parquet``: every finished sample (see :data:`SAMPLE_COLUMNS`), written atomically at
  the end of each call;
- ``skipped.json``: what was skipped and why; ``failures.json``: the unreadable inputs, with the
  size and modification time of their files, so they are retried only once the files change.

An interrupted run resumes with the missing samples only, and a call over a complete cache decodes
nothing: training epochs read these PNGs, never the DICOMs.

Samples: full mode, one per image (``sample_id`` = image id); roi mode, one per located lesion
(``<image id>__l<k>``), labelled with the lesion's own pathology when it is one of the classes.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from mammocad.data.images import read_image
from mammocad.data.importers.base import skipped_lines
from mammocad.data.manifest import Lesion, lesions_of, read_classes, read_manifest, resolve_path
from mammocad.errors import ConfigError, DatasetError, ImageReadError
from mammocad.io import atomic_write_bytes, atomic_write_json, atomic_write_png, find_leftovers, remove_stale
from mammocad.preprocess.config import PIPELINE_VERSION, PreprocessConfig
from mammocad.preprocess.pipeline import Preprocessed, preprocess_image, preprocess_roi
from mammocad.procs import die_with_parent

CACHE_DIR = "cache"
SAMPLES_NAME = "samples.parquet"
SKIPPED_NAME = "skipped.json"
FAILURES_NAME = "failures.json"
ProgressFn = Callable[[int, int], None]

#: Columns of ``samples.parquet``. ``image``/``mask`` are relative to the cache dir (absolute in
#: :func:`load_preprocessed`); the geometry columns rebuild a :class:`~mammocad.preprocess.Geometry`
#: (``Geometry.from_record``); ``lesion_index`` is -1 in full mode.
SAMPLE_COLUMNS = (
    "sample_id",
    "image_id",
    "lesion_index",
    "label",
    "label_name",
    "patient_id",
    "study_id",
    "official_split",
    "laterality",
    "view",
    "pathology",
    "lesion_type",
    "lesion_pathology",
    "image",
    "mask",
    "original_height",
    "original_width",
    "crop_x0",
    "crop_y0",
    "crop_x1",
    "crop_y1",
    "flipped",
    "output_height",
    "output_width",
)


@dataclass
class PreprocessResult:
    """What a preprocessing call did: where the cache is, how many samples, what it skipped."""

    cache_dir: Path
    n_samples: int
    n_processed: int
    n_from_cache: int
    skipped: list[dict[str, str]] = field(default_factory=list)
    per_class: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def to_text(self, limit: int | None = None) -> str:
        """A short human summary (the CLI prints it); ``limit`` caps the listed skipped items."""
        lines = [
            f"{self.n_samples} samples ({self.n_processed} processed now, {self.n_from_cache} from cache), "
            f"{len(self.skipped)} skipped, {self.elapsed_s:.1f} s",
            "per class: " + ", ".join(f"{k}={v}" for k, v in self.per_class.items()),
        ]
        lines += skipped_lines([(s["item"], s["reason"]) for s in self.skipped], limit=limit)[1:]
        return "\n".join(lines) + "\n"


@dataclass
class _Sample:
    sample_id: str
    lesion_index: int | None  # None: the whole image (full mode)


@dataclass
class _Job:
    """One image to decode and the samples to cut from it."""

    image_id: str
    image_path: str
    row: dict[str, Any]
    samples: list[_Sample]
    signature: list[Any]  # size/mtime of every file the job reads: a failure is retried when it changes


def cache_dir_for(dataset_dir: str | Path, config: PreprocessConfig) -> Path:
    """The cache directory of ``config`` inside a dataset."""
    return Path(dataset_dir) / CACHE_DIR / config.cache_key()


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


def _jobs(
    dataset_dir: Path, manifest: pd.DataFrame, config: PreprocessConfig
) -> tuple[list[_Job], list[dict[str, str]]]:
    """The work for ``config``, and the lesions roi mode cannot use (no location)."""
    jobs, skipped = [], []
    for row in manifest.to_dict("records"):
        image_path = resolve_path(dataset_dir, row["image_path"])
        lesions = lesions_of(row)
        files = [image_path, resolve_path(dataset_dir, row.get("mask_path"))]
        files += [resolve_path(dataset_dir, lesion.mask_path) for lesion in lesions]
        if config.mode == "full":
            samples = [_Sample(_safe(row["image_id"]), None)]
        else:
            samples = []
            for k, lesion in enumerate(lesions):
                if lesion.has_box or lesion.mask_path or lesion.center_x is not None:
                    samples.append(_Sample(_safe(f"{row['image_id']}__l{k}"), k))
                else:
                    skipped.append(
                        {
                            "item": f"{row['image_id']} lesion {k}",
                            "reason": "lesion has no location (no box, mask or centre)",
                        }
                    )
        if samples:
            jobs.append(_Job(row["image_id"], str(image_path), row, samples, _signature(files)))
    return jobs, skipped


def preprocess_dataset(
    dataset_dir: str | Path,
    config: PreprocessConfig,
    workers: int = 2,
    progress: ProgressFn | None = None,
) -> PreprocessResult:
    """Preprocess every image (full mode) or located lesion (roi mode) of a dataset into its cache.

    ``workers`` > 1 runs that many processes. ``progress(done, total)`` is called as images finish.
    Returns a :class:`PreprocessResult`; the cache's ``samples.parquet`` lists the samples.
    Unreadable items are skipped with the reason (``skipped.json``); the good ones are kept.
    Raises :class:`~mammocad.errors.DatasetError` when the dataset has nothing to preprocess.
    """
    start = time.perf_counter()
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
    _write_config(cache, config, classes)
    failures = _read_json(cache / FAILURES_NAME, {})
    sample_ids = [s.sample_id for job in jobs for s in job.samples]
    known = set(sample_ids)
    failures = {k: v for k, v in failures.items() if k in known}  # images dropped from the manifest

    def settled(job: _Job) -> bool:
        """Every sample done, or failed on files that have not changed since."""
        for sample in job.samples:
            if (cache / "meta" / f"{sample.sample_id}.json").exists():
                continue
            failure = failures.get(sample.sample_id)
            if failure is None or failure.get("signature") != job.signature:
                return False
        return True

    todo = [job for job in jobs if not settled(job)]
    if not todo and _table_matches(cache, sample_ids, failures):
        samples = pd.read_parquet(cache / SAMPLES_NAME, columns=["label_name"])
        return PreprocessResult(
            cache,
            len(samples),
            0,
            len(samples),
            skipped + [_public(f) for f in failures.values()],
            _per_class(samples, classes),
            time.perf_counter() - start,
        )

    done = len(jobs) - len(todo)
    if progress:
        progress(done, len(jobs))
    payload = config.model_dump(mode="json")
    n_processed = 0
    for job, outcome in _run_all(todo, str(cache), payload, list(classes), workers):
        done += 1
        for sample in job.samples:
            failures.pop(sample.sample_id, None)
        for sample_id, error in outcome:
            if error is None:
                n_processed += 1
            else:
                failures[sample_id] = {**error, "sample_id": sample_id, "signature": job.signature}
        if progress:
            progress(done, len(jobs))

    meta_paths = [cache / "meta" / f"{sid}.json" for sid in sample_ids]
    metas = [json.loads(path.read_text()) for path in meta_paths if path.exists()]
    samples = pd.DataFrame(metas, columns=list(SAMPLE_COLUMNS))
    samples["lesion_index"] = samples["lesion_index"].astype("int64")
    atomic_write_bytes(cache / SAMPLES_NAME, samples.to_parquet(index=False))
    atomic_write_json(cache / FAILURES_NAME, failures)
    skipped += [_public(f) for f in failures.values()]
    atomic_write_json(cache / SKIPPED_NAME, skipped)
    return PreprocessResult(
        cache,
        len(samples),
        n_processed,
        len(samples) - n_processed,
        skipped,
        _per_class(samples, classes),
        time.perf_counter() - start,
    )


def _public(failure: dict[str, Any]) -> dict[str, str]:
    return {"item": failure["item"], "reason": failure["reason"]}


def _per_class(samples: pd.DataFrame, classes: list[str]) -> dict[str, int]:
    counts = Counter(samples["label_name"])
    return {name: int(counts[name]) for name in classes}


def _read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default  # absent, or torn by a crash: rebuilt by this call


def _write_config(cache: Path, config: PreprocessConfig, classes: list[str]) -> None:
    content = {
        "config": config.model_dump(mode="json"),
        "cache_key": config.cache_key(),
        "pipeline_version": PIPELINE_VERSION,
        "classes": classes,
    }
    if _read_json(cache / "config.json", None) != content:
        atomic_write_json(cache / "config.json", content)


def _table_matches(cache: Path, sample_ids: list[str], failures: dict[str, Any]) -> bool:
    """True when ``samples.parquet`` already lists exactly the finished samples (nothing to rewrite)."""
    path = cache / SAMPLES_NAME
    if not path.exists():
        return False
    try:
        listed = pd.read_parquet(path, columns=["sample_id"])["sample_id"].tolist()
    except (OSError, ValueError, KeyError):
        return False
    return listed == [sid for sid in sample_ids if sid not in failures]


Outcome = list[tuple[str, dict[str, str] | None]]


def _run_all(
    todo: list[_Job], cache: str, payload: dict[str, Any], classes: list[str], workers: int
) -> Iterator[tuple[_Job, Outcome]]:
    """Process jobs serially or in a process pool, yielding each job with its per-sample outcome."""
    # Temporary files of a killed earlier call (its workers are gone with it) are removed first.
    remove_stale(find_leftovers(cache))
    if workers <= 1 or len(todo) <= 1:
        with _single_threaded_opencv():
            for job in todo:
                yield job, _run_job(job, cache, payload, classes)
        return
    # Processes, not threads: decoding, numpy and PNG encoding hold the GIL for much of their time.
    # fork where there is one: workers start in milliseconds and callers' scripts need no
    # `if __name__ == "__main__"` guard (spawn/forkserver re-import the caller's main module).
    # The workers run only this module's code, never the caller's threads (progress bars).
    # OpenCV's thread pool is shut down in the parent while workers fork: a child that inherits a
    # pool with idle waiters deadlocks the first time it touches it (seen after training in-process).
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    with (
        _single_threaded_opencv(),
        ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(os.getpid(),)
        ) as pool,
    ):
        pending: dict[Future[Outcome], _Job] = {}
        queue = iter(todo)
        # A bounded window of jobs in flight: manifests of 100k rows never sit in the pool's queue.
        for job in queue:
            pending[pool.submit(_run_job, job, cache, payload, classes)] = job
            if len(pending) >= 4 * workers:
                break
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                job = pending.pop(future)
                yield job, future.result()
                nxt = next(queue, None)
                if nxt is not None:
                    pending[pool.submit(_run_job, nxt, cache, payload, classes)] = nxt


def _init_worker(parent: int) -> None:
    # A worker ends with the command that started it: a killed `mammocad preprocess` (SIGKILL runs no
    # cleanup) would otherwise leave its workers decoding on, reparented to init.
    die_with_parent(parent)
    # One OpenCV thread per process: the pool already fills the cores, and OpenCV's own threads
    # cost more than they give on 0.2-megapixel working images.
    cv2.setNumThreads(1)


@contextlib.contextmanager
def _single_threaded_opencv() -> Iterator[None]:
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def _run_job(job: _Job, cache: str, payload: dict[str, Any], classes: list[str]) -> Outcome:
    """Decode one image and write its samples; failures come back as skip records, never raised."""
    config = PreprocessConfig(**payload)
    cache_dir = Path(cache)
    dataset_dir = cache_dir.parent.parent  # <dataset>/cache/<key>: lesion mask paths are relative to it
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
            _process(job, sample, image, dataset_dir, cache_dir, config, classes)
            outcome.append((sample.sample_id, None))
        except (ImageReadError, DatasetError, ValueError, cv2.error) as exc:
            outcome.append((sample.sample_id, {"item": _item(job, sample), "reason": str(exc)}))
    return outcome


def _item(job: _Job, sample: _Sample) -> str:
    return job.image_id if sample.lesion_index is None else f"{job.image_id} lesion {sample.lesion_index}"


def _process(
    job: _Job,
    sample: _Sample,
    image: Any,
    dataset_dir: Path,
    cache: Path,
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
        mask = _union_mask(dataset_dir, row, lesions, shape)
        result: Preprocessed = preprocess_image(image, config, mask, laterality)
    else:
        lesion = lesions[sample.lesion_index]
        mask = _lesion_mask(dataset_dir, lesion, shape)
        box = _lesion_box(lesion, mask, shape, _item(job, sample))
        result = preprocess_roi(image, config, box, mask, laterality)
        if lesion.pathology in classes:  # a benign mass in a malignant image is a benign sample
            label, label_name = classes.index(lesion.pathology), lesion.pathology
    sid = sample.sample_id
    mask_rel = None
    if result.mask is not None and result.mask.any():
        mask_rel = f"masks/{sid}.png"
        atomic_write_png(cache / mask_rel, result.mask)
    atomic_write_png(cache / "images" / f"{sid}.png", result.pixels)
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
        "image": f"images/{sid}.png",
        "mask": mask_rel,
        **result.geometry.as_record(),
    }
    atomic_write_json(cache / "meta" / f"{sid}.json", meta)  # last: marks the sample done


def _text(value: Any) -> str | None:
    """A manifest string cell, with pandas' missing values as None."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return str(value)


def _read_mask(dataset_dir: Path, value: str, shape: tuple[int, int]) -> np.ndarray:
    pixels = read_image(resolve_path(dataset_dir, value)).pixels
    # Half the mask's own maximum: 0/1 and 0/255 masks alike, and the ringing that JPEG copies of
    # masks (the Kaggle CBIS-DDSM re-release) put around the edge stays outside.
    mask = pixels > pixels.max() / 2
    if mask.shape != shape:
        # Source masks can be off by a few pixels (CBIS-DDSM); align them to the image grid.
        mask = cv2.resize(mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    return mask


def _drawn_mask(lesion: Lesion, shape: tuple[int, int]) -> np.ndarray | None:
    """A mask from geometry alone: the MIAS circle, else the box; None without either."""
    mask = np.zeros(shape, dtype=np.uint8)
    if lesion.radius is not None and lesion.center_x is not None and lesion.center_y is not None:
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
    """The image's lesion mask: the manifest's union mask, else the union of the lesions' own."""
    if isinstance(row.get("mask_path"), str) and row["mask_path"]:
        return _read_mask(dataset_dir, row["mask_path"], shape)
    masks = [m for m in (_lesion_mask(dataset_dir, lesion, shape) for lesion in lesions) if m is not None]
    return np.logical_or.reduce(masks) if masks else None


def _lesion_box(
    lesion: Lesion, mask: np.ndarray | None, shape: tuple[int, int], item: str
) -> tuple[int, int, int, int]:
    """The lesion's box clipped to the image: its own, else its mask's extent, else its centre."""
    height, width = shape
    if lesion.has_box:
        x0, y0 = max(0, int(lesion.x0)), max(0, int(lesion.y0))
        x1, y1 = min(width, int(lesion.x1)), min(height, int(lesion.y1))
        if x1 > x0 and y1 > y0:
            return x0, y0, x1, y1
        raise DatasetError(f"{item}: lesion box {lesion.x0, lesion.y0, lesion.x1, lesion.y1} is outside the image")
    if mask is not None and mask.any():
        ys, xs = np.nonzero(mask)
        return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    if lesion.center_x is not None and lesion.center_y is not None:
        cx, cy = round(lesion.center_x), round(lesion.center_y)
        if 0 <= cx < width and 0 <= cy < height:
            return cx, cy, cx + 1, cy + 1
    raise DatasetError(f"{item}: lesion has no location inside the image")


def load_preprocessed(dataset_dir: str | Path, config: PreprocessConfig) -> pd.DataFrame:
    """The samples table of a preprocessed cache, with ``image``/``mask`` as absolute paths.

    Raises :class:`~mammocad.errors.DatasetError` when the dataset was not preprocessed with
    ``config`` yet.
    """
    cache = cache_dir_for(Path(dataset_dir).resolve(), config)
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
