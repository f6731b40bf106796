"""Atomic file and directory writes: a crash never leaves a half-written file or dataset dir."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

# mkstemp/mkdtemp create private (0600/0700) entries; finished files get the usual umask modes.
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
    scratch directory is removed, so a failed job leaves nothing behind.
    """
    final = Path(final)
    if final.exists():
        raise FileExistsError(f"{final}: already exists; mammocad never overwrites a dataset or run")
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        yield scratch
        if final.exists():
            raise FileExistsError(f"{final}: appeared while it was being written; not overwriting")
        os.chmod(scratch, DIR_MODE)
        os.rename(scratch, final)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML/JSON config file as a dict; a missing, malformed or non-mapping file raises ConfigError."""
    import yaml

    from mammocad.errors import ConfigError

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file does not exist")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML/JSON ({exc})") from exc
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(values).__name__}")
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
