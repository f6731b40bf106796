"""A run's status after a kill: ``running`` in ``run.json`` with its training process gone.

No Lightning here: predict, evaluate, serve and the dashboard read runs through it.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from pathlib import Path
from typing import Any

from mammocad.procs import run_owner_state
from mammocad.training.run_dir import RunDir


def reconcile_status(run_dir: str | Path, found_by: str, write: bool = True) -> dict[str, Any]:
    """``run.json``, with a ``running`` status whose process is gone turned into ``interrupted``.

    A SIGKILL (or a power cut) leaves ``running`` behind; the next command that reads the run
    (``found_by``) records what happened. ``write=False`` only reports it.
    """
    run_dir = Path(run_dir)
    state = RunDir(run_dir).read_state()
    if state.get("status") != "running" or run_owner_state(state) != "gone":
        return state
    epochs = int(state.get("epochs_done") or 0)
    when = "before its first checkpoint" if epochs == 0 else f"after {epochs} epoch(s)"
    updates = {
        "status": "interrupted",
        "reason": (
            f"training process {state.get('pid')} ended without finishing the run (killed?) {when}; "
            f"found by `mammocad {found_by}` at {datetime.now().isoformat(timespec='seconds')}"
        ),
    }
    if write:
        with contextlib.suppress(OSError):  # a read-only run directory is still readable
            RunDir(run_dir).update_state(updates)
    return {**state, **updates}


def no_checkpoint_message(run_dir: str | Path, which: str) -> str | None:
    """Why a run has no weights yet and what to do, when its status explains it (else None)."""
    run_dir = Path(run_dir)
    state = reconcile_status(run_dir, "predict", write=False)
    status = state.get("status")
    restart = f"restart it with `mammocad train --resume {run_dir}`"
    if status == "running":
        owner = run_owner_state(state)
        if owner == "live":
            return f"{run_dir}: no checkpoint yet: it is still training its first epoch (PID {state.get('pid')})"
        if state.get("pid") is not None:
            return f"{run_dir}: no checkpoint yet: it is training on host {state.get('host')} (PID {state.get('pid')})"
        return (
            f"{run_dir}: no checkpoint: {RunDir.STATE} says running but names no process (an older mammocad); "
            f"if it is no longer training, {restart}"
        )
    resumable = RunDir(run_dir).can_resume()
    if status == "interrupted" and not resumable:
        return f"{run_dir}: no checkpoint: training was interrupted before its first epoch finished; {restart}"
    if status == "failed" and not resumable:
        return f"{run_dir}: no checkpoint: training failed before its first epoch finished ({state.get('error')}); {restart}"
    if status in ("interrupted", "failed", "stopped"):
        return f"{run_dir}: no {which} weights: training {status} before writing them; {restart}"
    return None


__all__ = ["no_checkpoint_message", "reconcile_status"]
