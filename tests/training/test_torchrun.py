"""torchrun on two "machines": two torchrun agents on loopback (``--nnodes 2``, one CPU process each, gloo).

The two nodes run in different working directories with a relative ``output.runs_dir``, as two machines
without a shared filesystem would: rank 0's node gets the whole run directory, the other node nothing.
The training is full-batch without augmentation, dropout or BatchNorm, so two ranks with half a batch
each take the same optimiser steps as one process with the whole batch: their validation metrics agree.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mammocad.errors import ConfigError
from mammocad.io import find_leftovers
from mammocad.training.config import load_run_config
from mammocad.training.data import load_task_data
from mammocad.training.distributed import join_torchrun
from mammocad.training.run import train
from tests.conftest import config

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="two torchrun agents on loopback are only exercised on Linux"
)

#: The run config of both runs; a DDP rank's batch is half of it (each rank sees half the training split).
SAME_STEPS = {
    "preprocess.image_size": 64,
    "model.name": "baseline_cnn",
    "model.batch_norm": False,  # per-rank batch statistics would differ from whole-batch ones
    "model.drop_rate": 0.0,  # dropout masks are drawn per rank
    "train.epochs": 2,
    "train.lr": 1e-3,
    "train.class_weights": False,  # a weighted mean over half-batches is not the weighted mean of the batch
    "train.accelerator": "cpu",
    "train.precision": "32-true",  # auto may pick bf16 on this CPU: coarser sums, looser agreement
    "data.task": "normal-abnormal",
    "output.mlflow": False,
    **{f"augment.{key}": 0.0 for key in ("hflip", "vflip", "rotate_p", "brightness_p", "contrast_p")},
}
VAL_METRICS = ["val_loss", "val_acc", "val_f1_macro", "val_auc_macro"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _files(run: Path) -> set[str]:
    return {str(path.relative_to(run)) for path in run.rglob("*") if path.is_file()}


def test_torchrun_world_size_must_match_the_config(monkeypatch):
    """Lightning leaves this unchecked under torchrun: refused before any process group is joined."""
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    with pytest.raises(ConfigError, match="train.num_nodes=2: start the training with torchrun on every machine"):
        join_torchrun(load_run_config(None, {"data.dataset": "unused", "train.num_nodes": 2}))
    torchrun = {"TORCHELASTIC_RUN_ID": "test", "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}
    torchrun |= {"GROUP_RANK": "0", "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    for name, value in torchrun.items():
        monkeypatch.setenv(name, value)
    base = {"data.dataset": "unused", "train.accelerator": "cpu", "train.devices": 1, "train.strategy": "ddp"}
    with pytest.raises(ConfigError, match=r"train.num_nodes=1 × 1 device\(s\) per machine = 1 process"):
        join_torchrun(load_run_config(None, base))
    with pytest.raises(ConfigError, match="2 processes, 1 on this machine"):
        join_torchrun(load_run_config(None, base | {"train.devices": 2}))
    with pytest.raises(ConfigError, match="would train each process alone"):
        join_torchrun(load_run_config(None, base | {"train.strategy": "single_device", "train.num_nodes": 2}))
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun with one process: an ordinary single-process run
    assert join_torchrun(load_run_config(None, base)) is None


def test_num_nodes_is_a_positive_count():
    assert load_run_config(None, {"data.dataset": "d", "train.num_nodes": 2}).train.num_nodes == 2
    with pytest.raises(ConfigError, match="train.num_nodes"):
        load_run_config(None, {"data.dataset": "d", "train.num_nodes": 0})


def test_python_dash_m_mammocad_is_the_cli():
    """What ``torchrun ... -m mammocad train`` starts."""
    done = subprocess.run([sys.executable, "-m", "mammocad", "train", "--help"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "--resume" in done.stdout


@pytest.mark.slow  # four Python processes (two torchrun agents, two ranks) importing torch and Lightning
def test_two_torchrun_nodes_train_one_run_equal_to_a_single_process(dataset, tmp_path):
    task = load_task_data(config(dataset, tmp_path, **SAME_STEPS).data, config(dataset, tmp_path).preprocess)
    n_train, n_val = len(task.train), len(task.val)
    # DistributedSampler pads an odd split with a repeated image, which single-process metrics never count.
    assert n_train % 2 == 0 and n_val % 2 == 0, (n_train, n_val)

    single = train(config(dataset, tmp_path / "single", **SAME_STEPS, **{"train.batch_size": n_train}), progress=False)

    port = _free_port()
    nodes = [tmp_path / "node0", tmp_path / "node1"]
    overrides = {**SAME_STEPS, "train.batch_size": n_train // 2, "train.strategy": "ddp", "train.num_nodes": 2}
    overrides |= {"train.devices": 1, "output.runs_dir": "runs"}  # relative: each node's own working directory
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    processes = []
    for node_rank, node in enumerate(nodes):
        node.mkdir()
        command = [
            sys.executable, "-m", "torch.distributed.run",  # the torchrun command
            "--nnodes", "2", "--node-rank", str(node_rank), "--nproc-per-node", "1",
            "--master-addr", "127.0.0.1", "--master-port", str(port),
            "-m", "mammocad", "train", "--dataset", str(dataset),
            *(arg for key, value in overrides.items() for arg in ("--set", f"{key}={value}")),
        ]  # fmt: skip
        processes.append(
            subprocess.Popen(command, cwd=node, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=300)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for node_rank, (process, output) in enumerate(zip(processes, outputs, strict=True)):
        assert process.returncode == 0, f"node {node_rank}:\n{output[-4000:]}"

    assert not (nodes[1] / "runs").exists(), "only global rank 0 writes: the other machine gets no file"
    runs = list((nodes[0] / "runs").iterdir())
    assert len(runs) == 1, runs
    run = runs[0]
    assert f"run {Path('runs') / run.name}" in outputs[0].replace("\n", "") and "best epoch" not in outputs[1]

    state = json.loads((run / "run.json").read_text())
    assert state["status"] == "completed" and state["epochs_done"] == 2
    assert state["distributed"] == {
        "world_size": 2,
        "num_nodes": 2,
        "devices_per_node": 1,
        "strategy": "DDPStrategy",
        "cluster_environment": "TorchElasticEnvironment",
    }
    single_state = json.loads((single.run_dir / "run.json").read_text())
    assert single_state["distributed"]["world_size"] == 1
    # The same run directory as a single process writes: every file, every run.json field.
    assert _files(run) == _files(single.run_dir) and find_leftovers(run) == []
    assert set(state) == set(single_state)

    history, single_history = pd.read_csv(run / "history.csv"), single.history
    assert list(history["epoch"]) == [0, 1]
    # Same weights at each epoch (up to the order of the gradient all-reduce's float sums), whole val split
    # gathered from both ranks: the metrics of one process. Measured: val_loss 1.2e-7 relative, the rest equal.
    for column in [*VAL_METRICS, "train_loss"]:
        assert history[column].to_numpy() == pytest.approx(single_history[column].to_numpy(), rel=1e-5), column
    assert history["val_loss"].iloc[1] != pytest.approx(history["val_loss"].iloc[0], rel=1e-6), "it trained"
