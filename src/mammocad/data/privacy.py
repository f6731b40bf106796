"""Keyed pseudonyms and identifier redaction: no patient identifier reaches a dataset's outputs.

A pseudonym is a keyed hash (BLAKE2b in MAC mode) of ``namespace:raw`` with a per-installation
secret, so that nobody without the key can recover an MRN from its pseudonym by guessing (an
unkeyed hash of a 6-digit MRN falls to a brute-force search in well under a second).

The key is 32 random bytes (stored as hex) created on first use, with mode 0600, at:

1. ``$MAMMOCAD_PSEUDONYM_KEY_FILE``, when set;
2. else ``$MAMMOCAD_HOME/pseudonym.key``, when ``MAMMOCAD_HOME`` is set;
3. else ``$XDG_CONFIG_HOME/mammocad/pseudonym.key`` (``~/.config/mammocad/pseudonym.key``).

It is kept outside every dataset on purpose: a dataset shared without it reveals nothing. The
same key gives the same pseudonyms, so imports on one installation agree with each other; to merge
new imports with datasets made on another installation, copy that installation's key file (and
keep it as secret as the source data). Public dataset ids (CBIS-DDSM ``P_00001``, BCDR patient
numbers, MIAS ``mdb001``) are not secrets and are never pseudonymised.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import secrets
import time
from collections.abc import Iterable
from pathlib import Path

from mammocad.errors import DatasetError

KEY_FILE_ENV = "MAMMOCAD_PSEUDONYM_KEY_FILE"
HOME_ENV = "MAMMOCAD_HOME"
KEY_NAME = "pseudonym.key"
KEY_BYTES = 32
# Identifiers (or parts of one) shorter than this are too unspecific to look for inside other text.
MIN_ID_LENGTH = 4
# Parts of an identifier matched only as a whole word: letters from 3, digits from 5 ("1950" is
# more often an image size or a year than a patient's number).
_MIN_LETTERS = 3
_MIN_DIGITS = 5
# Cells that say "no value", never identifiers.
PLACEHOLDERS = {"", "removed", "anonymized", "anonymised", "anon", "unknown", "n/a", "na", "none", "null", "nan", "-"}
_WORDS = re.compile(r"[^\W_]+")  # runs of letters and digits
_RUNS = re.compile(r"[^\W\d_]+|\d+")  # the same, split where letters meet digits ("MRN123456")
_MAX_SEQUENCE = 8


def key_file() -> Path:
    """Where this installation's pseudonym key lives (see the module docstring)."""
    explicit = os.environ.get(KEY_FILE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser() / KEY_NAME
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path("~/.config").expanduser())
    return Path(config).expanduser() / "mammocad" / KEY_NAME


def pseudonym_key() -> bytes:
    """This installation's secret key, created (once, atomically, mode 0600) on first use."""
    return _load_key(os.path.abspath(key_file()))


@functools.lru_cache(maxsize=8)
def _load_key(path: str) -> bytes:
    file = Path(path)
    if not file.exists():
        _create_key(file)
    return _read_key(file)


def _create_key(file: Path) -> None:
    """Write a new random key at ``file`` unless one is there; two processes at once end with one key.

    The key is written to a private temporary file and then hard-linked to its name: the link fails
    when another process got there first (its key wins), and nobody ever reads a half-written key.
    """
    try:
        file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise DatasetError(f"cannot create the pseudonym key folder {file.parent} ({exc}); set {KEY_FILE_ENV}") from exc
    data = (secrets.token_bytes(KEY_BYTES).hex() + "\n").encode()
    temp = file.with_name(f".{file.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temp, file)
        except FileExistsError:
            return  # another process created it first: use that one
        except OSError:  # no hard links here: exclusive create, written in one call
            with contextlib.suppress(FileExistsError):
                out = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(out, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
    finally:
        temp.unlink(missing_ok=True)


def _read_key(file: Path) -> bytes:
    text = ""
    for _ in range(50):  # a key being written by another process without hard links: wait for it
        text = file.read_text(encoding="ascii", errors="replace").strip()
        if text:
            break
        time.sleep(0.02)
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if not 16 <= len(key) <= 64:
        raise DatasetError(
            f"{file}: not a pseudonym key (expected 32-64 hex bytes); restore the installation's key file "
            f"or point {KEY_FILE_ENV} at it"
        )
    return key


def pseudonymous_id(raw: str, namespace: str, digest_size: int = 6) -> str:
    """A stable pseudonym ``<namespace>-<hex>`` for an identifier: a keyed hash, so the raw value
    never reaches an output and cannot be recovered from the pseudonym without the key."""
    digest = hashlib.blake2b(f"{namespace}:{raw.strip()}".encode(), key=pseudonym_key(), digest_size=digest_size)
    return f"{namespace}-{digest.hexdigest()}"


def identifier_parts(value: str) -> set[str]:
    """Lower-case words of an identifier worth finding on their own (``Doe^Jane`` -> doe, jane;
    ``MRN123456`` -> mrn123456, mrn, 123456): letters from 3, digits from 5 characters."""
    parts: set[str] = set()
    for word in _WORDS.findall(value.lower()):
        for part in {word, *_RUNS.findall(word)}:
            if (part.isdigit() and len(part) >= _MIN_DIGITS) or (not part.isdigit() and len(part) >= _MIN_LETTERS):
                parts.add(part)
    return parts


def _is_placeholder(value: str) -> bool:
    return value.strip().lower() in PLACEHOLDERS


class Redactor:
    """Finds known identifiers in text (file paths, messages) and replaces them by pseudonyms.

    Values added with :meth:`add` are found case-insensitively word by word: each word of a value
    (see :func:`identifier_parts`) where it stands alone in the text (``Doe_Jane.png`` holds
    ``Jane Doe``), and a value of several short words as that sequence (``1950-03-14``). ``extra``
    values given per call (e.g. the identifiers of the row a message is about) are also found
    inside other words. ``pattern`` is a regular expression for identifier-like tokens that no
    table lists (KAUMDS file names hold IDs the sheet never mentions). A known value is replaced by
    ``pseudonymous_id(value, namespace)`` (the manifest's id for it); anything else by the
    pseudonym of its upper-case form without spaces. Lookups are by word, so thousands of known
    values cost nothing per message.
    """

    def __init__(self, namespace: str, identifiers: Iterable[str] = (), pattern: str | None = None) -> None:
        self.namespace = namespace
        self._known: dict[str, str] = {}  # lower-case value -> the value as written
        self._parts: set[str] = set()
        self._sequences: set[tuple[str, ...]] = set()
        self._longest = 1
        self._pattern = pattern
        for value in identifiers:
            self.add(value)

    def add(self, value: str) -> None:
        """Know ``value`` (and its words) as an identifier; placeholders (``removed``...) are ignored."""
        text = str(value).strip()
        if _is_placeholder(text):
            return
        self._known.setdefault(text.lower(), text)
        self._parts |= identifier_parts(text)
        runs = tuple(_RUNS.findall(text.lower()))
        if 1 < len(runs) <= _MAX_SEQUENCE and len("".join(runs)) >= MIN_ID_LENGTH:
            self._sequences.add(runs)
            self._longest = max(self._longest, len(runs))

    def _spans(self, text: str, extra: Iterable[str]) -> list[tuple[int, int]]:
        """Where ``text`` holds an identifier: (start, end) of each occurrence (may overlap)."""
        low = text.lower()
        if len(low) != len(text):  # a character whose lower case is longer: positions would shift
            low = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
        spans: list[tuple[int, int]] = []
        short: set[str] = set()  # parts of ``extra`` too short to look for inside other words
        for value in extra:
            value = str(value).strip()
            if _is_placeholder(value):
                continue
            for candidate in {value.lower(), *identifier_parts(value)}:
                if len(candidate) < MIN_ID_LENGTH:
                    short.add(candidate)
                    continue
                start = low.find(candidate)
                while start >= 0:
                    spans.append((start, start + len(candidate)))
                    start = low.find(candidate, start + 1)
        parts = self._parts
        spans += [m.span() for m in _WORDS.finditer(low) if m.group() in parts or m.group() in short]  # "mrn123456"
        runs = list(_RUNS.finditer(low))
        spans += [m.span() for m in runs if m.group() in parts or m.group() in short]  # "jane", "123456"
        if self._sequences:  # several short runs in a row: "1950-03-14"
            for size in range(2, min(self._longest, len(runs)) + 1):
                for first in range(len(runs) - size + 1):
                    if tuple(m.group() for m in runs[first : first + size]) in self._sequences:
                        spans.append((runs[first].start(), runs[first + size - 1].end()))
        return spans

    def found_in(self, text: str, extra: Iterable[str] = ()) -> bool:
        """Whether ``text`` holds a known identifier, one of ``extra``, or a ``pattern`` match."""
        if self._spans(text, extra):
            return True
        return bool(self._pattern and _compiled(self._pattern).search(text))

    def __call__(self, text: str, extra: Iterable[str] = ()) -> str:
        """``text`` with every identifier replaced by its pseudonym (one pass over the text: the
        leftmost, then longest, match wins, and a pseudonym is never re-read)."""
        extra = [str(v).strip() for v in extra if not _is_placeholder(str(v))]
        spans = self._spans(text, extra)
        if self._pattern:
            spans += [m.span() for m in _compiled(self._pattern).finditer(text) if m.end() > m.start()]
        if not spans:
            return text
        given = {v.lower(): v for v in extra}
        out: list[str] = []
        done = 0
        for start, end in sorted(spans, key=lambda span: (span[0], -span[1])):
            if start < done:
                continue  # overlaps an earlier (or longer) match
            token = text[start:end]
            value = self._known.get(token.lower()) or given.get(token.lower())
            raw = value if value is not None else re.sub(r"\s+", "", token).upper()
            out += [text[done:start], pseudonymous_id(raw, self.namespace)]
            done = end
        return "".join(out) + text[done:]


@functools.lru_cache(maxsize=64)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)
