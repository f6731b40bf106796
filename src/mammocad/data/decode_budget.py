"""The decode budget: what decoding an image will allocate, estimated from its header, and the limit on it.

Every reader estimates from the header what decoding and preprocessing the image will allocate
(:func:`decode_estimate`) and refuses it, before allocating anything, when that is over the budget
(``budget_mb`` argument, else ``$MAMMOCAD_DECODE_BUDGET_MB``, else :data:`DEFAULT_DECODE_BUDGET_MB`).
Decodes running at once share the budget through a :class:`DecodeGate`. Any failure of a
third-party decoder becomes an :class:`~mammocad.errors.ImageReadError` (:func:`decoder_failures`).
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from mammocad.data.pixels import ImageInfo
from mammocad.defaults import DEFAULT_DECODE_BUDGET_MB
from mammocad.errors import ConfigError, ImageReadError

MIB = 1 << 20
#: Environment variable that overrides :data:`DEFAULT_DECODE_BUDGET_MB` (a number of MiB).
DECODE_BUDGET_ENV = "MAMMOCAD_DECODE_BUDGET_MB"
#: Bytes per pixel that decoding and preprocessing allocate on top of the file's bytes and the decoded
#: samples: the grey/LUT output (up to 2), the float32 [0, 1] copy serving keeps for heatmaps (4) and
#: row-block temporaries. Measured peaks of ``read_image`` + ``preprocess_image`` + ``to_unit``
#: (VmHWM over a warmed-up process): 6.0 for a 7745x7745 16-bit RGB PNG, 4.0 for 16-bit grey PNG,
#: 4.2 for 12-bit DICOMs with a window and for RLE CBIS-DDSM films; 8 leaves a third as margin.
WORK_BYTES_PER_PIXEL = 8
#: Failures that are the user's or the interpreter's, never a decoder's: they always propagate.
NEVER_CAUGHT = (KeyboardInterrupt, SystemExit, GeneratorExit)


def decode_budget_mb(budget_mb: float | None = None) -> float:
    """The decode budget in MiB: ``budget_mb`` when given, else ``$MAMMOCAD_DECODE_BUDGET_MB``, else the default.

    Raises :class:`~mammocad.errors.ConfigError` for a value that is not a positive number.
    """
    source, value = "decode budget", budget_mb
    if value is None:
        text = os.environ.get(DECODE_BUDGET_ENV, "").strip()
        if not text:
            return float(DEFAULT_DECODE_BUDGET_MB)
        source = f"${DECODE_BUDGET_ENV}"
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"{source} must be a number of MiB, got {text[:40]!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{source} must be a positive number of MiB, got {value}")
    return float(value)


@contextlib.contextmanager
def decode_budget_override(budget_mb: float | None) -> Iterator[None]:
    """Within the block, ``$MAMMOCAD_DECODE_BUDGET_MB`` is ``budget_mb`` (None: unchanged), so every
    reader, the importers' own probes and worker processes started inside included, uses it."""
    if budget_mb is None:
        yield
        return
    decode_budget_mb(budget_mb)  # validate before changing anything
    before = os.environ.get(DECODE_BUDGET_ENV)
    os.environ[DECODE_BUDGET_ENV] = repr(float(budget_mb))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(DECODE_BUDGET_ENV, None)
        else:
            os.environ[DECODE_BUDGET_ENV] = before


def decode_estimate(info: ImageInfo, file_size: int = 0) -> int:
    """Bytes that reading the image described by ``info`` and preprocessing it will allocate at most.

    The file's bytes (readers hold the whole file), the decoder's output, and
    :data:`WORK_BYTES_PER_PIXEL` per pixel for conversion, preprocessing and serving.
    """
    return int(file_size) + info.pixels * (info.bytes_per_pixel() + WORK_BYTES_PER_PIXEL)


def format_mib(nbytes: float) -> str:
    """Bytes as whole MiB, rounded up, with thousands separators (for error messages)."""
    return f"{math.ceil(nbytes / MIB):,}"


def too_large_error(path: Path, needed: float, budget: float) -> ImageReadError:
    """The error for an image whose decode would need ``needed`` bytes, over ``budget`` MiB."""
    return ImageReadError(path, f"too large to decode: ~{format_mib(needed)} MB needed > budget {budget:,.0f} MB")


def check_decode_budget(path: str | Path, info: ImageInfo, budget_mb: float | None = None) -> int:
    """The bytes decoding ``path`` will need (see :func:`decode_estimate`); ImageReadError when over budget."""
    path = Path(path)
    budget = decode_budget_mb(budget_mb)
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    needed = decode_estimate(info, size)
    if needed > budget * MIB:
        raise too_large_error(path, needed, budget)
    return needed


@contextlib.contextmanager
def decoder_failures(path: str | Path, what: str) -> Iterator[None]:
    """Turn any failure of a third-party decoder inside the block into an :class:`ImageReadError`.

    Decoders fail in every way: ``ValueError``, ``cv2.error``, ``struct.error``, ``MemoryError``, and
    the ``pyo3_runtime.PanicException`` of the Rust pylibjpeg plugins, which derives from
    ``BaseException``. Only Ctrl-C, ``SystemExit`` and ``GeneratorExit`` pass through. The message keeps
    the exception's type and first line (never more: a message could quote the file's bytes).
    """
    try:
        yield
    except ImageReadError:
        raise
    except BaseException as exc:
        if isinstance(exc, NEVER_CAUGHT):
            raise
        if isinstance(exc, MemoryError):
            raise ImageReadError(path, f"{what} could not be decoded: not enough memory") from None
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        detail = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        raise ImageReadError(path, f"{what} could not be decoded ({detail})") from None


class DecodeGate:
    """Admits decodes while their estimated memory fits into a shared budget (a weighted semaphore).

    ``budget_mb`` None follows :func:`decode_budget_mb` at each call. A reservation larger than the
    whole budget waits until it is alone (readers refuse such images before they get here). A thread
    that already holds a reservation never waits (it is let through, over the budget): a holder
    waiting for room only other holders can free would deadlock.
    """

    def __init__(self, budget_mb: float | None = None) -> None:
        self._budget_mb = budget_mb
        self._used = 0
        self._holders: dict[int, int] = {}  # thread id -> reservations it holds
        self._cond = threading.Condition()

    @property
    def capacity(self) -> int:
        return int(decode_budget_mb(self._budget_mb) * MIB)

    @property
    def in_use(self) -> int:
        """Bytes reserved now."""
        return self._used

    def acquire(self, nbytes: int) -> Callable[[], None]:
        """Reserve ``nbytes`` (waiting for room); returns the function that gives them back (idempotent,
        callable from any thread)."""
        nbytes = max(0, min(int(nbytes), self.capacity))
        thread = threading.get_ident()
        with self._cond:
            if not self._holders.get(thread):
                self._cond.wait_for(lambda: self._used == 0 or self._used + nbytes <= self.capacity)
            self._used += nbytes
            self._holders[thread] = self._holders.get(thread, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            with self._cond:
                if not released:
                    released = True
                    self._used -= nbytes
                    left = self._holders.pop(thread, 1) - 1
                    if left:
                        self._holders[thread] = left
                    self._cond.notify_all()

        return release

    @contextlib.contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        release = self.acquire(nbytes)
        try:
            yield
        finally:
            release()


#: The gate of this process's import checks (each decode there is also within the budget alone).
IMPORT_GATE = DecodeGate()
