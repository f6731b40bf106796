"""The lesion-aware model end to end on synthetic phantoms: patch stage, film stage, refit, every consumer."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from mammocad.cli.main import app
from mammocad.data.manifest import read_manifest, resolve_path
from mammocad.errors import ConfigError, DatasetError
from mammocad.evaluation.evaluate import evaluate_run
from mammocad.explain import explain_images
from mammocad.models import LesionAwareNet
from mammocad.training.predict import load_run, predict_paths
from mammocad.training.run import train
from tests.conftest import config

LESION = {
    "data.task": "3class",
    "preprocess.image_size": 128,
    "model.name": "lesion_aware",
    "model.backbone": "baseline_cnn",
    "lesion.patch_size": 32,
    "lesion.lesion_patches": 4,
    "lesion.background_patches": 4,
    "train.epochs": 2,
    "train.batch_size": 16,
}


@pytest.fixture(scope="module")
def lesion_run(dataset, tmp_path_factory):
    return train(config(dataset, tmp_path_factory.mktemp("lesion"), **LESION), progress=False).run_dir


def test_training_records_both_stages_and_the_final_weights_hold_the_fitted_aggregation(lesion_run):
    state = json.loads((lesion_run / "run.json").read_text())
    assert state["status"] == "completed"
    patches = state["patch_stage"]
    assert patches["train_films"]["lesion_films"] > 0 and patches["train_films"]["normal_films"] > 0
    assert len(patches["patches_per_epoch"]) == 3 and min(patches["patches_per_epoch"]) > 0
    film = state["film_stage"]
    assert film["aggregation"] == "learned" and film["fitted"] and film["val"]["films"] > 0
    run = load_run(lesion_run)
    assert isinstance(run.model, LesionAwareNet) and run.model.tta_flip
    assert run.model.head.second_stage.weight.abs().sum() > 0  # the film stage's fit was saved
    history = pd.read_csv(lesion_run / "history.csv")
    assert list(history["epoch"]) == [0, 1]


def test_predict_evaluate_and_explain_work_on_whole_films(lesion_run, dataset, tmp_path):
    manifest = read_manifest(dataset)
    paths = [resolve_path(dataset, p) for p in manifest["image_path"].iloc[:3]]
    table = predict_paths(load_run(lesion_run), paths)
    assert table["error"].isna().all()
    assert np.allclose(table[["p_normal", "p_benign", "p_malignant"]].sum(axis=1), 1, atol=1e-5)

    result = evaluate_run(lesion_run, split="test", n_resamples=20, tsne=False, out_dir=tmp_path / "eval")
    located = result.metrics["localization"]
    assert located["pointing_game"]["films"] > 0 and 0 <= located["pointing_game"]["hit_rate"] <= 1
    assert located["froc"]["lesions"] >= located["pointing_game"]["films"]
    assert (result.out_dir / "figures" / "froc.png").exists()
    assert "Where the model looks" in (result.out_dir / "report.html").read_text()

    explained = explain_images(lesion_run, paths[:2], method="lesion", out_dir=tmp_path / "explain")
    item = explained.items[0]
    assert item["status"] == "ok" and item["target"] == "any lesion"
    heat = np.load(explained.out_dir / item["map"])
    row = manifest.iloc[0]
    assert heat.shape == (row["height"], row["width"]) and heat.min() >= 0 and heat.max() <= 1


def test_evaluate_scores_a_dataset_that_has_no_split(lesion_run, dataset, tmp_path):
    from mammocad.data.importers import import_dataset
    from mammocad.data.synth import write_synthetic_dataset

    source = write_synthetic_dataset(tmp_path / "src", "csv", {"normal": 3, "benign": 3, "malignant": 3}, seed=9)
    import_dataset("csv", source, tmp_path / "external")  # imported only: never split
    result = evaluate_run(lesion_run, tmp_path / "external", split="all", n_resamples=0, tsne=False)
    assert result.metrics["n_images"] == 9
    assert "undefined" in result.metrics["overfit"]


def test_onnx_export_matches_pytorch(lesion_run, tmp_path):
    from mammocad.serve.export import export_onnx

    exported = export_onnx(lesion_run, tmp_path / "model.onnx")
    assert exported.max_abs_diff <= 1e-4


def test_refit_trains_on_every_non_blind_image(dataset, tmp_path):
    overrides = {**LESION, "train.epochs": 1, "data.refit": True, "train.early_stopping_patience": None}
    overrides["train.restore_best_weights"] = False
    run_dir = train(config(dataset, tmp_path, **overrides), progress=False).run_dir
    state = json.loads((run_dir / "run.json").read_text())
    assert state["refit"] is True
    # The synthetic set has no blind holdout: train, val and test images all train.
    assert sum(state["counts"]["train"]) == len(read_manifest(dataset)) and sum(state["counts"]["val"]) > 0
    assert json.loads((run_dir / "model.json").read_text())["weights"]["final"] == "last"


def test_refit_and_lesion_options_are_checked(dataset, tmp_path):
    with pytest.raises(ConfigError, match="early_stopping_patience"):
        config(dataset, tmp_path, **{**LESION, "data.refit": True})
    with pytest.raises(ConfigError, match="lesion_aware"):
        config(dataset, tmp_path, **{"lesion.patch_size": 64})
    with pytest.raises(ConfigError, match="kt_beta"):
        config(dataset, tmp_path, **{**LESION, "train.kt_beta": 1.0})


def test_a_dataset_without_lesion_annotations_is_refused(dataset, tmp_path):
    from mammocad.data.importers import import_dataset
    from mammocad.data.split import SplitSpec, split_dataset

    manifest = read_manifest(dataset)
    rows = manifest[["image_path", "label_name", "patient_id"]].copy()
    rows["path"] = [str(resolve_path(dataset, p)) for p in rows.pop("image_path")]
    rows = rows.rename(columns={"label_name": "label"})
    (tmp_path / "plain.csv").write_text(rows.to_csv(index=False))
    import_dataset("csv", tmp_path / "plain.csv", tmp_path / "plain")  # no masks, boxes or circles
    split_dataset(tmp_path / "plain", SplitSpec(test_size=0.2, val_size=0.25, seed=0))
    with pytest.raises(DatasetError, match=r"no training film has one \(0 films with a lesion mask"):
        train(config(tmp_path / "plain", tmp_path, **LESION), progress=False)


def test_cli_explain_lesion_refuses_a_whole_film_cnn(dataset, tmp_path):
    plain = train(config(dataset, tmp_path, **{"train.epochs": 1}), progress=False).run_dir
    path = resolve_path(dataset, read_manifest(dataset)["image_path"].iloc[0])
    result = CliRunner().invoke(app, ["explain", str(plain), str(path), "--method", "lesion"])
    assert result.exit_code != 0 and "lesion-aware run" in result.output
    assert torch.get_num_threads() >= 1


def test_the_api_serves_predictions_and_the_lesion_heatmap(lesion_run, dataset):
    from fastapi.testclient import TestClient

    from mammocad.serve.api import create_app
    from mammocad.serve.engine import InferenceEngine

    engine = InferenceEngine(lesion_run, backend="torch")
    assert engine.explain_methods[0] == "lesion"
    client = TestClient(create_app(engine))
    assert client.get("/model").json()["explain_methods"][0] == "lesion"
    upload = resolve_path(dataset, read_manifest(dataset)["image_path"].iloc[0]).read_bytes()
    predicted = client.post("/predict", files={"files": ("film.png", upload, "image/png")})
    assert predicted.status_code == 200, predicted.text
    explained = client.post("/explain", files={"file": ("film.png", upload, "image/png")}, data={"method": "lesion"})
    assert explained.status_code == 200, explained.text
    assert explained.json()["method"] == "lesion"


def test_bilateral_reading_pairs_the_films_of_each_patient(dataset, tmp_path):
    overrides = {**LESION, "train.epochs": 1, "lesion.bilateral": True}
    run_dir = train(config(dataset, tmp_path, **overrides), progress=False).run_dir
    state = json.loads((run_dir / "run.json").read_text())
    assert state["film_stage"]["paired_train_films"] > 0
    result = evaluate_run(run_dir, split="test", n_resamples=0, tsne=False, out_dir=tmp_path / "eval")
    probs = result.predictions.probs
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    with pytest.raises(ConfigError, match="bilateral"):
        config(dataset, tmp_path, **{**LESION, "lesion.bilateral": True, "lesion.aggregation": "max"})


def test_benign_vs_malignant_on_rois_has_no_negative_class(dataset, tmp_path):
    overrides = {
        **LESION,
        "data.task": "benign-malignant",
        "preprocess.mode": "roi",
        "preprocess.image_size": 96,
        "preprocess.roi_min_size": 96,
        "train.epochs": 1,
    }
    run_dir = train(config(dataset, tmp_path, **overrides), progress=False).run_dir
    run = load_run(run_dir)
    assert run.model.head.negative_class is None and run.model.head.num_patch_classes == 3
    state = json.loads((run_dir / "run.json").read_text())
    assert state["film_stage"]["val"]["films"] > 0


@pytest.mark.realdata
def test_lesion_aware_on_real_mias_films(mias_dir, tmp_path):
    """The MIAS circles become lesion patches; films are scored whole and localization is measured."""
    from mammocad.data.importers import import_dataset
    from mammocad.data.split import SplitSpec, split_dataset

    import_dataset("mias", mias_dir, tmp_path / "ds")
    split_dataset(tmp_path / "ds", SplitSpec(test_size=0.2, val_size=0.25, seed=0))
    overrides = {
        **LESION,
        "model.backbone": "efficientnet_lite0",
        "model.pretrained": True,
        "preprocess.image_size": 256,
        "lesion.patch_size": 64,
        "lesion.lesion_patches": 2,
        "lesion.background_patches": 2,
        "train.epochs": 1,
    }
    run_dir = train(config(tmp_path / "ds", tmp_path, **overrides), progress=False).run_dir
    films = json.loads((run_dir / "run.json").read_text())["patch_stage"]["train_films"]
    # MIAS: every abnormal film but the calcification clusters without coordinates has a circle.
    assert films["lesion_films"] > 20 and films["normal_films"] > 40 and films["unlocated_lesion_films"] <= 3
    result = evaluate_run(run_dir, split="test", n_resamples=0, tsne=False, out_dir=tmp_path / "eval")
    assert result.metrics["localization"]["pointing_game"]["films"] > 0
    assert set(result.metrics["subtasks"]) == {"normal_vs_abnormal", "benign_vs_malignant"}
