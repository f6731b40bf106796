"""Per-epoch training speed and how long the model waited for data.

``StepTimer`` is a Lightning callback: between the end of one training step and the start of the
next, the trainer is fetching the next batch, so that gap is the data wait (a model that never
starves has a wait near zero). The history gets ``train_images_per_s`` and ``data_wait_s``.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


class StepTimer(Callback):
    """Times each training epoch's steps; read :attr:`epoch` after the epoch's last batch."""

    def __init__(self) -> None:
        self.epoch: dict[str, float] = {}
        self._last_end: float | None = None
        self._first_start: float | None = None
        self._images = 0
        self._wait = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The first batch's fetch (and the loader workers' start-up) counts as waiting for data.
        self._last_end = time.perf_counter()
        self._first_start = None
        self._images = 0
        self._wait = 0.0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, index: int) -> None:
        now = time.perf_counter()
        if self._last_end is not None:
            self._wait += now - self._last_end
        if self._first_start is None:
            self._first_start = now

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, index: int
    ) -> None:
        self._last_end = time.perf_counter()
        self._images += len(batch[0])
        span = self._last_end - (self._first_start or self._last_end)
        self.epoch = {
            "train_images_per_s": round(self._images * trainer.world_size / span, 3) if span > 0 else float("nan"),
            "data_wait_s": round(self._wait, 3),
        }
