"""Explain stage: class activation maps (pytorch-grad-cam), activation maps per layer group, and the
Lesion/Background interpretation of report D.

    from mammocad.explain import explain_images
    result = explain_images("runs/my-run", ["mdb001.pgm"], method="gradcam")  # files in result.out_dir

Imports models, preprocess, training (to load a run) and evaluation (split frames); nothing from
serve or dashboard.
"""

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
from mammocad.explain.run import (
    ExplainResult,
    compare_activations,
    explain_images,
    explain_split,
    gallery_overlays,
    gallery_pictures_for,
    localization_maps_for,
)

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
