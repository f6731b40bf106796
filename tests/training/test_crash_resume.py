"""Runs after a crash: a resume repeats the uninterrupted run, a run killed before its first checkpoint
is marked ``interrupted`` and restarts from epoch 0, and a refused resume is one line that changes nothing."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from mammocad.cli.main import app
from mammocad.errors import MammocadError
from mammocad.io import find_leftovers
from mammocad.models.weights import read_state_dict
from mammocad.procs import host_tag, pid_alive
from mammocad.training.config import load_run_config
from mammocad.training.predict import load_run
from mammocad.training.run import StopTraining, train
from tests.conftest import config
from tests.training.test_lesion_aware import LESION

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()

# Augmentation, dropout, shuffling and a plateau scheduler that reacts every epoch: all of them
# must continue after a resume exactly as they would have without the interruption.
DETERMINISTIC = {
    "train.epochs": 3,
    "train.deterministic": True,
    "train.lr_patience": 0,
    "augment.rotate_p": 0.5,
    "train.early_stopping_patience": 5,
    "train.batch_size": 8,
}


def _state(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


def _weights(run: Path, which: str) -> dict[str, torch.Tensor]:
    return read_state_dict(run / "checkpoints" / f"{which}.safetensors")


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({}, id="in-process"),
        pytest.param({"train.num_workers": 1}, id="dataloader-worker"),
        # hard negatives mined after the checkpoint's epoch are mined again on resume (30-90 s)
        pytest.param({**LESION, **DETERMINISTIC}, id="lesion-aware-hard-negatives", marks=pytest.mark.slow),
    ],
)
def test_a_resumed_run_repeats_the_uninterrupted_run(dataset, tmp_path, extra):
    settings = {**DETERMINISTIC, **extra}
    whole = train(config(dataset, tmp_path, **settings), run_dir=tmp_path / "whole", progress=False)

    def stop_after_first_epoch(row):
        if row["epoch"] == 0:
            raise StopTraining("cut after epoch 0")

    cut = tmp_path / "cut"
    with pytest.raises(StopTraining):
        train(config(dataset, tmp_path, **settings), run_dir=cut, on_epoch=stop_after_first_epoch, progress=False)
    assert _state(cut)["status"] == "stopped"
    # The checkpoint holds the epoch's whole end state: the plateau scheduler has stepped on the
    # epoch's val_loss and early stopping has counted it (Lightning does both after the checkpoint hook).
    saved = torch.load(cut / "checkpoints" / "last.ckpt", weights_only=True)
    val_loss = float(whole.history["val_loss"].iloc[0])
    plateau = saved["lr_schedulers"][0]
    assert plateau["last_epoch"] == 1 and plateau["best"] == pytest.approx(val_loss)
    (stopping,) = [v for k, v in saved["callbacks"].items() if k.startswith("EarlyStopping")]
    assert float(stopping["best_score"]) == pytest.approx(val_loss)
    resumed = train(load_run_config(cut / "config.yaml"), resume=cut, progress=False)

    assert list(resumed.history["epoch"]) == [0, 1, 2] and _state(cut)["status"] == "completed"
    for column in ("train_loss", "val_loss", "val_auc_macro", "lr"):
        assert np.array_equal(resumed.history[column], whole.history[column], equal_nan=True), column
    for which in ("last", "best"):
        a, b = _weights(whole.run_dir, which), _weights(cut, which)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), which


def _kill_during_first_checkpoint(dataset: Path, tmp_path: Path) -> tuple[Path, int]:
    """Run ``train`` in a subprocess that SIGKILLs itself while writing its first epoch's files."""
    run = tmp_path / "killed"
    values = config(dataset, tmp_path).model_dump(mode="json")
    script = """
        import json, os, signal, sys
        import mammocad.training.epoch_files as epoch_files
        import mammocad.training.run as run
        def killed(*args, **kwargs):  # after last.ckpt's temporary file and history.csv, before the rename
            os.kill(os.getpid(), signal.SIGKILL)
        epoch_files.save_weights = killed
        from mammocad.training.config import RunConfig
        run.train(RunConfig(**json.loads(sys.argv[1])), run_dir=run.Path(sys.argv[2]), progress=False)
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), json.dumps(values), str(run)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    return run, _state(run)["pid"]


def test_run_killed_before_its_first_checkpoint_is_marked_and_restarts(dataset, tmp_path):
    run, pid = _kill_during_first_checkpoint(dataset, tmp_path)
    assert _state(run)["status"] == "running"  # what the kill left
    assert not (run / "checkpoints" / "last.ckpt").exists()
    (partial,) = find_leftovers(run)  # the checkpoint being written
    assert partial.stale and partial.pid == pid
    stale_tmp = run / f".run.json.{pid}-0-{host_tag()}.abcd1234.tmp"
    stale_tmp.write_text("{")

    # predict/evaluate: one line saying there is no checkpoint and how to restart; the run is marked.
    with pytest.raises(MammocadError, match=r"no checkpoint.*interrupted.*train --resume"):
        load_run(run)
    state = _state(run)
    assert state["status"] == "interrupted" and f"process {pid}" in state["reason"]
    image = dataset / pd.read_parquet(dataset / "manifest.parquet")["image_path"].iloc[0]
    result = runner.invoke(app, ["predict", str(run), str(image)])
    assert result.exit_code == 2 and "train --resume" in result.output and "Traceback" not in result.output

    # train --resume: lists what it found, removes it, and starts again from epoch 0 in the same directory.
    result = runner.invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "starting it again from epoch 0" in output
    assert f"PID {pid}, which is gone" in output and ".run.json." in output and ".last.ckpt." in output
    state = _state(run)
    assert state["status"] == "completed" and state["epochs_done"] == 2 and "restarted" in state
    assert "reason" not in state and state["pid"] == os.getpid()
    assert find_leftovers(run) == [] and (run / "checkpoints" / "last.ckpt").exists()
    load_run(run)


@pytest.fixture(scope="module")
def completed_run(dataset, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("completed")
    return train(config(dataset, tmp, **{"train.epochs": 1}), progress=False).run_dir


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (None, r"already completed \(all 1 epochs trained\); nothing to resume"),
        (
            {"model.drop_rate": 0.25, "train.epochs": 2},
            r"config changed since the checkpoint \(model\.drop_rate: 0\.5 -> 0\.25\)",
        ),
        ({"status": "running"}, r"still being trained by PID"),
    ],
    ids=["completed", "config-changed", "still-running"],
)
def test_a_refused_resume_is_one_line_and_changes_nothing(completed_run, tmp_path, edit, message):
    run = tmp_path / "run"
    shutil.copytree(completed_run, run)
    if edit and "status" in edit:  # the process that trains it is this one: alive
        (run / "run.json").write_text(json.dumps({**_state(run), **edit, "pid": os.getpid(), "pid_started": 0}))
    elif edit:
        cfg = run / "config.yaml"
        text = cfg.read_text().replace("drop_rate: 0.5", "drop_rate: 0.25").replace("epochs: 1", "epochs: 2")
        cfg.write_text(text)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    result = runner.invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[0].startswith("error:") and "Traceback" not in result.output
    assert re.search(message, " ".join(result.output.split())), result.output
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # status untouched


def test_raising_the_epoch_budget_of_a_completed_run_continues_it(completed_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(completed_run, run)
    resumed = train(load_run_config(run / "config.yaml", {"train.epochs": 2}), resume=run, progress=False)
    assert list(resumed.history["epoch"]) == [0, 1] and _state(run)["status"] == "completed"


def test_dataloader_workers_die_with_a_killed_trainer(tmp_path):
    # Torch's own watchdog ends orphaned workers only at its next 5 s poll; the worker_init_fn
    # of the training loaders makes the kernel end them at once.
    script = """
        import os, sys, time
        import torch
        from torch.utils.data import DataLoader, Dataset
        from mammocad.training.run import DataLoaderWorkerInit
        class Pids(Dataset):
            def __len__(self):
                return 1000
            def __getitem__(self, index):
                time.sleep(0.05)
                return os.getpid()
        loader = DataLoader(Pids(), batch_size=1, num_workers=2, worker_init_fn=DataLoaderWorkerInit())
        seen = set()
        for (pid,) in loader:
            seen.add(int(pid))
            if len(seen) == 2:
                print(*seen, flush=True)
                time.sleep(60)
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    trainer = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        workers = {int(pid) for pid in trainer.stdout.readline().split()}
        assert len(workers) == 2
        time.sleep(0.5)  # the workers finish their prefetched items and wait for the next indices
        trainer.send_signal(signal.SIGKILL)
        trainer.wait()
        deadline = time.monotonic() + 2.0
        while workers and time.monotonic() < deadline:
            workers = {pid for pid in workers if pid_alive(pid)}
            time.sleep(0.05)
        assert not workers, "DataLoader workers outlived the killed process"
    finally:
        trainer.kill()
        trainer.wait()
