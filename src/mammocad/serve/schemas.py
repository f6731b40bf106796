"""What the API answers, as pydantic models: they make the OpenAPI schema say what each endpoint returns,
which error statuses it can give, and what the docs page says about the service."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


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


#: The error responses the endpoints document (each a one-line ``detail``).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
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

#: The service description on the docs pages (``create_app`` adds the model served).
API_DESCRIPTION = """Mammography CAD inference for one trained **mammocad** run.

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
