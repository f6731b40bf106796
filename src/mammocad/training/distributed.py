"""Training on several processes: what Lightning's launcher or torchrun started, and what the ranks share.

Lightning's DDP launcher re-runs the ``mammocad train`` command once per extra device; those workers
find the launching process's run directory in :data:`DDP_RUN_DIR_ENV`. torchrun starts every rank
itself, on one machine or several: the ranks join the process group first (:func:`join_torchrun`) and
take rank 0's run directory through it. Either way rank 0 alone writes the run's files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from io import StringIO
from typing import Any

import lightning as L
import pandas as pd
import torch

from mammocad.errors import ConfigError, MammocadError
from mammocad.training.config import RunConfig
from mammocad.training.run_dir import RunDir

#: The environment variable that hands the run directory to the DDP launcher's worker processes.
DDP_RUN_DIR_ENV = "MAMMOCAD_DDP_RUN_DIR"


def probe_trainer(config: RunConfig) -> L.Trainer:
    """A trainer built only to see which strategy and launcher Lightning picks for ``config``."""
    return L.Trainer(
        accelerator=config.train.accelerator,
        devices=config.train.devices,
        strategy=config.train.strategy,
        num_nodes=config.train.num_nodes,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def relaunches_command(config: RunConfig) -> bool:
    """True when Lightning would start the running command again once per extra device (DDP's script
    launcher, also what ``devices: auto`` picks on a multi-GPU machine).

    Such a fit cannot sit inside a loop of fits (cross-validation, tuning): the relaunched copies would
    rerun the whole loop. Loops run each such fit as its own ``mammocad train`` command instead.
    """
    from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    trainer = probe_trainer(config)
    return isinstance(trainer.strategy.launcher, _SubprocessScriptLauncher)


@dataclass
class TorchrunRanks:
    """This process's place in a torchrun job whose process group it has joined (:func:`join_torchrun`)."""

    global_rank: int
    world_size: int
    group: Any  # a gloo group: small CPU messages, whatever backend (NCCL) the training itself uses

    def from_rank_zero(self, text: str) -> str:
        """Rank 0's ``text``, on every rank (rank 0 gets its own back).

        A rank 0 that fails first (a refused resume, an unwritable run directory) closes its connections:
        the others stop with an error that points to its output, instead of waiting out a timeout.
        """
        box = [text]
        try:
            torch.distributed.broadcast_object_list(box, src=0, group=self.group)
        except RuntimeError as exc:  # gloo: "Connection closed by peer"
            raise MammocadError(
                f"rank {self.global_rank}: rank 0 ended before it named the run directory ({type(exc).__name__}: "
                "connection lost); the output of rank 0's machine says why"
            ) from exc
        return box[0]


def join_torchrun(config: RunConfig) -> TorchrunRanks | None:
    """Under torchrun with several processes: join the process group now, before a run directory is chosen.

    torchrun starts every rank itself, on one machine or several; unlike Lightning's own DDP launcher,
    no rank hands its run directory down to the others, so they take rank 0's through the process group.
    Lightning joins it as its fit would (backend, timeout, device); the fit then finds it joined and keeps
    it. None outside torchrun, or when torchrun started a single process.
    """
    from lightning.fabric.plugins.environments import TorchElasticEnvironment
    from lightning.pytorch.strategies import ParallelStrategy

    if not TorchElasticEnvironment.detect() or int(os.environ.get("WORLD_SIZE", "1")) < 2:
        if config.train.num_nodes > 1:
            # Lightning's own launcher would start each machine's ranks, and each machine its own run directory.
            raise ConfigError(
                f"train.num_nodes={config.train.num_nodes}: start the training with torchrun on every machine "
                f"(torchrun --nnodes {config.train.num_nodes} --nproc-per-node ... -m mammocad train ...); this "
                "process is not one of several torchrun processes"
            )
        return None
    processes, here = os.environ["WORLD_SIZE"], os.environ.get("LOCAL_WORLD_SIZE", "?")
    advice = (
        f"torchrun started {processes} processes, {here} on this machine: set train.num_nodes to torchrun's "
        "--nnodes and train.devices to its --nproc-per-node (train.strategy: ddp)"
    )
    probe = probe_trainer(config)
    strategy = probe.strategy
    if not isinstance(strategy, ParallelStrategy):
        raise ConfigError(f"{advice}; train.strategy {config.train.strategy} would train each process alone")
    # Lightning does not check this under torchrun: the ranks would join, and each DistributedSampler
    # would then cut the data for devices × num_nodes processes instead of torchrun's count.
    if probe.num_devices * probe.num_nodes != int(processes) or str(probe.num_devices) not in (here, "?"):
        raise ConfigError(
            f"{advice}; this config gives train.num_nodes={probe.num_nodes} × {probe.num_devices} device(s) "
            f"per machine = {probe.num_devices * probe.num_nodes} process(es)"
        )
    strategy.setup_environment()
    return TorchrunRanks(strategy.global_rank, strategy.world_size, torch.distributed.new_group(backend="gloo"))


def distributed_summary(trainer: L.Trainer) -> dict[str, Any]:
    """run.json's ``distributed``: how many processes trained the run, on how many machines, started how."""
    environment = getattr(trainer.strategy, "cluster_environment", None)
    return {
        "world_size": trainer.world_size,
        "num_nodes": trainer.num_nodes,
        "devices_per_node": trainer.num_devices,
        "strategy": type(trainer.strategy).__name__,  # DDPStrategy, SingleDeviceStrategy, ...
        # TorchElasticEnvironment: torchrun; LightningEnvironment: Lightning's own launcher (or one process)
        "cluster_environment": type(environment).__name__ if environment is not None else None,
    }


def history_from_rank_zero(trainer: L.Trainer, run_dir: RunDir) -> pd.DataFrame:
    """history.csv as rank 0 wrote it, on every rank.

    The other ranks never read the file: on another machine they may not see the run directory at all,
    and on this one they may read it before rank 0 has written the last epoch's row.
    """
    text = run_dir.history_path.read_text() if trainer.is_global_zero else ""
    if trainer.world_size > 1:
        text = trainer.strategy.broadcast(text, src=0)
    return pd.read_csv(StringIO(text))


__all__ = [
    "DDP_RUN_DIR_ENV",
    "TorchrunRanks",
    "distributed_summary",
    "history_from_rank_zero",
    "join_torchrun",
    "probe_trainer",
    "relaunches_command",
]
