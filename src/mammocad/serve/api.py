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

The app is assembled here from modules named after what they are: :mod:`~mammocad.serve.settings`
(auth and limits), :mod:`~mammocad.serve.schemas` (response models), :mod:`~mammocad.serve.routes`
(the endpoints), :mod:`~mammocad.serve.uploads` (reading and checking uploads and form fields),
:mod:`~mammocad.serve.guard` (the ASGI guard), :mod:`~mammocad.serve.public` (what error texts may
say), :mod:`~mammocad.serve.docs` (the self-hosted docs) and :mod:`~mammocad.serve.card` (the run's
card). Their public names stay importable from here.
"""

from __future__ import annotations

import logging
import os
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any

from fastapi import FastAPI, Security
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from mammocad.serve.card import run_card_of
from mammocad.serve.docs import DOCS_ASSETS, DOCS_ASSETS_URL, DOCS_CSP, add_docs, binary_uploads, docs_assets_dir
from mammocad.serve.engine import InferenceEngine
from mammocad.serve.guard import RequestGuard
from mammocad.serve.public import PublicText, server_roots
from mammocad.serve.routes import Endpoints
from mammocad.serve.schemas import (
    API_DESCRIPTION,
    ERROR_RESPONSES,
    ApiLimits,
    ErrorResponse,
    ExplainResponse,
    HealthResponse,
    ModelInfo,
    ModelInput,
    PredictionItem,
    PredictResponse,
)
from mammocad.serve.settings import (
    ACCEPTED_FORMATS,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_UPLOAD_BYTES,
    MIB,
    PROTECTED_PATHS,
    SETTINGS_ENV,
    TOKEN_ENV,
    ApiSettings,
    ServeSettings,
)

logger = logging.getLogger("mammocad.serve")


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
    public = PublicText(server_roots(engine))
    endpoints = Endpoints(engine, settings, public, run_card_of(engine))
    model_name = endpoints.header["model"]

    app = FastAPI(
        title="mammocad inference API",
        description=API_DESCRIPTION.strip() + f"\n\nServing `{model_name}`, version `{engine.version}`.",
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
        return binary_uploads(build_schema())

    app.openapi = openapi  # type: ignore[method-assign]
    if docs:
        add_docs(app, docs_assets_dir())
    app.add_middleware(RequestGuard, settings=settings, public=public)
    app.add_exception_handler(RequestValidationError, endpoints.validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, endpoints.http_error)  # type: ignore[arg-type]

    protected = [Security(endpoints.require_token)] if settings.token else []
    app.add_api_route(
        "/health",
        endpoints.health,
        methods=["GET"],
        response_model=HealthResponse,
        tags=["service"],
        summary="Liveness and model version",
    )
    app.add_api_route(
        "/model",
        endpoints.model,
        methods=["GET"],
        response_model=ModelInfo,
        tags=["model"],
        summary="Model card",
        dependencies=protected,
        responses={401: ERROR_RESPONSES[401]},
    )
    app.add_api_route(
        "/predict",
        endpoints.predict,
        methods=["POST"],
        response_model=PredictResponse,
        response_model_exclude_none=True,
        tags=["model"],
        summary="Class probabilities of one or more images",
        dependencies=protected,
        responses=ERROR_RESPONSES,
    )
    app.add_api_route(
        "/explain",
        endpoints.explain,
        methods=["POST"],
        response_model=ExplainResponse,
        tags=["model"],
        summary="Heatmap of one image (JSON or PNG)",
        dependencies=protected,
        responses={
            **ERROR_RESPONSES,
            200: {
                "content": {"image/png": {}},
                "description": "JSON (default), or with format=png the overlay PNG, its summary in the "
                "X-Mammocad-Explanation header.",
            },
        },
    )
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


def _package_version() -> str:
    try:
        return package_version("mammocad")
    except PackageNotFoundError:
        return "0+unknown"


__all__ = [
    "ACCEPTED_FORMATS",
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "DOCS_ASSETS",
    "DOCS_ASSETS_URL",
    "DOCS_CSP",
    "MIB",
    "PROTECTED_PATHS",
    "SETTINGS_ENV",
    "TOKEN_ENV",
    "ApiLimits",
    "ApiSettings",
    "ErrorResponse",
    "ExplainResponse",
    "HealthResponse",
    "ModelInfo",
    "ModelInput",
    "PredictResponse",
    "PredictionItem",
    "ServeSettings",
    "app_from_env",
    "configure_logging",
    "create_app",
    "create_app_from_settings",
    "docs_assets_dir",
    "run_card_of",
]
