"""What every finished epoch writes into the run directory: history, weights, run state, trainer state."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
from lightning.pytorch.callbacks import Checkpoint

from mammocad.models.weights import save_weights
from mammocad.procs import owner_token
from mammocad.training.module import ClassifierModule
from mammocad.training.resume import plateau_stepped
from mammocad.training.run_dir import RunDir
from mammocad.training.run_state import update_run_state
from mammocad.training.throughput import StepTimer

#: Called with each epoch's history row once the epoch's files are written.
EpochFn = Callable[[dict[str, Any]], None]

HISTORY_COLUMNS = [
    "epoch",
    "train_loss",
    "train_acc",
    "train_f1_macro",
    "train_auc_macro",
    "val_loss",
    "val_acc",
    "val_f1_macro",
    "val_auc_macro",
    "train_kt_distance",
    "lr",
    "seconds",
    "train_images_per_s",
    "data_wait_s",
]
#: The history columns that are the module's epoch metrics (the rest are timings).
METRIC_COLUMNS = HISTORY_COLUMNS[1 : HISTORY_COLUMNS.index("seconds")]


class RunFiles(Checkpoint):
    """Writes history.csv, best/last safetensors, run.json and last.ckpt as training goes.

    A :class:`~lightning.pytorch.callbacks.Checkpoint`, so Lightning calls it last at each epoch's
    end, after EarlyStopping has counted the epoch: the checkpoint holds the epoch's whole state.
    """

    def __init__(
        self,
        run_dir: Path | RunDir,
        module: ClassifierModule,
        start_history: pd.DataFrame | None = None,
        on_epoch: EpochFn | None = None,
        timer: StepTimer | None = None,
    ) -> None:
        self.run = RunDir(run_dir)
        self.timer = timer or StepTimer()
        self.on_epoch = on_epoch
        self.module = module
        self.rows: list[dict[str, Any]] = [] if start_history is None else start_history.to_dict("records")
        self.best = min((r["val_loss"] for r in self.rows), default=float("inf"))
        self.best_epoch = int(min(self.rows, key=lambda r: r["val_loss"])["epoch"]) if self.rows else -1
        self.epoch_start = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.module.finish_train_epoch()
        if trainer.sanity_checking:
            return
        # Trainer state for --resume, written beside and renamed so a crash never leaves half a file;
        # the temporary name carries its owner (a killed run's is removed by the next --resume).
        # save_checkpoint is collective under DDP (every rank calls it, rank 0 writes).
        final = self.run.trainer_state_path
        partial = self.run.trainer_state_partial_path(f"{owner_token()}.{secrets.token_hex(4)}")
        with plateau_stepped(trainer):
            trainer.save_checkpoint(partial, weights_only=False)  # optimizer and loop state are needed to resume
        if not trainer.is_global_zero:
            return
        metrics = self.module.epoch_metrics
        row = {"epoch": trainer.current_epoch, **{k: metrics.get(k, float("nan")) for k in METRIC_COLUMNS}}
        row["seconds"] = round(time.perf_counter() - self.epoch_start, 3)
        row.update(self.timer.epoch)
        self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]] + [row]
        self.run.write_history(pd.DataFrame(self.rows, columns=HISTORY_COLUMNS).to_csv(index=False))
        save_weights(self.module.model, self.run.weights_path("last"))
        if row["val_loss"] < self.best:
            self.best, self.best_epoch = row["val_loss"], row["epoch"]
            save_weights(self.module.model, self.run.weights_path("best"))
        update_run_state(
            self.run, {"epochs_done": row["epoch"] + 1, "best_epoch": self.best_epoch, "best_val_loss": self.best}
        )
        os.replace(partial, final)
        if self.on_epoch is not None:
            self.on_epoch(row)


__all__ = ["HISTORY_COLUMNS", "METRIC_COLUMNS", "EpochFn", "RunFiles"]
