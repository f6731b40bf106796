"""The guard: the outermost layer of the app (inside Starlette's ServerErrorMiddleware).

Before the body is read it gives each request its id, refuses a missing or wrong bearer token and a
declared body over the endpoint's limit, then caps what actually arrives; it logs one line per request
(never anything from an upload) and turns an unexpected failure into a generic 500 with the request id.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
import uuid
from typing import Any

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mammocad.serve.docs import DOCS_ASSETS, DOCS_ASSETS_URL
from mammocad.serve.public import PublicText, error_response
from mammocad.serve.settings import PROTECTED_PATHS, ApiSettings

logger = logging.getLogger("mammocad.serve")

# Paths logged as themselves; anything else is logged as "(other)" since a URL can carry anything.
_LOGGED_PATHS = (
    PROTECTED_PATHS
    | {"/health", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"}
    | {f"{DOCS_ASSETS_URL}/{name}" for name in DOCS_ASSETS}
)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ASCII_DIGITS = re.compile(r"[0-9]{1,30}")
#: Where in the request's state the upload endpoints note what the log line reports
#: (:func:`mammocad.serve.uploads.note_uploads`).
STATE_UPLOADS = "mammocad_uploads"
#: Where in the request's state the guard keeps the request id.
STATE_REQUEST_ID = "request_id"


class RequestGuard:
    """Request id, auth and body cap before the body is read, one log line, and no tracebacks to clients."""

    def __init__(self, app: ASGIApp, settings: ApiSettings, public: PublicText) -> None:
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
        state[STATE_REQUEST_ID] = request_id
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
            await error_response(exc.status_code, self.public(str(exc.detail)), exc.headers)(
                scope, receive, send_with_id
            )
        except Exception as exc:
            if started:
                raise  # a response is under way; the server can only close the connection
            logger.error("request %s: unexpected %s", request_id, type(exc).__name__, exc_info=exc)
            detail = f"internal server error (request id {request_id})"
            await error_response(500, detail)(scope, receive, send_with_id)
        finally:
            self._log(scope, state, request_id, path, status, start)

    def _refusal(self, path: str, headers: Headers, limit: int) -> JSONResponse | None:
        """A response that refuses the request from its headers alone, or None."""
        if path in PROTECTED_PATHS and not token_matches(
            self.settings.token, bearer_token(headers.get("authorization"))
        ):
            return error_response(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        length = headers.get("content-length", "").strip()
        # ASCII digits only: a header is latin-1 text, and "²".isdigit() is True but int("²") raises.
        if _ASCII_DIGITS.fullmatch(length) and int(length) > limit:
            return error_response(413, f"request body is {int(length):,} bytes, over the limit of {limit:,}")
        return None

    @staticmethod
    def _log(scope: Scope, state: dict[str, Any], request_id: str, path: str, status: int, start: float) -> None:
        uploads = state.get(STATE_UPLOADS) or {}
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


def token_matches(expected: str | None, given: str | None) -> bool:
    """Whether ``given`` is the server's token (always, when it has none), compared in constant time."""
    if expected is None:
        return True
    if given is None:
        return False
    # Constant-time: the comparison must not tell an attacker how many leading characters were right,
    # nor (comparing digests of equal length) how long the token is.
    given_digest = hashlib.sha256(given.encode("utf-8", "surrogateescape")).digest()
    return hmac.compare_digest(given_digest, hashlib.sha256(expected.encode("utf-8")).digest())


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (None: no header, or another scheme)."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None
