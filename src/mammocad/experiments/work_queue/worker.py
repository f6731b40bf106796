"""A worker: claims units one after another and keeps each claim alive with a heartbeat thread."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mammocad.experiments.work_queue.units import Claim, Unit, UnitLost, WorkQueue, heartbeat_interval_for, worker_id
from mammocad.progress import ProgressFn


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
