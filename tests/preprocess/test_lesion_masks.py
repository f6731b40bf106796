"""A lesion's box: the one mask-to-box function and the order of the fallbacks (own box, mask, centre)."""

from __future__ import annotations

import numpy as np
import pytest

from mammocad.data.manifest import Lesion
from mammocad.data.masks import mask_bounding_box
from mammocad.errors import DatasetError
from mammocad.preprocess.lesion_masks import drawn_mask, lesion_box


def test_mask_bounding_box_is_half_open_and_none_when_empty():
    mask = np.zeros((50, 40), np.uint8)
    assert mask_bounding_box(mask) is None
    mask[10:20, 5:8] = 255
    mask[30, 33] = 1
    assert mask_bounding_box(mask) == (5, 10, 34, 31)
    assert mask_bounding_box(mask > 0) == (5, 10, 34, 31)
    ys, xs = np.nonzero(mask)  # the formula the importers used
    assert mask_bounding_box(mask) == (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def test_lesion_box_prefers_its_own_box_then_the_mask_then_the_centre():
    shape = (100, 80)
    boxed = Lesion(lesion_type="mass", pathology="benign", x0=-5, y0=10, x1=30, y1=200)
    assert lesion_box(boxed, None, shape, "a") == (0, 10, 30, 100)  # clipped to the image
    circle = Lesion(lesion_type="mass", pathology="benign", center_x=40.0, center_y=50.0, radius=5.0)
    mask = drawn_mask(circle, shape)
    assert lesion_box(circle, mask, shape, "b") == mask_bounding_box(mask) == (35, 45, 46, 56)
    assert lesion_box(circle, None, shape, "c") == (40, 50, 41, 51)
    with pytest.raises(DatasetError, match="d: lesion has no location"):
        lesion_box(Lesion(lesion_type="mass", pathology="benign"), None, shape, "d")
