"""The API server's settings: its auth and limits (:class:`ApiSettings`) and all one server process needs
(:class:`ServeSettings`), with the defaults ``mammocad serve`` starts from."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mammocad.data.images import DEFAULT_MAX_PIXELS

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
# Room per multipart part for its headers and boundary, and for the small form fields.
PART_OVERHEAD = 64 * 1024


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
            return self.max_batch * (self.max_upload_bytes + PART_OVERHEAD)
        if path == "/explain":
            return self.max_upload_bytes + 4 * PART_OVERHEAD
        return PART_OVERHEAD


class ServeSettings(BaseModel):
    """All one server process needs to build its app; how ``--workers N`` hands the options to each worker."""

    run: Path
    backend: str = "auto"
    onnx_variant: str = "fp32"
    max_pixels: int = DEFAULT_MAX_PIXELS
    decode_budget_mb: float | None = Field(None, gt=0, description="Decode budget in MiB (None: env or default).")
    api: ApiSettings = ApiSettings()
