"""Preprocess a whole dataset into its on-disk cache (:mod:`mammocad.preprocess.cache_dir`).

:func:`preprocess_dataset` plans one job per image (:mod:`mammocad.preprocess.jobs`), runs the jobs
that are not done yet (serially or in a process pool), records the failures and writes the samples
table. An interrupted run resumes with the missing samples only, and a call over a complete cache
decodes nothing. Unreadable inputs are remembered with the size and modification time of their
files, so they are retried only once the files change.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import pandas as pd

from mammocad.data.importers.base import skipped_lines
from mammocad.data.manifest import read_classes, read_manifest
from mammocad.errors import DatasetError
from mammocad.io import atomic_write_bytes, atomic_write_json, find_leftovers, remove_stale
from mammocad.preprocess.cache_dir import SAMPLE_COLUMNS, CacheDir
from mammocad.preprocess.config import PIPELINE_VERSION, PreprocessConfig
from mammocad.preprocess.jobs import Job, Outcome, plan_jobs, run_job
from mammocad.procs import die_with_parent
from mammocad.progress import CountProgressFn


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

    @property
    def skipped_path(self) -> Path:
        """The cache's full list of skipped items (``to_text`` shows the first few)."""
        return CacheDir(self.cache_dir).skipped_path

    def to_text(self, limit: int | None = None) -> str:
        """A short human summary (the CLI prints it); ``limit`` caps the listed skipped items."""
        lines = [
            f"{self.n_samples} samples ({self.n_processed} processed now, {self.n_from_cache} from cache), "
            f"{len(self.skipped)} skipped, {self.elapsed_s:.1f} s",
            "per class: " + ", ".join(f"{k}={v}" for k, v in self.per_class.items()),
        ]
        lines += skipped_lines([(s["item"], s["reason"]) for s in self.skipped], limit=limit)[1:]
        return "\n".join(lines) + "\n"


def preprocess_dataset(
    dataset_dir: str | Path,
    config: PreprocessConfig,
    workers: int = 2,
    progress: CountProgressFn | None = None,
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
    cache = CacheDir.of(dataset_dir, config)
    jobs, skipped = plan_jobs(dataset_dir, manifest, config)
    if not jobs:
        raise DatasetError(
            f"{dataset_dir}: nothing to preprocess in {config.mode} mode"
            + (" (no located lesions)" if config.mode == "roi" else "")
        )
    _write_config(cache, config, classes)
    failures = _read_json(cache.failures_path, {})
    sample_ids = [s.sample_id for job in jobs for s in job.samples]
    known = set(sample_ids)
    failures = {k: v for k, v in failures.items() if k in known}  # images dropped from the manifest

    def settled(job: Job) -> bool:
        """Every sample done, or failed on files that have not changed since."""
        for sample in job.samples:
            if cache.meta_path(sample.sample_id).exists():
                continue
            failure = failures.get(sample.sample_id)
            if failure is None or failure.get("signature") != job.signature:
                return False
        return True

    todo = [job for job in jobs if not settled(job)]
    if not todo and _table_matches(cache, sample_ids, failures):
        samples = pd.read_parquet(cache.samples_path, columns=["label_name"])
        return PreprocessResult(
            cache.path,
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
    for job, outcome in _run_all(todo, str(cache.path), payload, list(classes), workers):
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

    meta_paths = [cache.meta_path(sid) for sid in sample_ids]
    metas = [json.loads(path.read_text()) for path in meta_paths if path.exists()]
    samples = pd.DataFrame(metas, columns=list(SAMPLE_COLUMNS))
    samples["lesion_index"] = samples["lesion_index"].astype("int64")
    atomic_write_bytes(cache.samples_path, samples.to_parquet(index=False))
    atomic_write_json(cache.failures_path, failures)
    skipped += [_public(f) for f in failures.values()]
    atomic_write_json(cache.skipped_path, skipped)
    return PreprocessResult(
        cache.path,
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


def _write_config(cache: CacheDir, config: PreprocessConfig, classes: list[str]) -> None:
    content = {
        "config": config.model_dump(mode="json"),
        "cache_key": config.cache_key(),
        "pipeline_version": PIPELINE_VERSION,
        "classes": classes,
    }
    if _read_json(cache.config_path, None) != content:
        atomic_write_json(cache.config_path, content)


def _table_matches(cache: CacheDir, sample_ids: list[str], failures: dict[str, Any]) -> bool:
    """True when ``samples.parquet`` already lists exactly the finished samples (nothing to rewrite)."""
    if not cache.samples_path.exists():
        return False
    try:
        listed = pd.read_parquet(cache.samples_path, columns=["sample_id"])["sample_id"].tolist()
    except (OSError, ValueError, KeyError):
        return False
    return listed == [sid for sid in sample_ids if sid not in failures]


def _run_all(
    todo: list[Job], cache: str, payload: dict[str, Any], classes: list[str], workers: int
) -> Iterator[tuple[Job, Outcome]]:
    """Process jobs serially or in a process pool, yielding each job with its per-sample outcome."""
    # Temporary files of a killed earlier call (its workers are gone with it) are removed first.
    remove_stale(find_leftovers(cache))
    if workers <= 1 or len(todo) <= 1:
        with _single_threaded_opencv():
            for job in todo:
                yield job, run_job(job, cache, payload, classes)
        return
    # Processes, not threads: decoding, numpy and PNG encoding hold the GIL for much of their time.
    # fork where there is one: workers start in milliseconds and callers' scripts need no
    # `if __name__ == "__main__"` guard (spawn/forkserver re-import the caller's main module).
    # The workers run only the preprocessing code, never the caller's threads (progress bars).
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
        pending: dict[Future[Outcome], Job] = {}
        queue = iter(todo)
        # A bounded window of jobs in flight: manifests of 100k rows never sit in the pool's queue.
        for job in queue:
            pending[pool.submit(run_job, job, cache, payload, classes)] = job
            if len(pending) >= 4 * workers:
                break
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                job = pending.pop(future)
                yield job, future.result()
                nxt = next(queue, None)
                if nxt is not None:
                    pending[pool.submit(run_job, nxt, cache, payload, classes)] = nxt


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


__all__ = ["PreprocessResult", "preprocess_dataset"]
