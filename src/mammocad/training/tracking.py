"""MLflow tracking of a training run (``output.mlflow``): where it logs, under which name, and what.

Lightning's :class:`~lightning.pytorch.loggers.MLFlowLogger` logs the epoch metrics; here the run's
config goes in as flattened hyperparameters, and the MLflow run's id into ``run.json``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from mammocad.extras import is_installed
from mammocad.training.config import RunConfig, flatten_dotted
from mammocad.training.run_dir import RunDir, mlflow_database
from mammocad.training.run_state import update_run_state

log = logging.getLogger(__name__)


def mlflow_logger(config: RunConfig, run: RunDir) -> Any:
    """The run's MLflow logger, or False when ``output.mlflow`` is off or MLflow is not installed
    (Lightning's "no logger"; the run trains unlogged, with one warning)."""
    if not config.output.mlflow:
        return False
    if not is_installed("mlflow"):
        log.warning(
            "output.mlflow is on but MLflow is not installed (pip install 'mammocad[mlflow]'): "
            "this run is not logged to MLflow"
        )
        update_run_state(run, {"mlflow": "not installed: pip install 'mammocad[mlflow]'"})
        return False
    from lightning.pytorch.loggers import MLFlowLogger

    uri = config.output.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        config.output.runs_dir.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{mlflow_database(config.output.runs_dir).resolve()}"
    # A run inside a study (cv fold, trial) is named with its parent: "fold-0" alone says nothing in MLflow.
    run_dir = run.path
    name = run_dir.name if run_dir.parent.resolve() == config.output.runs_dir.resolve() else run_dir.parent.name
    if name != run_dir.name:
        name = f"{name}/{run_dir.name}"
    return MLFlowLogger(experiment_name=config.output.experiment, run_name=name, tracking_uri=uri)


def log_run_config(logger: Any, config: RunConfig, run: RunDir) -> None:
    """Log the config as the MLflow run's parameters; record the MLflow run in ``run.json``."""
    logger.log_hyperparams(flatten(config.model_dump(mode="json")))
    update_run_state(run, {"mlflow_run_id": logger.run_id, "mlflow_tracking_uri": logger._tracking_uri})


def flatten(values: dict[str, Any]) -> dict[str, Any]:
    """The config as MLflow parameters: dotted keys, empty sections left out."""
    return flatten_dotted(values, empty_as_value=False)


__all__ = ["flatten", "log_run_config", "mlflow_logger"]
