"""Upload & explain: any image file in (type sniffed from its bytes), prediction and heatmap out.

Every problem a user can fix raises a :class:`~mammocad.errors.MammocadError` naming the file and
the reason; no DICOM tag is read into the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mammocad.dashboard.viewer import MAX_VIEW_SIDE
from mammocad.explain.display import overlay_rgba
from mammocad.explain.overlay import colorbar_spec, heatmap_caption
from mammocad.parse import Box, parse_box
from mammocad.serve.engine import Explanation, InferenceEngine

#: How the lesion-box field is named in error messages.
BOX_FIELD = "lesion box"


def parse_upload_box(text: str) -> Box | None:
    """The lesion-box field: ``x0,y0,x1,y1`` (original pixels) -> a box; blank -> None; ConfigError when malformed."""
    return parse_box(text, BOX_FIELD) if text.strip() else None


@dataclass(frozen=True)
class UploadResult:
    """An explained upload: what was read and the explanation (prediction, probabilities, overlay).

    ``film`` is the decoded film (windowed as in training) as uint16 at its own resolution, and
    ``overlay_rgba`` the heatmap picture for it (breast only, transparent where low, at most
    :data:`~mammocad.dashboard.viewer.MAX_VIEW_SIDE` a side): what the film viewer shows, blended in the browser.
    """

    name: str
    file_format: str
    shape: tuple[int, int]
    explanation: Explanation
    film: np.ndarray | None = None
    overlay_rgba: np.ndarray | None = None

    @property
    def caption(self) -> str:
        """Method, class (only for class-specific methods), layer, and what the colours mean."""
        e = self.explanation
        return heatmap_caption(e.method, e.target, e.layer)

    @property
    def colorbar(self) -> dict:
        """The viewer's legend for this heatmap."""
        return colorbar_spec(self.explanation.method, self.explanation.target)


def explain_upload(
    engine: InferenceEngine,
    data: bytes,
    name: str,
    box: str = "",
    method: str = "gradcam",
    target: str | None = None,
    opacity: float = 0.45,
) -> UploadResult:
    """Decode an uploaded file (type sniffed from its bytes, whatever its name), predict and draw a heatmap.

    ``target`` None explains the predicted class. Every problem a user can fix (empty, corrupt or
    non-image file, missing or bad lesion box, unknown method/class) raises MammocadError with
    the file name and reason; no DICOM tag is read into the result.
    """
    image = engine.decode(data, name, parse_upload_box(box))
    explanation = engine.explain(image, method, target=target, opacity=opacity)
    height, width = image.original.shape[:2]
    film = np.rint(np.clip(np.nan_to_num(image.original), 0.0, 1.0) * 65535).astype(np.uint16)
    rgba = overlay_rgba(image.original, image.geometry, explanation.heatmap_original, MAX_VIEW_SIDE)
    return UploadResult(name, image.file_format, (height, width), explanation, film, rgba)
