"""``mammocad cv``: k-fold cross-validation, each fold a normal run, summarised across folds.

Folds are patient-grouped and label-stratified (:func:`mammocad.data.split.cv_split`); fold ``k``
is the validation set of run ``k`` and its predictions there are that run's out-of-fold (OOF)
predictions. Every image outside the blind holdout is predicted exactly once, by the one model
that never saw it (nor any other image of its patient).

CV directory (new, never overwritten; resumable: finished folds are kept, an interrupted fold
continues from its last epoch; paths and reads in :class:`~mammocad.experiments.layout.CVDir`)::

    config.yaml               the base run config (data.split = the split with the folds)
    cv.json                   status, folds, split, classes, fold run directories
    fold-<k>/                 run directory of fold k (see ``mammocad train``), with evaluation/val/
    folds.csv                 one row per fold: every metric of its OOF predictions
    summary.json / summary.md mean ± std (sample std, n - 1) of every metric; confusion matrix summed
                              over folds; metrics and patient-bootstrap CIs of the pooled OOF predictions
    oof_predictions.parquet   pooled OOF predictions (column ``fold``)
    figures/*.png             per-fold scores, summed confusion matrix, pooled ROC, learning curves
    report.html               everything in one self-contained page
    queue.db                  with workers (default storage only): the work queue, see below

Many workers (``workers``/``storage``/``gpus`` of :func:`cross_validate`, :func:`work_on_cv`): the
folds are units of a shared :mod:`~mammocad.experiments.work_queue` (recorded as ``queue`` in
``cv.json``); every worker process, here or on another machine sharing the directory, trains the
folds it claims, a fold whose worker stopped sending heartbeats is taken over after the grace period
(continued from its checkpoint when its process is provably gone, else trained anew in
``fold-<k>-2``, the other directory left as it is), and the summary is the queue's final unit:
written once, by the worker that finds every fold done.

The summary and report are :mod:`~mammocad.experiments.cv_summary`'s (re-exported here).
"""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from mammocad.data.manifest import read_manifest
from mammocad.data.split import cv_split, read_splits
from mammocad.errors import DatasetError, MammocadError
from mammocad.evaluation.evaluate import evaluate_run
from mammocad.experiments.cv_summary import (
    FOLD_METRICS,
    HEADLINE_METRICS,
    PER_CLASS_METRICS,
    CVResult,
    cv_card,
    fold_row,
    load_cv_result,
    mean_std,
    summarise,
)
from mammocad.experiments.layout import FOLD_SPLIT, CVDir, is_cv_dir
from mammocad.experiments.work_queue import (
    DEFAULT_GRACE_S,
    Lease,
    WorkQueue,
    open_recorded_queue,
    queue_record,
    start_queue_work,
    work_until_done,
)
from mammocad.io import now_iso, unique_new_dir
from mammocad.procs import run_owner_state
from mammocad.progress import ProgressFn
from mammocad.training.config import RunConfig
from mammocad.training.data import task_classes
from mammocad.training.run import StopTraining, relaunches_command, train
from mammocad.training.run_dir import RunDir

#: The CV's state file (kept under its old name; the layout is :class:`CVDir`'s).
CV_FILE = CVDir.STATE
#: The queue's final unit: the summary, run once every fold is done.
SUMMARY_UNIT = "summary"


def check_stratifiable(config: RunConfig, folds: int) -> list[str]:
    """The task's classes; refuses (with counts) folds that cannot hold every class for validation.

    Each fold is one run's validation set, so every class needs at least ``folds`` patients (a
    patient's images never split across folds) and every fold must end up with every class.
    """
    # From the manifest, not the preprocessing cache: refuse before minutes of preprocessing.
    manifest = read_manifest(config.data.dataset)
    classes, target = task_classes(manifest, config.data.task)
    splits = read_splits(config.data.dataset, config.data.split)
    frame = manifest[["image_id", "patient_id"]].assign(target_name=target)
    frame = frame[frame["target_name"].notna()].merge(splits[["image_id", "split", "fold"]], on="image_id")
    if frame.empty:
        raise DatasetError(f"{config.data.dataset}: no image has labels for task {config.data.task!r}")
    dev = frame[frame["split"] != "blind"]
    patients = dev.groupby("target_name")["patient_id"].nunique().reindex(classes, fill_value=0)
    short = patients[patients < folds]
    if not short.empty:
        counts = ", ".join(f"{name}: {n} patients" for name, n in patients.items())
        raise DatasetError(
            f"cannot make {folds} stratified folds for task {config.data.task!r}: "
            f"{', '.join(short.index)} {'has' if len(short) == 1 else 'have'} fewer patients than folds ({counts})"
        )
    table = pd.crosstab(dev["fold"], dev["target_name"]).reindex(columns=classes, fill_value=0)
    empty = [(int(k), c) for k, row in table.iterrows() for c in classes if row[c] == 0]
    if empty:
        raise DatasetError(
            f"split {config.data.split!r}: some folds lack a class for task {config.data.task!r} "
            f"({', '.join(f'fold {k}: no {c}' for k, c in empty)}); images per fold and class:\n{table.to_string()}"
        )
    return classes


def _status(run_dir: RunDir) -> str:
    return run_dir.read_state().get("status", "unknown")


def fold_unit(fold: int) -> str:
    """The queue unit of ``fold`` (the name of its first run directory)."""
    return CVDir.fold_name(fold)


def _abandoned(run_dir: RunDir) -> bool:
    """True when no process can still be training ``run_dir``: it ended, or its process (this host) is gone."""
    state = run_dir.read_state()
    return state.get("status") != "running" or run_owner_state(state) == "gone"


def _train_fold(
    base: RunConfig, cv_dir: Path, fold: int, step: ProgressFn, train_progress: bool, lease: Lease | None = None
) -> Path:
    """The finished run of ``fold``: kept when done, continued when interrupted, else trained anew.

    With a ``lease`` (a queue worker), a run that may still be trained by a stopped worker on another
    host is left as it is and the fold trains anew (``fold-<k>-2``...); training stops when the lease
    is lost to another worker.
    """

    def epoch_done(row: dict[str, Any]) -> None:
        step(
            f"fold {fold} epoch {row['epoch']}: val_loss={row['val_loss']:.4f} "
            f"val_auc_macro={row['val_auc_macro']:.3f} ({row['seconds']:.0f} s)"
        )
        if lease is not None and lease.lost:
            raise StopTraining(f"fold {fold}: another worker took this fold over (this worker's heartbeat had expired)")

    cv = CVDir(cv_dir)
    runs = cv.fold_runs(fold)
    latest = runs[-1] if runs else None
    if latest is not None and _status(latest) == "completed":
        step(f"fold {fold}: done already ({latest.name})")
        return latest.path
    config = base.model_copy(deep=True)
    config.data.fold = fold
    own_process = relaunches_command(config)
    if lease is not None and latest is not None and not _abandoned(latest):
        step(f"fold {fold}: {latest.name} may still be trained by a stopped worker; left as it is, training anew")
        latest = None
    if latest is not None and latest.can_resume():
        step(f"fold {fold}: continuing {latest.name}")
        if own_process:
            return _train_command(["--resume", str(latest.path)], cv, fold)
        config = latest.read_config()
        return train(config, resume=latest.path, progress=train_progress, on_epoch=epoch_done).run_dir
    step(f"fold {fold}: training" + (" (own process: multi-device strategy)" if own_process else ""))
    first = cv.fold_dir(fold).path
    if own_process:
        config_file = cv.write_fold_config(fold, config)
        return _train_command(["--config", str(config_file), "--run-dir", str(first)], cv, fold)
    return train(config, run_dir=first, progress=train_progress, on_epoch=epoch_done).run_dir


def _train_command(arguments: list[str], cv: CVDir, fold: int) -> Path:
    """Run ``mammocad train ARGUMENTS`` as its own command (Lightning's DDP launcher relaunches it per
    device); its output goes to this process's console. Returns the fold's newest run directory."""
    command = [sys.executable, "-m", "mammocad.cli.main", "train", *arguments]
    done = subprocess.run(command, check=False)
    runs = cv.fold_runs(fold)
    if done.returncode != 0 or not runs or _status(runs[-1]) != "completed":
        raise MammocadError(f"fold {fold}: `{' '.join(command[1:])}` failed (exit code {done.returncode})")
    return runs[-1].path


def cross_validate(
    config: RunConfig,
    folds: int = 5,
    cv_dir: str | Path | None = None,
    seed: int = 0,
    n_resamples: int = 1000,
    progress: ProgressFn | None = None,
    train_progress: bool = False,
    *,
    workers: int | None = None,
    storage: str | None = None,
    gpus: list[str] | None = None,
    grace_period: float = DEFAULT_GRACE_S,
) -> CVResult:
    """Cross-validate ``config`` over ``folds`` patient-grouped, stratified folds.

    Args:
        config: the run config of every fold (``data.fold`` is set per fold; ``data.refit`` is turned
            off, so a final-model config is cross-validated as the same recipe). Its split is used when
            it has exactly ``folds`` folds; otherwise ``<split>-cv<folds>`` is derived from it.
        folds: number of folds (>= 2).
        cv_dir: the new CV directory (made unique); default ``<runs_dir>/<name>-cv<folds>-<timestamp>``.
        seed: seed of the fold assignment when a split has to be derived.
        n_resamples: patient-bootstrap resamples for the pooled OOF confidence intervals (0: none).
        progress: called with a short message as each step starts.
        train_progress: show Lightning's progress bar while folds train.
        workers: spread the folds over a work queue (see :func:`work_on_cv`): 1 = this process is
            the worker; N > 1 = N worker processes on this machine. None (and no ``storage``/``gpus``):
            the folds run one after another in this process, with no queue.
        storage: the queue's database URL (default ``sqlite:///<cv_dir>/queue.db``); other machines
            join with :func:`work_on_cv` (``mammocad cv --join``).
        gpus: GPU numbers shared out among the worker processes (see :func:`~mammocad.experiments.work_queue.gpu_groups`).
        grace_period: seconds without a heartbeat before another worker takes a fold over.

    Returns:
        :class:`CVResult`; files as in the module docstring. With a queue, :class:`IncompleteWork`
        when folds failed (their errors in the message; ``resume_cv`` trains them again).
    """
    step = progress or (lambda _message: None)
    queued = workers is not None or storage is not None or gpus is not None
    out = create_cv(
        config, folds, cv_dir, seed, n_resamples, step, queue_record(storage, grace_period) if queued else None
    )
    if queued:
        return work_on_cv(
            out, storage=storage, workers=workers, gpus=gpus, progress=step, train_progress=train_progress
        )
    return _run(out, step, train_progress)


def create_cv(
    config: RunConfig,
    folds: int,
    cv_dir: str | Path | None,
    seed: int,
    n_resamples: int,
    progress: ProgressFn | None = None,
    queue: dict[str, Any] | None = None,
) -> Path:
    """Make the CV directory (``config.yaml``, ``cv.json``; see :func:`cross_validate`) without training;
    ``queue``: a :func:`~mammocad.experiments.work_queue.queue_record` to spread its folds over workers."""
    step = progress or (lambda _message: None)
    split = cv_split(config.data.dataset, config.data.split, folds, seed)
    base = config.model_copy(deep=True)
    # A refit config (the final-model protocol) is cross-validated as the same recipe on each fold.
    base.data.split, base.data.fold, base.data.refit = split, None, False
    classes = check_stratifiable(base, folds)
    name = config.output.name or config.model.name
    target = (
        Path(cv_dir)
        if cv_dir is not None
        else base.output.runs_dir / f"{name}-cv{folds}-{datetime.now():%Y%m%d-%H%M%S}"
    )
    out = CVDir(unique_new_dir(target))
    out.write_config(base)
    out.update_state(
        {
            "status": "running",
            "folds": folds,
            "split": split,
            "dataset": str(base.data.dataset),
            "task": base.data.task,
            "classes": classes,
            "n_resamples": n_resamples,
            "started": now_iso(),
            "runs": {},
            **({"queue": queue} if queue is not None else {}),
        },
    )
    step(f"{out.path}: {folds} folds of split {split!r}")
    return out.path


def resume_cv(
    cv_dir: str | Path,
    progress: ProgressFn | None = None,
    train_progress: bool = False,
    *,
    workers: int | None = None,
    storage: str | None = None,
    gpus: list[str] | None = None,
) -> CVResult:
    """Continue a cross-validation: finished folds are kept, an interrupted fold continues.

    A CV with a work queue (or given ``workers``/``storage``/``gpus``, which give it one) continues
    through :func:`work_on_cv`, its failed folds tried again.
    """
    cv = CVDir(cv_dir)
    cv.require()
    cv_dir = cv.path
    state = cv.read_state()
    if "queue" in state or workers is not None or storage is not None or gpus is not None:
        return work_on_cv(
            cv_dir,
            storage=storage,
            workers=workers,
            gpus=gpus,
            progress=progress,
            train_progress=train_progress,
            resume=True,
        )
    return _run(cv_dir, progress or (lambda _message: None), train_progress)


def _cv_queue(cv_dir: Path, record: dict[str, Any], storage: str | None) -> WorkQueue:
    """The CV's queue, with every fold and the summary in it."""
    state = CVDir(cv_dir).read_state()
    queue = open_recorded_queue(cv_dir, record, storage)
    queue.add([fold_unit(k) for k in range(state["folds"])], final=SUMMARY_UNIT)
    return queue


def work_on_cv(
    cv_dir: str | Path,
    *,
    storage: str | None = None,
    workers: int | None = None,
    gpus: list[str] | None = None,
    progress: ProgressFn | None = None,
    train_progress: bool = False,
    resume: bool = False,
    grace_period: float = DEFAULT_GRACE_S,
) -> CVResult:
    """Work on a CV's queue until no fold is left to train; the result once every fold and the summary are done.

    This process is the worker (``workers`` None or 1, no ``gpus``), or it starts ``workers`` worker
    processes (each ``mammocad cv --join CV_DIR``, with its share of ``gpus``), waits for them and
    then looks at the queue itself. Every worker trains and scores the folds it claims; the one that
    finds every fold done writes the summary and report (once). A worker waits while other workers
    hold folds, to take over any that stops sending heartbeats.

    Args:
        cv_dir: a CV directory with a queue (``mammocad cv --workers/--storage``).
        storage: the queue's URL when it is not the recorded one (a password is never recorded).
        resume: also try failed folds again; a CV made without a queue gets one (``grace_period``),
            so ``mammocad cv --resume DIR --workers N`` spreads an interrupted CV's remaining folds.

    Raises:
        IncompleteWork: folds failed (or their workers stopped too often); the message lists them.
    """
    cv = CVDir(cv_dir)
    cv_dir = cv.path
    step = progress or (lambda _message: None)
    cv.require()
    state = cv.read_state()
    record = state.get("queue")
    if record is None:
        if not resume:
            raise MammocadError(
                f"{cv_dir}: this CV was started without a work queue; `mammocad cv --resume {cv_dir} --workers N` "
                "(or --storage URL) gives it one, then other workers can join"
            )
        record = queue_record(storage, grace_period)
        cv.update_state({"queue": record})
    queue = _cv_queue(cv_dir, record, storage)
    try:
        if start_queue_work(queue, cv.state_path, "cv", resume, workers, gpus, storage, step):
            step("every fold and the summary are done already")
            return load_cv_result(cv_dir)
        base = cv.read_config()

        def do_unit(lease: Lease) -> str | None:
            if lease.claim.final:
                _finalise_cv(cv_dir, queue, step)
                return None
            fold = CVDir.fold_number(lease.claim.name)
            return train_and_score_fold(base, cv_dir, fold, step, train_progress, lease).name

        work_until_done(queue, do_unit, cv.state_path, "folds", f"mammocad cv --resume {cv_dir}", step)
    finally:
        queue.close()
    return load_cv_result(cv_dir)


def _finalise_cv(cv_dir: Path, queue: WorkQueue, step: ProgressFn) -> None:
    """The queue's final unit: record each fold's run (the queue's, not an abandoned one), summarise."""
    cv = CVDir(cv_dir)
    units = {unit.name: unit for unit in queue.units()}
    state = cv.read_state()
    runs = {str(k): units[fold_unit(k)].run_dir or fold_unit(k) for k in range(state["folds"])}
    cv.update_state({"runs": runs})
    step("summarising folds")
    summarise(cv_dir, n_resamples=state.get("n_resamples", 1000))
    cv.mark_completed()


def train_and_score_fold(
    base: RunConfig, cv_dir: Path, fold: int, step: ProgressFn, train_progress: bool = False, lease: Lease | None = None
) -> Path:
    """Fold ``fold``'s finished run (see :func:`_train_fold`), evaluated on its validation fold."""
    run_dir = _train_fold(base, cv_dir, fold, step, train_progress, lease)
    if lease is not None:
        lease.check()
    if CVDir.fold_evaluation(RunDir(run_dir)) is None:
        step(f"fold {fold}: scoring its validation fold")
        evaluate_run(run_dir, split=FOLD_SPLIT, n_resamples=0, tsne=False)
    return run_dir


def _run(cv_dir: Path, step: ProgressFn, train_progress: bool) -> CVResult:
    cv = CVDir(cv_dir)
    state = cv.read_state()
    base = cv.read_config()
    cv.update_state({"status": "running"})
    runs: dict[str, str] = dict(state.get("runs", {}))
    try:
        for fold in range(state["folds"]):
            run_dir = train_and_score_fold(base, cv_dir, fold, step, train_progress)
            runs[str(fold)] = run_dir.name
            cv.update_state({"runs": runs})
    except BaseException as exc:
        cv.mark_interrupted(exc)
        raise
    step("summarising folds")
    result = summarise(cv_dir, n_resamples=state.get("n_resamples", 1000))
    cv.mark_completed()
    return result


__all__ = [
    "CV_FILE",
    "FOLD_METRICS",
    "HEADLINE_METRICS",
    "PER_CLASS_METRICS",
    "SUMMARY_UNIT",
    "CVResult",
    "ProgressFn",
    "check_stratifiable",
    "create_cv",
    "cross_validate",
    "cv_card",
    "fold_row",
    "fold_unit",
    "is_cv_dir",
    "load_cv_result",
    "mean_std",
    "resume_cv",
    "summarise",
    "train_and_score_fold",
    "work_on_cv",
]
