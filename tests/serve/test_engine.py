"""ONNX export and the inference engine: export parity, backends, decoding of uploads, heatmaps."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from mammocad.errors import ConfigError, ImageReadError, MammocadError
from mammocad.serve.engine import InferenceEngine
from mammocad.serve.export import TOLERANCE, export_onnx, read_export
from mammocad.training.predict import load_run


def test_export_matches_pytorch_within_tolerance(served_run):
    meta = json.loads((served_run / "export" / "model.json").read_text())
    assert meta["max_abs_diff_vs_pytorch"] <= TOLERANCE
    assert meta["classes"] == ["normal", "abnormal"] and meta["input"]["shape"][1:] == [1, 64, 64]
    run = load_run(served_run)
    engine = InferenceEngine(served_run, backend="onnx")
    batch = torch.rand(5, 1, 64, 64, generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        expected = torch.softmax(run.model(batch) / run.temperature, dim=1).numpy()  # calibrated, both backends
    assert np.abs(engine.predict_tensors(batch) - expected).max() < 1e-5
    assert meta["output"]["temperature"] == run.temperature and (served_run / "calibration.json").exists()


def test_export_never_overwrites(served_run):
    with pytest.raises(MammocadError, match="never overwritten"):
        export_onnx(served_run)


def test_auto_backend_uses_a_current_export_and_ignores_a_stale_one(served_run, tmp_path):
    auto = InferenceEngine(served_run)
    faster = min(auto.backend_timings, key=auto.backend_timings.get)
    assert set(auto.backend_timings) == {"onnx", "torch"} and auto.backend == faster
    assert InferenceEngine(served_run, backend="torch").backend == "torch"
    copy = tmp_path / "run"
    shutil.copytree(served_run, copy)
    meta = json.loads((copy / "export" / "model.json").read_text())
    meta["weights_sha256"] = "0" * 64
    (copy / "export" / "model.json").write_text(json.dumps(meta))
    assert read_export(load_run(copy)) is None
    assert InferenceEngine(copy).backend == "torch"
    with pytest.raises(MammocadError, match="mammocad export"):
        InferenceEngine(copy, backend="onnx")
    with pytest.raises(ConfigError, match="choose from"):
        InferenceEngine(copy, backend="tensorrt")


def test_decode_predict_and_explain_an_upload(served_run, upload_png):
    engine = InferenceEngine(served_run)
    image = engine.decode(upload_png, "mammo.png")
    probs = engine.predict([image])
    assert probs.shape == (1, 2) and np.isclose(probs.sum(), 1.0, atol=1e-5)
    result = engine.explain(image, "gradcam", target="abnormal", opacity=0.3)
    assert result.target == "abnormal" and result.layer == "backbone.block4"
    assert result.heatmap_original.shape == image.original.shape
    assert np.isfinite(result.heatmap_original).all() and result.overlay_png.startswith(b"\x89PNG")
    with pytest.raises(ConfigError, match="gradcam"):
        engine.explain(image, "saliency")
    with pytest.raises(ConfigError, match="classes"):
        engine.explain(image, target="cancer")


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"", "empty"), (b"hello world, not an image" * 10, "not"), (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "PNG")],
)
def test_bad_uploads_name_the_file(served_run, data, reason):
    with pytest.raises(ImageReadError, match=reason) as info:
        InferenceEngine(served_run).decode(data, "upload.png")
    assert info.value.path == "upload.png"


def test_huge_images_are_refused_from_the_header(served_run, upload_png):
    with pytest.raises(ImageReadError, match="pixels"):
        InferenceEngine(served_run, max_pixels=1000).decode(upload_png, "big.png")
