"""evaluate / compare end to end on a small synthetic run: files, metrics, CIs, figures, report, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mammocad.cli.main import app
from mammocad.errors import DatasetError, MammocadError
from mammocad.evaluation.compare import compare_runs, markdown_table
from mammocad.evaluation.evaluate import evaluate_run, fast_headline
from mammocad.evaluation.metrics import classification_metrics
from mammocad.training.run import train
from tests.browser import render
from tests.conftest import config


@pytest.fixture(scope="module")
def runs(dataset, tmp_path_factory):
    """Two tiny runs of different models on the same split (one epoch each)."""
    root = tmp_path_factory.mktemp("eval-runs")
    first = train(config(dataset, root, **{"train.epochs": 1}), progress=False).run_dir
    second = train(config(dataset, root, **{"train.epochs": 1, "model.name": "baseline_cnn_flatten"}), progress=False)
    return first, second.run_dir


def test_evaluate_writes_predictions_metrics_figures_and_a_report_chromium_renders(runs, tmp_path):
    run = runs[0]
    result = evaluate_run(run, split="test", n_resamples=200)
    out = result.out_dir
    assert out == run / "evaluation" / "test"
    predictions = pd.read_parquet(out / "predictions.parquet")
    assert len(predictions) == result.metrics["n_images"] == 24
    assert {"patient_id", "label", "label_name", "p_normal", "p_abnormal", "prediction", "loss"} <= set(predictions)
    assert np.allclose(predictions[["p_normal", "p_abnormal"]].sum(axis=1), 1, atol=1e-5)

    document = json.loads((out / "metrics.json").read_text())
    metrics = document["metrics"]
    for key in ("accuracy", "loss", "f1_macro", "f1_std", "recall_std", "recall_min", "auc_macro", "sensitivity"):
        assert key in metrics
    assert set(document["overfit"]) == {"overfit_acc", "overfit_f1", "overfit_loss"}
    for name, ci in document["confidence_intervals"].items():
        if ci["low"] is not None:
            assert ci["low"] <= ci["estimate"] <= ci["high"], name
    assert document["calibration"]["ece"] >= 0 and 0 <= document["calibration"]["brier"] <= 2
    assert document["latent"]["head.fc"] if "head.fc" in document["latent"] else document["latent"]["backbone"]

    figures = sorted(p.stem for p in (out / "figures").glob("*.png"))
    for name in (
        "confusion_counts",
        "confusion_normalised",
        "roc",
        "precision_recall",
        "reliability",
        "learning_curves",
    ):
        assert name in figures
    assert any(f.startswith("pca2d_") for f in figures) and any(f.startswith("tsne_") for f in figures)

    shown = render(result.report, tmp_path)
    assert shown["images"] >= len(figures) and shown["decoded"] == shown["images"]
    assert shown["plotly"] >= 1, "the interactive 3-D PCA did not draw"
    assert "Headline metrics" in shown["headings"] and "Galleries" in shown["headings"]

    # A second evaluation never overwrites the first.
    again = evaluate_run(run, split="test", n_resamples=0, tsne=False)
    assert again.out_dir == run / "evaluation" / "test-2" and (out / "metrics.json").exists()


def test_fast_bootstrap_statistics_match_the_full_metric_suite():
    rng = np.random.default_rng(0)
    for n_classes in (2, 3):
        labels = rng.integers(0, n_classes, 60)
        probs = rng.dirichlet(np.ones(n_classes), 60)
        full = classification_metrics(labels, probs, [f"c{k}" for k in range(n_classes)])
        fast = fast_headline(labels, probs, n_classes)
        for key in ("accuracy", "f1_macro", "recall_min", "auc_macro"):
            assert fast[key] == pytest.approx(full[key]), key
        assert fast["balanced_accuracy"] == pytest.approx(full["recall_macro"])
    # a class absent from a resample is left out, as in the full suite
    labels = np.array([0, 0, 2, 2, 2])
    probs = rng.dirichlet(np.ones(3), 5)
    full = classification_metrics(labels, probs, ["a", "b", "c"])
    fast = fast_headline(labels, probs, 3)
    assert fast["recall_min"] == pytest.approx(full["recall_min"])
    assert fast["auc_macro"] == pytest.approx(full["auc_macro"])


def test_compare_writes_tables_paired_tests_and_report(runs, tmp_path):
    result = compare_runs(list(runs), tmp_path / "cmp", split="test", n_resamples=100)
    out = result.out_dir
    table1 = pd.read_csv(out / "table1.csv", index_col="run")
    assert list(table1.index) == [runs[0].name, runs[1].name]
    assert {
        "accuracy",
        "loss",
        "f1_macro",
        "recall_min",
        "recall_std",
        "overfit_acc",
        "overfit_f1",
        "overfit_loss",
    } <= set(table1.columns)
    assert list(pd.read_csv(out / "table2.csv").columns) == ["run", "f1_mean", "f1_std", "rec_mean", "rec_std"]
    assert (out / "table1.md").read_text().startswith("| run | accuracy |")
    significance = pd.read_csv(out / "significance.csv")
    assert set(significance["test"]) == {"McNemar (accuracy)", "DeLong (AUC)"}
    assert significance["p_value"].between(0, 1).all() and (significance["n"] == 24).all()
    for name in ("scatter_pairs", "radar_triplets", "f1_recall_bars", "roc_overlay_abnormal"):
        assert (out / "figures" / f"{name}.png").exists()
    shown = render(result.report, tmp_path)
    assert shown["images"] >= 4 and shown["decoded"] == shown["images"] and shown["tables"] >= 3


def test_markdown_table_formats_floats_and_missing_values():
    frame = pd.DataFrame({"a": [0.12345, float("nan")], "b": ["x|y", "z"]}, index=pd.Index(["r1", "r2"], name="run"))
    assert markdown_table(frame) == "| run | a | b |\n|---|---|---|\n| r1 | 0.123 | x\\|y |\n| r2 | – | z |\n"


def test_bad_input_gives_clear_errors(runs, dataset, tmp_path):
    run = runs[0]
    with pytest.raises(DatasetError, match="unknown split"):
        evaluate_run(run, split="holdout")
    with pytest.raises(DatasetError, match="blind split has no images"):
        evaluate_run(run, split="blind", n_resamples=0)
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    with pytest.raises(MammocadError, match="not a run directory"):
        evaluate_run(empty)
    no_weights = tmp_path / "no-weights"
    shutil.copytree(run, no_weights, ignore=shutil.ignore_patterns("*.safetensors", "evaluation"))
    with pytest.raises(MammocadError, match="no best checkpoint"):
        evaluate_run(no_weights)
    # a run trained on normal/abnormal evaluated on a dataset whose task gives other classes
    other = tmp_path / "other.yaml"
    other_run = tmp_path / "other-run"
    shutil.copytree(run, other_run, ignore=shutil.ignore_patterns("evaluation"))
    text = (other_run / "config.yaml").read_text().replace("task: normal-abnormal", "task: 3class")
    (other_run / "config.yaml").write_text(text)
    with pytest.raises(DatasetError, match="trained on"):
        evaluate_run(other_run, dataset)
    del other
    result = CliRunner().invoke(app, ["evaluate", str(empty)])
    assert result.exit_code == 2 and "not a run directory" in result.output
    result = CliRunner().invoke(app, ["compare", str(run)])
    assert result.exit_code == 2 and "at least two" in result.output
