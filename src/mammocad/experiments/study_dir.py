"""A tune study's result and its trials table (the study folder's layout is
:class:`~mammocad.experiments.layout.StudyDir`, re-exported here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from mammocad.experiments.layout import StudyDir

#: The error shown for a trial the heartbeat marked FAIL (Optuna records none).
STALE_ERROR = "its worker stopped (killed, crashed or lost the database) and the heartbeat marked the trial FAIL"


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
