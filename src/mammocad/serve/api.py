"""The REST API of ``mammocad serve RUN``: health, model card, predictions and heatmaps over HTTP (FastAPI).

Endpoints (OpenAPI schema at ``/openapi.json``, interactive docs at ``/docs`` and ``/redoc``, whose
Swagger UI and ReDoc scripts are served from ``/static/docs/``: no CDN, the docs work offline):

* ``GET /health``: liveness and the model version; always open.
* ``GET /model``: the model card (:meth:`InferenceEngine.info`), the run's provenance and fitness
  (``card``) and the server's limits (``limits``).
* ``POST /predict``: class probabilities of one or many uploaded images, predicted in one batch.
* ``POST /explain``: a CAM heatmap of one upload, as JSON (base64 PNGs) or as the overlay PNG itself.

With a token, the last three need ``Authorization: Bearer <token>``; it is checked before the body
is read, so an unauthenticated client cannot make the server spool a large upload.

Bad input is a 4xx with a one-line ``detail`` and the service keeps serving: 413 for too-large
uploads/images/batches (an image is too large with too many pixels or when decoding it would need
more than the decode budget; uploads decoding at once share that budget, see
:class:`~mammocad.serve.engine.InferenceEngine`), 415 for content that is no supported image, 422 for damaged images, bad
form fields, missing lesion boxes and a box sent to a whole-film run, 401 for a missing or wrong token.
An unexpected failure is a 500 with a generic message and the request id (the traceback goes to the
log, the upload does not).
Numbers in form fields are ASCII only (``²`` or ``٣`` is text, not a digit). No error text carries
a server path: absolute paths are replaced by ``<path>`` before a response leaves.

Hardening: no redirects (``/health/`` is a 404, not a redirect built from the client's ``Host``
header), and ``create_app(docs=False)`` (``mammocad serve --no-docs``) serves no ``/docs``,
``/redoc`` or ``/openapi.json``.

Privacy: uploads may be DICOMs full of patient identifiers and file names may be patient names.
Nothing from an upload is logged (one line per request: id, endpoint, file count, byte sizes,
sniffed formats, status, latency); responses echo only each file's index and the name the client
sent. The engine is handed ``file <n>`` (1-based: ``file 1`` is the first file; the ``index`` of a result
is 0-based), never the client's name, so no error message carries it. Optional form fields sent empty
are absent (Swagger UI's "Try it out" sends them so).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import math
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
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mammocad.data.images import DEFAULT_MAX_PIXELS, _format_from_head
from mammocad.errors import ConfigError, ImageReadError, MammocadError
from mammocad.explain.cam import target_layer
from mammocad.io import read_json_object
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
#: What uploads may be (sniffed from their content, never their name).
ACCEPTED_FORMATS = ("DICOM", "PNG", "JPEG", "PGM", "TIFF", "BMP")
#: Where the Swagger UI and ReDoc assets are served (from the ``fastapi-offline`` package: no CDN).
DOCS_ASSETS_URL = "/static/docs"
DOCS_ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
#: The docs pages may load nothing from elsewhere: ReDoc's bundle links a logo on its CDN, Swagger UI a
#: validator badge; the browser refuses both (no request leaves, nothing waits on a network that is not there).
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)
# Paths logged as themselves; anything else is logged as "(other)" since a URL can carry anything.
_LOGGED_PATHS = (
    PROTECTED_PATHS
    | {"/health", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"}
    | {f"{DOCS_ASSETS_URL}/{name}" for name in DOCS_ASSETS}
)
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
    onnx_variant: str = "fp32"
    max_pixels: int = DEFAULT_MAX_PIXELS
    decode_budget_mb: float | None = Field(None, gt=0, description="Decode budget in MiB (None: env or default).")
    api: ApiSettings = ApiSettings()


# ---------------------------------------------------------------------------------------------
# Response models: they make the OpenAPI schema say what each endpoint returns.


class ErrorResponse(BaseModel):
    """Every 4xx/5xx: one line saying what was wrong."""

    detail: str = Field(..., examples=["file 1: PNG is truncated (no IEND chunk)"])


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


class ApiLimits(BaseModel):
    """What this server accepts: an integrator's checklist."""

    max_upload_bytes: int = Field(..., description="Largest accepted file, in bytes (413 above).")
    max_batch: int = Field(..., description="Most files in one /predict request (413 above).")
    max_pixels: int = Field(..., description="Most pixels in one image, read from its header (413 above).")
    decode_budget_mb: float = Field(
        ..., description="Memory (MiB) the decodes and heatmaps of all requests in flight share (413 for one over it)."
    )
    accepted_formats: list[str] = Field(..., description="Image formats accepted, sniffed from the content.")
    auth_required: bool = Field(..., description="True: /predict, /explain and /model need a bearer token.")


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
    onnx_variant: dict[str, Any] | None = Field(
        None,
        description="The ONNX model served (onnx backend): `name` (fp32, int8), `file`, and for a variant its "
        "`parity` check against fp32 on the run's test split (n_images, auc_macro, auc_change, max_abs_prob_diff, "
        "argmax_agreement, tolerance, passed); null on the torch backend.",
    )
    explain_methods: list[str]
    max_pixels: int
    limits: ApiLimits
    card: dict[str, Any] = Field(
        ...,
        description="Provenance and fitness of the run: what it was trained on, how it scored (with confidence "
        "intervals), calibration and warnings (mammocad.training.model_card); with `source` naming where it "
        "came from ('model_card', or 'run files' for what the run directory holds when that is unavailable).",
    )


class PredictionItem(BaseModel):
    """One uploaded file: its prediction, or why it could not be used."""

    index: int = Field(..., description="Position of the file in the request.")
    filename: str | None = Field(None, description="The file name as the client sent it.")
    prediction: str | None = Field(None, description="The most probable class.")
    label: str | None = Field(
        None,
        description="The answer to report: the most probable class, or 'indeterminate' when its (calibrated) "
        "probability or its margin over the runner-up is below the run's thresholds.",
    )
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
    label: str | None = Field(None, description="The top class, or 'indeterminate' (see PredictionItem).")
    probabilities: dict[str, float]
    target: str = Field(..., description="The class the heatmap explains.")
    method: str
    layer: str
    heatmap_shape: list[int] = Field(
        ..., description="Height and width of overlay_png as sent (the original scaled to at most 2048 a side)."
    )
    original_shape: list[int] = Field(..., description="Height and width of the uploaded image (DICOM or other).")
    class_agnostic: bool = Field(
        False,
        description="True for maps that ignore the class asked for (EigenCAM, the lesion map): "
        "where the network responds, not evidence for `target`.",
    )
    meaning: str = Field("", description="What the heatmap's colours mean, e.g. 'relative contribution to malignant'.")
    overlay_png: str = Field(..., description="Base64 PNG: the heatmap over the original image (heatmap_shape).")
    input_overlay_png: str = Field(..., description="Base64 PNG: the heatmap over the model input.")


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or wrong bearer token."},
    413: {
        "model": ErrorResponse,
        "description": "Upload, image (pixels, or memory to decode) or batch over the server's limits.",
    },
    415: {"model": ErrorResponse, "description": "Not a supported image (DICOM, PNG, JPEG, PGM, TIFF, BMP)."},
    422: {
        "model": ErrorResponse,
        "description": "Damaged image, bad form field, missing lesion box, or a box for a whole-film run.",
    },
}

_DESCRIPTION = """
Mammography CAD inference for one trained **mammocad** run.

* `POST /predict`: upload one or more images (field `files`; DICOM, PNG, JPEG, PGM, TIFF; the type is
  read from the content, never from the file name); get class probabilities. A bad file in a batch gets
  an `error` and the others are still predicted.
* `POST /explain`: upload one image (field `file`); get a Grad-CAM-family heatmap as JSON with base64
  PNGs, or (`format=png`) the overlay PNG itself with the summary in the `X-Mammocad-Explanation` header.
* Runs trained on mass-centred ROIs need each image's lesion box `x0,y0,x1,y1` (original pixels); runs
  trained on whole films refuse one (`GET /model`: `needs_lesion_box`). Optional fields left empty are absent.
* Errors name files from 1 (`file 1` is the first); result `index` values count from 0.
* `GET /model`: the model card, its provenance and evaluation (`card`) and this server's `limits`.

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
        # /docs and /redoc are built below on self-hosted assets (FastAPI's own load them from a CDN).
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.engine = engine
    build_schema = app.openapi

    def openapi() -> dict[str, Any]:
        return _binary_uploads(build_schema())

    app.openapi = openapi  # type: ignore[method-assign]
    if docs:
        _add_docs(app)
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
    limits = {
        "max_upload_bytes": settings.max_upload_bytes,
        "max_batch": settings.max_batch,
        "max_pixels": engine.max_pixels,
        "decode_budget_mb": engine.decode_budget_mb,
        "accepted_formats": list(ACCEPTED_FORMATS),
        "auth_required": settings.token is not None,
    }
    run_card = _public_json(run_card_of(engine), public)

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
        return {**engine.info(), "limits": limits, "card": run_card}

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
        boxes: list[str] = Form(
            [],
            description="Lesion box x0,y0,x1,y1 (original pixels) per file, in order; needed by ROI-trained "
            "models, refused by whole-film ones. Give none, or exactly one per file (an empty value: no box "
            "for that file).",
        ),
    ) -> dict[str, Any]:
        """Predict every readable file in one model batch; a bad file in a batch gets an ``error`` item.

        A single bad file, or a batch of only bad files, is an error response (4xx) instead.
        """
        uploads = _note_uploads(request, len(files))
        if len(files) > settings.max_batch:
            raise HTTPException(413, f"{len(files)} files in one request; the limit is {settings.max_batch}")
        # Only empty values (what Swagger UI's "Send empty value" sends): no boxes, whatever the file count.
        box_list = _parse_boxes(boxes if any(value.strip() for value in boxes) else None, len(files))
        if not engine.needs_box and any(box is not None for box in box_list):
            raise HTTPException(422, _WHOLE_FILM.format(field="boxes"))
        items: list[dict[str, Any]] = []
        good: list[tuple[dict[str, Any], PreparedImage]] = []
        for index, upload in enumerate(files):
            item: dict[str, Any] = {"index": index, "filename": upload.filename}
            items.append(item)
            try:
                label = f"file {index + 1}"  # 1-based in messages, as people count files
                data = _read_upload(upload, settings.max_upload_bytes, label, uploads)
                # Predictions need only the model input: no full-size original kept per file of the batch.
                image = _decode(engine, data, label, box_list[index], request, keep_original=False)
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
            item.update(
                prediction=engine.classes[int(row.argmax())],
                label=engine.label(row),
                probabilities=engine.probabilities(row),
            )
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
        # Optional text fields default to "" (not None): a nullable field has no type Swagger UI can show, and
        # its "Try it out" then sends the placeholder "string"; an empty value is the field left out.
        target: str = Form("", description="Class name or index to explain; empty: the predicted class."),
        opacity: float = Form(0.45, ge=0.0, le=1.0, description="Heatmap opacity in the overlays."),
        box: str = Form(
            "",
            description="Lesion box x0,y0,x1,y1 (original pixels); ROI-trained runs need it, whole-film runs refuse it.",
        ),
        layer: str = Form("", description="Layer to explain (e.g. -1); empty: the last layer group."),
        output_format: Literal["json", "png"] = Form("json", alias="format", description="json or png."),
    ) -> Any:
        """A Grad-CAM-family heatmap over the original image (scaled to at most 2048 pixels a side).

        ``heatmap_shape`` is the returned overlay PNG's height and width, ``original_shape`` the upload's.
        """
        uploads = _note_uploads(request, 1)
        offered = engine.explain_methods
        if method.strip().lower() not in offered:
            raise HTTPException(422, f"method: unknown method {echo(method)}; choose from {', '.join(offered)}")
        lesion_box = _parse_boxes([box] if box else None, 1, "box")[0]
        if not engine.needs_box and lesion_box is not None:
            raise HTTPException(422, _WHOLE_FILM.format(field="box"))
        # Checked before the upload is decoded: a typo costs nothing, and the message names the field.
        wanted = _parse_target(target, engine.classes)
        if layer.strip() and method.strip().lower() != "lesion":
            try:
                target_layer(engine.run.model, layer)
            except MammocadError as exc:
                raise HTTPException(422, f"layer: {exc}") from None
        try:
            data = _read_upload(file, settings.max_upload_bytes, "file 1", uploads)
            image = _decode(engine, data, "file 1", lesion_box, request)
            result = engine.explain(image, method, wanted, layer.strip() or None, opacity)
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
        onnx_variant=settings.onnx_variant,
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
        message = str(error.get("msg", "invalid"))
        if "Expected UploadFile" in message:  # a text part (an empty "Try it out" item) where a file belongs
            loc = [part for part in error.get("loc", ()) if part != "body"]
            field = str(loc[0]) if loc else "file"
            entry = f" entry {loc[1] + 1}" if len(loc) > 1 and isinstance(loc[1], int) else ""  # 1-based
            parts.append(f"{field}:{entry} not a file; send an image as a file part (curl -F {field}=@scan.dcm)")
            continue
        parts.append(f"{where}: {message}")
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


_WHOLE_FILM = (
    "{field}: this model was trained on whole films (preprocess mode 'full'), not lesion ROIs; "
    "it takes no lesion box: leave {field} empty"
)


# ---------------------------------------------------------------------------------------------
# Self-hosted docs and the run's card


def docs_assets_dir() -> Path | None:
    """The folder holding Swagger UI's and ReDoc's files (``DOCS_ASSETS``), or None when none is installed.

    They come from the ``fastapi-offline`` package (Swagger UI: Apache-2.0, ReDoc: MIT), so ``/docs`` and
    ``/redoc`` load nothing from a CDN and work on a network without internet access.
    """
    try:
        import fastapi_offline
    except ImportError:
        return None
    folder = Path(fastapi_offline.__file__).resolve().parent / "static"
    return folder if all((folder / name).is_file() for name in DOCS_ASSETS) else None


def _add_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI), ``/docs/oauth2-redirect``, ``/redoc`` and their assets under ``DOCS_ASSETS_URL``."""
    assets = docs_assets_dir()
    title = f"{app.title} - docs"
    openapi_url = app.openapi_url or "/openapi.json"
    if assets is None:
        # No CDN fallback: a page that loads scripts from the internet is blank offline and leaks the visit.
        missing = HTMLResponse(
            "<!doctype html><title>mammocad API docs</title><p>The interactive docs need the "
            "<code>fastapi-offline</code> package (it ships Swagger UI and ReDoc). The OpenAPI schema is at "
            f'<a href="{openapi_url}">{openapi_url}</a>.</p>'
        )
        app.add_api_route("/docs", lambda: missing, include_in_schema=False)
        app.add_api_route("/redoc", lambda: missing, include_in_schema=False)
        return
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=assets), name="docs-assets")
    favicon = f"{DOCS_ASSETS_URL}/favicon.png"

    def swagger_ui() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=openapi_url,
            title=title,
            swagger_js_url=f"{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=favicon,
            oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_ui_parameters={"validatorUrl": None},  # no badge from validator.swagger.io
        )
        page.headers["Content-Security-Policy"] = DOCS_CSP
        return page

    def redoc() -> HTMLResponse:
        page = get_redoc_html(
            openapi_url=openapi_url,
            title=title,
            redoc_js_url=f"{DOCS_ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=favicon,
            with_google_fonts=False,
        )
        page.headers["Content-Security-Policy"] = DOCS_CSP
        return page

    app.add_api_route("/docs", swagger_ui, include_in_schema=False)
    app.add_api_route("/docs/oauth2-redirect", get_swagger_ui_oauth2_redirect_html, include_in_schema=False)
    app.add_api_route("/redoc", redoc, include_in_schema=False)


def _binary_uploads(schema: dict[str, Any]) -> dict[str, Any]:
    """Mark every upload field ``format: binary`` too (OpenAPI 3.0's way, beside 3.1's ``contentMediaType``):
    Swagger UI and client generators then show a file picker / take bytes. Changes ``schema`` in place."""

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "string" and node.get("contentMediaType") == "application/octet-stream":
                node.setdefault("format", "binary")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def run_card_of(engine: InferenceEngine) -> dict[str, Any]:
    """Provenance and fitness of the served run: ``mammocad.training.model_card.model_card(run_dir)``.

    Where that is not available (or fails on this run), what the run directory itself records: its
    training status and dates, task, classes and image counts per split, dataset name and split, and
    which held-out evaluations exist; ``source`` says which, ``warnings`` why.
    """
    run_dir = Path(engine.run.run_dir)
    warnings: list[str] = []
    try:
        from mammocad.training.model_card import model_card
    except ImportError:
        warnings.append("no model card module in this version: provenance from the run files only")
    else:
        try:
            card = model_card(run_dir)
            # Server paths mean nothing to a client (and are scrubbed anyway): the names stay.
            for section in card.values():
                if isinstance(section, dict):
                    section.pop("path", None)
            return {"source": "model_card", **card}
        except Exception as exc:  # a card is extra information: the API still serves without one
            logger.warning("model card of %s failed (%s)", run_dir.name, type(exc).__name__)
            warnings.append(f"the model card could not be built ({type(exc).__name__}): run files only")
    return {"source": "run files", **_run_files_card(run_dir), "warnings": warnings}


def _run_files_card(run_dir: Path) -> dict[str, Any]:
    status = read_json_object(run_dir / "run.json")
    trained_on: dict[str, Any] = {key: status[key] for key in ("task", "classes", "counts", "refit") if key in status}
    try:
        import yaml

        config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        data = config.get("data") or {}
        if data.get("dataset"):
            trained_on["dataset"] = Path(str(data["dataset"])).name  # its name, never the server's path
        if data.get("split"):
            trained_on["split"] = str(data["split"])
    except (OSError, ValueError, AttributeError, ImportError):
        pass
    evaluations = {}
    for folder in sorted((run_dir / "evaluation").glob("*")) if (run_dir / "evaluation").is_dir() else []:
        metrics = read_json_object(folder / "metrics.json")
        evaluations[folder.name] = {
            key: value for key, value in metrics.items() if isinstance(value, (int, float, str, bool))
        }
    return {
        "run": {
            "name": run_dir.name,
            **{key: status[key] for key in ("status", "started", "ended", "early_stopped") if key in status},
        },
        "trained_on": trained_on,
        "evaluation": evaluations,
    }


def _public_json(value: Any, public: _PublicText) -> Any:
    """``value`` made JSON-safe (NaN and infinities: null) with server paths replaced in every string."""
    return _scrub(json.loads(json.dumps(value, default=str)), public)


def _scrub(value: Any, public: _PublicText) -> Any:
    if isinstance(value, str):
        return public.pattern.sub("<path>", value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_scrub(item, public) for item in value]
    if isinstance(value, dict):
        return {str(key): _scrub(item, public) for key, item in value.items()}
    return value


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
