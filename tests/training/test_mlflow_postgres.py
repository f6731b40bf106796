"""MLflow tracking server backed by PostgreSQL: a training run's params and metrics land in it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mammocad.training.run import train
from tests.conftest import config
from tests.postgres import new_database


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_healthy(server: subprocess.Popen, url: str, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"mlflow server did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


@pytest.mark.slow  # the server creates MLflow's tables (alembic) on start: ~10-40 s
def test_training_logs_to_an_mlflow_server_on_postgres(dataset, postgres_url, tmp_path):
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    if not mlflow_cli.exists():
        pytest.skip(f"{mlflow_cli} not found")
    backend = new_database(postgres_url, "mlflow")  # postgresql+psycopg://, as MLflow's SQLAlchemy store needs
    port = _free_port()
    tracking = f"http://127.0.0.1:{port}"
    log = tmp_path / "mlflow-server.log"
    command = [str(mlflow_cli), "server", "--backend-store-uri", backend, "--artifacts-destination"]
    command += [str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    server = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_healthy(server, tracking, log)
        run_config = config(
            dataset,
            tmp_path,
            **{
                "train.epochs": 2,
                "output.mlflow": True,
                "output.mlflow_tracking_uri": tracking,
                "output.experiment": "pg-test",
            },
        )
        result = train(run_config, progress=False)
        state = json.loads((result.run_dir / "run.json").read_text())
        assert state["mlflow_tracking_uri"] == tracking

        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=tracking)
        experiment = client.get_experiment_by_name("pg-test")
        (found,) = client.search_runs([experiment.experiment_id])
        assert found.info.run_id == state["mlflow_run_id"] and found.info.status == "FINISHED"
        assert found.info.run_name == result.run_dir.name
        assert found.data.params["model.name"] == "baseline_cnn" and float(found.data.params["train.lr"]) == 1e-3
        assert json.loads(found.data.params["preprocess.image_size"]) == list(run_config.preprocess.image_size)
        assert {"train_loss", "val_loss"} <= set(found.data.metrics)
        history = client.get_metric_history(found.info.run_id, "val_loss")
        assert len(history) == 2  # one value per epoch
        assert history[-1].value == pytest.approx(float(result.history["val_loss"].iloc[-1]), rel=1e-5)
        # The run really lives in PostgreSQL (not a local file store beside the server).
        import sqlalchemy

        with sqlalchemy.create_engine(backend).connect() as connection:
            stored = connection.execute(sqlalchemy.text("SELECT run_uuid FROM runs")).scalars().all()
        assert stored == [found.info.run_id]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
