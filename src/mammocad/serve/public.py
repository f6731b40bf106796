"""What may leave the server: error texts on one line without server paths, JSON without NaN, and the
one-line error responses every failure becomes."""

from __future__ import annotations

import json
import math
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

if TYPE_CHECKING:
    from mammocad.serve.engine import InferenceEngine

# Longest error detail sent (a batch's joined per-file reasons stay well under it).
DETAIL_MAX = 2000
# An absolute path in an error text: POSIX, ~/, Windows drive or file: URL, at the start of a word.
_PATH_CHARS = r"""[^\s'"(),:;\[\]{}<>]"""
_ABSOLUTE_PATH = rf"""(?:^|(?<=[\s'"(\[{{=:,;<>]))(?:file:/+|~/|/|[A-Za-z]:[\\/]){_PATH_CHARS}+"""


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines too) as one space."""
    return " ".join(text.split())


class PublicText:
    """An error text as it may leave the server: one line, no server paths, at most ``DETAIL_MAX`` characters.

    The server's own folders (run directory, temporary folder, home, working directory) are replaced
    wherever they occur; any other absolute path at the start of a word too.
    """

    def __init__(self, roots: list[str]) -> None:
        # Longest first, so the run directory goes before the home folder that holds it; "/" is no root.
        kept = sorted({root for root in roots if len(root.strip("/\\")) > 1}, key=len, reverse=True)
        known = "".join(f"{re.escape(root)}{_PATH_CHARS}*|" for root in kept)
        self.pattern = re.compile(known + _ABSOLUTE_PATH)

    def __call__(self, text: str) -> str:
        text = self.pattern.sub("<path>", one_line(text))
        return text if len(text) <= DETAIL_MAX else text[: DETAIL_MAX - 3] + "..."


def server_roots(engine: InferenceEngine) -> list[str]:
    """The server's own folders, as given and resolved: temporary folder, working directory, home, run directory."""
    roots = [tempfile.gettempdir()]
    for get in (Path.cwd, Path.home, lambda: getattr(getattr(engine, "run", None), "run_dir", None)):
        try:
            path = get()
        except (OSError, RuntimeError, KeyError):  # a deleted working directory, no home folder for this user
            continue
        if path is not None:
            roots += [str(path), str(Path(path).resolve())]
    return roots


def validation_line(exc: RequestValidationError) -> str:
    """FastAPI's list of validation errors as one line: ``opacity: Input should be less than or equal to 1``."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "request"
        message = str(error.get("msg", "invalid"))
        if "Expected UploadFile" in message:  # a text part (an empty "Try it out" item) where a file belongs
            loc = [part for part in error.get("loc", ()) if part != "body"]
            field = str(loc[0]) if loc else "file"
            entry = f" entry {loc[1] + 1}" if len(loc) > 1 and isinstance(loc[1], int) else ""  # 1-based
            parts.append(f"{field}:{entry} not a file; send an image as a file part (curl -F {field}=@scan.dcm)")
            continue
        parts.append(f"{where}: {message}")
    return one_line("; ".join(parts)) or "invalid request"


def public_json(value: Any, public: PublicText) -> Any:
    """``value`` made JSON-safe (NaN and infinities: null) with server paths replaced in every string."""
    return _scrub(json.loads(json.dumps(value, default=str)), public)


def _scrub(value: Any, public: PublicText) -> Any:
    if isinstance(value, str):
        return public.pattern.sub("<path>", value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_scrub(item, public) for item in value]
    if isinstance(value, dict):
        return {str(key): _scrub(item, public) for key, item in value.items()}
    return value


def error_response(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """Every error the API sends: ``{"detail": "<one line>"}`` with ``status``."""
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)
