"""Lesion masks as geometry: the one place a mask becomes a bounding box.

Importers (CSV tables, INbreast outlines) and the preprocessing driver all need a mask's extent;
computing it here once keeps the half-open convention (``x1``/``y1`` one past the last pixel) the same
everywhere.
"""

from __future__ import annotations

import numpy as np

from mammocad.parse import Box


def mask_bounding_box(mask: np.ndarray) -> Box | None:
    """The half-open box ``(x0, y0, x1, y1)`` of a 2-D mask's nonzero pixels; None when it has none."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


__all__ = ["Box", "mask_bounding_box"]
