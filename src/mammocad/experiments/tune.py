"""Hyperparameter search with Optuna: TPE sampling, median pruning, a resumable (shareable) study.

A search-space file (:mod:`~mammocad.experiments.search_space`) names the run-config fields to vary;
every trial is an ordinary training run in ``<study_dir>/trials/trial-<number>``. The study lives in
a database (default ``sqlite:///<study_dir>/study.db``; any SQLAlchemy URL), so running the same
command again continues it, and several machines pointing at one database URL share it: a
PostgreSQL server (``postgresql://user:pw@host/db``, opened with psycopg 3 from the ``postgres``
extra). This module runs the study (the objective, the trial budget shared by workers); the study
directory's layout is :mod:`~mammocad.experiments.study_dir`, its files and report
:mod:`~mammocad.experiments.tune_report`, and the storage :mod:`~mammocad.experiments.storage`.
The names those modules define are importable from here as well.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from mammocad.errors import ConfigError, MammocadError
from mammocad.experiments.search_space import (
    METRICS,
    CategoricalParam,
    FloatParam,
    IntParam,
    ParamSpec,
    PrunerSpec,
    SearchSpace,
    check_space_against,
    load_search_space,
    optuna_distribution,
    parse_search_space,
    suggest_params,
    trial_config,
)
from mammocad.experiments.storage import database_url, mask_url, open_storage
from mammocad.experiments.study_dir import STALE_ERROR, StudyDir, TuneResult, trials_table
from mammocad.experiments.tune_report import write_report, write_study_files
from mammocad.io import atomic_write_text
from mammocad.parse import parse_int
from mammocad.progress import ProgressFn
from mammocad.training.config import RunConfig
from mammocad.training.run import StopTraining, train

#: Finished trials (what ``n_trials`` counts); FAIL trials are not finished and get replaced on a re-run.
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def check_single_device(config: RunConfig) -> None:
    """Trials train one after the other in this process, each on one device.

    Lightning's ``ddp`` re-runs the whole command once per extra GPU, and those copies would start
    trials of their own; several GPUs are used by running one worker per GPU on a shared study.
    (``devices: auto`` becomes 1 in trial configs for the same reason.)
    """
    if int(os.environ.get("LOCAL_RANK", "0") or 0) > 0:
        raise ConfigError(
            "mammocad tune was started as a distributed worker (LOCAL_RANK > 0); start it once per GPU instead"
        )
    devices = config.train.devices
    if isinstance(devices, str) and parse_int(devices) is not None:
        devices = parse_int(devices)
    several = (isinstance(devices, int) and (devices > 1 or devices == -1)) or (
        isinstance(devices, list) and len(devices) > 1
    )
    if several:
        raise ConfigError(
            f"train.devices={config.train.devices!r}: mammocad tune trains each trial on one device; to use "
            "several GPUs run one tune worker per GPU on the same study (CUDA_VISIBLE_DEVICES=0 mammocad tune ..., "
            "CUDA_VISIBLE_DEVICES=1 mammocad tune ...), or leave train.devices at auto or 1"
        )


class TrialPrunedStop(StopTraining, optuna.TrialPruned):
    """Raised from a trial's epoch callback: the run is marked ``stopped`` and Optuna records PRUNED."""


def _free_dir(base: Path) -> Path:
    """``base``, or ``base-2``... : the name ``unique_new_dir`` (inside train) will create."""
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


#: Trials that hold a place towards ``n_trials``: finished, or running in a live worker.
_TAKEN = (*FINISHED, TrialState.RUNNING)


class _NotNeeded(MammocadError):
    """Another worker started the trial that reached the target first (the trial is recorded FAIL, unrun)."""


def _fail_stale_trials(study: optuna.Study) -> None:
    """Mark FAIL the RUNNING trials whose worker stopped sending heartbeats (no-op without heartbeats)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _stop_at_target(n_trials: int) -> Callable[[optuna.Study, FrozenTrial], None]:
    """After each trial: stop once finished + other workers' running trials reach ``n_trials``
    (Optuna's MaxTrialsCallback counts finished ones only, so two workers could both start the last trial)."""

    def callback(study: optuna.Study, trial: FrozenTrial) -> None:
        _fail_stale_trials(study)  # a dead worker's trial must not hold a place
        if len(study.get_trials(deepcopy=False, states=_TAKEN)) >= n_trials:
            study.stop()

    return callback


def _objective(
    config: RunConfig, space: SearchSpace, layout: StudyDir, n_trials: int
) -> Callable[[optuna.Trial], float]:
    metric = space.metric
    better = np.nanargmin if space.direction == "minimize" else np.nanargmax

    def objective(trial: optuna.Trial) -> float:
        # Workers that ask at the same moment all get a trial; the database numbers them, and only those
        # within the target run (the check happens before anything is sampled or written).
        ahead = [t for t in trial.study.get_trials(deepcopy=False, states=_TAKEN) if t.number < trial.number]
        if len(ahead) >= n_trials:
            trial.study.stop()
            message = f"not run: {len(ahead)} earlier trials already finished or running reach the target {n_trials}"
            trial.set_user_attr("error", message)
            raise _NotNeeded(message)
        run_dir = _free_dir(layout.trial_dir(trial.number))
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("host", socket.gethostname())
        values: list[float] = []
        epochs: list[int] = []

        def on_epoch(row: dict[str, Any]) -> None:
            value, epoch = float(row[metric]), int(row["epoch"])
            values.append(value)
            epochs.append(epoch)
            trial.set_user_attr("epochs_done", len(values))
            if not all(math.isnan(v) for v in values):
                trial.set_user_attr("best_epoch", epochs[int(better(values))])
            if math.isnan(value):
                return  # e.g. AUC undefined for a one-class validation batch: nothing to compare
            trial.report(value, epoch)
            if trial.should_prune():
                raise TrialPrunedStop(f"pruned by Optuna at epoch {epoch} ({metric}={value:.4g})")

        try:
            params = suggest_params(trial, space)
            one_device = {"train.devices": 1} if config.train.devices == "auto" else {}
            run_config = trial_config(config, {**params, **one_device}, layout.trials_dir)
            train(run_config, progress=False, on_epoch=on_epoch, run_dir=run_dir)
            if not values or all(math.isnan(v) for v in values):
                raise MammocadError(f"{metric} was NaN in every epoch; the trial has no value")
        except optuna.TrialPruned:
            raise
        except BaseException as exc:  # also Ctrl+C: a FAIL trial without an error is one whose worker died
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}".rstrip(": "))
            raise
        return float(values[int(better(values))])

    return objective


def format_trial(trial: FrozenTrial, metric: str) -> str:
    """One progress line: number, state, value, params (and the error of a failed trial)."""
    state = trial.state.name
    value = "" if trial.value is None else f" {metric}={trial.value:.4g}"
    if trial.state == TrialState.PRUNED:
        value = f" at epoch {trial.last_step}{value}" if trial.last_step is not None else value
    params = " ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
    line = f"trial {trial.number} {state}{value} {params}".rstrip()
    if trial.state == TrialState.FAIL and "error" in trial.user_attrs:
        line += f" | {trial.user_attrs['error'].splitlines()[0]}"
    return line


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def tune_study(
    config: RunConfig,
    space: SearchSpace,
    n_trials: int,
    study_dir: Path | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    progress: ProgressFn | None = None,
    heartbeat_interval: int | None = 60,
    grace_period: int | None = 180,
    seed: int | None = None,
) -> TuneResult:
    """Run (or continue) a study until it holds ``n_trials`` finished (COMPLETE + PRUNED) trials.

    One call starts at most ``n_trials - finished`` trials; a trial that raises is recorded FAIL
    (its error in the ``error`` user attribute) and the study goes on, so a later call replaces it.
    Several processes or machines with the same ``storage`` URL and ``study_name`` share the study;
    each stops once the finished trials plus those running elsewhere reach ``n_trials``, so the study
    ends with exactly ``n_trials`` finished trials (a trial handed out beyond the target when workers
    ask at the same instant is recorded FAIL, ``not run: ...``, without training).
    ``seed`` overrides the search space's sampler seed (give each worker of a shared study its own).
    Each worker's running trial sends a heartbeat every ``heartbeat_interval`` seconds; a trial without
    one for ``grace_period`` seconds (its worker was killed or lost the database) is marked FAIL by the
    next worker that checks, and replaced (``heartbeat_interval=None`` turns this off).
    The study directory's files (trials.csv, best_config.yaml, study.json, report.html) are written
    at the end, also when trials failed or the call is interrupted (then without the report).
    """
    if n_trials < 1:
        raise ConfigError(f"n_trials must be at least 1, got {n_trials}")
    check_single_device(config)
    check_space_against(config, space)
    study_name = study_name or config.output.name or config.model.name
    study_dir = Path(study_dir) if study_dir is not None else config.output.runs_dir / f"tune-{study_name}"
    study_dir.mkdir(parents=True, exist_ok=True)
    layout = StudyDir(study_dir)
    url = storage or layout.default_storage
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _quiet_user_error_tracebacks()
    rdb = open_storage(url, heartbeat_interval, grace_period)
    sampler_seed = seed if seed is not None else space.seed
    pruner: optuna.pruners.BasePruner = optuna.pruners.NopPruner()
    if space.pruner.enabled:
        pruner = optuna.pruners.MedianPruner(
            n_startup_trials=space.pruner.n_startup_trials,
            n_warmup_steps=space.pruner.n_warmup_steps,
            interval_steps=space.pruner.interval_steps,
            n_min_trials=space.pruner.n_min_trials,
        )
    study = optuna.create_study(
        storage=rdb,
        study_name=study_name,
        direction=space.direction,
        sampler=optuna.samplers.TPESampler(seed=sampler_seed),
        pruner=pruner,
        load_if_exists=True,
    )
    _claim_or_check(study, space)

    started: list[int] = []

    def report_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        started.append(trial.number)
        with contextlib.suppress(Exception):  # a progress table is never worth failing the study
            atomic_write_text(layout.trials_table_path, trials_table(study).to_csv(index=False))
        if progress is not None:
            progress(format_trial(trial, space.metric))

    _fail_stale_trials(study)
    # At most the missing finished trials; none while other workers' running trials fill the target
    # (should one of those fail, its worker runs the replacement).
    remaining = max(0, n_trials - len(study.get_trials(deepcopy=False, states=FINISHED)))
    open_places = n_trials - len(study.get_trials(deepcopy=False, states=_TAKEN))
    try:
        if remaining and open_places > 0:
            study.optimize(
                _objective(config, space, layout, n_trials),
                n_trials=remaining,
                catch=(Exception,),
                callbacks=[_stop_at_target(n_trials), report_trial],
                gc_after_trial=True,
            )
    except BaseException:
        # Interrupted (Ctrl+C): still leave trials.csv and study.json; the report waits for a full run.
        with contextlib.suppress(Exception):
            write_study_files(study, config, space, study_dir, url, n_trials, report=False)
        raise
    result = write_study_files(study, config, space, study_dir, url, n_trials)
    result.ran_now = len(started)
    return result


class _NoTracebackForUserErrors(logging.Filter):
    """Optuna logs a failed trial's traceback; for a MammocadError (bad sampled config...) the message is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], MammocadError):
            record.exc_info = None
        return True


def _quiet_user_error_tracebacks() -> None:
    logger = logging.getLogger("optuna.study._optimize")  # where Optuna reports failed trials
    if not any(isinstance(f, _NoTracebackForUserErrors) for f in logger.filters):
        logger.addFilter(_NoTracebackForUserErrors())


def _claim_or_check(study: optuna.Study, space: SearchSpace) -> None:
    """Record the metric in a new study; refuse to continue one that optimises something else."""
    if "metric" not in study.user_attrs:
        study.set_user_attr("metric", space.metric)
        study.set_user_attr("direction", space.direction)
        study.set_user_attr("search_space", space.model_dump(mode="json"))
    stored_direction = study.direction.name.lower()
    if study.user_attrs["metric"] != space.metric or stored_direction != space.direction:
        raise ConfigError(
            f"study {study.study_name!r} optimises {study.user_attrs['metric']} ({stored_direction}); the search space asks "
            f"for {space.metric} ({space.direction}). Use another --study-name or --study-dir for a new study."
        )
    # Optuna refuses a parameter whose kind, log scale or categorical choices changed: every trial would fail.
    recorded: dict[str, optuna.distributions.BaseDistribution] = {}
    for trial in study.get_trials(deepcopy=False):
        for name, dist in trial.distributions.items():
            recorded.setdefault(name, dist)
    for name, spec in space.params.items():
        if name not in recorded:
            continue
        try:
            optuna.distributions.check_distribution_compatibility(recorded[name], optuna_distribution(spec))
        except ValueError as exc:
            raise ConfigError(
                f"params.{name}: does not fit study {study.study_name!r}, whose trials sampled it from "
                f"{recorded[name]} ({exc}). Keep the type, log and choices, or start a new study "
                "(another --study-name or --study-dir)."
            ) from exc


__all__ = [
    "FINISHED",
    "METRICS",
    "STALE_ERROR",
    "CategoricalParam",
    "FloatParam",
    "IntParam",
    "ParamSpec",
    "ProgressFn",
    "PrunerSpec",
    "SearchSpace",
    "StudyDir",
    "TrialPrunedStop",
    "TuneResult",
    "check_single_device",
    "check_space_against",
    "database_url",
    "format_trial",
    "load_search_space",
    "mask_url",
    "open_storage",
    "parse_search_space",
    "trial_config",
    "trials_table",
    "tune_study",
    "write_report",
    "write_study_files",
]
