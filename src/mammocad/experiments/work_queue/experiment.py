"""An experiment directory's queue: recorded in its JSON file, opened, worked on until done.

What ``cv`` and ``ablate`` share around their queue: the record their state file keeps (id, storage,
grace period), the default SQLite database in the directory, resuming failed units, starting local
workers, and working until no unit is left.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mammocad.errors import ConfigError
from mammocad.experiments.layout import QUEUE_DB
from mammocad.experiments.storage import mask_url
from mammocad.experiments.work_queue.processes import STORAGE_ENV, start_local_workers
from mammocad.experiments.work_queue.units import (
    DEFAULT_GRACE_S,
    DEFAULT_MAX_ATTEMPTS,
    IncompleteWork,
    WorkQueue,
)
from mammocad.experiments.work_queue.worker import Lease, describe_failures, run_worker
from mammocad.progress import ProgressFn


def queue_record(storage: str | None, grace_period: float = DEFAULT_GRACE_S) -> dict[str, Any]:
    """What an experiment's JSON file records about its queue: a new id, the storage (password masked;
    None: the default SQLite file in the directory), the grace period and the attempts allowed."""
    if grace_period <= 0:
        raise ConfigError(f"--grace-period {grace_period}: must be > 0 seconds")
    return {
        "id": uuid.uuid4().hex,
        "storage": None if storage is None else mask_url(storage),
        "grace_period_s": float(grace_period),
        "max_attempts": DEFAULT_MAX_ATTEMPTS,
    }


def default_storage(directory: Path) -> str:
    """``sqlite:///<directory>/queue.db`` (absolute)."""
    return f"sqlite:///{(Path(directory) / QUEUE_DB).resolve()}"


def open_recorded_queue(directory: Path, record: dict[str, Any], storage: str | None = None) -> WorkQueue:
    """The queue an experiment directory records; ``storage`` (the URL with its password) must name the
    same database. Refuses (ConfigError) another database, or a masked URL with no password given."""
    recorded = record.get("storage")
    expected = recorded or default_storage(directory)
    if storage is None:
        if recorded is not None and ":***@" in recorded:  # recorded with its password masked
            raise ConfigError(
                f"{directory}: its work queue is in {recorded}; give that URL with its password "
                f"(--storage URL or ${STORAGE_ENV})"
            )
        url = expected
    else:
        if not _same_database(storage, expected):
            raise ConfigError(
                f"{directory}: its work queue is in {mask_url(expected)}, not in {mask_url(storage)}; "
                f"give that --storage (or unset ${STORAGE_ENV})"
            )
        url = storage
    return WorkQueue(
        url,
        record["id"],
        record.get("grace_period_s", DEFAULT_GRACE_S),
        record.get("max_attempts", DEFAULT_MAX_ATTEMPTS),
    )


def _same_database(a: str, b: str) -> bool:
    if a.startswith("sqlite:///") and b.startswith("sqlite:///"):
        return (
            Path(a.removeprefix("sqlite:///")).expanduser().resolve()
            == Path(b.removeprefix("sqlite:///")).expanduser().resolve()
        )
    return mask_url(a) == mask_url(b)


def start_queue_work(
    queue: WorkQueue,
    status_file: Path,
    command: str,
    resume: bool,
    workers: int | None,
    gpus: Sequence[str] | None,
    storage: str | None,
    say: ProgressFn,
) -> bool:
    """What ``cv``/``ablate`` do before working on their queue: on ``resume`` put failed units back
    (and mark ``status_file`` running again), then start ``workers`` local worker processes
    (``mammocad COMMAND --join DIR``) when asked. Returns True when every unit is done already.
    """
    from mammocad.io import update_json

    if resume:
        retried = queue.retry_failed()
        if retried:
            say(f"trying again: {', '.join(retried)}")
            update_json(status_file, {"status": "running", "error": None})
    units = queue.units()
    if units and all(unit.state == "done" for unit in units):
        return True
    if workers is not None and (workers > 1 or gpus):
        codes = start_local_workers([command, "--join", str(status_file.parent)], workers, gpus, storage, say=say)
        for k, code in enumerate(codes):
            if code != 0:
                say(f"worker {k} exited with code {code}")
    return False


def work_until_done(
    queue: WorkQueue,
    do_unit: Callable[[Lease], str | None],
    status_file: Path,
    what: str,
    resume_command: str,
    say: ProgressFn,
) -> None:
    """Work on ``queue`` until no unit is left; when units failed, mark ``status_file`` interrupted and
    raise :class:`IncompleteWork` naming them and ``resume_command``."""
    from mammocad.io import update_json

    run_worker(queue, do_unit, say)
    units = queue.units()
    if all(unit.state == "done" for unit in units):
        return
    failures = describe_failures(units)
    update_json(status_file, {"status": "interrupted", "error": f"failed: {failures}"})
    raise IncompleteWork(f"{status_file.parent}: {what} failed: {failures}; `{resume_command}` trains them again")
