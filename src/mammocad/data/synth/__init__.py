"""Synthetic mammograms (clearly labelled as such): the embedded default data of mammocad.

See ``docs/synthetic-data.md``: what is modelled, what is not, and the conventions.
"""

from mammocad.data.synth.phantom import DENSITIES, SynthCase, SynthLesion, generate_case, power_law_noise
from mammocad.data.synth.writers import FORMATS, PlannedImage, plan_images, write_synthetic_dataset, written_counts

__all__ = [
    "DENSITIES",
    "FORMATS",
    "PlannedImage",
    "SynthCase",
    "SynthLesion",
    "generate_case",
    "plan_images",
    "power_law_noise",
    "write_synthetic_dataset",
    "written_counts",
]
