"""Hyperparameter search with Optuna: TPE sampling, median pruning, a resumable (shareable) study.

A search-space file names the run-config fields to vary; every trial is an ordinary training run
in ``<study_dir>/trials/trial-<number>``. The study lives in a database (default
``sqlite:///<study_dir>/study.db``; any SQLAlchemy URL), so running the same command again
continues it, and several machines pointing at one database URL share it: a PostgreSQL server
(``postgresql://user:pw@host/db``, opened with psycopg 3 from the ``postgres`` extra).

Study directory (files written atomically, rewritten after every invocation)::

    study.db             the Optuna study (default storage)
    trials/trial-<n>/    one run directory per trial (config.yaml, history.csv, run.json, ...)
    trials.csv           one row per trial: state, value, params, error, run_dir, host ...
    best_config.yaml     the base config with the best trial's params (omitted until a trial completes)
    study.json           summary: storage (password masked), metric, direction, counts per state, best
    report.html          summary, best params, trials, Optuna's interactive plots (opens offline)
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import optuna
import pandas as pd
import yaml
from optuna.trial import FrozenTrial, TrialState
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mammocad.errors import ConfigError, MammocadError
from mammocad.experiments.storage import POSTGRES_DRIVER_HINT, database_url, mask_url
from mammocad.io import atomic_write_json, atomic_write_text, read_config_file
from mammocad.parse import parse_int
from mammocad.training.config import RunConfig, dump_run_config, load_run_config
from mammocad.training.run import HISTORY_COLUMNS, StopTraining, train

#: The per-epoch history columns a study can optimise.
METRICS = tuple(c for c in HISTORY_COLUMNS if c.startswith("val_"))
#: Finished trials (what ``n_trials`` counts); FAIL trials are not finished and get replaced on a re-run.
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
#: The error shown for a trial the heartbeat marked FAIL (Optuna records none).
STALE_ERROR = "its worker stopped (killed, crashed or lost the database) and the heartbeat marked the trial FAIL"
#: Run-config sections a search may not vary: the study decides where and how trials are written.
_UNTUNABLE = ("output",)

ProgressFn = Callable[[str], None]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class FloatParam(_Strict):
    """``suggest_float``: uniform (or log-uniform) in ``[low, high]``, optionally on a ``step`` grid."""

    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _range(self) -> FloatParam:
        _check_range(self.low, self.high, self.log)
        if self.log and self.step is not None:
            raise ValueError("step cannot be combined with log: true")
        return self


class IntParam(_Strict):
    """``suggest_int``: integers ``low, low+step, ... <= high`` (or log-uniform with ``log: true``)."""

    type: Literal["int"]
    low: int
    high: int
    step: int = Field(1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _range(self) -> IntParam:
        _check_range(self.low, self.high, self.log)
        if self.log and self.step != 1:
            raise ValueError("step must be 1 with log: true")
        return self


class CategoricalParam(_Strict):
    """``suggest_categorical``: one of ``choices`` (null, booleans, numbers or strings)."""

    type: Literal["categorical"]
    choices: list[bool | int | float | str | None] = Field(..., min_length=1)

    @field_validator("choices")
    @classmethod
    def _distinct(cls, value: list[Any]) -> list[Any]:
        seen = [json.dumps(v) for v in value]
        if len(set(seen)) != len(seen):
            raise ValueError(f"choices must be distinct, got {value}")
        return value


def _check_range(low: float, high: float, log: bool) -> None:
    if low >= high:
        raise ValueError(f"low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise ValueError(f"log: true needs low > 0, got low={low}")


ParamSpec = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


class PrunerSpec(_Strict):
    """Optuna's ``MedianPruner``: stop a trial whose metric at an epoch is worse than the median of
    earlier trials at that epoch (``enabled: false`` never prunes)."""

    enabled: bool = True
    n_startup_trials: int = Field(5, ge=0, description="Trials that are never pruned (the median needs some).")
    n_warmup_steps: int = Field(0, ge=0, description="Epochs of each trial that are never pruned.")
    interval_steps: int = Field(1, ge=1, description="Check every this many epochs.")
    n_min_trials: int = Field(1, ge=1, description="Trials reported at an epoch before pruning there.")


class SearchSpace(_Strict):
    """What to vary and what to optimise; read from a YAML/JSON file by :func:`load_search_space`."""

    metric: str = Field("val_loss", description="A per-epoch validation history column.")
    direction: Literal["minimize", "maximize"] | None = Field(
        None, description="Default: minimize for val_loss, maximize otherwise."
    )
    pruner: PrunerSpec = PrunerSpec()
    seed: int | None = Field(None, description="TPE sampler seed (None: a fresh random seed).")
    params: dict[str, ParamSpec] = Field(..., min_length=1, description="Dotted run-config field -> distribution.")

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        if value not in METRICS:
            raise ValueError(f"{value!r} is not a validation history column (choose from {', '.join(METRICS)})")
        return value

    @model_validator(mode="after")
    def _direction(self) -> SearchSpace:
        if self.direction is None:
            self.direction = "minimize" if self.metric == "val_loss" else "maximize"
        return self


def parse_search_space(values: dict[str, Any], where: str = "search space") -> SearchSpace:
    """Validate a search space given as a dict; a bad one raises ConfigError naming each bad field."""
    try:
        space = SearchSpace.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(f"{where}: invalid search space\n{_format_errors(exc)}") from exc
    problems = [problem for name in space.params if (problem := _field_problem(name))]
    if problems:
        raise ConfigError(f"{where}: invalid search space\n" + "\n".join(f"  {p}" for p in problems))
    return space


def load_search_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space YAML/JSON file (see the module docs for the format)."""
    return parse_search_space(read_config_file(path), str(path))


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = [str(part) for part in err["loc"]]
        # A discriminated union puts the tag (float/int/categorical) into the location: drop it.
        if len(loc) >= 3 and loc[0] == "params" and loc[2] in ("float", "int", "categorical"):
            del loc[2]
        msg = err["msg"].removeprefix("Value error, ")
        got = "" if isinstance(err.get("input"), dict) or "input" not in err else f" (got {err['input']!r})"
        lines.append(f"  {'.'.join(loc) or '(search space)'}: {msg}{got}")
    return "\n".join(lines)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (also through ``X | None``), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _field_problem(name: str) -> str | None:
    """Why ``name`` (dotted) is not a tunable run-config field, or None when it is."""
    model: type[BaseModel] = RunConfig
    parts = name.split(".")
    for i, part in enumerate(parts):
        fields = model.model_fields
        where = ".".join(parts[:i])
        if part not in fields:
            owner = f"{where} has" if where else "sections are"
            return f"params.{name}: not a run-config field ({owner}: {', '.join(fields)})"
        sub = _model_of(fields[part].annotation)
        if i == len(parts) - 1 and sub is not None:
            return f"params.{name}: is a section, not a field (it has: {', '.join(sub.model_fields)})"
        if i < len(parts) - 1 and sub is None:
            return f"params.{name}: {'.'.join(parts[: i + 1])} is a field, not a section"
        if sub is not None:
            model = sub
    if parts[0] in _UNTUNABLE:
        return f"params.{name}: {parts[0]} settings cannot be tuned (the study sets where trials are written)"
    return None


def trial_config(config: RunConfig, params: dict[str, Any], runs_dir: Path | None = None) -> RunConfig:
    """``config`` with dotted ``params`` applied (and ``output.runs_dir`` when given), re-validated."""
    overrides: dict[str, Any] = config.model_dump(mode="json")  # sections first, then dotted fields into them
    # A trial is scored on the val split, so it must not train on it: a final-model (refit) config is
    # tuned as the same recipe on the train split.
    overrides["data"]["refit"] = False
    overrides.update(params)
    if runs_dir is not None:
        overrides["output.runs_dir"] = str(runs_dir)
    return load_run_config(None, overrides)


def check_space_against(config: RunConfig, space: SearchSpace) -> None:
    """Every bound and choice alone must make a valid run config (catches e.g. drop_rate high=1.0 early)."""
    for name, spec in space.params.items():
        values = spec.choices if isinstance(spec, CategoricalParam) else [spec.low, spec.high]
        for value in values:
            try:
                trial_config(config, {name: value})
            except ConfigError as exc:
                detail = str(exc).removeprefix("invalid run configuration\n")
                raise ConfigError(f"params.{name}: {value!r} is not a valid value\n{detail}") from exc


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


@dataclass
class TuneResult:
    """Where the study is and how it stands (counts cover the whole study, every worker's trials)."""

    study_dir: Path
    study_name: str
    storage: str  # password masked
    metric: str
    direction: str
    n_trials: int  # the target number of finished trials
    counts: dict[str, int]  # trials per state name (COMPLETE, PRUNED, FAIL, RUNNING, WAITING)
    best_value: float | None
    best_params: dict[str, Any]
    best_trial: int | None
    best_run_dir: str | None
    trials: pd.DataFrame
    report: Path
    best_config: Path | None
    ran_now: int = 0  # trials this call ran (this process only)
    study: optuna.Study | None = field(default=None, repr=False)

    @property
    def n_finished(self) -> int:
        return self.counts.get("COMPLETE", 0) + self.counts.get("PRUNED", 0)


def open_storage(url: str, heartbeat_interval: int | None = 60, grace_period: int | None = 180) -> Any:
    """An Optuna RDB storage; with a heartbeat, trials of a worker that died are marked FAIL."""
    url = database_url(url)
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
    from sqlalchemy.exc import DBAPIError

    engine_kwargs: dict[str, Any] = (
        # SQLite: a few workers on one machine wait for each other's writes instead of failing.
        {"connect_args": {"timeout": 60}}
        if url.startswith("sqlite")
        # A server may drop a connection that sat idle through a long trial: test before use.
        else {"pool_pre_ping": True}
    )

    attempts = 5
    for attempt in range(1, attempts + 1):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period if heartbeat_interval else None,
                )
        except ImportError as exc:
            cause = exc.__cause__ or exc
            hint = f"; {POSTGRES_DRIVER_HINT}" if url.startswith("postgres") else ""
            if url.startswith("postgresql+psycopg2"):
                hint = "; pip install psycopg2-binary, or write postgresql://... to use psycopg 3 (the postgres extra)"
            raise ConfigError(f"storage {mask_url(url)}: database driver missing ({cause}){hint}") from exc
        except DBAPIError as exc:
            # Workers started together race to create the tables (the loser gets an IntegrityError): retry.
            if attempt == attempts:
                raise MammocadError(f"storage {mask_url(url)}: cannot open ({type(exc).__name__}: {exc})") from exc
            time.sleep(attempt * (0.5 + random.random()))
        except Exception as exc:
            raise MammocadError(f"storage {mask_url(url)}: cannot open ({type(exc).__name__}: {exc})") from exc
    raise AssertionError("unreachable")


def _suggest(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, spec in space.params.items():
        if isinstance(spec, FloatParam):
            params[name] = trial.suggest_float(name, spec.low, spec.high, log=spec.log, step=spec.step)
        elif isinstance(spec, IntParam):
            params[name] = trial.suggest_int(name, spec.low, spec.high, step=spec.step, log=spec.log)
        else:
            params[name] = trial.suggest_categorical(name, spec.choices)
    return params


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
    config: RunConfig, space: SearchSpace, trials_dir: Path, n_trials: int
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
        run_dir = _free_dir(trials_dir / f"trial-{trial.number}")
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
            params = _suggest(trial, space)
            one_device = {"train.devices": 1} if config.train.devices == "auto" else {}
            run_config = trial_config(config, {**params, **one_device}, trials_dir)
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
    trials_dir = study_dir / "trials"
    url = storage or f"sqlite:///{(study_dir / 'study.db').resolve()}"
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
            atomic_write_text(study_dir / "trials.csv", trials_table(study).to_csv(index=False))
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
                _objective(config, space, trials_dir, n_trials),
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
            optuna.distributions.check_distribution_compatibility(recorded[name], _distribution(spec))
        except ValueError as exc:
            raise ConfigError(
                f"params.{name}: does not fit study {study.study_name!r}, whose trials sampled it from "
                f"{recorded[name]} ({exc}). Keep the type, log and choices, or start a new study "
                "(another --study-name or --study-dir)."
            ) from exc


def _distribution(spec: FloatParam | IntParam | CategoricalParam) -> optuna.distributions.BaseDistribution:
    if isinstance(spec, FloatParam):
        return optuna.distributions.FloatDistribution(spec.low, spec.high, log=spec.log, step=spec.step)
    if isinstance(spec, IntParam):
        return optuna.distributions.IntDistribution(spec.low, spec.high, log=spec.log, step=spec.step)
    return optuna.distributions.CategoricalDistribution(spec.choices)


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """``study.trials_dataframe()`` with the user attributes as plain columns (error, run_dir, ...)."""
    frame = study.trials_dataframe()
    frame = frame.rename(columns={c: c.removeprefix("user_attrs_") for c in frame.columns})
    for column in ("error", "run_dir", "host", "best_epoch", "epochs_done"):
        if column not in frame.columns:
            frame[column] = None
    if len(frame):
        # Every exception inside a trial is recorded; a FAIL trial without one was failed by the heartbeat.
        frame["error"] = frame["error"].astype(object)
        lost = (frame["state"] == "FAIL") & frame["error"].isna()
        frame.loc[lost, "error"] = STALE_ERROR
    if "duration" in frame.columns:
        frame["duration_s"] = frame["duration"].dt.total_seconds().round(1)
    first = [c for c in ("number", "state", "value", "duration_s") if c in frame.columns]
    first += [c for c in frame.columns if c.startswith("params_")]
    first += ["best_epoch", "epochs_done", "error", "host", "run_dir"]
    rest = [c for c in frame.columns if c not in first and c != "duration"]
    return frame[first + rest]


def _counts(study: optuna.Study) -> dict[str, int]:
    counts = {state.name: 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] += 1
    return counts


def write_study_files(
    study: optuna.Study,
    config: RunConfig,
    space: SearchSpace,
    study_dir: Path,
    url: str,
    n_trials: int,
    report: bool = True,
) -> TuneResult:
    """trials.csv, study.json, best_config.yaml (when a trial completed) and report.html."""
    table = trials_table(study)
    atomic_write_text(study_dir / "trials.csv", table.to_csv(index=False))
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = study.best_trial if complete else None
    best_config_path = None
    if best is not None:
        best_config = trial_config(config, best.params)
        best_config.output.name = f"{config.output.name or best_config.model.name}-best"
        best_config_path = atomic_write_text(study_dir / "best_config.yaml", dump_run_config(best_config))
    result = TuneResult(
        study_dir=study_dir,
        study_name=study.study_name,
        storage=mask_url(url),
        metric=space.metric,
        direction=str(space.direction),
        n_trials=n_trials,
        counts=_counts(study),
        best_value=None if best is None else best.value,
        best_params={} if best is None else dict(best.params),
        best_trial=None if best is None else best.number,
        best_run_dir=None if best is None else best.user_attrs.get("run_dir"),
        trials=table,
        report=study_dir / "report.html",
        best_config=best_config_path,
        study=study,
    )
    atomic_write_json(
        study_dir / "study.json",
        {
            "study_name": result.study_name,
            "storage": result.storage,
            "metric": result.metric,
            "direction": result.direction,
            "n_trials_target": n_trials,
            "trials": result.counts,
            "best_value": result.best_value,
            "best_params": result.best_params,
            "best_trial": result.best_trial,
            "best_run_dir": result.best_run_dir,
            "best_config": None if best_config_path is None else str(best_config_path),
            "search_space": space.model_dump(mode="json"),
        },
    )
    if report:
        write_report(study, result, space)
    return result


def write_report(study: optuna.Study, result: TuneResult, space: SearchSpace) -> Path:
    """report.html: summary, best trial, Optuna's interactive plots, the trials table, the search space."""
    from mammocad.reporting.html import HtmlReport

    page = HtmlReport(f"Hyperparameter search: {result.study_name}")
    page.heading("Summary")
    summary = {
        "study": result.study_name,
        "storage": result.storage,
        "metric": f"{result.metric} ({result.direction})",
        "target finished trials": result.n_trials,
        **{f"trials {state.lower()}": n for state, n in result.counts.items() if n},
        "best value": "—" if result.best_value is None else f"{result.best_value:.6g}",
        "best trial": "—" if result.best_trial is None else result.best_trial,
        "best run": result.best_run_dir or "—",
    }
    page.table(pd.DataFrame({"value": [str(v) for v in summary.values()]}, index=list(summary)), index=True)
    page.heading("Best trial")
    if result.best_trial is None:
        page.paragraph(
            "No trial completed (pruned trials are not candidates), so there is no best trial and no "
            "best_config.yaml. Why trials failed: the error column of the trials table below.",
            note=True,
        )
    else:
        page.table(pd.DataFrame({"value": [str(v) for v in result.best_params.values()]}, index=result.best_params))
        page.paragraph("best_config.yaml holds the base config with these values; train it with mammocad train.")
    page.heading("Plots")
    for title, draw in _plots(study, result.metric):
        page.paragraph(title)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                figure = draw()
            for warning in caught:
                page.paragraph(f"{title}: {warning.message}", note=True)
            page.plotly(figure.to_html(full_html=False, include_plotlyjs=False))
        except _CannotPlot as why:
            page.paragraph(f"{title}: not drawn: {why}", note=True)
        except Exception as exc:
            page.paragraph(f"{title}: not drawn ({type(exc).__name__}: {exc})", note=True)
    page.heading("Trials")
    if len(result.trials):
        page.table(_display_trials(result.trials, result.study_dir), index=False, float_format="{:.4g}")
    else:
        page.paragraph("The study has no trials yet.", note=True)
    page.heading("Search space")
    page.preformatted(yaml.safe_dump(space.model_dump(mode="json"), sort_keys=False))
    return page.write(result.report)


def _display_trials(trials: pd.DataFrame, study_dir: Path) -> pd.DataFrame:
    """The trials table for the report: short column names, first line of errors, run dirs relative."""
    columns = [c for c in ("number", "state", "value", "duration_s") if c in trials.columns]
    columns += [c for c in trials.columns if c.startswith("params_")]
    columns += ["epochs_done", "best_epoch", "host", "error", "run_dir"]
    shown = trials[columns].rename(columns={c: c.removeprefix("params_") for c in columns})

    def short_error(error: Any) -> Any:
        if not isinstance(error, str):
            return error
        line = error.splitlines()[0] if error else error
        return line if len(line) <= 160 else line[:157] + "..."

    def relative(path: Any) -> Any:
        if not isinstance(path, str):
            return path
        with contextlib.suppress(ValueError):
            return str(Path(path).relative_to(study_dir))
        return path

    shown["error"] = shown["error"].map(short_error)
    shown["run_dir"] = shown["run_dir"].map(relative)
    return shown


class _CannotPlot(Exception):
    pass


def _plots(study: optuna.Study, metric: str) -> list[tuple[str, Callable[[], Any]]]:
    from optuna import visualization as vis
    from optuna.importance import PedAnovaImportanceEvaluator

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    varying = [
        name
        for name in {p for t in complete for p in t.params}
        if len({repr(t.params.get(name)) for t in complete}) > 1
    ]

    def history() -> Any:
        if not complete:
            raise _CannotPlot("no trial completed")
        return vis.plot_optimization_history(study, target_name=metric)

    def importances() -> Any:
        if len(complete) < 2 or not varying:
            raise _CannotPlot("needs at least 2 completed trials whose parameters differ")
        return vis.plot_param_importances(study, evaluator=PedAnovaImportanceEvaluator(), target_name=metric)

    def parallel() -> Any:
        if not complete:
            raise _CannotPlot("no trial completed")
        return vis.plot_parallel_coordinate(study, target_name=metric)

    def intermediate() -> Any:
        if not any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
            raise _CannotPlot("no trial reported an epoch")
        return vis.plot_intermediate_values(study)

    return [
        ("Optimization history", history),
        ("Parameter importances", importances),
        ("Parallel coordinates", parallel),
        ("Validation metric per epoch (pruned trials stop early)", intermediate),
    ]


__all__ = [
    "METRICS",
    "CategoricalParam",
    "FloatParam",
    "IntParam",
    "PrunerSpec",
    "SearchSpace",
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
    "write_study_files",
]
