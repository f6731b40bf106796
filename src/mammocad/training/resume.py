"""What ``train --resume`` and the commands that read a run need after a crash or a kill.

- :class:`ResumeState`: a Lightning callback whose state (in ``last.ckpt``) holds the run's resolved
  config and every random state training draws from (Python ``random``, NumPy, torch CPU and CUDA,
  the training DataLoader's generator), restored before the first resumed epoch: a resumed run
  repeats the uninterrupted one (see docs: same weights under ``train.deterministic: true``).
- :func:`prepare_resume`: checks a run can be resumed (refusing with one message, before anything
  is written), marks a run whose training process is gone ``interrupted``, removes what the killed
  process left, and says whether the run continues from its checkpoint or starts again at epoch 0.
- :mod:`mammocad.training.status`: the same detection for predict/evaluate.
"""

from __future__ import annotations

import contextlib
import copy
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from mammocad.errors import MammocadError
from mammocad.io import Leftover, find_leftovers, remove_stale
from mammocad.procs import run_owner_state
from mammocad.progress import ProgressFn
from mammocad.training.config import flatten_dotted
from mammocad.training.run_dir import RunDir
from mammocad.training.status import reconcile_status

#: Config fields a resumed run may change: how long it trains and where/how fast it runs, never
#: what it learns (data, model, augmentation, optimisation).
RESUMABLE_FIELDS = (
    "train.epochs",
    "train.early_stopping_patience",
    "train.num_workers",
    "train.accelerator",
    "train.devices",
    "train.strategy",
    "train.num_nodes",
    "data.cache_in_memory",
    "output.",
    "predict.",  # how predictions are reported: not part of training
)


def config_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``field: saved -> current`` for each field that differs, leaving out :data:`RESUMABLE_FIELDS`."""
    old, new = flatten_dotted(saved), flatten_dotted(current)
    changes = []
    for key in sorted(set(old) | set(new)):
        if any(key == f or (f.endswith(".") and key.startswith(f)) for f in RESUMABLE_FIELDS):
            continue
        if old.get(key) != new.get(key):
            changes.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
    return changes


# ---------------------------------------------------------------------------------------------
# Random states in the checkpoint


def _numpy_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "name": name,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }


def _set_numpy_state(state: dict[str, Any]) -> None:
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state((state["name"], keys, state["pos"], state["has_gauss"], state["cached"]))


def collect_rng(generators: list[torch.Generator]) -> dict[str, Any]:
    """Every random state training draws from, in types ``torch.load(weights_only=True)`` reads."""
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
        "generators": [g.get_state() for g in generators],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], generators: list[torch.Generator]) -> None:
    """Put back what :func:`collect_rng` saved (a CUDA state only where as many devices are seen)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    _set_numpy_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)
    saved = state.get("generators", [])
    if len(saved) == len(generators):
        for generator, value in zip(generators, saved, strict=True):
            generator.set_state(value)


def loader_generators(*loaders: Any) -> list[torch.Generator]:
    """The distinct torch generators of DataLoaders and their samplers (shuffling, weighted sampling)."""
    found: dict[int, torch.Generator] = {}
    for loader in loaders:
        for owner in (loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
            generator = getattr(owner, "generator", None)
            if isinstance(generator, torch.Generator):
                found.setdefault(id(generator), generator)
            inner = getattr(owner, "sampler", None)
            generator = getattr(inner, "generator", None)
            if isinstance(generator, torch.Generator):
                found.setdefault(id(generator), generator)
    return list(found.values())


class ResumeState(Callback):
    """Saves the resolved config and the random states with each checkpoint; restores the states on resume.

    The states are read when the checkpoint is written (the end of an epoch, after validation) and
    put back in ``on_fit_start`` of the resumed fit: after the model, optimiser and loops are
    restored and before the first resumed epoch's DataLoader iterator draws from them.
    """

    def __init__(self, config: dict[str, Any], generators: list[torch.Generator]) -> None:
        self.config = config
        self.generators = generators
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"config": self.config, "rng": collect_rng(self.generators)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict.get("rng")

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is not None:
            restore_rng(self._pending, self.generators)
            self._pending = None


@contextlib.contextmanager
def plateau_stepped(trainer: L.Trainer) -> Iterator[None]:
    """Inside: epoch-wise ReduceLROnPlateau schedulers as Lightning leaves them once this epoch ends.

    A checkpoint written in ``on_train_epoch_end`` precedes Lightning's plateau-scheduler step for
    the epoch (it needs the epoch's metric), and a resumed fit never makes up that step: the saved
    scheduler would lag one epoch behind and the resumed run drift from the uninterrupted one.
    The step is taken here, the checkpoint written, and the schedulers and learning rates put back
    for Lightning's own step.
    """
    saved: list[tuple[Any, dict[str, Any], list[float]]] = []
    loop = trainer.fit_loop
    if not loop.restarting and loop.epoch_loop._num_ready_batches_reached():
        for config in trainer.lr_scheduler_configs:
            if not config.reduce_on_plateau or config.interval != "epoch":
                continue
            if (trainer.current_epoch + 1) % config.frequency:
                continue
            value = trainer.callback_metrics.get(config.monitor or "")
            if value is None:
                continue
            scheduler = config.scheduler
            optimizer = scheduler.optimizer
            saved.append((scheduler, copy.deepcopy(scheduler.state_dict()), [g["lr"] for g in optimizer.param_groups]))
            scheduler.step(float(value))
    try:
        yield
    finally:
        for scheduler, state, lrs in saved:
            scheduler.load_state_dict(state)
            for group, lr in zip(scheduler.optimizer.param_groups, lrs, strict=True):
                group["lr"] = lr


# ---------------------------------------------------------------------------------------------
# Resume


@dataclass
class ResumePlan:
    """What ``train --resume`` does: continue from ``checkpoint`` (None: start again at epoch 0)."""

    checkpoint: Path | None
    epoch: int = -1  # the checkpoint's epoch (history rows after it are dropped)
    removed: list[Leftover] = field(default_factory=list)
    kept: list[Leftover] = field(default_factory=list)


def prepare_resume(run_dir: Path, config: dict[str, Any], epochs: int, notify: ProgressFn) -> ResumePlan:
    """Check that ``run_dir`` can be resumed with ``config`` and clear what its killed process left.

    Raises :class:`MammocadError` (nothing written) when it cannot: not a run, still running,
    completed with nothing left to train, or its config changed in a field other than
    :data:`RESUMABLE_FIELDS`. ``epochs``: ``train.epochs`` of the resumed run.
    """
    run = RunDir(run_dir)
    if not run.has_state() or not run.has_config():
        raise MammocadError(f"{run_dir}: not a run directory (no {run.STATE}/{run.CONFIG}); nothing to resume")
    state = run.read_state()
    status = state.get("status")
    if status == "running":
        owner = run_owner_state(state)
        if owner == "live":
            raise MammocadError(
                f"{run_dir}: still being trained by PID {state.get('pid')} (started {state.get('started')}); "
                "nothing to resume"
            )
        if owner == "unknown" and state.get("pid") is not None:
            raise MammocadError(
                f"{run_dir}: being trained on host {state.get('host')} (PID {state.get('pid')}); resume it there"
            )
    done = int(state.get("epochs_done") or 0)
    if status == "completed" and (done >= epochs or state.get("early_stopped")):
        why = "stopped early" if state.get("early_stopped") else f"all {done} epochs trained"
        raise MammocadError(
            f"{run_dir}: already completed ({why}); nothing to resume. To train it longer raise train.epochs "
            f"in {run.config_path} (or --set train.epochs=N), or start a new run"
        )
    ckpt = run.trainer_state_path
    plan = ResumePlan(ckpt if ckpt.exists() else None)
    if plan.checkpoint is not None:
        saved = _read_checkpoint(plan.checkpoint)
        plan.epoch = int(saved.get("epoch", -1))
        resume_state = (saved.get("callbacks") or {}).get(ResumeState.__qualname__) or {}
        changes = config_changes(resume_state["config"], config) if "config" in resume_state else []
        if changes:
            raise MammocadError(
                f"{run_dir}: its config changed since the checkpoint ({'; '.join(changes)}); a resumed run "
                "must train the same thing (only train.epochs, devices, workers and output settings may "
                "change): undo the change or start a new run"
            )
        if status != "completed" and done > plan.epoch + 1:
            notify(f"epochs {plan.epoch + 1}..{done - 1} ended without a checkpoint; training them again")
    # Refusals are over: from here on the run is resumed.
    if status == "running":
        state = reconcile_status(run_dir, "train --resume")
        notify(f"run was interrupted: {state.get('reason')}")
    plan.removed = _remove_run_leftovers(run_dir)
    plan.kept = [item for item in find_leftovers(run_dir) if not item.stale]
    for item in plan.removed:
        notify(f"removed {item.describe(run_dir)}")
    for item in plan.kept:
        notify(f"left in place: {item.describe(run_dir)}")
    if plan.checkpoint is None:
        notify(
            f"{run_dir} has no checkpoint (its training ended before the first epoch finished): "
            "starting it again from epoch 0 in the same directory"
        )
        _clear_training_files(run_dir)
    return plan


def _read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise MammocadError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from exc


def _remove_run_leftovers(run_dir: Path) -> list[Leftover]:
    """Stale temporary files in the run (the training process is gone), incl. an unfinished checkpoint."""
    removed = remove_stale(find_leftovers(run_dir))
    legacy = RunDir(run_dir).legacy_trainer_state_partial_path
    if legacy.exists():
        legacy.unlink()
        removed.append(Leftover(legacy, "partial", None, "gone"))
    return removed


def _clear_training_files(run_dir: Path) -> None:
    """What a run that starts again from epoch 0 must not keep: history, weights, checkpoints."""
    run = RunDir(run_dir)
    run.history_path.unlink(missing_ok=True)
    shutil.rmtree(run.checkpoints_dir, ignore_errors=True)


__all__ = [
    "RESUMABLE_FIELDS",
    "ResumePlan",
    "ResumeState",
    "collect_rng",
    "config_changes",
    "loader_generators",
    "plateau_stepped",
    "prepare_resume",
    "restore_rng",
]
