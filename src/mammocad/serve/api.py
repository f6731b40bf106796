"""The REST API of ``mammocad serve RUN``: health, model card, predictions and heatmaps over HTTP (FastAPI).

Endpoints (OpenAPI schema at ``/openapi.json``, interactive docs at ``/docs``):

* ``GET /health``: liveness and the model version; always open.
* ``GET /model``: the model card (:meth:`InferenceEngine.info`).
* ``POST /predict``: class probabilities of one or many uploaded images, predicted in one batch.
* ``POST /explain``: a CAM heatmap of one upload, as JSON (base64 PNGs) or as the overlay PNG itself.

With a token, the last three need ``Authorization: Bearer <token>``; it is checked before the body
is read, so an unauthenticated client cannot make the server spool a large upload.

Bad input is a 4xx with a one-line ``detail`` and the service keeps serving: 413 for too-large
uploads/images/batches (an image is too large with too many pixels or when decoding it would need
more than the decode budget; uploads decoding at once share that budget, see
:class:`~mammocad.serve.engine.InferenceEngine`), 415 for content that is no supported image, 422 for damaged images, bad
form fields and missing lesion boxes, 401 for a missing or wrong token. An unexpected failure is a
500 with a generic message and the request id (the traceback goes to the log, the upload does not).
Numbers in form fields are ASCII only (``²`` or ``٣`` is text, not a digit). No error text carries
a server path: absolute paths are replaced by ``<path>`` before a response leaves.

Hardening: no redirects (``/health/`` is a 404, not a redirect built from the client's ``Host``
header), and ``create_app(docs=False)`` (``mammocad serve --no-docs``) serves no ``/docs``,
``/redoc`` or ``/openapi.json``.

Privacy: uploads may be DICOMs full of patient identifiers and file names may be patient names.
Nothing from an upload is logged (one line per request: id, endpoint, file count, byte sizes,
sniffed formats, status, latency); responses echo only each file's index and the name the client
sent. The engine is handed ``file <index>``, never the client's name, so no error message carries it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
import tempfile
import time
import uuid
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, File, Form, Request, Security, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mammocad.data.images import DEFAULT_MAX_PIXELS, _format_from_head
from mammocad.errors import ConfigError, ImageReadError, MammocadError
from mammocad.explain.cam import target_layer
from mammocad.parse import echo, parse_box, parse_int
from mammocad.serve.engine import EXPLAIN_METHODS, InferenceEngine, PreparedImage
from mammocad.training.predict import Box

logger = logging.getLogger("mammocad.serve")

MIB = 1 << 20
DEFAULT_MAX_UPLOAD_BYTES = 64 * MIB
DEFAULT_MAX_BATCH = 16
#: The environment variable ``mammocad serve`` reads its token from (and passes it to workers in).
TOKEN_ENV = "MAMMOCAD_API_TOKEN"
#: JSON :class:`ServeSettings` for the uvicorn worker processes of ``mammocad serve --workers N``.
SETTINGS_ENV = "MAMMOCAD_SERVE_SETTINGS"

PROTECTED_PATHS = frozenset({"/predict", "/explain", "/model"})
# Paths logged as themselves; anything else is logged as "(other)" since a URL can carry anything.
_LOGGED_PATHS = PROTECTED_PATHS | {"/health", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"}
_CHUNK = MIB
# Room per multipart part for its headers and boundary, and for the small form fields.
_PART_OVERHEAD = 64 * 1024
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ASCII_DIGITS = re.compile(r"[0-9]{1,30}")
_STATE_UPLOADS = "mammocad_uploads"
_STATE_REQUEST_ID = "request_id"
# Longest error detail sent (a batch's joined per-file reasons stay well under it).
_DETAIL_MAX = 2000
# An absolute path in an error text: POSIX, ~/, Windows drive or file: URL, at the start of a word.
_PATH_CHARS = r"""[^\s'"(),:;\[\]{}<>]"""
_ABSOLUTE_PATH = rf"""(?:^|(?<=[\s'"(\[{{=:,;<>]))(?:file:/+|~/|/|[A-Za-z]:[\\/]){_PATH_CHARS}+"""


class ApiSettings(BaseModel):
    """Auth and limits of the API (the ``mammocad serve`` options)."""

    model_config = ConfigDict(frozen=True)

    token: str | None = Field(None, repr=False, exclude=True, description="Bearer token; None: no auth.")
    max_upload_bytes: int = Field(DEFAULT_MAX_UPLOAD_BYTES, gt=0, description="Largest accepted file, in bytes.")
    max_batch: int = Field(DEFAULT_MAX_BATCH, ge=1, description="Most files in one /predict request.")
    docs: bool = Field(True, description="Serve /docs, /redoc and /openapi.json.")

    @field_validator("token")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        # An empty MAMMOCAD_API_TOKEN must not become a token that an empty header matches.
        return (value.strip() or None) if value is not None else None

    def body_limit(self, path: str) -> int:
        """The largest request body accepted on ``path`` (multipart framing included)."""
        if path == "/predict":
            return self.max_batch * (self.max_upload_bytes + _PART_OVERHEAD)
        if path == "/explain":
            return self.max_upload_bytes + 4 * _PART_OVERHEAD
        return _PART_OVERHEAD


class ServeSettings(BaseModel):
    """All one server process needs to build its app; how ``--workers N`` hands the options to each worker."""

    run: Path
    backend: str = "auto"
    max_pixels: int = DEFAULT_MAX_PIXELS
    decode_budget_mb: float | None = Field(None, gt=0, description="Decode budget in MiB (None: env or default).")
    api: ApiSettings = ApiSettings()


# ---------------------------------------------------------------------------------------------
# Response models: they make the OpenAPI schema say what each endpoint returns.


class ErrorResponse(BaseModel):
    """Every 4xx/5xx: one line saying what was wrong."""

    detail: str = Field(..., examples=["file 0: PNG is truncated (no IEND chunk)"])


class HealthResponse(BaseModel):
    """The service is up and serving this model."""

    status: Literal["ok"] = "ok"
    model: str = Field(..., description="Model architecture name.")
    version: str = Field(..., description="<run name>@<first 12 hex of the weights' SHA-256>.")
    backend: str = Field(..., description="onnx (ONNX Runtime) or torch.")


class ModelInput(BaseModel):
    channels: int
    height: int
    width: int


class ModelInfo(BaseModel):
    """The model card of the served run."""

    model_config = ConfigDict(extra="allow")

    name: str
    head: str | None = None
    version: str
    run: str
    task: str | None = None
    classes: list[str]
    input: ModelInput
    preprocess: dict[str, Any]
    needs_lesion_box: bool = Field(..., description="True: every image needs its lesion box x0,y0,x1,y1.")
    backend: str
    explain_methods: list[str]
    max_pixels: int


class PredictionItem(BaseModel):
    """One uploaded file: its prediction, or why it could not be used."""

    index: int = Field(..., description="Position of the file in the request.")
    filename: str | None = Field(None, description="The file name as the client sent it.")
    prediction: str | None = Field(None, description="The most probable class.")
    probabilities: dict[str, float] | None = Field(None, description="Probability by class name.")
    error: str | None = Field(None, description="Why this file could not be used (then no prediction).")
    status: int | None = Field(None, description="The HTTP status this file alone would have got.")


class PredictResponse(BaseModel):
    """Predictions of the uploaded files, in request order."""

    model: str
    version: str
    backend: str
    results: list[PredictionItem]


class ExplainResponse(BaseModel):
    """A heatmap of one upload and the prediction it explains."""

    model: str
    version: str
    backend: str
    index: int = 0
    filename: str | None = None
    prediction: str
    probabilities: dict[str, float]
    target: str = Field(..., description="The class the heatmap explains.")
    method: str
    layer: str
    heatmap_shape: list[int] = Field(..., description="Height and width of the heatmap (the original image's).")
    overlay_png: str = Field(..., description="Base64 PNG: the heatmap over the original image.")
    input_overlay_png: str = Field(..., description="Base64 PNG: the heatmap over the model input.")


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or wrong bearer token."},
    413: {
        "model": ErrorResponse,
        "description": "Upload, image (pixels, or memory to decode) or batch over the server's limits.",
    },
    415: {"model": ErrorResponse, "description": "Not a supported image (DICOM, PNG, JPEG, PGM, TIFF, BMP)."},
    422: {"model": ErrorResponse, "description": "Damaged image, bad form field, or missing lesion box."},
}

_DESCRIPTION = """
Mammography CAD inference for one trained **mammocad** run.

* `POST /predict`: upload one or more images (field `files`; DICOM, PNG, JPEG, PGM, TIFF; the type is
  read from the content, never from the file name); get class probabilities. A bad file in a batch gets
  an `error` and the others are still predicted.
* `POST /explain`: upload one image (field `file`); get a Grad-CAM-family heatmap as JSON with base64
  PNGs, or (`format=png`) the overlay PNG itself with the summary in the `X-Mammocad-Explanation` header.
* Runs trained on mass-centred ROIs need each image's lesion box `x0,y0,x1,y1` (original pixels).

Research software: predictions are not a diagnosis.
"""


class _UploadError(Exception):
    """One file (or the request) cannot be used: the status and the one-line reason to send back."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def create_app(
    engine: InferenceEngine,
    *,
    token: str | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_batch: int = DEFAULT_MAX_BATCH,
    docs: bool = True,
) -> FastAPI:
    """The FastAPI app serving ``engine``; see the module docstring for endpoints, limits and errors.

    ``docs=False`` serves no ``/docs``, ``/redoc`` or ``/openapi.json`` (404 like any unknown path).
    """
    settings = ApiSettings(token=token, max_upload_bytes=max_upload_bytes, max_batch=max_batch, docs=docs)
    card = engine.info()
    model_name = str(card["name"])
    header = {"model": model_name, "version": engine.version, "backend": engine.backend}
    public = _PublicText(_server_roots(engine))

    app = FastAPI(
        title="mammocad inference API",
        description=_DESCRIPTION.strip() + f"\n\nServing `{model_name}`, version `{engine.version}`.",
        version=_package_version(),
        # Starlette answers "/health/" with a redirect to an absolute URL built from the request's Host
        # header, which a client controls: no redirects at all (a wrong path is a 404).
        redirect_slashes=False,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.engine = engine
    app.add_middleware(_Guard, settings=settings, public=public)

    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default is a list of error objects; a client (and a person reading curl output)
        # gets one line instead: "opacity: Input should be less than or equal to 1".
        return _error(422, public(_validation_line(exc)))

    async def http_error(request: Request, exc: HTTPException) -> Response:
        # Every HTTPException (ours, FastAPI's 404/405, multipart parse errors) as one clean line.
        return _error(exc.status_code, public(str(exc.detail)), exc.headers)

    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, http_error)  # type: ignore[arg-type]

    bearer = HTTPBearer(auto_error=False, description="The token `mammocad serve` was started with.")

    def require_token(credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> None:
        # The guard middleware has already refused a bad token before reading the body; checking again
        # here costs nothing and is what puts the security scheme into the OpenAPI schema.
        if not _token_matches(settings.token, credentials.credentials if credentials else None):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    protected = [Security(require_token)] if settings.token else []

    @app.get("/health", response_model=HealthResponse, tags=["service"], summary="Liveness and model version")
    def health() -> dict[str, Any]:
        return {"status": "ok", **header}

    @app.get(
        "/model",
        response_model=ModelInfo,
        tags=["model"],
        summary="Model card",
        dependencies=protected,
        responses={401: _ERRORS[401]},
    )
    def model() -> dict[str, Any]:
        return engine.info()

    @app.post(
        "/predict",
        response_model=PredictResponse,
        response_model_exclude_none=True,
        tags=["model"],
        summary="Class probabilities of one or more images",
        dependencies=protected,
        responses=_ERRORS,
    )
    def predict(
        request: Request,
        files: list[UploadFile] = File(
            ..., description="One or more images (DICOM, PNG, JPEG, PGM, TIFF); repeat the field for a batch."
        ),
        boxes: list[str] | None = Form(
            None,
            description="Lesion box x0,y0,x1,y1 (original pixels) per file, in order; needed by ROI-trained "
            "models. Give none, or exactly one per file (an empty value: no box for that file).",
        ),
    ) -> dict[str, Any]:
        """Predict every readable file in one model batch; a bad file in a batch gets an ``error`` item.

        A single bad file, or a batch of only bad files, is an error response (4xx) instead.
        """
        uploads = _note_uploads(request, len(files))
        if len(files) > settings.max_batch:
            raise HTTPException(413, f"{len(files)} files in one request; the limit is {settings.max_batch}")
        box_list = _parse_boxes(boxes, len(files))
        items: list[dict[str, Any]] = []
        good: list[tuple[dict[str, Any], PreparedImage]] = []
        for index, upload in enumerate(files):
            item: dict[str, Any] = {"index": index, "filename": upload.filename}
            items.append(item)
            try:
                data = _read_upload(upload, settings.max_upload_bytes, f"file {index}", uploads)
                # Predictions need only the model input: no full-size original kept per file of the batch.
                image = _decode(engine, data, f"file {index}", box_list[index], request, keep_original=False)
                good.append((item, image))
            except _UploadError as exc:
                item.update(error=public(exc.detail), status=exc.status)
        if not good:
            statuses = {item["status"] for item in items}
            status = statuses.pop() if len(statuses) == 1 else 422
            if len(items) == 1:
                raise HTTPException(status, items[0]["error"])
            raise HTTPException(status, "no file could be used: " + "; ".join(item["error"] for item in items))
        # One batch for all good files: one lock acquisition, one model call.
        probs = engine.predict([image for _, image in good])
        for (item, _), row in zip(good, probs, strict=True):
            item.update(prediction=engine.classes[int(row.argmax())], probabilities=engine.probabilities(row))
        return {**header, "results": items}

    @app.post(
        "/explain",
        response_model=ExplainResponse,
        tags=["model"],
        summary="Heatmap of one image (JSON or PNG)",
        dependencies=protected,
        responses={
            **_ERRORS,
            200: {
                "content": {"image/png": {}},
                "description": "JSON (default), or with format=png the overlay PNG, its summary in the "
                "X-Mammocad-Explanation header.",
            },
        },
    )
    def explain(
        request: Request,
        file: UploadFile = File(..., description="One image (DICOM, PNG, JPEG, PGM, TIFF)."),
        method: str = Form(
            "gradcam",
            description=f"One of {', '.join(EXPLAIN_METHODS)}; lesion-aware runs also 'lesion' (their own heatmap).",
        ),
        target: str | None = Form(None, description="Class name or index to explain; default: the predicted class."),
        opacity: float = Form(0.45, ge=0.0, le=1.0, description="Heatmap opacity in the overlays."),
        box: str | None = Form(None, description="Lesion box x0,y0,x1,y1 (original pixels); ROI models need it."),
        layer: str | None = Form(None, description="Layer to explain (e.g. -1); default: the last layer group."),
        output_format: Literal["json", "png"] = Form("json", alias="format", description="json or png."),
    ) -> Any:
        """A Grad-CAM-family heatmap at the original image's geometry."""
        uploads = _note_uploads(request, 1)
        offered = engine.explain_methods
        if method.strip().lower() not in offered:
            raise HTTPException(422, f"method: unknown method {echo(method)}; choose from {', '.join(offered)}")
        lesion_box = _parse_boxes([box] if box else None, 1, "box")[0]
        # Checked before the upload is decoded: a typo costs nothing, and the message names the field.
        wanted = _parse_target(target, engine.classes)
        if layer and method.strip().lower() != "lesion":
            try:
                target_layer(engine.run.model, layer)
            except MammocadError as exc:
                raise HTTPException(422, f"layer: {exc}") from None
        try:
            data = _read_upload(file, settings.max_upload_bytes, "file 0", uploads)
            image = _decode(engine, data, "file 0", lesion_box, request)
            result = engine.explain(image, method, wanted, layer or None, opacity)
        except _UploadError as exc:
            raise HTTPException(exc.status, exc.detail) from None
        except MammocadError as exc:  # unknown target or layer
            raise HTTPException(422, _one_line(str(exc))) from None
        summary = result.summary()
        if output_format == "png":
            compact = json.dumps(summary, separators=(",", ":"))  # ASCII-escaped: safe in a header
            return Response(result.overlay_png, media_type="image/png", headers={"X-Mammocad-Explanation": compact})
        return {
            **header,
            "index": 0,
            "filename": file.filename,
            **summary,
            "overlay_png": base64.b64encode(result.overlay_png).decode("ascii"),
            "input_overlay_png": base64.b64encode(result.input_overlay_png).decode("ascii"),
        }

    return app


def create_app_from_settings(settings: ServeSettings) -> FastAPI:
    """Load the run and build its app (raises MammocadError for a run that cannot be served)."""
    engine = InferenceEngine(
        settings.run,
        backend=settings.backend,
        max_pixels=settings.max_pixels,
        decode_budget_mb=settings.decode_budget_mb,
    )
    api = settings.api
    return create_app(
        engine, token=api.token, max_upload_bytes=api.max_upload_bytes, max_batch=api.max_batch, docs=api.docs
    )


def app_from_env() -> FastAPI:
    """App factory for uvicorn worker processes: settings from ``$MAMMOCAD_SERVE_SETTINGS``, token from the env."""
    configure_logging()
    settings = ServeSettings.model_validate_json(os.environ[SETTINGS_ENV])
    api = settings.api.model_copy(update={"token": os.environ.get(TOKEN_ENV)})
    return create_app_from_settings(settings.model_copy(update={"api": api}))


def configure_logging(level: int = logging.INFO) -> None:
    """Send the per-request lines of ``mammocad.serve`` to stderr (uvicorn configures only its own loggers)."""
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)


# ---------------------------------------------------------------------------------------------
# Uploads


def _note_uploads(request: Request, count: int) -> dict[str, Any]:
    """The per-request record the guard logs: file count, byte sizes, sniffed formats (never names)."""
    record: dict[str, Any] = {"files": count, "bytes": [], "formats": []}
    setattr(request.state, _STATE_UPLOADS, record)
    return record


def _read_upload(upload: UploadFile, limit: int, label: str, record: dict[str, Any]) -> bytes:
    """The upload's bytes, refusing (413) past ``limit`` without reading the rest.

    Starlette has spooled the part already (to memory up to 1 MiB, then to a temporary file) and the
    guard has capped the body as a whole; reading it back in chunks keeps an oversized part out of memory.
    """
    if upload.size is not None and upload.size > limit:
        record["bytes"].append(upload.size)
        record["formats"].append("-")
        raise _UploadError(413, f"{label} is {upload.size:,} bytes, over the upload limit of {limit:,}")
    handle = upload.file
    handle.seek(0)
    buffer = bytearray()
    while chunk := handle.read(min(_CHUNK, limit + 1 - len(buffer))):
        buffer += chunk
        if len(buffer) > limit:
            record["bytes"].append(len(buffer))
            record["formats"].append("-")
            raise _UploadError(413, f"{label} is over the upload limit of {limit:,} bytes")
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


def _decode(
    engine: InferenceEngine, data: bytes, label: str, box: Box | None, request: Request, keep_original: bool = True
) -> PreparedImage:
    try:
        return engine.decode(data, label, box, keep_original=keep_original)
    except MammocadError as exc:
        raise _UploadError(_status_for(exc), _one_line(str(exc))) from None
    except Exception as exc:
        # A decoder tripped over malformed data in a way the readers do not name: still a bad upload,
        # not a broken service. Logged by type only: the message could quote the file's bytes.
        request_id = getattr(request.state, _STATE_REQUEST_ID, "-")
        logger.warning("request %s: %s failed to decode (%s)", request_id, label, type(exc).__name__)
        raise _UploadError(422, f"{label}: could not be decoded as an image") from None


def _status_for(exc: MammocadError) -> int:
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


def _parse_boxes(values: list[str] | None, count: int, field: str = "boxes") -> list[Box | None]:
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


def _parse_target(text: str | None, classes: list[str]) -> int | None:
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


def _one_line(text: str) -> str:
    return " ".join(text.split())


class _PublicText:
    """An error text as it may leave the server: one line, no server paths, at most ``_DETAIL_MAX`` characters.

    The server's own folders (run directory, temporary folder, home, working directory) are replaced
    wherever they occur; any other absolute path at the start of a word too.
    """

    def __init__(self, roots: list[str]) -> None:
        # Longest first, so the run directory goes before the home folder that holds it; "/" is no root.
        kept = sorted({root for root in roots if len(root.strip("/\\")) > 1}, key=len, reverse=True)
        known = "".join(f"{re.escape(root)}{_PATH_CHARS}*|" for root in kept)
        self.pattern = re.compile(known + _ABSOLUTE_PATH)

    def __call__(self, text: str) -> str:
        text = self.pattern.sub("<path>", _one_line(text))
        return text if len(text) <= _DETAIL_MAX else text[: _DETAIL_MAX - 3] + "..."


def _server_roots(engine: InferenceEngine) -> list[str]:
    roots = [tempfile.gettempdir()]
    for get in (Path.cwd, Path.home, lambda: getattr(getattr(engine, "run", None), "run_dir", None)):
        try:
            path = get()
        except (OSError, RuntimeError, KeyError):  # a deleted working directory, no home folder for this user
            continue
        if path is not None:
            roots += [str(path), str(Path(path).resolve())]
    return roots


def _validation_line(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "request"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return _one_line("; ".join(parts)) or "invalid request"


def _token_matches(expected: str | None, given: str | None) -> bool:
    if expected is None:
        return True
    if given is None:
        return False
    # Constant-time: the comparison must not tell an attacker how many leading characters were right,
    # nor (comparing digests of equal length) how long the token is.
    given_digest = hashlib.sha256(given.encode("utf-8", "surrogateescape")).digest()
    return hmac.compare_digest(given_digest, hashlib.sha256(expected.encode("utf-8")).digest())


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, credentials = authorization.partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


def _package_version() -> str:
    try:
        return package_version("mammocad")
    except PackageNotFoundError:
        return "0+unknown"


# ---------------------------------------------------------------------------------------------
# The guard: outermost layer of the app (inside Starlette's ServerErrorMiddleware).


class _Guard:
    """Request id, auth and body cap before the body is read, one log line, and no tracebacks to clients."""

    def __init__(self, app: ASGIApp, settings: ApiSettings, public: _PublicText) -> None:
        self.app = app
        self.settings = settings
        self.public = public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = Headers(scope=scope)
        given_id = headers.get("x-request-id", "")
        request_id = given_id if _REQUEST_ID.fullmatch(given_id) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state[_STATE_REQUEST_ID] = request_id
        path = scope["path"]
        status = 0
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                MutableHeaders(scope=message).append("X-Request-ID", request_id)
            await send(message)

        limit = self.settings.body_limit(path)
        received = 0

        async def receive_capped() -> Message:
            # Counts what arrives, so a chunked upload without Content-Length is capped too.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # FastAPI re-raises an HTTPException from body reading; the app turns it into a 413.
                    raise HTTPException(413, f"request body is over the limit of {limit:,} bytes")
            return message

        try:
            refusal = self._refusal(path, headers, limit)
            if refusal is not None:
                await refusal(scope, receive, send_with_id)
            else:
                await self.app(scope, receive_capped, send_with_id)
        except HTTPException as exc:
            if started:
                raise
            await _error(exc.status_code, self.public(str(exc.detail)), exc.headers)(scope, receive, send_with_id)
        except Exception as exc:
            if started:
                raise  # a response is under way; the server can only close the connection
            logger.error("request %s: unexpected %s", request_id, type(exc).__name__, exc_info=exc)
            detail = f"internal server error (request id {request_id})"
            await _error(500, detail)(scope, receive, send_with_id)
        finally:
            self._log(scope, state, request_id, path, status, start)

    def _refusal(self, path: str, headers: Headers, limit: int) -> JSONResponse | None:
        """A response that refuses the request from its headers alone, or None."""
        if path in PROTECTED_PATHS and not _token_matches(self.settings.token, _bearer(headers.get("authorization"))):
            return _error(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        length = headers.get("content-length", "").strip()
        # ASCII digits only: a header is latin-1 text, and "²".isdigit() is True but int("²") raises.
        if _ASCII_DIGITS.fullmatch(length) and int(length) > limit:
            return _error(413, f"request body is {int(length):,} bytes, over the limit of {limit:,}")
        return None

    @staticmethod
    def _log(scope: Scope, state: dict[str, Any], request_id: str, path: str, status: int, start: float) -> None:
        uploads = state.get(_STATE_UPLOADS) or {}
        logger.info(
            "request %s %s %s status=%d files=%d bytes=%s formats=%s latency_ms=%.1f",
            request_id,
            scope.get("method", "-"),
            path if path in _LOGGED_PATHS else "(other)",
            status,
            uploads.get("files", 0),
            ",".join(str(size) for size in uploads.get("bytes", [])) or "-",
            ",".join(uploads.get("formats", [])) or "-",
            (time.perf_counter() - start) * 1000,
        )


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)
