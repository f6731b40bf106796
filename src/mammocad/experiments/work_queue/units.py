"""The work queue's table: units, claims fenced by their attempt, heartbeats, the database clock.

See :mod:`mammocad.experiments.work_queue` for the protocol (claim, heartbeat, final unit, failures).
"""

from __future__ import annotations

import contextlib
import random
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mammocad.errors import ConfigError, MammocadError
from mammocad.experiments.storage import database_url, mask_url
from mammocad.procs import owner_state, owner_token, parse_token

TABLE = "mammocad_work_units"
DEFAULT_GRACE_S = 180.0
DEFAULT_MAX_ATTEMPTS = 3


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
