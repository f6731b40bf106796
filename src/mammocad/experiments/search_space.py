"""A hyperparameter search's search space: the file format, its validation, and how a trial samples it.

A search-space file (YAML/JSON) names a validation metric, its direction, the pruner and, under
``params``, the dotted run-config fields to vary with their distributions (``float``, ``int``,
``categorical``); docs/experiments.md shows one. Every bound and choice is checked against the base
run config before the first trial, so a bad file fails at once rather than trial by trial.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import optuna
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mammocad.errors import ConfigError
from mammocad.io import read_config_file
from mammocad.training.config import RunConfig, load_run_config
from mammocad.training.run import HISTORY_COLUMNS

#: The per-epoch history columns a study can optimise.
METRICS = tuple(c for c in HISTORY_COLUMNS if c.startswith("val_"))
#: Run-config sections a search may not vary: the study decides where and how trials are written.
_UNTUNABLE = ("output",)


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


def suggest_params(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    """Sample one value per parameter of ``space`` for ``trial`` (Optuna records them as the trial's params)."""
    params: dict[str, Any] = {}
    for name, spec in space.params.items():
        if isinstance(spec, FloatParam):
            params[name] = trial.suggest_float(name, spec.low, spec.high, log=spec.log, step=spec.step)
        elif isinstance(spec, IntParam):
            params[name] = trial.suggest_int(name, spec.low, spec.high, step=spec.step, log=spec.log)
        else:
            params[name] = trial.suggest_categorical(name, spec.choices)
    return params


def optuna_distribution(spec: FloatParam | IntParam | CategoricalParam) -> optuna.distributions.BaseDistribution:
    """The Optuna distribution ``spec`` samples from (what a study records per parameter)."""
    if isinstance(spec, FloatParam):
        return optuna.distributions.FloatDistribution(spec.low, spec.high, log=spec.log, step=spec.step)
    if isinstance(spec, IntParam):
        return optuna.distributions.IntDistribution(spec.low, spec.high, log=spec.log, step=spec.step)
    return optuna.distributions.CategoricalDistribution(spec.choices)


__all__ = [
    "METRICS",
    "CategoricalParam",
    "FloatParam",
    "IntParam",
    "ParamSpec",
    "PrunerSpec",
    "SearchSpace",
    "check_space_against",
    "load_search_space",
    "optuna_distribution",
    "parse_search_space",
    "suggest_params",
    "trial_config",
]
