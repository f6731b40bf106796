"""The self-hosted interactive docs: ``/docs`` (Swagger UI) and ``/redoc`` on assets served by the API
itself (no CDN, so the docs work offline), and the upload fields marked binary in the OpenAPI schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

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


def add_docs(app: FastAPI, assets: Path | None) -> None:
    """``/docs`` (Swagger UI), ``/docs/oauth2-redirect``, ``/redoc`` and their ``assets`` (from
    :func:`docs_assets_dir`; None: pages saying what is missing) under ``DOCS_ASSETS_URL``."""
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


def binary_uploads(schema: dict[str, Any]) -> dict[str, Any]:
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
