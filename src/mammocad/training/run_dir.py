"""The run directory: every file a training run writes, and every read and write of them.

``mammocad train`` writes a run directory; ``predict``, ``evaluate``, ``explain``, ``export``,
``serve``, the dashboard, ``cv``, ``ablate`` and ``tune`` read it. This module is that contract:
no other module spells a run file's name. Layout::

    RUN/
      config.yaml               the resolved RunConfig the run was trained with
      run.json                  status (running/completed/interrupted/failed/stopped), owner, counts, timings
      model.json                what rebuilds the model: spec, classes, preprocessing, weight files
      history.csv               one row per epoch (training/validation metrics, throughput)
      calibration.json          temperature scaling and the ``indeterminate`` thresholds (optional)
      provenance.json           what the model card shows about the training data (optional)
      checkpoints/
        best.safetensors        weights of the lowest validation loss
        last.safetensors        weights of the last finished epoch
        last.ckpt               Lightning's resumable state (optimizer, schedulers)
      evaluation/<split>[-k]/   one folder per ``mammocad evaluate`` (see :class:`EvaluationDir`)
      export/                   ``mammocad export`` output (its own layout: mammocad.serve.export_files)

Reads never import Lightning or torch: the server and the dashboard use this module too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mammocad.errors import MammocadError
from mammocad.folders import Folder, ReportFolder
from mammocad.io import atomic_write_json, atomic_write_text, read_json_object, update_json

if TYPE_CHECKING:
    import pandas as pd

    from mammocad.training.config import RunConfig

#: The names of the weight files a run can end with (``model.json``'s ``weights.final``).
WEIGHT_KINDS = ("best", "last")
#: MLflow's default tracking database, one per runs folder (beside the run directories).
MLFLOW_DATABASE = "mlflow.db"


def mlflow_database(runs_dir: str | Path) -> Path:
    """The default MLflow tracking database of a folder of runs."""
    return Path(runs_dir) / MLFLOW_DATABASE


class EvaluationDir(ReportFolder):
    """One evaluation's folder (``RUN/evaluation/<split>[-k]`` or ``evaluate --out DIR``)."""

    METRICS = "metrics.json"
    PREDICTIONS = "predictions.parquet"

    @property
    def metrics_path(self) -> Path:
        return self.path / self.METRICS

    @property
    def predictions_path(self) -> Path:
        return self.path / self.PREDICTIONS

    def is_complete(self) -> bool:
        """Both the metrics and the per-image predictions were written (the evaluation finished)."""
        return self.metrics_path.exists() and self.predictions_path.exists()

    def read_metrics(self) -> dict[str, Any]:
        """``metrics.json`` (json errors propagate: a finished evaluation's file is complete)."""
        return json.loads(self.metrics_path.read_text())

    def read_metrics_or_empty(self) -> dict[str, Any]:
        """``metrics.json``, or ``{}`` when missing or unreadable (for summaries that must not fail)."""
        return read_json_object(self.metrics_path)

    def read_predictions(self) -> pd.DataFrame:
        import pandas as pd

        return pd.read_parquet(self.predictions_path)

    def write_metrics(self, document: dict[str, Any]) -> Path:
        return atomic_write_json(self.metrics_path, document)

    def write_report(self, html: str) -> Path:
        return atomic_write_text(self.report_path, html)


class RunDir(Folder):
    """A training run's directory (see the module docstring for its layout).

    ``RunDir(path)`` does not check anything; :meth:`require_model` raises when the folder is not
    a trained run.
    """

    CONFIG = "config.yaml"
    STATE = "run.json"
    MODEL = "model.json"
    HISTORY = "history.csv"
    CALIBRATION = "calibration.json"
    PROVENANCE = "provenance.json"
    CHECKPOINTS = "checkpoints"
    TRAINER_STATE = "last.ckpt"
    EVALUATION = "evaluation"
    EXPORT = "export"

    # --- paths ---------------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def state_path(self) -> Path:
        return self.path / self.STATE

    @property
    def model_path(self) -> Path:
        return self.path / self.MODEL

    @property
    def history_path(self) -> Path:
        return self.path / self.HISTORY

    @property
    def calibration_path(self) -> Path:
        return self.path / self.CALIBRATION

    @property
    def provenance_path(self) -> Path:
        return self.path / self.PROVENANCE

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def trainer_state_path(self) -> Path:
        """Lightning's resumable checkpoint (``checkpoints/last.ckpt``)."""
        return self.checkpoints_dir / self.TRAINER_STATE

    def trainer_state_partial_path(self, writer: str) -> Path:
        """Where ``last.ckpt`` is written before its rename; ``writer`` (owner token and a random part)
        lets the next ``--resume`` tell a killed run's leftover from a live writer's file."""
        return self.checkpoints_dir / f".{self.TRAINER_STATE}.{writer}.partial"

    @property
    def legacy_trainer_state_partial_path(self) -> Path:
        """The temporary ``last.ckpt`` of mammocad versions before owner tokens."""
        return self.checkpoints_dir / f"{self.TRAINER_STATE}.partial"

    @property
    def evaluation_root(self) -> Path:
        return self.path / self.EVALUATION

    @property
    def export_dir(self) -> Path:
        """Where ``mammocad export`` writes the ONNX export by default."""
        return self.path / self.EXPORT

    @staticmethod
    def weights_name(which: str) -> str:
        """The run-relative name of the ``best``/``last`` weights, as ``model.json`` records it."""
        return f"{RunDir.CHECKPOINTS}/{which}.safetensors"

    def weights_path(self, which: str, meta: dict[str, Any] | None = None) -> Path:
        """The ``best``/``last`` weights file (the name ``model.json`` records, when given)."""
        recorded = ((meta or {}).get("weights") or {}).get(which)
        return self.path / (recorded or self.weights_name(which))

    def evaluation_dir(self, name: str) -> EvaluationDir:
        return EvaluationDir(self.evaluation_root / name)

    # --- what exists ---------------------------------------------------------------------------

    def has_model(self) -> bool:
        return self.model_path.exists()

    def has_state(self) -> bool:
        return self.state_path.exists()

    def has_config(self) -> bool:
        return self.config_path.exists()

    def has_history(self) -> bool:
        return self.history_path.exists()

    def can_resume(self) -> bool:
        """Lightning's resumable state exists (an interrupted run continues from it)."""
        return self.trainer_state_path.exists()

    def evaluations(self) -> list[EvaluationDir]:
        """Every evaluation folder of the run, sorted by name (finished or not)."""
        if not self.evaluation_root.is_dir():
            return []
        return [EvaluationDir(d) for d in sorted(self.evaluation_root.iterdir()) if d.is_dir()]

    def latest_evaluation(self, split: str) -> EvaluationDir | None:
        """The newest finished ``evaluation/<split>`` or ``evaluation/<split>-k`` (None when none)."""
        done = [
            e
            for e in self.evaluations()
            if (e.name == split or (e.name.startswith(f"{split}-") and e.name.removeprefix(f"{split}-").isdigit()))
            and e.is_complete()
        ]
        return max(done, key=lambda e: e.metrics_path.stat().st_mtime) if done else None

    # --- reads ---------------------------------------------------------------------------------

    def read_config(self, overrides: dict[str, Any] | None = None) -> RunConfig:
        """The run's ``RunConfig`` (ConfigError naming the field when it no longer validates)."""
        from mammocad.training.config import load_run_config

        return load_run_config(self.config_path, overrides)

    def read_config_dict(self) -> dict[str, Any]:
        """``config.yaml`` as plain data, ``{}`` when missing or unreadable (never raises)."""
        try:
            import yaml

            values = yaml.safe_load(self.config_path.read_text())
        except Exception:
            return {}
        return values if isinstance(values, dict) else {}

    def read_state(self) -> dict[str, Any]:
        """``run.json``, ``{}`` when missing or unreadable."""
        return read_json_object(self.state_path)

    def read_model(self) -> dict[str, Any]:
        """``model.json``, ``{}`` when missing or unreadable (see :meth:`require_model`)."""
        return read_json_object(self.model_path)

    def require_model(self) -> dict[str, Any]:
        """``model.json``; MammocadError when the folder is not a trained run."""
        if not self.model_path.exists():
            raise MammocadError(f"{self.path}: not a run directory (no {self.MODEL})")
        return json.loads(self.model_path.read_text())

    def read_history(self) -> pd.DataFrame:
        import pandas as pd

        return pd.read_csv(self.history_path)

    # --- writes (atomic) -----------------------------------------------------------------------

    def write_config(self, config: RunConfig) -> Path:
        from mammocad.training.config import dump_run_config

        return atomic_write_text(self.config_path, dump_run_config(config))

    def write_state(self, state: dict[str, Any]) -> Path:
        return atomic_write_json(self.state_path, state)

    def update_state(self, updates: dict[str, Any]) -> dict[str, Any]:
        """Merge ``updates`` into ``run.json``; the merged state."""
        return update_json(self.state_path, updates)

    def write_model(self, meta: dict[str, Any]) -> Path:
        return atomic_write_json(self.model_path, meta)

    def write_history(self, csv_text: str) -> Path:
        return atomic_write_text(self.history_path, csv_text)

    def write_calibration(self, document: dict[str, Any]) -> Path:
        return atomic_write_json(self.calibration_path, document)

    def write_provenance(self, document: dict[str, Any]) -> Path:
        return atomic_write_json(self.provenance_path, document)


def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` holds a trained run (its ``model.json``)."""
    return RunDir(path).has_model()


__all__ = ["MLFLOW_DATABASE", "WEIGHT_KINDS", "EvaluationDir", "RunDir", "is_run_dir", "mlflow_database"]
