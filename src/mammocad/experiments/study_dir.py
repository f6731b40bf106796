"""A tune study's directory: its layout (:class:`StudyDir`), the result of a study, the trials table.

Study directory (files written atomically, rewritten after every invocation)::

    study.db             the Optuna study (default storage)
    trials/trial-<n>/    one training run directory per trial
    trials.csv           one row per trial: state, value, params, error, run_dir, host ...
    best_config.yaml     the base config with the best trial's params (omitted until a trial completes)
    study.json           summary: storage (password masked), metric, direction, counts per state, best
    report.html          summary, best params, trials, Optuna's interactive plots (opens offline)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from mammocad.folders import Folder

#: The error shown for a trial the heartbeat marked FAIL (Optuna records none).
STALE_ERROR = "its worker stopped (killed, crashed or lost the database) and the heartbeat marked the trial FAIL"


class StudyDir(Folder):
    """A study directory's paths (see the module docstring): every file name is spelled here once."""

    DATABASE = "study.db"
    TRIALS = "trials"
    TRIALS_TABLE = "trials.csv"
    BEST_CONFIG = "best_config.yaml"
    SUMMARY = "study.json"
    REPORT = "report.html"

    @property
    def database_path(self) -> Path:
        return self.path / self.DATABASE

    @property
    def default_storage(self) -> str:
        """The study's own SQLite database as a storage URL (absolute: workers may start elsewhere)."""
        return f"sqlite:///{self.database_path.resolve()}"

    @property
    def trials_dir(self) -> Path:
        """Where trials' run directories go (``trial_config``'s ``output.runs_dir``)."""
        return self.path / self.TRIALS

    def trial_dir(self, number: int) -> Path:
        """The run directory trial ``number`` is meant to write (``-2``... when it already exists)."""
        return self.trials_dir / f"trial-{number}"

    @property
    def trials_table_path(self) -> Path:
        return self.path / self.TRIALS_TABLE

    @property
    def best_config_path(self) -> Path:
        return self.path / self.BEST_CONFIG

    @property
    def summary_path(self) -> Path:
        return self.path / self.SUMMARY

    @property
    def report_path(self) -> Path:
        return self.path / self.REPORT


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


def study_counts(study: optuna.Study) -> dict[str, int]:
    """Trials per state name, every state listed (0 when none)."""
    counts = {state.name: 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] += 1
    return counts


__all__ = ["STALE_ERROR", "StudyDir", "TuneResult", "study_counts", "trials_table"]
