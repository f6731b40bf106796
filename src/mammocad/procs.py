"""Process ownership and lifetime.

- Who owns a temporary file, a staging folder or a running run: :func:`current_owner` (PID, process
  start time, host), written into temporary names (:func:`owner_token`) and ``run.json``, and
  :func:`owner_state` to tell a live owner from a dead one (a reused PID has another start time).
- Workers that end with the process that started them: :func:`die_with_parent`, called first thing
  in a worker (a pool's initializer, a DataLoader's ``worker_init_fn``), so a ``kill -9`` of a
  command never leaves its worker processes running.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import multiprocessing
import os
import re
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Literal

#: ``prctl`` option: the signal this process gets when the thread that created it ends (Linux).
_PR_SET_PDEATHSIG = 1
#: How often the portable watcher looks at the parent (seconds).
WATCH_INTERVAL_S = 0.5

OwnerState = Literal["live", "gone", "unknown"]


@dataclass(frozen=True)
class Owner:
    """A process: PID, start time (platform clock ticks; 0 when unknown) and a short host tag."""

    pid: int
    started: int
    host: str

    @property
    def token(self) -> str:
        """``<pid>-<start>-<host tag>``: what temporary names carry (no dots, so names stay parseable)."""
        return f"{self.pid}-{self.started}-{self.host}"


_TOKEN = re.compile(r"(?P<pid>\d+)-(?P<started>\d+)-(?P<host>[0-9a-f]{6})")
_cached: tuple[int, Owner] | None = None


def host_tag(hostname: str | None = None) -> str:
    """Six hex digits naming this host (a hash: temporary names never carry the host name itself)."""
    name = socket.gethostname() if hostname is None else hostname
    return hashlib.blake2s(name.encode(), digest_size=3).hexdigest()


def current_owner() -> Owner:
    """This process (recomputed after a fork: a worker owns what it writes)."""
    global _cached
    pid = os.getpid()
    if _cached is None or _cached[0] != pid:
        _cached = (pid, Owner(pid, process_started(pid) or 0, host_tag()))
    return _cached[1]


def owner_token() -> str:
    """This process's token (see :attr:`Owner.token`)."""
    return current_owner().token


def parse_token(text: str) -> Owner | None:
    """The owner named by a token, or None when ``text`` is not one."""
    match = _TOKEN.fullmatch(text)
    if match is None:
        return None
    return Owner(int(match["pid"]), int(match["started"]), match["host"])


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks since boot) from ``/proc/<pid>/stat``; None without /proc."""
    try:
        data = open(f"/proc/{pid}/stat", "rb").read()  # noqa: SIM115 - one read, closed by refcount
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: fields 3.. follow the last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    return fields[0].decode(), int(fields[19])


def process_started(pid: int) -> int | None:
    """When process ``pid`` started (an opaque integer, equal for the same process), None if unknown."""
    stat = _proc_stat(pid)
    if stat is not None:
        return stat[1]
    try:
        import psutil  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        return int(psutil.Process(pid).create_time() * 100)
    except Exception:
        return None


def pid_alive(pid: int, started: int = 0) -> bool:
    """True while process ``pid`` runs (and, when ``started`` is given, is the same process).

    A zombie (ended, not yet reaped) counts as gone; a PID taken over by a newer process too.
    """
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would signal the process there; ask psutil when present
        try:
            import psutil  # type: ignore[import-not-found]
        except ImportError:
            return True
        return bool(psutil.pid_exists(pid))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    except OSError:
        return False
    stat = _proc_stat(pid)
    if stat is not None:
        state, start = stat
        if state in ("Z", "X"):
            return False
        if started and start != started:
            return False
    elif started:
        now = process_started(pid)
        if now is not None and now != started:
            return False
    return True


def owner_state(owner: Owner) -> OwnerState:
    """``live``, ``gone``, or ``unknown`` when the owner ran on another host (nothing to ask there)."""
    if owner.host != host_tag():
        return "unknown"
    return "live" if pid_alive(owner.pid, owner.started) else "gone"


def run_owner_fields() -> dict[str, object]:
    """What ``run.json`` records about the process training a run."""
    owner = current_owner()
    return {"pid": owner.pid, "pid_started": owner.started, "host": socket.gethostname()}


def run_owner_state(state: dict[str, object]) -> OwnerState:
    """Whether the process named in a ``run.json`` (see :func:`run_owner_fields`) still runs."""
    pid = state.get("pid")
    if not isinstance(pid, int):
        return "unknown"  # written by an older mammocad
    host = state.get("host")
    tag = host_tag(str(host)) if isinstance(host, str) else host_tag()
    started = state.get("pid_started")
    return owner_state(Owner(pid, started if isinstance(started, int) else 0, tag))


def die_with_parent(parent: int | None = None, *, use_prctl: bool = True) -> None:
    """End this process (SIGKILL) as soon as its parent ends; call it first thing in a worker.

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, the kernel's own "kill me with my parent". Elsewhere
    (or with ``use_prctl=False``): a daemon thread that exits the process once the parent PID changes
    or the parent is gone (checked every :data:`WATCH_INTERVAL_S` seconds). ``parent``: the PID that
    started this worker (default: the multiprocessing parent, else the current parent); a worker whose
    parent is already gone exits at once.
    """
    if parent is None:
        mp_parent = multiprocessing.parent_process()
        parent = mp_parent.pid if mp_parent is not None and mp_parent.pid else os.getppid()
    parent_started = process_started(parent) or 0
    armed = use_prctl and _set_pdeathsig()
    if not pid_alive(parent, parent_started):  # it ended before the signal was armed
        os._exit(1)
    if not armed:
        _watch_parent(parent, parent_started)


def _set_pdeathsig() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    return False


def _watch_parent(parent: int, parent_started: int) -> None:
    first_ppid = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(WATCH_INTERVAL_S)
            if os.getppid() != first_ppid or not pid_alive(parent, parent_started):
                os._exit(1)

    threading.Thread(target=watch, name="mammocad-parent-watch", daemon=True).start()


__all__ = [
    "Owner",
    "current_owner",
    "die_with_parent",
    "host_tag",
    "owner_state",
    "owner_token",
    "parse_token",
    "pid_alive",
    "process_started",
    "run_owner_fields",
    "run_owner_state",
]
