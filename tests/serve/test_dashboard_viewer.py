"""The film viewer's page: offline, full-resolution grey samples (16-bit kept), the overlay beside the film."""

from __future__ import annotations

import base64
import re
import zlib

import cv2
import numpy as np
import pytest

from mammocad.dashboard.viewer import MAX_VIEW_SIDE, viewer_html, viewer_payload


def samples(payload: dict) -> np.ndarray:
    raw = zlib.decompress(base64.b64decode(payload["data"]))
    dtype = "<u2" if payload["bits"] == 16 else np.uint8
    return np.frombuffer(raw, dtype=dtype).reshape(payload["height"], payload["width"])


def test_a_16_bit_film_is_sent_as_16_bit_at_its_own_aspect_ratio():
    film = (np.arange(460 * 875) % 4096).astype(np.uint16).reshape(875, 460)  # a 12-bit DICOM, not square
    payload = viewer_payload(film)
    assert (payload["width"], payload["height"], payload["bits"], payload["scale"]) == (460, 875, 16, 1.0)
    assert payload["range"] == [0, 4095]  # the default window is the film's own range
    assert (samples(payload) == film).all()
    assert payload["overlay"] is None


def test_8_bit_and_float_films():
    grey = np.full((30, 40), 7, np.uint8)
    payload = viewer_payload(grey)
    assert payload["bits"] == 8 and (samples(payload) == 7).all()
    unit = np.linspace(0, 1, 30 * 40, dtype=np.float32).reshape(30, 40)
    payload = viewer_payload(unit)
    assert payload["bits"] == 16 and samples(payload)[-1, -1] == 65535 and samples(payload)[0, 0] == 0


def test_a_large_film_is_downsampled_and_the_scale_stated():
    film = np.zeros((4000, 3000), np.uint16)
    payload = viewer_payload(film, np.zeros((400, 300, 4), np.uint8))
    assert max(payload["width"], payload["height"]) == MAX_VIEW_SIDE
    assert payload["scale"] == pytest.approx(MAX_VIEW_SIDE / 4000)
    assert payload["original"] == [3000, 4000]
    overlay = cv2.imdecode(np.frombuffer(base64.b64decode(payload["overlay"]), np.uint8), cv2.IMREAD_UNCHANGED)
    assert overlay.shape == (payload["height"], payload["width"], 4)  # resized to the shown film


def test_the_page_is_self_contained():
    page = viewer_html(np.zeros((20, 30), np.uint8), np.zeros((20, 30, 4), np.uint8), key="k</script>", caption="c")
    assert not re.search(r"(src|href)=[\"']https?:", page)  # no CDN
    assert "import(" not in page and "<script src" not in page
    assert page.count("</script>") == 1  # the key is escaped
    assert "DecompressionStream" in page


def test_bad_inputs():
    with pytest.raises(ValueError, match="2-D"):
        viewer_payload(np.zeros((2, 3, 4, 5)))
    with pytest.raises(ValueError, match="overlay_rgba"):
        viewer_payload(np.zeros((4, 4)), np.zeros((4, 4, 3)))
