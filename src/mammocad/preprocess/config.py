"""The preprocessing configuration: one pydantic model, hashed into the cache key."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: Bump when the algorithm changes so stale caches are never reused.
PIPELINE_VERSION = 3


class PreprocessConfig(BaseModel):
    """How images become model inputs. Every field changes the cache key."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    mode: Literal["full", "roi"] = Field(
        "full", description="full: the whole breast per image; roi: one mass-centred crop per lesion."
    )
    image_size: tuple[int, int] = Field((224, 224), description="Output (height, width); an int means square.")
    crop_breast: bool = Field(True, description="Crop to the breast (drops film labels and background).")
    clahe: bool = Field(True, description="Contrast-limited adaptive histogram equalisation.")
    clahe_clip_limit: float = Field(2.0, gt=0, description="CLAHE clip limit.")
    clahe_tile_grid: int = Field(8, ge=1, le=64, description="CLAHE tiles per side.")
    flip_to: Literal["left", "right"] | None = Field(
        "left", description="Mirror images so every chest wall is on this side (None: keep as stored)."
    )
    roi_min_size: int = Field(224, ge=16, description="ROI crop is max(roi_min_size, box) on each side.")
    output_bits: Literal[8, 16] = Field(
        8,
        description="Bit depth of the cached images. CLAHE always equalises on 8 bits (OpenCV's 16-bit "
        "CLAHE behaves differently for the same clip limit); 16 keeps native precision when clahe is off.",
    )
    window: Literal["full-range", "percentile"] = Field(
        "full-range",
        description="full-range: divide by the bit depth's maximum; percentile: stretch the breast's "
        "0.5-99.5 percentiles to [0, 1] (for 16-bit DICOMs using a fraction of their range).",
    )

    @field_validator("image_size", mode="before")
    @classmethod
    def _square(cls, value: object) -> object:
        if isinstance(value, int):
            return (value, value)
        return value

    @field_validator("image_size")
    @classmethod
    def _positive(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 16 or max(value) > 4096:
            raise ValueError(f"image_size must be between 16 and 4096 pixels per side, got {value}")
        return value

    def cache_key(self) -> str:
        """Short stable hash of the config and the pipeline version."""
        payload = json.dumps({"v": PIPELINE_VERSION, **self.model_dump(mode="json")}, sort_keys=True)
        return (
            f"{self.mode}-{self.image_size[0]}x{self.image_size[1]}-"
            + hashlib.sha256(payload.encode()).hexdigest()[:10]
        )
