"""Model cards (provenance, fitness, chance flags), temperature scaling, the indeterminate answer and
the input checks that refuse blank images and colour photos."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mammocad.cli.main import app
from mammocad.data.images import read_image
from mammocad.data.provenance import dataset_provenance
from mammocad.data.synth.phantom import generate_case
from mammocad.io import atomic_write_png
from mammocad.preprocess.checks import refusal_reason
from mammocad.training.calibration import (
    INDETERMINATE,
    calibration_document,
    decide,
    fit_temperature,
    read_calibration,
    softmax,
)
from mammocad.training.model_card import SYNTHETIC_WARNING, chance_flag, model_card
from tests.conftest import config

ROOT = Path(__file__).resolve().parents[2]


def _metrics_document(auc, auc_ci, bal, bal_ci, classes=("normal", "benign", "malignant"), n=60):
    return {
        "split": "test",
        "dataset": "/data/ds",
        "classes": list(classes),
        "n_images": n,
        "n_patients": n // 2,
        "metrics": {"auc_macro": auc, "accuracy": bal, "recall_macro": bal},
        "confidence_intervals": {
            "auc_macro": {"estimate": auc, "low": auc_ci[0], "high": auc_ci[1]},
            "balanced_accuracy": {"estimate": bal, "low": bal_ci[0], "high": bal_ci[1]},
            "accuracy": {"estimate": bal, "low": bal_ci[0], "high": bal_ci[1]},
        },
    }


def _fake_run(root: Path, synthetic: bool, evaluation: dict | None) -> Path:
    run = root / "run-1"
    (run / "checkpoints").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"status": "completed", "classes": ["normal", "benign", "malignant"]}))
    (run / "model.json").write_text(
        json.dumps(
            {
                "model": {"name": "baseline_cnn", "in_chans": 1, "num_classes": 3},
                "classes": ["normal", "benign", "malignant"],
                "task": "3class",
                "preprocess": {"image_size": [64, 64], "mode": "full"},
                "weights": {"final": "best"},
            }
        )
    )
    per_split = {
        s: {"n_images": n, "n_patients": n // 2, "per_class": {"normal": n // 3, "benign": n // 3, "malignant": n // 3}}
        for s, n in (("train", 60), ("val", 21), ("test", 21))
    }
    (run / "provenance.json").write_text(
        json.dumps(
            {
                "dataset": "ds",
                "path": "/data/ds",
                "source": ["csv"],
                "synthetic": synthetic,
                "n_images": 102,
                "n_patients": 51,
                "per_class": {"normal": 34, "benign": 34, "malignant": 34},
                "per_split": per_split,
            }
        )
    )
    if evaluation is not None:
        (run / "evaluation" / "test").mkdir(parents=True)
        (run / "evaluation" / "test" / "metrics.json").write_text(json.dumps(evaluation))
    return run


def test_card_of_a_synthetic_run_at_chance_says_so(tmp_path):
    run = _fake_run(tmp_path, True, _metrics_document(0.52, (0.41, 0.63), 0.36, (0.25, 0.47)))
    card = model_card(run)
    json.dumps(card)  # plain JSON
    assert set(card) >= {"run", "model", "trained_on", "evaluation", "calibration", "warnings", "headline"}
    assert card["model"]["architecture"] == "baseline_cnn" and card["model"]["classes"][2] == "malignant"
    assert card["trained_on"]["synthetic"] is True and card["trained_on"]["per_split"]["train"]["n_images"] == 60
    evaluation = card["evaluation"]
    assert evaluation["at_chance"] is True and evaluation["metrics"]["auc"] == {"value": 0.52, "ci": [0.41, 0.63]}
    assert SYNTHETIC_WARNING in card["warnings"]
    assert any("not distinguishable from chance (AUC 0.52, 95% CI 0.41–0.63" in w for w in card["warnings"])
    assert "NOT FOR CLINICAL USE" in card["headline"]
    assert card["calibration"]["temperature"] == 1.0 and card["calibration"]["calibrated"] is False


def test_card_of_a_good_real_run_and_chance_flags(tmp_path):
    good = _metrics_document(0.91, (0.85, 0.96), 0.8, (0.7, 0.88), n=300)
    card = model_card(_fake_run(tmp_path, False, good))
    assert card["evaluation"]["at_chance"] is False and not card["trained_on"]["synthetic"]
    assert [w for w in card["warnings"] if not w.startswith("Research software")] == [
        "Its probabilities are not calibrated (no calibration.json; temperature 1)."
    ]
    assert chance_flag(good) is None
    # 17% accuracy on a balanced 3-class test: worse than chance, flagged with its CIs
    below = _metrics_document(0.31, (0.2, 0.42), 0.17, (0.08, 0.27))
    assert "worse than chance" in chance_flag(below) and "0.08–0.27" in chance_flag(below)
    # without CIs: the point estimate decides
    bare = {"classes": ["a", "b"], "metrics": {"auc_macro": 0.49, "recall_macro": 0.5}, "split": "test"}
    assert chance_flag(bare) is not None
    assert chance_flag({}) is None


def test_model_card_module_imports_no_torch():
    code = "import sys, mammocad.training.model_card; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


def test_temperature_scaling_recovers_the_temperature_and_ties_are_indeterminate():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(2000, 3))
    labels = np.array([rng.choice(3, p=p) for p in softmax(logits, 2.5)])  # the truth is softer: T = 2.5
    assert fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.15)
    document = calibration_document(logits, labels)
    assert document["nll_after"] < document["nll_before"] and document["ece_after"] < document["ece_before"]
    thresholds = {"min_probability": 0.5, "min_margin": 0.1}
    assert decide([0.36, 0.33, 0.31], ["normal", "benign", "malignant"], thresholds) == INDETERMINATE
    assert decide([0.52, 0.46, 0.02], ["normal", "benign", "malignant"], thresholds) == INDETERMINATE  # margin
    assert decide([0.1, 0.2, 0.7], ["normal", "benign", "malignant"], thresholds) == "malignant"


def test_input_checks_refuse_blank_images_and_colour_photos(tmp_path):
    black = atomic_write_png(tmp_path / "black.png", np.zeros((256, 200), np.uint8))
    assert refusal_reason(read_image(black)).startswith("no breast found")
    rng = np.random.default_rng(0)
    photo = np.zeros((240, 320, 3), np.uint8)
    photo[:120] = (90, 160, 230)  # sky
    photo[120:] = (60, 140, 40)  # grass
    photo = np.clip(photo + rng.integers(-20, 20, photo.shape), 0, 255).astype(np.uint8)
    path = atomic_write_png(tmp_path / "photo.png", photo)
    assert refusal_reason(read_image(path)).startswith("not a mammogram")
    grey_rgb = atomic_write_png(
        tmp_path / "grey.png", np.dstack([generate_case(1, "benign", "CC", "L", 256, 192).pixels] * 3)
    )
    assert refusal_reason(read_image(grey_rgb)) is None  # a greyscale film stored as RGB is fine
    film = atomic_write_png(tmp_path / "film.png", generate_case(2, "normal", "MLO", "R", 256, 192).pixels)
    assert refusal_reason(read_image(film)) is None


def test_trained_run_records_provenance_calibrates_and_predicts_with_refusals(dataset, tmp_path):
    from mammocad.training.predict import load_run, predict_paths
    from mammocad.training.run import train

    assert dataset_provenance(dataset)["synthetic"] is True  # `mammocad synth` marks, import carries it
    run = train(config(dataset, tmp_path, **{"predict.min_probability": 0.6}), progress=False).run_dir
    provenance = json.loads((run / "provenance.json").read_text())
    assert provenance["synthetic"] is True and provenance["source"] == ["csv"]
    assert sum(s["n_images"] for s in provenance["per_split"].values()) == provenance["n_images"] > 0
    calibration = json.loads((run / "calibration.json").read_text())
    assert calibration["temperature"] > 0 and calibration["n_val"] == provenance["per_split"]["val"]["n_images"]
    assert calibration["indeterminate"] == {"min_probability": 0.6, "min_margin": 0.1}
    assert read_calibration(run)["calibrated"] is True

    black = atomic_write_png(tmp_path / "black.png", np.zeros((512, 384), np.uint8))
    photo = np.zeros((300, 400, 3), np.uint8)
    photo[:, :200] = (220, 40, 40)
    photo[:, 200:] = (40, 200, 60)
    photo = atomic_write_png(tmp_path / "photo.png", photo)
    film = atomic_write_png(tmp_path / "film.png", generate_case(5, "malignant", "CC", "L", 512, 384).pixels)
    loaded = load_run(run)
    table = predict_paths(loaded, [black, photo, film])
    assert table["refused"].tolist() == [True, True, False]
    assert table.loc[0, "error"].startswith("no breast found") and table.loc[1, "error"].startswith("not a mammogram")
    assert table.loc[:1, "label"].isna().all() and table.loc[:1, "prediction"].isna().all()
    row = table.loc[2]
    probs = np.array([row[f"p_{c}"] for c in loaded.classes])
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert row["label"] == (INDETERMINATE if probs.max() < 0.6 or abs(probs[0] - probs[1]) < 0.1 else row["prediction"])
    assert "synthetic" in row["caveat"]

    result = CliRunner().invoke(app, ["predict", str(run), str(film), str(black)])
    assert result.exit_code == 0, result.output
    assert "NOT FOR CLINICAL USE" in result.output and "synthetic phantoms" in result.output
    assert "1 image(s) refused" in result.output
    refit = CliRunner().invoke(app, ["calibrate", str(run), "--min-margin", "0.2"])
    assert refit.exit_code == 0, refit.output
    assert read_calibration(run)["indeterminate"] == {"min_probability": 0.6, "min_margin": 0.2}
