"""``mammocad cv``: k-fold cross-validation, each fold a normal run, summarised across folds.

Folds are patient-grouped and label-stratified (:func:`mammocad.data.split.cv_split`); fold ``k``
is the validation set of run ``k`` and its predictions there are that run's out-of-fold (OOF)
predictions. Every image outside the blind holdout is predicted exactly once, by the one model
that never saw it (nor any other image of its patient).

CV directory (new, never overwritten; resumable: finished folds are kept, an interrupted fold
continues from its last epoch)::

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
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammocad.data.manifest import read_manifest
from mammocad.data.split import cv_split, read_splits
from mammocad.errors import DatasetError, MammocadError
from mammocad.evaluation import figures
from mammocad.evaluation.compare import latest_evaluation, markdown_table
from mammocad.evaluation.evaluate import bootstrap_intervals, evaluate_run, subtask_aucs, subtask_text
from mammocad.evaluation.metrics import classification_metrics
from mammocad.evaluation.predictions import SplitPredictions
from mammocad.experiments import figures as study_figures
from mammocad.experiments.work_queue import (
    DEFAULT_GRACE_S,
    Lease,
    WorkQueue,
    open_recorded_queue,
    queue_record,
    start_queue_work,
    work_until_done,
)
from mammocad.io import atomic_write_bytes, atomic_write_json, atomic_write_text, unique_new_dir, update_json
from mammocad.procs import run_owner_state
from mammocad.reporting.html import HtmlReport, figure_to_png
from mammocad.training.config import RunConfig, dump_run_config, load_run_config
from mammocad.training.data import task_classes
from mammocad.training.run import StopTraining, relaunches_command, train

CV_FILE = "cv.json"
#: The queue's final unit: the summary, run once every fold is done.
SUMMARY_UNIT = "summary"
ProgressFn = Callable[[str], None]

# Scalar metrics of classification_metrics / overfit_metrics summarised across folds (when present).
FOLD_METRICS = (
    "accuracy",
    "loss",
    "f1_macro",
    "auc_macro",
    "precision_macro",
    "recall_macro",
    "recall_min",
    "recall_std",
    "f1_std",
    "sensitivity",
    "specificity",
    "overfit_acc",
    "overfit_f1",
    "overfit_loss",
)
PER_CLASS_METRICS = ("f1", "recall", "auc")
HEADLINE_METRICS = ("auc_macro", "f1_macro", "accuracy", "recall_min", "loss")


@dataclass
class CVResult:
    """A finished cross-validation: per-fold metrics, the summary and the pooled OOF predictions."""

    cv_dir: Path
    folds: pd.DataFrame
    summary: dict[str, Any]
    oof: pd.DataFrame

    @property
    def report(self) -> Path:
        return self.cv_dir / "report.html"


def is_cv_dir(path: str | Path) -> bool:
    """True for a directory written by :func:`cross_validate`."""
    return (Path(path) / CV_FILE).is_file()


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


def _fold_runs(cv_dir: Path, fold: int) -> list[Path]:
    """Run directories of ``fold`` (``fold-k``, ``fold-k-2``...), oldest first."""
    runs = [d for d in cv_dir.glob(f"fold-{fold}*") if (d / "run.json").exists()]
    runs = [d for d in runs if d.name == f"fold-{fold}" or d.name.removeprefix(f"fold-{fold}-").isdigit()]
    return sorted(runs, key=lambda d: int(d.name.rsplit("-", 1)[1]) if d.name != f"fold-{fold}" else 1)


def _status(run_dir: Path) -> str:
    return json.loads((run_dir / "run.json").read_text()).get("status", "unknown")


def fold_unit(fold: int) -> str:
    """The queue unit of ``fold``."""
    return f"fold-{fold}"


def _abandoned(run_dir: Path) -> bool:
    """True when no process can still be training ``run_dir``: it ended, or its process (this host) is gone."""
    state = json.loads((run_dir / "run.json").read_text())
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

    runs = _fold_runs(cv_dir, fold)
    latest = runs[-1] if runs else None
    if latest is not None and _status(latest) == "completed":
        step(f"fold {fold}: done already ({latest.name})")
        return latest
    config = base.model_copy(deep=True)
    config.data.fold = fold
    own_process = relaunches_command(config)
    if lease is not None and latest is not None and not _abandoned(latest):
        step(f"fold {fold}: {latest.name} may still be trained by a stopped worker; left as it is, training anew")
        latest = None
    if latest is not None and (latest / "checkpoints" / "last.ckpt").exists():
        step(f"fold {fold}: continuing {latest.name}")
        if own_process:
            return _train_command(["--resume", str(latest)], cv_dir, fold)
        config = load_run_config(latest / "config.yaml")
        return train(config, resume=latest, progress=train_progress, on_epoch=epoch_done).run_dir
    step(f"fold {fold}: training" + (" (own process: multi-device strategy)" if own_process else ""))
    if own_process:
        config_file = atomic_write_text(cv_dir / f"fold-{fold}.yaml", dump_run_config(config))
        return _train_command(["--config", str(config_file), "--run-dir", str(cv_dir / f"fold-{fold}")], cv_dir, fold)
    return train(config, run_dir=cv_dir / f"fold-{fold}", progress=train_progress, on_epoch=epoch_done).run_dir


def _train_command(arguments: list[str], cv_dir: Path, fold: int) -> Path:
    """Run ``mammocad train ARGUMENTS`` as its own command (Lightning's DDP launcher relaunches it per
    device); its output goes to this process's console. Returns the fold's newest run directory."""
    command = [sys.executable, "-m", "mammocad.cli.main", "train", *arguments]
    done = subprocess.run(command, check=False)
    runs = _fold_runs(cv_dir, fold)
    if done.returncode != 0 or not runs or _status(runs[-1]) != "completed":
        raise MammocadError(f"fold {fold}: `{' '.join(command[1:])}` failed (exit code {done.returncode})")
    return runs[-1]


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
    out = unique_new_dir(target)
    atomic_write_text(out / "config.yaml", dump_run_config(base))
    update_json(
        out / CV_FILE,
        {
            "status": "running",
            "folds": folds,
            "split": split,
            "dataset": str(base.data.dataset),
            "task": base.data.task,
            "classes": classes,
            "n_resamples": n_resamples,
            "started": datetime.now().isoformat(timespec="seconds"),
            "runs": {},
            **({"queue": queue} if queue is not None else {}),
        },
    )
    step(f"{out}: {folds} folds of split {split!r}")
    return out


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
    cv_dir = Path(cv_dir)
    if not is_cv_dir(cv_dir):
        raise MammocadError(f"{cv_dir}: not a cross-validation directory (no {CV_FILE})")
    state = json.loads((cv_dir / CV_FILE).read_text())
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
    state = json.loads((cv_dir / CV_FILE).read_text())
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
    cv_dir = Path(cv_dir)
    step = progress or (lambda _message: None)
    if not is_cv_dir(cv_dir):
        raise MammocadError(f"{cv_dir}: not a cross-validation directory (no {CV_FILE})")
    state = json.loads((cv_dir / CV_FILE).read_text())
    record = state.get("queue")
    if record is None:
        if not resume:
            raise MammocadError(
                f"{cv_dir}: this CV was started without a work queue; `mammocad cv --resume {cv_dir} --workers N` "
                "(or --storage URL) gives it one, then other workers can join"
            )
        record = queue_record(storage, grace_period)
        update_json(cv_dir / CV_FILE, {"queue": record})
    queue = _cv_queue(cv_dir, record, storage)
    try:
        if start_queue_work(queue, cv_dir / CV_FILE, "cv", resume, workers, gpus, storage, step):
            step("every fold and the summary are done already")
            return load_cv_result(cv_dir)
        base = load_run_config(cv_dir / "config.yaml")

        def do_unit(lease: Lease) -> str | None:
            if lease.claim.final:
                _finalise_cv(cv_dir, queue, step)
                return None
            fold = int(lease.claim.name.removeprefix("fold-"))
            return train_and_score_fold(base, cv_dir, fold, step, train_progress, lease).name

        work_until_done(queue, do_unit, cv_dir / CV_FILE, "folds", f"mammocad cv --resume {cv_dir}", step)
    finally:
        queue.close()
    return load_cv_result(cv_dir)


def _finalise_cv(cv_dir: Path, queue: WorkQueue, step: ProgressFn) -> None:
    """The queue's final unit: record each fold's run (the queue's, not an abandoned one), summarise."""
    units = {unit.name: unit for unit in queue.units()}
    state = json.loads((cv_dir / CV_FILE).read_text())
    runs = {str(k): units[fold_unit(k)].run_dir or f"fold-{k}" for k in range(state["folds"])}
    update_json(cv_dir / CV_FILE, {"runs": runs})
    step("summarising folds")
    summarise(cv_dir, n_resamples=state.get("n_resamples", 1000))
    update_json(
        cv_dir / CV_FILE, {"status": "completed", "ended": datetime.now().isoformat(timespec="seconds"), "error": None}
    )


def load_cv_result(cv_dir: str | Path) -> CVResult:
    """The result of a summarised CV, read from its files (``folds.csv``, ``summary.json``, OOF predictions)."""
    cv_dir = Path(cv_dir)
    return CVResult(
        cv_dir,
        pd.read_csv(cv_dir / "folds.csv"),
        json.loads((cv_dir / "summary.json").read_text()),
        pd.read_parquet(cv_dir / "oof_predictions.parquet"),
    )


def train_and_score_fold(
    base: RunConfig, cv_dir: Path, fold: int, step: ProgressFn, train_progress: bool = False, lease: Lease | None = None
) -> Path:
    """Fold ``fold``'s finished run (see :func:`_train_fold`), evaluated on its validation fold."""
    run_dir = _train_fold(base, cv_dir, fold, step, train_progress, lease)
    if lease is not None:
        lease.check()
    if latest_evaluation(run_dir, "val") is None:
        step(f"fold {fold}: scoring its validation fold")
        evaluate_run(run_dir, split="val", n_resamples=0, tsne=False)
    return run_dir


def _run(cv_dir: Path, step: ProgressFn, train_progress: bool) -> CVResult:
    state = json.loads((cv_dir / CV_FILE).read_text())
    base = load_run_config(cv_dir / "config.yaml")
    update_json(cv_dir / CV_FILE, {"status": "running"})
    runs: dict[str, str] = dict(state.get("runs", {}))
    try:
        for fold in range(state["folds"]):
            run_dir = train_and_score_fold(base, cv_dir, fold, step, train_progress)
            runs[str(fold)] = run_dir.name
            update_json(cv_dir / CV_FILE, {"runs": runs})
    except BaseException as exc:
        update_json(cv_dir / CV_FILE, {"status": "interrupted", "error": f"{type(exc).__name__}: {exc}"})
        raise
    step("summarising folds")
    result = summarise(cv_dir, n_resamples=state.get("n_resamples", 1000))
    update_json(
        cv_dir / CV_FILE, {"status": "completed", "ended": datetime.now().isoformat(timespec="seconds"), "error": None}
    )
    return result


def fold_row(fold: int, run_dir: Path, document: dict[str, Any]) -> dict[str, Any]:
    """One fold's metrics as a flat row (``f1_<class>``, ``recall_<class>``, ``auc_<class>`` per class)."""
    metrics, overfit = document["metrics"], document.get("overfit") or {}
    run = json.loads((run_dir / "run.json").read_text())
    row: dict[str, Any] = {
        "fold": fold,
        "run": run_dir.name,
        "n_images": document["n_images"],
        "n_patients": document["n_patients"],
        "best_epoch": run.get("best_epoch"),
        "epochs": run.get("epochs_done"),
    }
    for name in FOLD_METRICS:
        if name in metrics:
            row[name] = metrics[name]
        elif name in overfit:
            row[name] = overfit[name]
    for name, per_class in metrics["per_class"].items():
        for metric in PER_CLASS_METRICS:
            row[f"{metric}_{name}"] = per_class[metric]
    located = document.get("localization")
    if located:
        row["pointing_hit_rate"] = located["pointing_game"]["hit_rate"]
        row["lesion_sensitivity_at_1_fp"] = located["froc"].get("sensitivity_at_1_fp")
    return row


def _summary_table(folds: pd.DataFrame) -> pd.DataFrame:
    """mean, std (n - 1), min, max and n of every metric column across folds."""
    numeric = folds.drop(columns=["fold", "run", "n_images", "n_patients", "best_epoch", "epochs"])
    numeric = numeric.apply(pd.to_numeric, errors="coerce").astype(float)
    table = pd.DataFrame(
        {
            "mean": numeric.mean(),
            "std": numeric.std(ddof=1),
            "min": numeric.min(),
            "max": numeric.max(),
            "n": numeric.notna().sum(),
        }
    )
    table.index.name = "metric"
    return table


def summarise(cv_dir: str | Path, n_resamples: int = 1000) -> CVResult:
    """Read every fold's validation evaluation and write folds.csv, summary, OOF predictions, report."""
    cv_dir = Path(cv_dir)
    state = json.loads((cv_dir / CV_FILE).read_text())
    classes = state["classes"]
    rows, parts, histories, matrices, pointing = [], [], {}, [], [0, 0]
    for fold in range(state["folds"]):
        run_dir = cv_dir / state["runs"].get(str(fold), f"fold-{fold}")
        evaluation = latest_evaluation(run_dir, "val")
        if evaluation is None:
            raise MammocadError(f"{run_dir}: fold {fold} has no validation evaluation; resume the CV first")
        document = json.loads((evaluation / "metrics.json").read_text())
        rows.append(fold_row(fold, run_dir, document))
        if document.get("localization"):
            pointing[0] += document["localization"]["pointing_game"]["hits"]
            pointing[1] += document["localization"]["pointing_game"]["films"]
        matrices.append(np.asarray(document["metrics"]["confusion_matrix"]))
        parts.append(pd.read_parquet(evaluation / "predictions.parquet").assign(fold=fold))
        histories[f"fold {fold}"] = pd.read_csv(run_dir / "history.csv")
    folds = pd.DataFrame(rows)
    oof = pd.concat(parts, ignore_index=True)
    if oof["sample_id"].duplicated().any():
        raise MammocadError(f"{cv_dir}: an image was predicted in two folds; the folds overlap")
    pooled = SplitPredictions(classes, "oof", oof)
    pooled_metrics = classification_metrics(pooled.labels, pooled.probs, classes)
    intervals = bootstrap_intervals(pooled, n_resamples) if n_resamples else {}
    table = _summary_table(folds)
    summed = np.sum(matrices, axis=0)
    summary = {
        "cv_dir": str(cv_dir),
        "folds": state["folds"],
        "split": state["split"],
        "task": state["task"],
        "classes": classes,
        "n_images": len(oof),
        "n_patients": int(oof["patient_id"].nunique()),
        "metrics": json.loads(table.to_json(orient="index")),
        "confusion_matrix_summed": summed.tolist(),
        "pooled_oof": {
            "metrics": pooled_metrics,
            "confidence_intervals": intervals,
            "subtasks": subtask_aucs(pooled, n_resamples),
            "pointing_game": {
                "hits": pointing[0],
                "films": pointing[1],
                "hit_rate": pointing[0] / pointing[1] if pointing[1] else None,
            },
        },
    }
    atomic_write_text(cv_dir / "folds.csv", folds.to_csv(index=False))
    atomic_write_bytes(cv_dir / "oof_predictions.parquet", oof.to_parquet(index=False))
    atomic_write_json(cv_dir / "summary.json", summary)
    atomic_write_text(cv_dir / "summary.md", markdown_table(table))
    pngs = {
        "fold_scores": figure_to_png(study_figures.fold_scores_figure(folds, list(HEADLINE_METRICS[:4]))),
        "confusion_summed": figure_to_png(figures.confusion_matrix_figure(summed, classes)),
        "confusion_summed_normalised": figure_to_png(figures.confusion_matrix_figure(summed, classes, normalise=True)),
        "roc_pooled": figure_to_png(figures.roc_figure(pooled.labels, pooled.probs, classes, "ROC · pooled OOF")),
        "learning_curves": figure_to_png(study_figures.fold_curves_figure(histories)),
    }
    for name, png in pngs.items():
        atomic_write_bytes(cv_dir / "figures" / f"{name}.png", png)
    _report(cv_dir, summary, folds, table, pngs).write(cv_dir / "report.html")
    return CVResult(cv_dir, folds, summary, oof)


def mean_std(table: pd.DataFrame, metric: str) -> str:
    """``0.612 ± 0.034`` from a :func:`_summary_table`-shaped table (– when undefined)."""
    if metric not in table.index or pd.isna(table.loc[metric, "mean"]):
        return "–"
    std = table.loc[metric, "std"]
    return f"{table.loc[metric, 'mean']:.3f} ± {std:.3f}" if pd.notna(std) else f"{table.loc[metric, 'mean']:.3f}"


def cv_card(cv_dir: Path, summary: dict[str, Any], folds: pd.DataFrame) -> dict[str, Any]:
    """The model card of the first fold's run, judged on the pooled out-of-fold predictions."""
    from mammocad.training.model_card import model_card

    pooled = summary["pooled_oof"]
    evaluation = {
        "metrics": pooled["metrics"],
        "confidence_intervals": pooled["confidence_intervals"],
        "classes": summary["classes"],
        "split": "pooled out-of-fold",
        "n_images": summary["n_images"],
        "n_patients": summary["n_patients"],
    }
    first = cv_dir / str(folds["run"].iloc[0]) if len(folds) and "run" in folds else cv_dir
    return model_card(first, evaluation=evaluation)


def _report(
    cv_dir: Path, summary: dict[str, Any], folds: pd.DataFrame, table: pd.DataFrame, pngs: dict[str, bytes]
) -> HtmlReport:
    config = load_run_config(cv_dir / "config.yaml")
    report = HtmlReport(f"Cross-validation · {cv_dir.name}")
    report.fitness(cv_card(cv_dir, summary, folds))
    report.paragraph(
        f"{config.model.name} (head {config.model.head or 'default'}), task {summary['task']}, "
        f"{summary['folds']} patient-grouped stratified folds of split {summary['split']!r} of "
        f"{config.data.dataset}: {summary['n_images']} images from {summary['n_patients']} patients, "
        "each predicted once by the fold model that never saw its patient."
    )
    report.heading("Mean ± std across folds")
    report.paragraph("std is the sample standard deviation across folds (n − 1).", note=True)
    headline = pd.DataFrame(
        {"mean ± std": [mean_std(table, m) for m in HEADLINE_METRICS]}, index=pd.Index(HEADLINE_METRICS, name="metric")
    )
    report.table(headline)
    report.heading("Per fold")
    report.table(folds, index=False)
    report.figure(pngs["fold_scores"], "per-fold scores (dots) with mean ± std")
    report.heading("Pooled out-of-fold predictions")
    pooled = summary["pooled_oof"]
    rows = []
    for metric in HEADLINE_METRICS:
        ci = pooled["confidence_intervals"].get(metric, {})
        value = pooled["metrics"].get(metric)
        rows.append(
            {
                "metric": metric,
                "pooled OOF": "–" if value is None else f"{value:.3f}",
                "95% CI (patient bootstrap)": f"{ci['low']:.3f} – {ci['high']:.3f}"
                if ci.get("low") is not None
                else "",
            }
        )
    report.table(pd.DataFrame(rows), index=False)
    if pooled.get("subtasks"):
        report.paragraph("Inside the 3-class task (pooled OOF): " + subtask_text(pooled["subtasks"]) + ".")
    pointing = pooled.get("pointing_game") or {}
    if pointing.get("films"):
        report.paragraph(
            f"Where the models look: the heatmap's peak fell inside the lesion on {pointing['hits']} of "
            f"{pointing['films']} validation films with a located lesion ({pointing['hit_rate']:.0%}, pointing game)."
        )
    report.figure(pngs["confusion_summed"], "confusion matrix summed over folds", width=360)
    report.figure(pngs["confusion_summed_normalised"], "summed, row-normalised", width=360)
    report.figure(pngs["roc_pooled"], "one-vs-rest ROC of the pooled OOF predictions", width=360)
    report.figure(pngs["learning_curves"], "validation loss per epoch, one line per fold")
    report.heading("All metrics")
    report.table(table)
    report.heading("Fold runs")
    links = "".join(
        f'<li><a href="{run}/evaluation/val/report.html">{run}</a> (fold {fold})</li>'
        for fold, run in zip(folds["fold"], folds["run"], strict=True)
    )
    report.raw(f"<ul>{links}</ul>")
    return report
