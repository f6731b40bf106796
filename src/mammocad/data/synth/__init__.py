"""Synthetic mammograms (clearly labelled as such): the embedded default data of mammocad."""

from mammocad.data.synth.phantom import SynthCase, SynthLesion, generate_case, power_law_noise
from mammocad.data.synth.writers import FORMATS, write_synthetic_dataset

__all__ = ["FORMATS", "SynthCase", "SynthLesion", "generate_case", "power_law_noise", "write_synthetic_dataset"]
