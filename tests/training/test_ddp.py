"""`--devices 2 --strategy ddp` through the real CLI: two CPU processes (gloo) share one run directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from mammocad.io import find_leftovers


def test_ddp_on_two_cpu_processes_writes_one_complete_run(dataset, tmp_path):
    runs = tmp_path / "runs"
    cli = Path(sys.executable).with_name("mammocad")
    command = [
        str(cli), "train", "--dataset", str(dataset), "--model", "baseline_cnn", "--epochs", "2",
        "--devices", "2", "--strategy", "ddp",
        "--set", "train.accelerator=cpu", "--set", "preprocess.image_size=64", "--set", "data.task=normal-abnormal",
        "--set", "train.batch_size=4", "--set", f"output.runs_dir={runs}", "--set", "output.mlflow=false",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dirs = list(runs.iterdir())
    assert len(run_dirs) == 1, "every rank must write into the same run directory"
    run = run_dirs[0]
    state = json.loads((run / "run.json").read_text())
    assert state["status"] == "completed" and state["epochs_done"] == 2
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == [0, 1]
    # Validation metrics are gathered from both ranks: they score the whole validation split.
    assert history["val_loss"].notna().all() and history["val_auc_macro"].between(0, 1).all()
    assert (run / "checkpoints" / "last.ckpt").exists() and find_leftovers(run) == []  # no temporary file left
    assert done.stdout.count("best epoch") == 1, "only rank 0 reports"
