"""Input checks before a model is asked: is there a breast, and is this a mammogram at all?

A model answers with one of its classes whatever it is shown; an all-black PNG or a holiday photo
must be refused with the reason instead (:class:`InputRefused`, an :class:`~mammocad.errors.ImageReadError`,
so every path that reports unreadable files per file reports these too).

Checks (on the decoded image, cheap: a 256-side copy):

- DICOM ``Modality`` present and not ``MG``: "not a mammogram (DICOM Modality CT, expected MG)".
- colour: the decoder records the colour saturation of RGB files (``extra["colour_saturation"]``,
  mean HSV saturation of a subsample); above :data:`MAX_COLOUR_SATURATION` the image is a colour
  picture, not a mammogram (a greyscale image stored as RGB has saturation 0).
- blank: the pixel values span less than :data:`MIN_DYNAMIC_RANGE` of the bit depth, or their
  standard deviation is below :data:`MIN_STD` of it: "no breast found (blank or near-uniform image)".
- breast area: the breast segmentation (:func:`~mammocad.preprocess.breast.breast_mask_small`) covers
  less than :data:`MIN_BREAST_FRACTION` of the image: "no breast found".
"""

from __future__ import annotations

import numpy as np

from mammocad.data.images import MammoImage
from mammocad.data.pixels import colour_saturation
from mammocad.errors import ImageReadError

MAX_COLOUR_SATURATION = 0.08
MIN_DYNAMIC_RANGE = 0.02
MIN_STD = 0.005
MIN_BREAST_FRACTION = 0.01
_SAMPLE_SIDE = 256


class InputRefused(ImageReadError):
    """The file decoded, but it is not something the model may be asked about (no breast, not a mammogram)."""


def refusal_reason(image: MammoImage) -> str | None:
    """Why ``image`` must not be classified, or None when it may be."""
    modality = image.extra.get("Modality")
    if modality and modality.strip().upper() not in ("MG", "NONE", ""):
        return f"not a mammogram: DICOM Modality is {modality.strip()[:16]}, expected MG"
    saturation = image.extra.get("colour_saturation")
    if saturation is not None and float(saturation) > MAX_COLOUR_SATURATION:
        return f"not a mammogram: a colour image (saturation {float(saturation):.2f}); mammograms are greyscale"
    pixels = image.pixels
    step = max(1, max(pixels.shape) // _SAMPLE_SIDE)
    sample = pixels[::step, ::step].astype(np.float32) / float(image.max_value or 1)
    if sample.size == 0 or float(sample.max() - sample.min()) < MIN_DYNAMIC_RANGE or float(sample.std()) < MIN_STD:
        return "no breast found: the image is blank or near-uniform"
    from mammocad.preprocess.breast import breast_mask_small

    fraction = float(breast_mask_small(pixels).mean())
    if fraction < MIN_BREAST_FRACTION:
        return f"no breast found: the breast region covers {fraction:.1%} of the image"
    return None


def check_input(image: MammoImage, name: str) -> None:
    """Raise :class:`InputRefused` (naming ``name`` and the reason) when ``image`` must not be classified."""
    reason = refusal_reason(image)
    if reason is not None:
        raise InputRefused(name, reason)


__all__ = ["InputRefused", "check_input", "colour_saturation", "refusal_reason"]
