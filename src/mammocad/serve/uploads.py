"""Uploads: reading a file part within the upload limit, decoding it through the engine (and the HTTP
status of each way that fails), and the form fields that come with it (lesion boxes, the target class).

Error messages name a file ``file <n>`` (1-based), never by the name the client sent.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import Request, UploadFile
from starlette.exceptions import HTTPException

from mammocad.data.images import _format_from_head
from mammocad.errors import ConfigError, ImageReadError, MammocadError
from mammocad.parse import Box, echo, parse_box, parse_int
from mammocad.serve.engine import InferenceEngine, PreparedImage
from mammocad.serve.guard import STATE_REQUEST_ID, STATE_UPLOADS
from mammocad.serve.public import one_line
from mammocad.serve.settings import MIB

logger = logging.getLogger("mammocad.serve")

_CHUNK = MIB
#: The 422 for a lesion box sent to a run trained on whole films (``field``: the form field).
WHOLE_FILM = (
    "{field}: this model was trained on whole films (preprocess mode 'full'), not lesion ROIs; "
    "it takes no lesion box: leave {field} empty"
)


class UploadError(Exception):
    """One file (or the request) cannot be used: the status and the one-line reason to send back."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def note_uploads(request: Request, count: int) -> dict[str, Any]:
    """The per-request record the guard logs: file count, byte sizes, sniffed formats (never names)."""
    record: dict[str, Any] = {"files": count, "bytes": [], "formats": []}
    setattr(request.state, STATE_UPLOADS, record)
    return record


def read_upload(upload: UploadFile, limit: int, label: str, record: dict[str, Any]) -> bytes:
    """The upload's bytes, refusing (413) past ``limit`` without reading the rest.

    Starlette has spooled the part already (to memory up to 1 MiB, then to a temporary file) and the
    guard has capped the body as a whole; reading it back in chunks keeps an oversized part out of memory.
    """
    if upload.size is not None and upload.size > limit:
        record["bytes"].append(upload.size)
        record["formats"].append("-")
        raise UploadError(413, f"{label} is {upload.size:,} bytes, over the upload limit of {limit:,}")
    handle = upload.file
    handle.seek(0)
    buffer = bytearray()
    while chunk := handle.read(min(_CHUNK, limit + 1 - len(buffer))):
        buffer += chunk
        if len(buffer) > limit:
            record["bytes"].append(len(buffer))
            record["formats"].append("-")
            raise UploadError(413, f"{label} is over the upload limit of {limit:,} bytes")
    record["bytes"].append(len(buffer))
    record["formats"].append(_sniff(bytes(buffer[:132])))
    return bytes(buffer)


def _sniff(head: bytes) -> str:
    """The format the first bytes announce, for the log only (the engine sniffs again when decoding)."""
    if not head:
        return "empty"
    try:
        return _format_from_head(Path("upload"), head)
    except ImageReadError:
        return "unknown"


def decode_upload(
    engine: InferenceEngine, data: bytes, label: str, box: Box | None, request: Request, keep_original: bool = True
) -> PreparedImage:
    """``engine.decode`` of an upload's bytes; UploadError with the status for each way it fails."""
    try:
        return engine.decode(data, label, box, keep_original=keep_original)
    except MammocadError as exc:
        raise UploadError(status_for(exc), one_line(str(exc))) from None
    except Exception as exc:
        # A decoder tripped over malformed data in a way the readers do not name: still a bad upload,
        # not a broken service. Logged by type only: the message could quote the file's bytes.
        request_id = getattr(request.state, STATE_REQUEST_ID, "-")
        logger.warning("request %s: %s failed to decode (%s)", request_id, label, type(exc).__name__)
        raise UploadError(422, f"{label}: could not be decoded as an image") from None


def status_for(exc: MammocadError) -> int:
    """413 for too many pixels or too much memory to decode, 415 for content that is no supported
    image, 422 for the rest (damaged files, decoder failures).

    Keyed on the reasons :mod:`mammocad.data.images` and :mod:`mammocad.data.dicom` give.
    """
    if isinstance(exc, ImageReadError):
        reason = exc.reason.lower()
        if "pixels, over the limit" in reason or reason.startswith("too large to decode"):
            return 413
        if reason.startswith("not a supported image") or reason.startswith("unsupported pixel type"):
            return 415
    return 422


def parse_boxes(values: list[str] | None, count: int, field: str = "boxes") -> list[Box | None]:
    """One lesion box (or None) per file from the ``boxes``/``box`` form values; 422 when malformed.

    ASCII digits only (``"²".isdigit()`` is True and ``int("²")`` raises); the message names the field.
    """
    if not values:
        return [None] * count
    if len(values) != count:
        raise HTTPException(422, f"{field}: got {len(values)} boxes for {count} files; give one x0,y0,x1,y1 per file")
    try:
        label = "box" if field == "box" else f"{field}: box"
        return [parse_box(value, label) if value.strip() else None for value in values]
    except ConfigError as exc:
        raise HTTPException(422, str(exc)) from None


def parse_target(text: str | None, classes: list[str]) -> int | None:
    """The ``target`` form field as a class index (None: the predicted class); 422 naming the accepted forms."""
    if text is None or not text.strip():
        return None
    accepted = f"give a class name ({', '.join(classes)}) or an index 0-{len(classes) - 1}"
    index = parse_int(text)  # ASCII digits only: "²" and "٣" are names (and unknown ones), not numbers
    if index is not None:
        if not 0 <= index < len(classes):
            raise HTTPException(422, f"target: class index {index} out of range; {accepted}")
        return index
    if text not in classes:
        raise HTTPException(422, f"target: unknown target class {echo(text)}; {accepted}")
    return classes.index(text)
