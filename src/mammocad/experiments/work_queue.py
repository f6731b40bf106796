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
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mammocad.errors import ConfigError, MammocadError
from mammocad.experiments.storage import database_url, mask_url
from mammocad.procs import die_with_parent, owner_state, owner_token, parse_token

TABLE = "mammocad_work_units"
#: Environment variable read for ``--storage`` by ``cv`` and ``ablate`` (keeps passwords off the command line).
STORAGE_ENV = "MAMMOCAD_CV_STORAGE"
#: Set by :func:`start_local_workers` in each worker: the launching process (workers die with it).
PARENT_ENV = "MAMMOCAD_WORKER_PARENT"
#: Set by :func:`start_local_workers` in each worker: a short label for its progress lines.
LABEL_ENV = "MAMMOCAD_WORKER_LABEL"
DEFAULT_GRACE_S = 180.0
DEFAULT_MAX_ATTEMPTS = 3
#: The default database of a directory's queue (``sqlite:///<dir>/queue.db``).
QUEUE_DB = "queue.db"

ProgressFn = Callable[[str], None]


class IncompleteWork(MammocadError):
    """The queue ran dry with units failed (or abandoned too often): nothing more a worker can do."""


class UnitLost(MammocadError):
    """This worker's claim was taken over by another worker (its heartbeat had expired)."""


def heartbeat_interval_for(grace_period: float) -> float:
    """The heartbeat period for a grace period: three heartbeats fit in it (at most 60 s, like ``tune``)."""
    return max(0.1, min(60.0, grace_period / 3))


def worker_id() -> str:
    """``<host>/<pid>-<start>-<host tag>``: who holds a unit, and enough to tell a dead local worker."""
    return f"{socket.gethostname()}/{owner_token()}"


def worker_gone(worker: str | None) -> bool:
    """True when ``worker`` ran on this host and its process has ended (no need to wait for the grace)."""
    if not worker or "/" not in worker:
        return False
    owner = parse_token(worker.rsplit("/", 1)[1])
    return owner is not None and owner_state(owner) == "gone"


@dataclass(frozen=True)
class Unit:
    """One row of the queue."""

    name: str
    position: int
    final: bool
    state: str
    worker: str | None
    heartbeat_age_s: float | None  # seconds since the holder's last heartbeat (database clock)
    attempts: int
    run_dir: str | None
    error: str | None


@dataclass(frozen=True)
class Claim:
    """A unit this worker holds: ``attempt`` fences it; ``taken_from`` names a previous holder that stopped."""

    name: str
    attempt: int
    final: bool
    worker: str
    taken_from: str | None = None
    run_dir: str | None = None


class WorkQueue:
    """The units of one queue (``queue_id``) in the database at ``url``; tables created when missing.

    Args:
        url: an SQLAlchemy database URL (``sqlite:////abs/queue.db``, ``postgresql://user@host/db``).
        queue_id: the queue's key (several queues may share one database).
        grace_period: seconds without a heartbeat after which a running unit may be taken over.
        max_attempts: claims of one unit whose workers all stopped before it is marked failed.
    """

    def __init__(
        self,
        url: str,
        queue_id: str,
        grace_period: float = DEFAULT_GRACE_S,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        self.url = url
        self.queue_id = queue_id
        self.grace_period = float(grace_period)
        self.max_attempts = int(max_attempts)
        self._engine, self._table = _open(url)

    # -- transactions ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        """One transaction (SQLite: BEGIN IMMEDIATE, see :func:`_open`), retried by the caller on contention."""
        with self._engine.begin() as connection:
            yield connection

    def _retry(self, action: Callable[[Any], Any]) -> Any:
        """Run ``action(connection)`` in a transaction; transient lock/serialisation errors are retried."""
        from sqlalchemy.exc import OperationalError

        for attempt in range(1, 8):
            try:
                with self._transaction() as connection:
                    return action(connection)
            except OperationalError as exc:  # "database is locked" beyond the driver's timeout, dropped connection
                if attempt == 7:
                    raise MammocadError(f"queue {mask_url(self.url)}: {type(exc).__name__}: {exc}") from exc
                time.sleep(attempt * (0.2 + random.random() * 0.3))
        raise AssertionError("unreachable")

    def _now(self, connection: Any) -> float:
        return float(connection.execute(_now_query(self._engine.dialect.name)).scalar_one())

    def _where(self, name: str) -> Any:
        table = self._table
        return (table.c.queue == self.queue_id) & (table.c.unit == name)

    # -- setup and reading -------------------------------------------------------------------

    def add(self, names: Sequence[str], final: str | None = None) -> None:
        """Add the units that are not in the queue yet (idempotent: every worker may call it)."""
        from sqlalchemy import select

        wanted = [(name, False) for name in names] + ([(final, True)] if final else [])

        def insert(connection: Any) -> None:
            table = self._table
            present = set(connection.execute(select(table.c.unit).where(table.c.queue == self.queue_id)).scalars())
            rows = [
                {
                    "queue": self.queue_id,
                    "unit": name,
                    "position": position,
                    "final": is_final,
                    "state": "pending",
                    "attempts": 0,
                }
                for position, (name, is_final) in enumerate(wanted)
                if name not in present
            ]
            if rows:
                connection.execute(table.insert(), rows)

        from sqlalchemy.exc import IntegrityError

        try:
            self._retry(insert)
        except IntegrityError:  # another worker inserted the same units at the same moment
            self._retry(insert)

    def units(self) -> list[Unit]:
        """Every unit of the queue, in claiming order."""
        from sqlalchemy import select

        def read(connection: Any) -> list[Unit]:
            now = self._now(connection)
            table = self._table
            rows = connection.execute(
                select(table).where(table.c.queue == self.queue_id).order_by(table.c.position)
            ).all()
            return [
                Unit(
                    row.unit,
                    row.position,
                    bool(row.final),
                    row.state,
                    row.worker,
                    None if row.heartbeat is None else max(0.0, now - row.heartbeat),
                    row.attempts,
                    row.run_dir,
                    row.error,
                )
                for row in rows
            ]

        return self._retry(read)

    # -- claiming ----------------------------------------------------------------------------

    def claim(self, worker: str) -> Claim | None:
        """Take the first claimable unit for ``worker``; None when nothing is claimable now.

        Claimable: ``pending``; or ``running`` with a heartbeat older than the grace period or a
        holder that ran on this host and is gone (then ``taken_from`` names it); the final unit only
        once every other unit is ``done``. A stopped unit claimed ``max_attempts`` times is marked
        ``failed`` instead.
        """
        from sqlalchemy import select

        def take(connection: Any) -> Claim | None:
            table = self._table
            now = self._now(connection)
            rows = connection.execute(
                select(table).where(table.c.queue == self.queue_id).order_by(table.c.position)
            ).all()
            others_done = all(row.state == "done" for row in rows if not row.final)
            for row in rows:
                if row.final and not others_done:
                    continue
                stopped = row.state == "running" and (
                    row.heartbeat is None or now - row.heartbeat > self.grace_period or worker_gone(row.worker)
                )
                if row.state != "pending" and not stopped:
                    continue
                same_row = (
                    self._where(row.unit)
                    & (table.c.state == row.state)
                    & (table.c.attempts == row.attempts)
                    & (
                        (table.c.heartbeat == row.heartbeat)
                        if row.heartbeat is not None
                        else table.c.heartbeat.is_(None)
                    )
                )
                if stopped and row.attempts >= self.max_attempts:
                    error = (
                        f"its worker stopped (killed, crashed or lost the database) {row.attempts} times; "
                        f"last: {row.worker}"
                    )
                    connection.execute(table.update().where(same_row).values(state="failed", error=error))
                    continue
                attempt = row.attempts + 1
                updated = connection.execute(
                    table.update()
                    .where(same_row)
                    .values(state="running", worker=worker, heartbeat=now, attempts=attempt, error=None)
                )
                if updated.rowcount == 1:  # compare-and-set: 0 rows when another worker was first
                    return Claim(
                        row.unit, attempt, bool(row.final), worker, row.worker if stopped else None, row.run_dir
                    )
            return None

        return self._retry(take)

    def _fenced(self, claim: Claim, beat: bool = False, **values: Any) -> bool:
        """Update the claim's row (``beat``: its heartbeat too) if this worker still holds this attempt;
        False when another worker has taken it over."""
        table = self._table

        def update(connection: Any) -> bool:
            if beat:
                values["heartbeat"] = self._now(connection)
            condition = (
                self._where(claim.name)
                & (table.c.state == "running")
                & (table.c.worker == claim.worker)
                & (table.c.attempts == claim.attempt)
            )
            return connection.execute(table.update().where(condition).values(**values)).rowcount == 1

        return self._retry(update)

    def heartbeat(self, claim: Claim) -> bool:
        """Refresh the claim's heartbeat; False when another worker has taken the unit over."""
        return self._fenced(claim, beat=True)

    def finish(self, claim: Claim, run_dir: str | None = None) -> bool:
        """Mark the claimed unit done (with its run directory); False when it was taken over meanwhile."""
        values: dict[str, Any] = {"state": "done", "error": None}
        if run_dir is not None:
            values["run_dir"] = run_dir
        return self._fenced(claim, **values)

    def fail(self, claim: Claim, error: str) -> bool:
        """Mark the claimed unit failed with ``error``."""
        return self._fenced(claim, state="failed", error=error[:4000])

    def release(self, claim: Claim) -> bool:
        """Give the claimed unit back (pending, the attempt not counted): the worker was stopped by its user."""
        return self._fenced(claim, state="pending", attempts=claim.attempt - 1, heartbeat=None)

    def retry_failed(self) -> list[str]:
        """Put every failed unit back to pending with its attempts reset; their names."""
        from sqlalchemy import select

        def reset(connection: Any) -> list[str]:
            table = self._table
            where = (table.c.queue == self.queue_id) & (table.c.state == "failed")
            names = list(connection.execute(select(table.c.unit).where(where)).scalars())
            if names:
                connection.execute(table.update().where(where).values(state="pending", attempts=0, worker=None))
            return names

        return self._retry(reset)

    def close(self) -> None:
        self._engine.dispose()


def _now_query(dialect: str) -> Any:
    """``SELECT <seconds since the epoch>`` on the database's clock (one clock for every machine)."""
    from sqlalchemy import func, literal, select

    if dialect == "sqlite":
        return select((func.julianday("now") - 2440587.5) * 86400.0)
    if dialect == "postgresql":
        return select(func.extract("epoch", func.clock_timestamp()))
    if dialect in ("mysql", "mariadb"):
        return select(func.unix_timestamp(func.now(6)))
    return select(literal(time.time()))


def _open(url: str) -> tuple[Any, Any]:
    """Engine and table for ``url``; the table is created when missing (workers may race to create it)."""
    if "://" not in url:
        raise ConfigError(f"--storage {url!r}: expected a database URL such as sqlite:///queue.db or postgresql://...")
    from sqlalchemy import Boolean, Column, Float, Integer, MetaData, String, Table, Text, create_engine, event
    from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

    url = database_url(url)  # a plain postgresql:// URL opens with psycopg 3, as for tune
    sqlite = url.startswith("sqlite")
    if sqlite and url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
    try:
        engine = create_engine(
            url,
            # SQLite: writers wait for each other's transactions (up to 60 s) instead of failing at once.
            connect_args={"timeout": 60} if sqlite else {},
            pool_pre_ping=not sqlite,  # a long training between two queries may outlive a server connection
        )
    except (ArgumentError, NoSuchModuleError) as exc:
        raise ConfigError(f"--storage {mask_url(url)}: not a usable database URL ({exc})") from exc
    except ImportError as exc:
        raise ConfigError(f"storage {mask_url(url)}: database driver missing ({exc})") from exc
    if sqlite:
        # pysqlite opens transactions lazily (BEGIN DEFERRED, before the first write), so two claims could
        # read the same pending row. Take the write lock when the transaction starts instead.
        @event.listens_for(engine, "connect")
        def _autocommit_driver(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin_immediate(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    metadata = MetaData()
    table = Table(
        TABLE,
        metadata,
        Column("queue", String(64), primary_key=True),
        Column("unit", String(200), primary_key=True),
        Column("position", Integer, nullable=False),
        Column("final", Boolean, nullable=False, default=False),
        Column("state", String(16), nullable=False, default="pending"),
        Column("worker", String(300)),
        Column("heartbeat", Float),
        Column("attempts", Integer, nullable=False, default=0),
        Column("run_dir", String(1000)),
        Column("error", Text),
    )
    for attempt in range(1, 6):
        try:
            metadata.create_all(engine, checkfirst=True)
            break
        except DBAPIError as exc:
            # Workers started together race to create the table (the loser gets an error): look again.
            if attempt == 5:
                raise MammocadError(f"storage {mask_url(url)}: cannot open ({type(exc).__name__}: {exc})") from exc
            time.sleep(attempt * (0.2 + random.random() * 0.3))
        except ImportError as exc:
            raise ConfigError(f"storage {mask_url(url)}: database driver missing ({exc})") from exc
    return engine, table


# ---------------------------------------------------------------------------------------------
# The queue of an experiment directory


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


# ---------------------------------------------------------------------------------------------
# A worker


class Lease:
    """A claim kept alive by a heartbeat thread; :attr:`lost` turns true when another worker took it over."""

    def __init__(self, queue: WorkQueue, claim: Claim, interval: float) -> None:
        self.queue = queue
        self.claim = claim
        self._interval = interval
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{claim.name}", daemon=True)

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def check(self) -> None:
        """Raise :class:`UnitLost` when the unit was taken over (call it between steps of long work)."""
        if self.lost:
            raise UnitLost(f"{self.claim.name}: taken over by another worker (this worker's heartbeat had expired)")

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                if not self.queue.heartbeat(self.claim):
                    self._lost.set()
                    return
            except Exception:  # a database hiccup: try again at the next beat; the grace covers a few misses
                continue

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class WorkerReport:
    """What one worker did: units it finished, units that failed on it, and whether the queue is complete."""

    worker: str
    finished: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)
    complete: bool = False


def run_worker(
    queue: WorkQueue,
    do_unit: Callable[[Lease], str | None],
    progress: ProgressFn | None = None,
    worker: str | None = None,
    heartbeat_interval: float | None = None,
    poll_interval: float | None = None,
) -> WorkerReport:
    """Claim and run units until the queue has nothing left for this worker; returns what it did.

    ``do_unit(lease)`` does ``lease.claim``'s unit and returns its run directory (recorded in the
    queue), raising :class:`UnitLost` (see :meth:`Lease.check`) when the lease was lost. An exception
    marks the unit ``failed`` and the worker goes on with the next unit; KeyboardInterrupt/SystemExit
    gives the unit back (``pending``) and ends the worker. While other workers still hold units, the
    worker waits (polling), so that it can take over a unit whose worker stops and run the final unit.
    """
    say = progress or (lambda _message: None)
    me = worker or worker_id()
    beat = heartbeat_interval or heartbeat_interval_for(queue.grace_period)
    poll = poll_interval or max(0.2, min(5.0, queue.grace_period / 6))
    report = WorkerReport(me)
    waiting_said = False
    while True:
        claim = queue.claim(me)
        if claim is None:
            units = queue.units()
            running = [u for u in units if u.state == "running"]
            if running:
                if not waiting_said:
                    say(f"waiting: {', '.join(u.name for u in running)} running on other workers")
                    waiting_said = True
                time.sleep(poll)
                continue
            report.complete = bool(units) and all(u.state == "done" for u in units)
            return report
        waiting_said = False
        if claim.taken_from:
            say(f"{claim.name}: taking over from {claim.taken_from} (it stopped sending heartbeats)")
        with Lease(queue, claim, beat) as lease:
            try:
                run_dir = do_unit(lease)
                lease.check()
            except UnitLost as exc:
                say(str(exc))
                report.lost.append(claim.name)
                continue
            except (KeyboardInterrupt, SystemExit):
                with contextlib.suppress(Exception):
                    queue.release(claim)
                raise
            except Exception as exc:
                if lease.lost:  # the unit's own code stopped because the lease was lost (e.g. StopTraining)
                    say(f"{claim.name}: taken over by another worker (this worker's heartbeat had expired)")
                    report.lost.append(claim.name)
                    continue
                error = f"{type(exc).__name__}: {exc}"
                if queue.fail(claim, error):
                    report.failed[claim.name] = error
                    say(f"{claim.name}: failed ({error})")
                else:
                    report.lost.append(claim.name)
                continue
        if queue.finish(claim, run_dir):
            report.finished.append(claim.name)
        else:
            say(f"{claim.name}: another worker took it over meanwhile; this worker's result is not used")
            report.lost.append(claim.name)


def describe_failures(units: Sequence[Unit]) -> str:
    """``fold-1 (RuntimeError: ...); fold-3 (...)`` for the failed units."""
    return "; ".join(f"{u.name} ({u.error or 'no error recorded'})" for u in units if u.state == "failed")


# ---------------------------------------------------------------------------------------------
# Local worker processes


def parse_gpus(text: str | None) -> list[str] | None:
    """``"0,1,3"`` -> ``["0", "1", "3"]`` (ASCII digits only); None/empty -> None."""
    if text is None or not text.strip():
        return None
    ids = [part.strip() for part in text.split(",")]
    bad = [part for part in ids if not (part.isascii() and part.isdigit())]
    if bad:
        raise ConfigError(f"--gpus {text!r}: expected GPU numbers separated by commas, e.g. 0,1,2,3 (got {bad[0]!r})")
    if len(set(ids)) != len(ids):
        raise ConfigError(f"--gpus {text!r}: a GPU is listed twice")
    return ids


def gpu_groups(gpus: Sequence[str], workers: int) -> list[list[str]]:
    """The GPUs each of ``workers`` sees: consecutive equal groups, or shared round-robin when fewer GPUs.

    8 GPUs, 4 workers: ``[0,1] [2,3] [4,5] [6,7]``; 2 GPUs, 4 workers: ``[0] [1] [0] [1]``.
    """
    if len(gpus) >= workers:
        if len(gpus) % workers:
            raise ConfigError(
                f"--gpus: {len(gpus)} GPUs cannot be split evenly over {workers} workers "
                "(give a multiple of --workers, or fewer GPUs)"
            )
        size = len(gpus) // workers
        return [list(gpus[k * size : (k + 1) * size]) for k in range(workers)]
    return [[gpus[k % len(gpus)]] for k in range(workers)]


def worker_environment(label: str, gpus: Sequence[str] | None, workers: int, storage: str | None) -> dict[str, str]:
    """The environment of one local worker process: its GPUs, CPU threads, label, parent and storage."""
    env = dict(os.environ)
    env[PARENT_ENV] = str(os.getpid())
    env[LABEL_ENV] = label
    if storage is not None:
        env[STORAGE_ENV] = storage  # through the environment: a password stays out of the process list
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    if "OMP_NUM_THREADS" not in env:
        # N workers on one machine would each start a thread per core; share the cores between them.
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
    return env


def start_local_workers(
    arguments: Sequence[str],
    workers: int,
    gpus: Sequence[str] | None = None,
    storage: str | None = None,
    say: ProgressFn | None = None,
) -> list[int]:
    """Run ``workers`` copies of ``mammocad ARGUMENTS`` (each a worker) and wait for them; exit codes.

    Each worker gets its share of ``gpus`` (``CUDA_VISIBLE_DEVICES``, see :func:`gpu_groups`), of the
    CPU cores (``OMP_NUM_THREADS`` unless set), a label for its lines and the storage URL through the
    environment; it dies with this process. Ctrl+C (or any error here) stops the workers: they give
    their units back and exit.
    """
    groups = gpu_groups(gpus, workers) if gpus else [None] * workers
    command = [sys.executable, "-m", "mammocad.cli.main", *arguments]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for k in range(workers):
            env = worker_environment(f"worker {k}", groups[k], workers, storage)
            if say is not None:
                seen = f" (CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']})" if groups[k] else ""
                say(f"starting worker {k}{seen}")
            processes.append(subprocess.Popen(command, env=env))
        return [process.wait() for process in processes]
    except BaseException:
        for process in processes:
            if process.poll() is None:
                with contextlib.suppress(OSError):
                    process.send_signal(signal.SIGINT)
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        raise


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


def become_local_worker() -> str:
    """Set up a worker started by :func:`start_local_workers` (dies with its parent); its label ('' if none)."""
    parent = os.environ.get(PARENT_ENV)
    if parent and parent.isdigit():
        die_with_parent(int(parent))
    return os.environ.get(LABEL_ENV, "")


__all__ = [
    "DEFAULT_GRACE_S",
    "DEFAULT_MAX_ATTEMPTS",
    "STORAGE_ENV",
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
