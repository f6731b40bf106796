"""Explain stage: class activation maps (pytorch-grad-cam), activation maps per layer group, and the
Lesion/Background interpretation of Li & Zwiggelaar (2024).

    from mammocad.explain import explain_images
    result = explain_images("runs/my-run", ["mdb001.pgm"], method="gradcam")  # files in result.out_dir

Imports models, preprocess, training (to load a run) and evaluation (split frames); nothing from
serve or dashboard. The command's names (``explain_images``...) load on first use, so importing a
drawing module such as :mod:`mammocad.explain.display` (what serving needs) does not load the
explain command's run-loading and dataset code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mammocad.explain.cam import (
    CAM_METHODS,
    METHODS,
    check_method,
    class_activation_maps,
    lesion_heatmaps,
    localization_maps,
    overlay,
    target_layer,
)

if TYPE_CHECKING:
    from mammocad.explain.activation_comparison import compare_activations
    from mammocad.explain.evaluation_hooks import gallery_overlays, gallery_pictures_for, localization_maps_for
    from mammocad.explain.run import ExplainResult, explain_images, explain_split

#: The names loaded on first use, and the module each lives in.
_LAZY = {
    "ExplainResult": "mammocad.explain.run",
    "explain_images": "mammocad.explain.run",
    "explain_split": "mammocad.explain.run",
    "compare_activations": "mammocad.explain.activation_comparison",
    "gallery_overlays": "mammocad.explain.evaluation_hooks",
    "gallery_pictures_for": "mammocad.explain.evaluation_hooks",
    "localization_maps_for": "mammocad.explain.evaluation_hooks",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CAM_METHODS",
    "METHODS",
    "ExplainResult",
    "check_method",
    "class_activation_maps",
    "compare_activations",
    "explain_images",
    "explain_split",
    "gallery_overlays",
    "gallery_pictures_for",
    "lesion_heatmaps",
    "localization_maps",
    "localization_maps_for",
    "overlay",
    "target_layer",
]
