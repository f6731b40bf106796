"""Train a model from a :class:`RunConfig` into a new run directory.

The run directory (never overwritten; every file written atomically) is laid out in
:mod:`mammocad.training.run_dir`. :func:`train` puts the pieces together: the model
(:mod:`~mammocad.training.model_builder`), the data (:mod:`~mammocad.training.loaders`, or the
lesion-aware model's patches), the files each epoch writes (:mod:`~mammocad.training.epoch_files`),
the run's state (:mod:`~mammocad.training.run_state`), MLflow (:mod:`~mammocad.training.tracking`)
and several processes (:mod:`~mammocad.training.distributed`).

A killed run (SIGKILL, power cut) keeps ``status: running``; the next ``train --resume``, ``predict``
or ``evaluate`` sees that its process is gone and marks it ``interrupted`` (see
:mod:`mammocad.training.status`). ``last.ckpt`` also holds the config and the random states, so a
resumed run repeats the uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping

from mammocad.devices import training_precision
from mammocad.errors import MammocadError
from mammocad.io import unique_new_dir
from mammocad.models import LesionAwareNet
from mammocad.models.losses import balanced_class_weights
from mammocad.models.weights import load_weights, save_weights
from mammocad.progress import ProgressFn
from mammocad.training.config import RunConfig, load_run_config
from mammocad.training.data import TaskData, load_task_data
from mammocad.training.distributed import (
    DDP_RUN_DIR_ENV,
    distributed_summary,
    history_from_rank_zero,
    join_torchrun,
    relaunches_command,
)
from mammocad.training.epoch_files import HISTORY_COLUMNS, METRIC_COLUMNS, EpochFn, RunFiles
from mammocad.training.lesion import PatchData, PatchEpochs, film_stage, patch_class_weights
from mammocad.training.loaders import DataLoaderWorkerInit, check_masks, training_loaders
from mammocad.training.model_builder import build_model
from mammocad.training.module import ClassifierModule
from mammocad.training.predict import LoadedRun
from mammocad.training.recalibration import fit_calibration
from mammocad.training.resume import ResumeState, loader_generators, prepare_resume
from mammocad.training.run_dir import RunDir
from mammocad.training.run_records import check_same_model, write_model_description, write_provenance
from mammocad.training.run_state import (
    StopTraining,
    record_completion,
    record_failure,
    record_start,
    update_run_state,
)
from mammocad.training.throughput import StepTimer
from mammocad.training.tracking import log_run_config, mlflow_logger

log = logging.getLogger(__name__)

#: Called with one line per thing a resume found and did.
NotifyFn = ProgressFn


@dataclass
class RunResult:
    """Where the run is and how it ended."""

    run_dir: Path
    best_epoch: int
    best_val_loss: float
    history: pd.DataFrame


def new_run_dir(config: RunConfig, wanted: Path | None = None) -> Path:
    """``wanted`` or ``<runs_dir>/<name>-<timestamp>``, made unique (``-2``...), created empty."""
    if wanted is not None:
        return unique_new_dir(wanted)
    return unique_new_dir(
        config.output.runs_dir / f"{config.output.name or config.model.name}-{datetime.now():%Y%m%d-%H%M%S}"
    )


def _precision(config: RunConfig) -> str:
    return training_precision(config.train.precision, config.train.accelerator)


def _with_precision(config: RunConfig, precision: str) -> RunConfig:
    """``config`` with ``train.precision`` set (a resolved ``auto``, or rank 0's under torchrun)."""
    return config.model_copy(update={"train": config.train.model_copy(update={"precision": precision})})


def train(
    config: RunConfig,
    resume: Path | None = None,
    progress: bool = True,
    on_epoch: EpochFn | None = None,
    run_dir: Path | None = None,
    notify: NotifyFn | None = None,
) -> RunResult:
    """Train per ``config`` into a new run directory, or continue the run at ``resume``.

    ``progress`` shows Lightning's progress bar; ``on_epoch`` is called with each epoch's history
    row (a dict of the history.csv columns) once the epoch's files are written, and may raise
    :class:`StopTraining` to end the run early. ``run_dir`` names the new run directory (made
    unique with ``-2``... when it exists); default ``<output.runs_dir>/<name>-<timestamp>``.
    ``notify`` gets one line per thing a resume found and did (default: logged).

    A resume is refused with :class:`MammocadError` before anything is written (see
    :func:`~mammocad.training.resume.prepare_resume`); a run with no checkpoint starts again from
    epoch 0 in its directory.

    Returns the run directory, the best epoch (by validation loss) and the history. The model
    ends with the best weights restored (EarlyStopping's restore-best-weights behaviour).
    """
    say = notify or log.warning
    start_history = None
    restart = False
    # Lightning's DDP launcher re-runs this command once per extra GPU; those workers share the
    # launching process's run directory (passed through the environment) and leave its files to rank 0.
    ddp_worker_dir = os.environ.get(DDP_RUN_DIR_ENV) if int(os.environ.get("LOCAL_RANK", "0")) > 0 else None
    # torchrun starts every rank itself, on one machine or several: the others take rank 0's run directory
    # (received below, once rank 0 has made it) and, like the workers above, write nothing.
    torchrun = join_torchrun(config)
    torchrun_worker = torchrun is not None and torchrun.global_rank > 0
    if torchrun is not None:
        ddp_worker_dir = None
    if resume is not None and not ddp_worker_dir and not torchrun_worker:
        # Checked before the data is loaded: a refusal is quick and leaves the run as it was.
        plan = prepare_resume(Path(resume), config.model_dump(mode="json"), config.train.epochs, say)
        restart = plan.checkpoint is None
        if not restart and RunDir(resume).has_history():
            start_history = RunDir(resume).read_history()
            start_history = start_history[start_history["epoch"] <= plan.epoch]  # epochs the checkpoint holds
    L.seed_everything(config.train.seed, workers=True, verbose=False)
    task = load_task_data(config.data, config.preprocess)
    if ddp_worker_dir:
        run_dir = Path(ddp_worker_dir)
    elif torchrun_worker:
        run_dir = None  # rank 0's, received below
    elif resume is not None:
        run_dir = Path(resume)
    else:
        # A new run records the precision it trains in (auto resolves by machine), so it reproduces as run.
        config = _with_precision(config, _precision(config))
        run_dir = new_run_dir(config, run_dir)
        RunDir(run_dir).write_config(config)
    if torchrun is not None:
        # Rank 0's precision too: "auto" resolves by machine, and machines may differ.
        decided = {"run_dir": str(run_dir), "precision": _precision(config)}
        shared = json.loads(torchrun.from_rank_zero(json.dumps(decided)))
        run_dir = Path(shared["run_dir"])
        if torchrun_worker:
            ddp_worker_dir = str(run_dir)
            config = _with_precision(config, shared["precision"])
    run = RunDir(run_dir)
    counts = task.counts("train")
    masked = check_masks(task, config)
    model = build_model(config, task.classes)
    weights = balanced_class_weights(counts) if config.train.class_weights else None
    patches = PatchData(task, config) if isinstance(model, LesionAwareNet) else None
    if patches is not None and config.train.class_weights:
        weights = patch_class_weights(patches, model.patch_class_count)
    if config.train.compile:
        model.compile()  # in place: the state dict keeps its names, so checkpoints stay interchangeable
    module = ClassifierModule(model, config.train, weights, patch_mode=patches is not None)
    if not ddp_worker_dir:
        if resume is not None and not restart:
            check_same_model(run, config, task, model)  # also for checkpoints that hold no config
        write_model_description(run, config, task, model)
        write_provenance(run, config, task)
        record_start(
            run,
            config,
            task,
            precision=_precision(config),
            resumed=resume is not None,
            restart=restart,
            masked=masked,
            patch_stage=patches.summary(model.patch_class_count) if patches is not None else None,
        )
    timer = StepTimer()
    files = RunFiles(run, module, start_history, on_epoch, timer)
    early_stopping = None
    if config.train.early_stopping_patience:
        early_stopping = EarlyStopping(monitor="val_loss", patience=config.train.early_stopping_patience, mode="min")
    # Rank 0 alone logs: an MLflow client creates its sqlite store when made, also on the other machines.
    logger = mlflow_logger(config, run) if not ddp_worker_dir else False
    if patches is not None:
        train_loader, val_loader = patches.loaders(config)
    else:
        train_loader, val_loader = training_loaders(task, config)
    # ResumeState first: it puts the saved random states back before any other callback runs.
    callbacks: list[Callback] = [ResumeState(config.model_dump(mode="json"), loader_generators(train_loader)), timer]
    if early_stopping is not None:
        callbacks.append(early_stopping)
    if patches is not None:
        callbacks.append(PatchEpochs(patches, model))
    callbacks.append(files)  # a Checkpoint: Lightning runs it last
    trainer = L.Trainer(
        max_epochs=config.train.epochs,
        accelerator=config.train.accelerator,
        devices=config.train.devices,
        strategy=config.train.strategy,
        num_nodes=config.train.num_nodes,
        precision=_precision(config),
        accumulate_grad_batches=config.train.accumulate_grad_batches,
        deterministic=config.train.deterministic,
        callbacks=callbacks,
        logger=logger,
        enable_progress_bar=progress,
        enable_model_summary=False,
        enable_checkpointing=True,  # by RunFiles alone (no ModelCheckpoint is added beside it)
        num_sanity_val_steps=0,
        log_every_n_steps=max(1, min(50, len(train_loader))),
        default_root_dir=run_dir,
    )
    if logger and not ddp_worker_dir:
        log_run_config(logger, config, run)
    if not ddp_worker_dir:
        update_run_state(run, {"distributed": distributed_summary(trainer)})
    previous_env = os.environ.get(DDP_RUN_DIR_ENV)
    os.environ[DDP_RUN_DIR_ENV] = str(run_dir)
    try:
        ckpt = str(run.trainer_state_path) if resume is not None and run.can_resume() else None
        # weights_only=True: even the run's own trainer state is read without unpickling code.
        trainer.fit(module, train_loader, val_loader, ckpt_path=ckpt, weights_only=True)
    except BaseException as exc:
        if trainer.is_global_zero:
            record_failure(run, exc)
        raise
    finally:
        if previous_env is None:
            os.environ.pop(DDP_RUN_DIR_ENV, None)
        else:
            os.environ[DDP_RUN_DIR_ENV] = previous_env
    history = history_from_rank_zero(trainer, run)  # every rank, now: rank 0 alone goes on below
    final = run.weights_path("best" if config.train.restore_best_weights else "last")
    if final.exists():  # early stopping restores the best epoch's weights
        load_weights(module.model, final)
    if patches is not None and trainer.is_global_zero:
        _film_stage(run, module.model, task, config, final)
    if trainer.is_global_zero and config.predict.calibrate:
        _calibrate(run, module.model, task, config)
    if trainer.is_global_zero:
        record_completion(run, stopped_early=early_stopping is not None and early_stopping.stopped_epoch > 0)
    best_row = history.loc[history["val_loss"].idxmin()]  # rank 0's rows: DDP workers never held them
    return RunResult(run_dir, int(best_row["epoch"]), float(best_row["val_loss"]), history)


def _film_stage(run: RunDir, model: LesionAwareNet, task: TaskData, config: RunConfig, final: Path) -> None:
    """The lesion-aware model's film stage; its weights (the fitted aggregation) become the final ones."""
    started = time.perf_counter()
    summary = film_stage(model, task, config)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    save_weights(model, final)
    update_run_state(run, {"film_stage": summary})


def _calibrate(run: RunDir, model: torch.nn.Module, task: TaskData, config: RunConfig) -> None:
    """Fit the temperature on the val split (``calibration.json``); a failure is logged, never fatal."""
    thresholds = {"min_probability": config.predict.min_probability, "min_margin": config.predict.min_margin}
    try:
        model = model.to("cpu").eval()
        loaded = LoadedRun(run.path, model, task.classes, config.preprocess, {})
        document = fit_calibration(loaded, task.val, thresholds)
        if config.data.refit:
            document["note"] = "refit run: its val split was inside training, so this temperature is optimistic"
        run.write_calibration(document)
    except Exception as exc:  # calibration must never lose a finished run
        log.warning(
            "%s: temperature scaling failed (%s: %s); predictions use temperature 1", run.path, type(exc).__name__, exc
        )


def train_from_file(
    path: str | Path | None,
    overrides: dict[str, Any] | None = None,
    resume: Path | None = None,
    run_dir: Path | None = None,
    notify: NotifyFn | None = None,
) -> RunResult:
    """CLI helper: a resumed run reads its own saved config; otherwise file + overrides."""
    if resume is not None:
        saved = RunDir(resume)
        if not saved.has_config():
            raise MammocadError(f"{resume}: not a run directory (no {saved.CONFIG}); nothing to resume")
        config = saved.read_config(overrides)
    else:
        config = load_run_config(path, overrides)
    return train(config, resume=resume, run_dir=run_dir, notify=notify)


__all__ = [
    "HISTORY_COLUMNS",
    "METRIC_COLUMNS",
    "DataLoaderWorkerInit",
    "RunFiles",
    "RunResult",
    "StopTraining",
    "check_masks",
    "new_run_dir",
    "relaunches_command",
    "train",
    "train_from_file",
]
