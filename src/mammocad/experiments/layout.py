"""The folders ``cv``, ``ablate``, ``compare`` (of CVs) and ``tune`` write: every path, read and write of them.

No other module spells these file names. CV directory (:class:`CVDir`)::

    CV/
      config.yaml               the base run config (data.split = the split with the folds)
      cv.json                   status, folds, split, classes, fold run directories, the queue record
      fold-<k>/, fold-<k>-2/    run directories of fold k (:class:`~mammocad.training.run_dir.RunDir`)
      fold-<k>.yaml             the fold's config, when the fold trains in its own process
      folds.csv                 one row per fold: every metric of its out-of-fold predictions
      summary.json, summary.md  mean ± std across folds, pooled out-of-fold metrics
      oof_predictions.parquet   pooled out-of-fold predictions (column ``fold``)
      figures/<name>.png, report.html
      queue.db                  the default work-queue database (with workers)

Ablation directory (:class:`AblationDir`)::

    ABLATION/
      config.yaml, ablate.json  the full model's config; status, variants, the queue record
      <variant>/                one CV directory per variant
      ablation.csv, ablation.md mean ± std per variant, differences to the full model, p-values
      fold_tests.csv, significance.csv
      figures/ablation.png, report.html, queue.db

CV comparison (:class:`CVComparisonDir`): ``table``, ``fold_tests`` and ``significance`` as
``.csv`` and ``.md``, ``comparison.json``, ``figures/``, ``report.html``.

Tune study directory (:class:`StudyDir`; files written atomically, rewritten after every invocation)::

    study.db             the Optuna study (default storage)
    trials/trial-<n>/    one training run directory per trial
    trials.csv           one row per trial: state, value, params, error, run_dir, host ...
    best_config.yaml     the base config with the best trial's params (omitted until a trial completes)
    study.json           summary: storage (password masked), metric, direction, counts per state, best
    report.html          summary, best params, trials, Optuna's interactive plots (opens offline)

Kept free of pandas at import time: the CLI reads these folders before anything heavy is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mammocad.errors import MammocadError
from mammocad.folders import ReportFolder
from mammocad.io import atomic_write_bytes, atomic_write_json, atomic_write_text, now_iso, update_json
from mammocad.training.run_dir import EvaluationDir, RunDir

if TYPE_CHECKING:
    import pandas as pd

    from mammocad.training.config import RunConfig

#: The default work-queue database of an experiment directory (``sqlite:///<dir>/queue.db``).
QUEUE_DB = "queue.db"
#: The validation split every fold run is scored on (its out-of-fold predictions).
FOLD_SPLIT = "val"


class ExperimentDir(ReportFolder):
    """A resumable experiment (CV or ablation): its base config, a JSON state file and a work queue."""

    CONFIG = RunDir.CONFIG
    STATE = ""  # the state file's name, per kind
    KIND = ""  # what the folder is called in messages
    QUEUE_DB = QUEUE_DB

    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def state_path(self) -> Path:
        return self.path / self.STATE

    def exists(self) -> bool:
        """The folder holds this kind of experiment (its state file)."""
        return self.state_path.is_file()

    def require(self) -> None:
        """MammocadError when the folder is not this kind of experiment."""
        if not self.exists():
            raise MammocadError(f"{self.path}: not {self.KIND} (no {self.STATE})")

    def read_state(self) -> dict[str, Any]:
        """The state file (json errors propagate: the file is written atomically)."""
        return json.loads(self.state_path.read_text())

    def update_state(self, updates: dict[str, Any]) -> dict[str, Any]:
        """Merge ``updates`` into the state file (created when missing); the merged state."""
        return update_json(self.state_path, updates)

    def mark_completed(self) -> dict[str, Any]:
        return self.update_state({"status": "completed", "ended": now_iso(), "error": None})

    def mark_interrupted(self, exc: BaseException) -> dict[str, Any]:
        return self.update_state({"status": "interrupted", "error": f"{type(exc).__name__}: {exc}"})

    def write_config(self, config: RunConfig) -> Path:
        from mammocad.training.config import dump_run_config

        return atomic_write_text(self.config_path, dump_run_config(config))

    def read_config(self) -> RunConfig:
        from mammocad.training.config import load_run_config

        return load_run_config(self.config_path)


class CVDir(ExperimentDir):
    """A cross-validation directory (see the module docstring); fold runs are :class:`RunDir`."""

    STATE = "cv.json"
    KIND = "a cross-validation directory"
    FOLDS = "folds.csv"
    SUMMARY = "summary.json"
    SUMMARY_MARKDOWN = "summary.md"
    OOF = "oof_predictions.parquet"

    @property
    def folds_path(self) -> Path:
        return self.path / self.FOLDS

    @property
    def summary_path(self) -> Path:
        return self.path / self.SUMMARY

    @property
    def summary_markdown_path(self) -> Path:
        return self.path / self.SUMMARY_MARKDOWN

    @property
    def oof_path(self) -> Path:
        return self.path / self.OOF

    # --- fold runs -----------------------------------------------------------------------------

    @staticmethod
    def fold_name(fold: int) -> str:
        """``fold-<k>``: the fold's first run directory and its queue unit."""
        return f"fold-{fold}"

    @staticmethod
    def fold_number(name: str) -> int:
        """The fold of a unit or run named ``fold-<k>``."""
        return int(name.removeprefix("fold-"))

    def fold_dir(self, fold: int) -> RunDir:
        """The fold's first run directory (``fold-<k>``)."""
        return RunDir(self.path / self.fold_name(fold))

    def run(self, name: str) -> RunDir:
        """A fold run by its directory name (as ``cv.json`` and ``folds.csv`` record it)."""
        return RunDir(self.path / name)

    def fold_config_path(self, fold: int) -> Path:
        """``fold-<k>.yaml``: the fold's config for ``mammocad train --config`` in its own process."""
        return self.path / f"{self.fold_name(fold)}.yaml"

    def write_fold_config(self, fold: int, config: RunConfig) -> Path:
        from mammocad.training.config import dump_run_config

        return atomic_write_text(self.fold_config_path(fold), dump_run_config(config))

    def fold_runs(self, fold: int) -> list[RunDir]:
        """Run directories of ``fold`` (``fold-k``, ``fold-k-2``...) that have a state, oldest first."""
        first = self.fold_name(fold)
        runs = [RunDir(d) for d in self.path.glob(f"{first}*")]
        runs = [r for r in runs if r.has_state()]
        runs = [r for r in runs if r.name == first or r.name.removeprefix(f"{first}-").isdigit()]
        return sorted(runs, key=lambda r: int(r.name.rsplit("-", 1)[1]) if r.name != first else 1)

    def recorded_run(self, state: dict[str, Any], fold: int) -> RunDir:
        """The fold's run as ``cv.json`` records it (``fold-<k>`` when none is recorded)."""
        return self.run(state["runs"].get(str(fold), self.fold_name(fold)))

    @staticmethod
    def fold_evaluation(run: RunDir) -> EvaluationDir | None:
        """The fold run's newest finished evaluation on its validation fold (None when none)."""
        return run.latest_evaluation(FOLD_SPLIT)

    @staticmethod
    def fold_report_link(run_name: str) -> str:
        """The fold run's validation report, relative to the CV directory (for the CV report's links)."""
        return RunDir(Path(run_name)).evaluation_dir(FOLD_SPLIT).report_path.as_posix()

    # --- summary -------------------------------------------------------------------------------

    def is_summarised(self) -> bool:
        return self.summary_path.exists()

    def write_summary(
        self, folds: pd.DataFrame, oof: pd.DataFrame, summary: dict[str, Any], summary_markdown: str
    ) -> None:
        atomic_write_text(self.folds_path, folds.to_csv(index=False))
        atomic_write_bytes(self.oof_path, oof.to_parquet(index=False))
        atomic_write_json(self.summary_path, summary)
        atomic_write_text(self.summary_markdown_path, summary_markdown)

    def read_folds(self) -> pd.DataFrame:
        import pandas as pd

        return pd.read_csv(self.folds_path)

    def read_summary(self) -> dict[str, Any]:
        return json.loads(self.summary_path.read_text())

    def read_oof(self) -> pd.DataFrame:
        import pandas as pd

        return pd.read_parquet(self.oof_path)


def is_cv_dir(path: str | Path) -> bool:
    """True for a directory written by ``mammocad cv`` (its ``cv.json``)."""
    return CVDir(path).exists()


class ComparisonTables(ReportFolder):
    """The paired-test tables a CV comparison and an ablation both write."""

    FOLD_TESTS = "fold_tests"
    SIGNIFICANCE = "significance"

    def table_path(self, name: str, suffix: str = ".csv") -> Path:
        return self.path / f"{name}{suffix}"

    def write_table(self, name: str, text: str, suffix: str = ".csv") -> Path:
        return atomic_write_text(self.table_path(name, suffix), text)

    def read_table(self, name: str, **kwargs: Any) -> pd.DataFrame:
        """``<name>.csv``; an empty frame when it has no rows (e.g. no pooled test could run)."""
        import pandas as pd

        try:
            return pd.read_csv(self.table_path(name), **kwargs)
        except pd.errors.EmptyDataError:
            return pd.DataFrame()


class CVComparisonDir(ComparisonTables):
    """``compare`` of CV directories: ``table``, ``fold_tests``, ``significance`` (.csv/.md), comparison.json."""

    TABLE = "table"
    COMPARISON = "comparison.json"

    @property
    def comparison_path(self) -> Path:
        return self.path / self.COMPARISON

    def write_comparison(self, document: dict[str, Any]) -> Path:
        return atomic_write_json(self.comparison_path, document)


class AblationDir(ExperimentDir, ComparisonTables):
    """An ablation directory (see the module docstring); each variant's folder is a :class:`CVDir`."""

    STATE = "ablate.json"
    KIND = "an ablation directory"
    TABLE = "ablation"
    FIGURE = "ablation"

    @property
    def table_markdown_path(self) -> Path:
        return self.table_path(self.TABLE, ".md")

    @property
    def figure(self) -> Path:
        """``figures/ablation.png``."""
        return self.figure_path(self.FIGURE)

    def variant(self, cv_dir: str) -> CVDir:
        """A variant's CV directory by its name in ``ablate.json`` (``cv_dir``)."""
        return CVDir(self.path / cv_dir)


class StudyDir(ReportFolder):
    """A study directory's paths (see the module docstring): every file name is spelled here once."""

    DATABASE = "study.db"
    TRIALS = "trials"
    TRIALS_TABLE = "trials.csv"
    BEST_CONFIG = "best_config.yaml"
    SUMMARY = "study.json"

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


__all__ = [
    "FOLD_SPLIT",
    "QUEUE_DB",
    "AblationDir",
    "CVComparisonDir",
    "CVDir",
    "ComparisonTables",
    "ExperimentDir",
    "ReportFolder",
    "StudyDir",
    "is_cv_dir",
]
