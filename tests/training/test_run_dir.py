"""The run-directory contract (``RunDir``/``EvaluationDir``): paths, reads, writes, evaluation lookup."""

from __future__ import annotations

import os
import time

import pandas as pd
import pytest

from mammocad.errors import MammocadError
from mammocad.training.run_dir import EvaluationDir, RunDir, is_run_dir, mlflow_database


def test_layout_paths_are_the_documented_ones(tmp_path):
    run = RunDir(tmp_path / "run")
    names = {
        run.config_path: "config.yaml",
        run.state_path: "run.json",
        run.model_path: "model.json",
        run.history_path: "history.csv",
        run.calibration_path: "calibration.json",
        run.provenance_path: "provenance.json",
        run.trainer_state_path: "checkpoints/last.ckpt",
        run.weights_path("best"): "checkpoints/best.safetensors",
        run.weights_path("last"): "checkpoints/last.safetensors",
        run.evaluation_dir("test").metrics_path: "evaluation/test/metrics.json",
        run.evaluation_dir("test").predictions_path: "evaluation/test/predictions.parquet",
    }
    for path, name in names.items():
        assert path.relative_to(run.path).as_posix() == name
    assert RunDir.weights_name("best") == "checkpoints/best.safetensors"
    assert (
        run.weights_path("best", {"weights": {"best": "elsewhere/b.safetensors"}})
        == run.path / "elsewhere/b.safetensors"
    )
    assert mlflow_database(tmp_path).name == "mlflow.db" and os.fspath(run) == str(run.path)


def test_reads_and_writes_round_trip_and_missing_files_read_empty(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.read_state() == {} and run.read_model() == {} and run.read_config_dict() == {}
    assert not is_run_dir(run.path)
    with pytest.raises(MammocadError, match="not a run directory"):
        run.require_model()
    run.write_state({"status": "running"})
    assert run.update_state({"epochs_done": 2}) == {"status": "running", "epochs_done": 2}
    run.write_model({"classes": ["a", "b"]})
    assert run.require_model()["classes"] == ["a", "b"] and is_run_dir(run.path)
    run.write_history("epoch,val_loss\n1,0.5\n")
    assert run.has_history() and run.read_history()["val_loss"].tolist() == [0.5]
    run.state_path.write_text("{not json")
    assert run.read_state() == {}  # a torn file reads as unknown, never raises


def test_latest_evaluation_is_the_newest_finished_one_of_the_split(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.evaluations() == [] and run.latest_evaluation("test") is None

    def finished(name: str, age: float) -> EvaluationDir:
        evaluation = run.evaluation_dir(name)
        evaluation.write_metrics({"split": name})
        pd.DataFrame({"p": [0.5]}).to_parquet(evaluation.predictions_path)
        stamp = time.time() - age
        os.utime(evaluation.metrics_path, (stamp, stamp))
        return evaluation

    finished("test", 100)
    newest = finished("test-2", 10)
    finished("val", 0)
    finished("testing", 0)  # another name that starts with the split: not an evaluation of it
    run.evaluation_dir("test-3").write_metrics({"split": "test"})  # unfinished: no predictions
    assert run.latest_evaluation("test") == newest
    assert run.latest_evaluation("test").read_metrics() == {"split": "test-2"}
    assert run.latest_evaluation("blind") is None
    assert [e.name for e in run.evaluations()] == ["test", "test-2", "test-3", "testing", "val"]
