"""The API's endpoints: ``/health``, ``/model``, ``/predict`` and ``/explain`` of one served engine.

:class:`Endpoints` holds what they answer from (the engine, the server's settings, the public-text
filter) and has one method per endpoint; :func:`mammocad.serve.api.create_app` registers them. Their
parameters (``File``/``Form`` with descriptions) are what the OpenAPI schema shows.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Literal

from fastapi import File, Form, Request, Security, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from mammocad.errors import MammocadError
from mammocad.explain.cam import target_layer
from mammocad.parse import echo
from mammocad.serve.engine import EXPLAIN_METHODS, InferenceEngine, PreparedImage
from mammocad.serve.guard import token_matches
from mammocad.serve.public import PublicText, error_response, one_line, public_json, validation_line
from mammocad.serve.settings import ACCEPTED_FORMATS, ApiSettings
from mammocad.serve.uploads import (
    WHOLE_FILM,
    UploadError,
    decode_upload,
    note_uploads,
    parse_boxes,
    parse_target,
    read_upload,
)

BEARER = HTTPBearer(auto_error=False, description="The token `mammocad serve` was started with.")


class Endpoints:
    """The endpoints of one served engine (bound methods, registered by ``create_app``)."""

    def __init__(self, engine: InferenceEngine, settings: ApiSettings, public: PublicText, run_card: dict[str, Any]):
        self.engine = engine
        self.settings = settings
        self.public = public
        card = engine.info()
        #: The fields every answer starts with.
        self.header = {"model": str(card["name"]), "version": engine.version, "backend": engine.backend}
        #: What ``/model`` reports as this server's limits.
        self.limits = {
            "max_upload_bytes": settings.max_upload_bytes,
            "max_batch": settings.max_batch,
            "max_pixels": engine.max_pixels,
            "decode_budget_mb": engine.decode_budget_mb,
            "accepted_formats": list(ACCEPTED_FORMATS),
            "auth_required": settings.token is not None,
        }
        self.run_card = public_json(run_card, public)

    # --- errors ------------------------------------------------------------------------------------

    async def validation_error(self, request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default is a list of error objects; a client (and a person reading curl output)
        # gets one line instead: "opacity: Input should be less than or equal to 1".
        return error_response(422, self.public(validation_line(exc)))

    async def http_error(self, request: Request, exc: HTTPException) -> Response:
        # Every HTTPException (ours, FastAPI's 404/405, multipart parse errors) as one clean line.
        return error_response(exc.status_code, self.public(str(exc.detail)), exc.headers)

    def require_token(self, credentials: HTTPAuthorizationCredentials | None = Security(BEARER)) -> None:
        # The guard middleware has already refused a bad token before reading the body; checking again
        # here costs nothing and is what puts the security scheme into the OpenAPI schema.
        if not token_matches(self.settings.token, credentials.credentials if credentials else None):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    # --- endpoints ---------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return {"status": "ok", **self.header}

    def model(self) -> dict[str, Any]:
        return {**self.engine.info(), "limits": self.limits, "card": self.run_card}

    def predict(
        self,
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
        engine, settings = self.engine, self.settings
        uploads = note_uploads(request, len(files))
        if len(files) > settings.max_batch:
            raise HTTPException(413, f"{len(files)} files in one request; the limit is {settings.max_batch}")
        # Only empty values (what Swagger UI's "Send empty value" sends): no boxes, whatever the file count.
        box_list = parse_boxes(boxes if any(value.strip() for value in boxes) else None, len(files))
        if not engine.needs_box and any(box is not None for box in box_list):
            raise HTTPException(422, WHOLE_FILM.format(field="boxes"))
        items: list[dict[str, Any]] = []
        good: list[tuple[dict[str, Any], PreparedImage]] = []
        for index, upload in enumerate(files):
            item: dict[str, Any] = {"index": index, "filename": upload.filename}
            items.append(item)
            try:
                label = f"file {index + 1}"  # 1-based in messages, as people count files
                data = read_upload(upload, settings.max_upload_bytes, label, uploads)
                # Predictions need only the model input: no full-size original kept per file of the batch.
                image = decode_upload(engine, data, label, box_list[index], request, keep_original=False)
                good.append((item, image))
            except UploadError as exc:
                item.update(error=self.public(exc.detail), status=exc.status)
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
        return {**self.header, "results": items}

    def explain(
        self,
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
        engine = self.engine
        uploads = note_uploads(request, 1)
        offered = engine.explain_methods
        if method.strip().lower() not in offered:
            raise HTTPException(422, f"method: unknown method {echo(method)}; choose from {', '.join(offered)}")
        lesion_box = parse_boxes([box] if box else None, 1, "box")[0]
        if not engine.needs_box and lesion_box is not None:
            raise HTTPException(422, WHOLE_FILM.format(field="box"))
        # Checked before the upload is decoded: a typo costs nothing, and the message names the field.
        wanted = parse_target(target, engine.classes)
        if layer.strip() and method.strip().lower() != "lesion":
            try:
                target_layer(engine.run.model, layer)
            except MammocadError as exc:
                raise HTTPException(422, f"layer: {exc}") from None
        try:
            data = read_upload(file, self.settings.max_upload_bytes, "file 1", uploads)
            image = decode_upload(engine, data, "file 1", lesion_box, request)
            result = engine.explain(image, method, wanted, layer.strip() or None, opacity)
        except UploadError as exc:
            raise HTTPException(exc.status, exc.detail) from None
        except MammocadError as exc:  # unknown target or layer
            raise HTTPException(422, one_line(str(exc))) from None
        summary = result.summary()
        if output_format == "png":
            compact = json.dumps(summary, separators=(",", ":"))  # ASCII-escaped: safe in a header
            return Response(result.overlay_png, media_type="image/png", headers={"X-Mammocad-Explanation": compact})
        return {
            **self.header,
            "index": 0,
            "filename": file.filename,
            **summary,
            "overlay_png": base64.b64encode(result.overlay_png).decode("ascii"),
            "input_overlay_png": base64.b64encode(result.input_overlay_png).decode("ascii"),
        }
