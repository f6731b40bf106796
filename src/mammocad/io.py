"""Atomic file and directory writes: a crash never leaves a half-written file or dataset dir.

Temporary files (``.<name>.<owner>.<random>.tmp``) and staging folders
(``.<name>.<owner>.<random>.partial``) carry their owner's token (PID, process start time, host tag;
see :mod:`mammocad.procs`): what a killed command left is told apart from what a running one is
writing, listed by :func:`find_leftovers` and removed by :func:`remove_stale`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mammocad.procs import OwnerState, owner_state, owner_token, parse_token

log = logging.getLogger(__name__)

# mkstemp/mkdtemp create private (0600/0700) entries; finished files get the usual umask modes.
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK


def now_iso() -> str:
    """The local time as state files record it (``2026-11-30T01:45:47``)."""
    from datetime import datetime

    return datetime.now().isoformat(timespec="seconds")


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{owner_token()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Atomically write UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON (numpy scalars converted)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def atomic_write_png(path: str | Path, pixels: np.ndarray) -> Path:
    """Atomically write a 2-D uint8/uint16 array (or HxWx3 uint8) as PNG."""
    import cv2

    ok, buffer = cv2.imencode(".png", pixels)
    if not ok:
        raise ValueError(f"{path}: PNG encoding failed for array {pixels.shape} {pixels.dtype}")
    return atomic_write_bytes(path, buffer.tobytes())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


@contextlib.contextmanager
def staging_dir(final: str | Path) -> Iterator[Path]:
    """Yield a scratch directory next to ``final`` that becomes ``final`` only on success.

    ``final`` must not exist: runs and datasets are never overwritten. On any exception the
    scratch directory is removed, so a failed job leaves nothing behind; the scratch directories of
    killed jobs (their owner process is gone) beside ``final`` are removed first.
    """
    final = Path(final)
    if final.exists():
        raise FileExistsError(f"{final}: already exists; mammocad never overwrites a dataset or run")
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(find_leftovers(final.parent, recursive=False, kinds=("partial",)))
    scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}.{owner_token()}.", suffix=".partial", dir=final.parent))
    try:
        yield scratch
        if final.exists():
            raise FileExistsError(f"{final}: appeared while it was being written; not overwriting")
        os.chmod(scratch, DIR_MODE)
        os.rename(scratch, final)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def read_json_object(path: str | Path) -> dict[str, Any]:
    """A JSON file's top-level object; ``{}`` when the file is missing, unreadable or not an object
    (for optional run/dataset records that may not have been written yet)."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML/JSON config file as a dict; a missing, malformed or non-mapping file raises ConfigError."""
    import yaml

    from mammocad.errors import ConfigError

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file does not exist")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a config file")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file (config files are UTF-8 YAML/JSON)") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML/JSON ({exc})") from exc
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(values).__name__}")
    keys = [key for key in values if not isinstance(key, str)]
    if keys:
        raise ConfigError(f"{path}: setting names must be text, got {keys[0]!r}")
    return values


def unique_new_dir(base: str | Path) -> Path:
    """Create and return ``base``, or ``base-2``, ``base-3``...: the first that does not exist yet.

    ``mkdir`` without ``exist_ok`` is the atomic test, so two processes never get the same directory
    and nothing that exists is ever reused (runs and reports are never overwritten).
    """
    base = Path(base)
    candidate, n = base, 1
    while True:
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            n += 1
            candidate = base.with_name(f"{base.name}-{n}")


def update_json(path: str | Path, updates: dict[str, Any]) -> dict[str, Any]:
    """Merge ``updates`` into the JSON object at ``path`` (created if missing), atomically; returns it."""
    path = Path(path)
    state = json.loads(path.read_text()) if path.exists() else {}
    state.update(updates)
    atomic_write_json(path, state)
    return state


# .<name>.<pid>-<start>-<host>.<random>.(tmp|partial); names from before owner tokens: .<name>.<random>.<kind>
_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<token>\d+-\d+-[0-9a-f]{6})\.[A-Za-z0-9_]+\.(?P<kind>tmp|partial)")
_LEGACY = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.(?P<kind>tmp|partial)")


@dataclass(frozen=True)
class Leftover:
    """A temporary file or staging folder a command wrote; ``state`` says whether its owner still runs.

    ``gone``: the owner process ended without finishing (killed): safe to remove. ``live``: a running
    command is writing it. ``unknown``: written on another host or by an older mammocad (no owner
    recorded): never removed automatically.
    """

    path: Path
    kind: str  # "tmp" (a file being written) or "partial" (a dataset being staged, a checkpoint being saved)
    pid: int | None
    state: OwnerState
    folder: bool = False

    @property
    def stale(self) -> bool:
        return self.state == "gone"

    def describe(self, root: Path | None = None) -> str:
        """``path (what; whose)``, the path relative to ``root`` when given."""
        where = self.path
        if root is not None:
            with contextlib.suppress(ValueError):
                where = self.path.relative_to(root)
        what = "staging folder" if self.folder else "temporary file"
        if self.state == "gone":
            whose = f"left by PID {self.pid}, which is gone"
        elif self.state == "live":
            whose = f"being written by PID {self.pid}"
        elif self.pid is None:
            whose = "owner unknown (older mammocad): delete it by hand once no mammocad command runs"
        else:
            whose = f"PID {self.pid} on another host"
        return f"{where} ({what}; {whose})"


def leftover_of(path: Path) -> Leftover | None:
    """``path`` as a :class:`Leftover` when its name is a temporary/staging name, else None."""
    match = _LEFTOVER.fullmatch(path.name)
    if match is not None:
        owner = parse_token(match["token"])
        assert owner is not None
        return Leftover(path, match["kind"], owner.pid, owner_state(owner), path.is_dir())
    match = _LEGACY.fullmatch(path.name)
    if match is not None:
        return Leftover(path, match["kind"], None, "unknown", path.is_dir())
    return None


def find_leftovers(
    root: str | Path, recursive: bool = True, kinds: Iterable[str] = ("tmp", "partial")
) -> list[Leftover]:
    """Temporary files and staging folders under ``root`` (hidden names only), sorted by path.

    Staging folders are not searched inside (what they hold goes with them).
    """
    root = Path(root)
    wanted = set(kinds)
    found: list[Leftover] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                item = leftover_of(Path(entry.path))
                if item is not None:
                    if item.kind in wanted:
                        found.append(item)
                    continue
            if recursive:
                with contextlib.suppress(OSError):
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
    return sorted(found, key=lambda item: str(item.path))


def remove_stale(leftovers: Iterable[Leftover]) -> list[Leftover]:
    """Remove the leftovers whose owner is gone; returns those removed (live and unknown ones stay)."""
    removed = []
    for item in leftovers:
        if not item.stale:
            continue
        try:
            if item.folder and not item.path.is_symlink():
                shutil.rmtree(item.path)
            else:
                item.path.unlink()
        except FileNotFoundError:
            pass  # another command cleaned it first
        except OSError as exc:
            log.warning("could not remove %s: %s", item.path, exc)
            continue
        log.info("removed %s", item.describe())
        removed.append(item)
    return removed
