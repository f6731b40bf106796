"""ONNX variants: int8 export with its parity check against fp32, and an engine that refuses unfit variants."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mammocad.errors import ConfigError, MammocadError
from mammocad.serve.engine import InferenceEngine
from mammocad.serve.export import (
    PARITY_MAX_AUC_CHANGE,
    PARITY_MIN_AGREEMENT,
    add_variants,
    parity,
)
from mammocad.training.predict import load_run


@pytest.fixture(scope="module")
def int8_run(served_run, tmp_path_factory) -> Path:
    """A copy of the served run (the shared one stays fp32-only) with an int8 variant added to its export."""
    copy = tmp_path_factory.mktemp("int8") / "run"
    shutil.copytree(served_run, copy)
    result = add_variants(copy, ("int8",))
    assert set(result.variants) == {"int8"}
    return copy


def _meta(run_dir: Path) -> dict:
    return json.loads((run_dir / "export" / "model.json").read_text())


def test_int8_variant_has_sensible_parity_numbers(int8_run):
    entry = _meta(int8_run)["variants"]["int8"]
    check = entry["parity"]
    test_metrics = json.loads((int8_run / "evaluation" / "test" / "metrics.json").read_text())
    assert (int8_run / "export" / "model.int8.onnx").is_file() and entry["file"] == "model.int8.onnx"
    assert check["split"] == "test" and check["n_images"] == test_metrics["metrics"]["n"]
    # fp32 ONNX Runtime scores the test split as `mammocad evaluate` (PyTorch) did: same images, same metric.
    assert check["auc_macro_fp32"] == pytest.approx(test_metrics["metrics"]["auc_macro"], abs=1e-6)
    assert check["auc_change"] == pytest.approx(check["auc_macro"] - check["auc_macro_fp32"])
    assert 0.0 <= check["max_abs_prob_diff"] < 0.5 and 0.0 <= check["argmax_agreement"] <= 1.0
    within = abs(check["auc_change"]) <= PARITY_MAX_AUC_CHANGE and check["argmax_agreement"] >= PARITY_MIN_AGREEMENT
    assert check["passed"] is within and entry["fit"] is within
    calibration = entry["quantization"]["calibration"]
    assert calibration["split"] == "val" and 1 <= calibration["images"] <= 64


def test_a_fit_int8_variant_is_served_and_reported(int8_run, upload_png):
    if not _meta(int8_run)["variants"]["int8"]["fit"]:
        pytest.skip("the 1-epoch test model's int8 variant failed parity (the refusal is tested below)")
    from fastapi.testclient import TestClient

    from mammocad.serve.api import create_app

    engine = InferenceEngine(int8_run, onnx_variant="int8")
    assert engine.backend == "onnx" and engine.onnx_variant["name"] == "int8"
    fp32 = InferenceEngine(int8_run, backend="onnx")
    image = engine.decode(upload_png, "mammo.png", keep_original=False)  # a mammogram, as calibrated on
    quantised, reference = engine.predict([image]), fp32.predict([image])
    assert 0 < np.abs(quantised - reference).max() < 0.1  # quantised: close, not equal
    # Logits stay in float: an input unlike the calibration images is not clipped to equal probabilities.
    noise = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(3))
    assert np.abs(np.diff(engine.predict_tensors(noise), axis=1)).min() > 0
    card = TestClient(create_app(engine)).get("/model").json()
    assert card["onnx_variant"]["name"] == "int8" and card["onnx_variant"]["parity"]["passed"] is True
    assert "auc_change" in card["onnx_variant"]["parity"]


def test_a_variant_that_failed_parity_is_kept_but_refused(int8_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(int8_run, copy)
    meta = _meta(copy)
    meta["variants"]["int8"]["fit"] = False
    meta["variants"]["int8"]["parity"].update(passed=False, reasons=["macro AUC changed by -0.0500 (limit ±0.01)"])
    (copy / "export" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(MammocadError, match=r"failed its parity check.*AUC changed by -0\.0500"):
        InferenceEngine(copy, onnx_variant="int8")
    assert (copy / "export" / "model.int8.onnx").is_file()  # kept on disk for inspection
    assert InferenceEngine(copy, backend="onnx").onnx_variant["name"] == "fp32"  # fp32 still served


def test_engine_refuses_missing_changed_or_misused_variants(served_run, int8_run, tmp_path):
    with pytest.raises(MammocadError, match="--int8"):
        InferenceEngine(served_run, onnx_variant="int8")  # the shared run has no int8 variant
    with pytest.raises(ConfigError, match="choose from"):
        InferenceEngine(served_run, onnx_variant="fp8")
    with pytest.raises(ConfigError, match="ONNX Runtime"):
        InferenceEngine(int8_run, backend="torch", onnx_variant="int8")
    copy = tmp_path / "run"
    shutil.copytree(int8_run, copy)
    meta = _meta(copy)
    meta["variants"]["int8"].update(fit=True, sha256="0" * 64)  # a file swapped after its check
    (copy / "export" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(MammocadError, match="changed since its parity check"):
        InferenceEngine(copy, onnx_variant="int8")


def test_variants_are_never_overwritten_and_need_a_current_export(int8_run, served_run, tmp_path):
    with pytest.raises(MammocadError, match="never overwritten"):
        add_variants(int8_run, ("int8",))
    with pytest.raises(MammocadError, match="no current ONNX export"):
        add_variants(served_run, ("int8",), export_dir=tmp_path / "nowhere")
    with pytest.raises(MammocadError, match="unknown ONNX variant"):
        add_variants(served_run, ("fp16",))


def test_parity_verdicts():
    classes = ["normal", "abnormal"]
    labels = np.array([0, 1] * 50)
    reference = np.stack([1 - np.linspace(0.05, 0.95, 100), np.linspace(0.05, 0.95, 100)], axis=1)
    same = parity(labels, reference, reference.copy(), classes)
    assert same["passed"] and same["auc_change"] == 0.0 and same["argmax_agreement"] == 1.0
    flipped = parity(labels, reference, reference[:, ::-1].copy(), classes)
    assert not flipped["passed"] and len(flipped["reasons"]) == 2 and flipped["max_abs_prob_diff"] == pytest.approx(0.9)
    one_class = parity(np.zeros(100, dtype=int), reference, reference.copy(), classes)
    assert one_class["auc_change"] is None and one_class["passed"] and "agreement alone" in one_class["note"]


def test_cli_adds_int8_to_an_existing_export(served_run, tmp_path):
    from typer.testing import CliRunner

    from mammocad.cli.main import app

    copy = tmp_path / "run"
    shutil.copytree(served_run, copy)
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(copy), "--int8", "--calibration-images", "4"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # rich wraps at the runner's width
    assert "added int8" in said and "int8: model.int8.onnx" in said and "top class agrees" in said
    assert _meta(copy)["variants"]["int8"]["quantization"]["calibration"]["images"] <= 4
    again = runner.invoke(app, ["export", str(copy), "--int8"])
    assert again.exit_code == 2 and "never overwritten" in " ".join(again.output.split())
    assert load_run(copy).classes == ["normal", "abnormal"]


def test_variants_need_the_runs_dataset(served_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(served_run, copy)
    config = (copy / "config.yaml").read_text()
    dataset = yaml.safe_load(config)["data"]["dataset"]
    (copy / "config.yaml").write_text(config.replace(str(dataset), str(tmp_path / "moved-away")))
    with pytest.raises(MammocadError, match="validation images.*unavailable.*no manifest"):
        add_variants(copy, ("int8",))
    assert not (copy / "export" / "model.int8.onnx").exists()
