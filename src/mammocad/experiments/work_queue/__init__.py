"""A shared queue of work units for experiments spread over worker processes and machines.

``mammocad cv`` and ``mammocad ablate`` with ``--workers``/``--storage``/``--join`` put their folds
(ablate: variant × fold) in one table of an SQLAlchemy database (the kind of storage ``mammocad
tune`` uses: SQLite on one machine, PostgreSQL across machines), and every worker takes units from
it until none is left:

- **claim**: a unit that is ``pending``, or ``running`` for a worker whose heartbeat is older than
  the grace period (or whose process is provably gone: same host, PID ended), is taken with a
  compare-and-set ``UPDATE ... WHERE`` on the row read in the same transaction, checked by its row
  count (SQLite: ``BEGIN IMMEDIATE``, so claims are serialised). Each claim increments ``attempts``,
  which fences the claim: a heartbeat, ``done`` or ``failed`` of an older attempt changes nothing.
- **heartbeat**: a thread refreshes the claim's heartbeat every ``heartbeat_interval`` seconds
  (database clock, so machines with skewed clocks agree); a worker that finds its claim taken over
  stops the unit (:attr:`Lease.lost`).
- **final unit**: one unit per queue (the summary) becomes claimable only when every other unit is
  ``done``, so it runs exactly once, on the worker that finds it free last.
- a unit that raised is ``failed`` (with its error) and is not retried until :meth:`WorkQueue.retry_failed`
  (``--resume``); a unit whose workers died ``max_attempts`` times is ``failed`` as well.

Table ``mammocad_work_units`` (one row per unit; several queues may share a database)::

    queue, unit       the queue's id (a CV/ablation directory's) and the unit's name (primary key)
    position, final   claiming order; the final unit waits for all the others
    state             pending / running / done / failed
    worker            ``<host>/<pid>-<start>-<host tag>`` of the worker holding or last holding it
    heartbeat         the holder's last heartbeat (seconds, database clock)
    attempts          claims so far (the current claim's fencing number)
    run_dir, error    where the unit's result lives; why it failed

The modules: :mod:`.units` (the table and its claims), :mod:`.worker` (a worker's loop and leases),
:mod:`.processes` (local worker processes and their environment), :mod:`.experiment` (an experiment
directory's queue and the work-until-done loop of ``cv``/``ablate``).
"""

from __future__ import annotations

from mammocad.experiments.layout import QUEUE_DB
from mammocad.experiments.storage import mask_url
from mammocad.experiments.work_queue.experiment import (
    default_storage,
    open_recorded_queue,
    queue_record,
    start_queue_work,
    work_until_done,
)
from mammocad.experiments.work_queue.processes import (
    LABEL_ENV,
    PARENT_ENV,
    STORAGE_ENV,
    become_local_worker,
    gpu_groups,
    parse_gpus,
    start_local_workers,
    worker_environment,
)
from mammocad.experiments.work_queue.units import (
    DEFAULT_GRACE_S,
    DEFAULT_MAX_ATTEMPTS,
    TABLE,
    Claim,
    IncompleteWork,
    Unit,
    UnitLost,
    WorkQueue,
    heartbeat_interval_for,
    worker_gone,
    worker_id,
)
from mammocad.experiments.work_queue.worker import Lease, WorkerReport, describe_failures, run_worker

__all__ = [
    "DEFAULT_GRACE_S",
    "DEFAULT_MAX_ATTEMPTS",
    "LABEL_ENV",
    "PARENT_ENV",
    "QUEUE_DB",
    "STORAGE_ENV",
    "TABLE",
    "Claim",
    "IncompleteWork",
    "Lease",
    "Unit",
    "UnitLost",
    "WorkQueue",
    "WorkerReport",
    "become_local_worker",
    "default_storage",
    "describe_failures",
    "gpu_groups",
    "heartbeat_interval_for",
    "mask_url",
    "open_recorded_queue",
    "parse_gpus",
    "queue_record",
    "run_worker",
    "start_local_workers",
    "start_queue_work",
    "work_until_done",
    "worker_environment",
    "worker_gone",
    "worker_id",
]
