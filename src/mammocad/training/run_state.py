"""A training run's state in ``run.json`` as training goes: started, each epoch, and how it ended.

``status`` is ``running`` from the start to the end of the fit, then ``completed``, ``stopped``
(:class:`StopTraining`), ``interrupted`` (Ctrl-C, SIGTERM) or ``failed``. A killed run keeps
``running``; :mod:`mammocad.training.status` finds its process gone. Only rank 0 writes.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.utilities.exceptions import SIGTERMException

from mammocad.errors import MammocadError
from mammocad.io import now_iso
from mammocad.procs import run_owner_fields
from mammocad.training.config import RunConfig
from mammocad.training.data import TaskData
from mammocad.training.run_dir import RunDir

#: What a (re)started run's earlier end left in ``run.json`` and no longer holds.
ENDING_FIELDS = ("ended", "error", "reason", "early_stopped")
#: What a run that starts again at epoch 0 trained before, also dropped.
PROGRESS_FIELDS = ("epochs_done", "best_epoch", "best_val_loss", "film_stage")


class StopTraining(MammocadError):
    """Raised from an ``on_epoch`` callback to end a run early on purpose (e.g. a pruned trial).

    The run is marked ``stopped`` (not ``failed``) with the message as its reason; the exception
    propagates to the caller of :func:`~mammocad.training.run.train`.
    """


def update_run_state(run: RunDir, updates: dict[str, Any], drop: tuple[str, ...] = ()) -> None:
    """Merge ``updates`` into ``run.json`` and remove the ``drop`` keys."""
    state = run.update_state(updates)
    if any(key in state for key in drop):
        run.write_state({k: v for k, v in state.items() if k not in drop})


def record_start(
    run: RunDir,
    config: RunConfig,
    task: TaskData,
    *,
    precision: str,
    resumed: bool,
    restart: bool,
    masked: int,
    patch_stage: dict[str, Any] | None,
) -> None:
    """``running``, with the training process, the data's classes and counts and how it trains.

    ``resumed``: continued by ``--resume``; ``restart``: a resumed run without a checkpoint, starting
    again at epoch 0. ``masked``: training images with a lesion mask (knowledge transfer);
    ``patch_stage``: the lesion-aware model's patch summary.
    """
    now = now_iso()
    update_run_state(
        run,
        {
            "status": "running",
            "started": now,
            **run_owner_fields(),
            **({"resumed": now} if resumed else {}),
            **({"restarted": now} if restart else {}),
            "classes": task.classes,
            "counts": {s: task.counts(s) for s in ("train", "val", "test")},
            "task": config.data.task,
            "precision": precision,
            **({"kt_masked_train_images": masked} if config.train.kt_beta > 0 else {}),
            **({"refit": True} if config.data.refit else {}),
            **({"patch_stage": patch_stage} if patch_stage is not None else {}),
        },
        drop=ENDING_FIELDS + (PROGRESS_FIELDS if restart else ()),
    )


def record_failure(run: RunDir, exc: BaseException) -> None:
    """How the fit ended when it raised: ``stopped``, ``interrupted`` (resumable like a kill) or ``failed``."""
    ended = {"ended": now_iso()}
    if isinstance(exc, StopTraining):
        update_run_state(run, {"status": "stopped", "reason": str(exc), **ended})
    elif isinstance(exc, KeyboardInterrupt | SystemExit | SIGTERMException):
        # Ctrl-C (Lightning turns it into SystemExit) or SIGTERM: resumable like a kill.
        reason = f"stopped by {'SIGTERM' if isinstance(exc, SIGTERMException) else 'an interrupt (Ctrl-C)'}"
        update_run_state(run, {"status": "interrupted", "reason": reason, **ended})
    else:
        update_run_state(run, {"status": "failed", "error": f"{type(exc).__name__}: {exc}", **ended})


def record_completion(run: RunDir, stopped_early: bool) -> None:
    """``completed``, and whether early stopping ended it."""
    update_run_state(
        run, {"status": "completed", "ended": now_iso(), **({"early_stopped": True} if stopped_early else {})}
    )


__all__ = ["StopTraining", "record_completion", "record_failure", "record_start", "update_run_state"]
