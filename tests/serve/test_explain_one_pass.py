"""InferenceEngine.explain: one forward pass gives the probabilities and the heatmap; per-stage timings."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mammocad.devices import cpu_has_fast_bf16
from mammocad.errors import ConfigError
from mammocad.explain.overlay import heatmap_picture
from mammocad.explain.run import MAX_OVERLAY_SIDE
from mammocad.serve.engine import InferenceEngine


def test_explain_reports_the_prediction_of_its_own_pass(
    engine: InferenceEngine, upload_png: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = engine.decode(upload_png, "mammo.png")
    bf16 = engine.predict([image])[0]  # the PyTorch backend (conftest's engine): bf16 where the CPU has it
    monkeypatch.setenv("MAMMOCAD_CPU_BF16", "0")  # float32 everywhere, as the explain pass
    expected = engine.predict([image])[0]
    result = engine.explain(image, "gradcam")
    assert np.allclose(list(result.probabilities.values()), expected, atol=1e-5)
    assert np.allclose(bf16, expected, atol=2e-3)  # the documented bf16 difference
    assert result.target == result.prediction == engine.classes[int(expected.argmax())]
    assert set(result.timings_ms) == {"forward_cam", "map_back", "overlay", "png", "input_overlay"}
    assert all(value >= 0 for value in result.timings_ms.values())
    # The PNG is the uint8 picture at the size the response promises, losslessly encoded.
    picture = cv2.imdecode(np.frombuffer(result.overlay_png, np.uint8), cv2.IMREAD_COLOR)
    drawn = heatmap_picture(image.original, result.heatmap, image.geometry, 0.45, MAX_OVERLAY_SIDE, bgr=True)
    assert picture.shape[:2] == tuple(result.summary()["heatmap_shape"])
    assert (picture == drawn).all()
    assert result.summary()["original_shape"] == list(image.original.shape)


def test_an_explicit_target_is_explained_and_a_bad_one_refused_before_the_model_runs(
    engine: InferenceEngine, upload_png: bytes
) -> None:
    image = engine.decode(upload_png, "mammo.png")
    for target in engine.classes:
        assert engine.explain(image, "hirescam", target=target).target == target
    with pytest.raises(ConfigError, match="classes"):
        engine.explain(image, target="cancer")


@pytest.mark.skipif(not cpu_has_fast_bf16(), reason="this CPU has no native bfloat16 (AVX-512 BF16)")
def test_bf16_heatmap_is_close_to_float32(engine: InferenceEngine, upload_png: bytes) -> None:
    image = engine.decode(upload_png, "mammo.png")
    fp32 = engine.explain(image, "gradcam")
    engine.cam_bf16 = True
    try:
        bf16 = engine.explain(image, "gradcam")
    finally:
        engine.cam_bf16 = False
    assert np.abs(bf16.heatmap - fp32.heatmap).max() <= 0.05
    assert np.allclose(list(bf16.probabilities.values()), list(fp32.probabilities.values()), atol=0.01)


def test_bf16_switch_from_the_environment(served_run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAMMOCAD_CAM_BF16", "yes")
    assert InferenceEngine(served_run, backend="torch").cam_bf16 is True
    monkeypatch.setenv("MAMMOCAD_CAM_BF16", "0")
    assert InferenceEngine(served_run, backend="torch").cam_bf16 is False
    monkeypatch.setenv("MAMMOCAD_CAM_BF16", "fast")
    with pytest.raises(ConfigError, match="MAMMOCAD_CAM_BF16"):
        InferenceEngine(served_run, backend="torch")
