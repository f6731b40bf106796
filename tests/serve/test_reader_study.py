"""The reader study without Streamlit: the study store (resume, readers, export), scores with CIs, the run's case set."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from mammocad.dashboard import logic, reader_study
from mammocad.dashboard.reader_study import Study, StudySpec
from mammocad.errors import ConfigError, MammocadError

CLASSES = ("normal", "abnormal")


def make_study(directory, truths, patients=None, predictions=None, p_abnormal=None, scale="confidence") -> Study:
    n = len(truths)
    cases = pd.DataFrame(
        {
            "sample_id": [f"s{k}" for k in range(n)],
            "image_id": [f"i{k}" for k in range(n)],
            "patient_id": patients or [f"p{k}" for k in range(n)],
            "label_name": truths,
            "image": [f"/cache/{k}.png" for k in range(n)],
            "prediction_name": predictions or truths,
            "p_abnormal": p_abnormal or [0.9 if t == "abnormal" else 0.1 for t in truths],
        }
    )
    cases["p_normal"] = 1 - cases["p_abnormal"]
    spec = StudySpec("run", "blind", "blind", CLASSES, scale)
    reader_study.create_study(directory, spec, cases, cases, [""] * n)
    return Study(directory)


def test_answers_are_on_disk_as_given_and_a_reload_resumes_at_the_first_unanswered(tmp_path):
    study = make_study(tmp_path / "study", ["normal", "abnormal"] * 10)
    assert study.n_cases == 20 and study.next_case("Dr A") == 1
    for case in range(1, 8):
        study.record("Dr A", case, "normal", 3, note=f"case {case}", shown_at=100.0, answered_at=104.5)
    # A reload: a new store reads the files; nothing was kept in memory.
    again = Study(tmp_path / "study")
    assert again.next_case("Dr A") == 8 and len(again.answers("Dr A")) == 7
    first = again.answers("Dr A")[0]
    assert first["seconds"] == 4.5 and first["note"] == "case 1" and first["scale"] == "confidence"
    assert first["shown_at"].startswith("1970-01-01T00:01:40") and first["reader"] == "Dr A"
    with pytest.raises(MammocadError, match="already answered"):
        again.record("Dr A", 3, "abnormal", 2)
    with pytest.raises(MammocadError, match="answer must be one of"):
        again.record("Dr A", 8, "benign", 2)
    with pytest.raises(MammocadError, match="1-5"):
        again.record("Dr A", 8, "normal", 6)
    # A crash mid-write leaves a torn last line: it is skipped, the answers before it stand.
    with again.reader_path("Dr A").open("a") as handle:
        handle.write('{"case": 8, "ans')
    assert Study(tmp_path / "study").next_case("Dr A") == 8
    # Answers in any order: the first unanswered case is next.
    again.record("Dr A", 10, "normal", 1)
    assert again.next_case("Dr A") == 8
    for case in [8, 9, *range(11, 21)]:
        again.record("Dr A", case, "abnormal", 5)
    assert again.finished("Dr A") and Study(tmp_path / "study").next_case("Dr A") is None
    # An existing study is never rewritten.
    make_study(tmp_path / "study", ["abnormal"] * 3)
    assert Study(tmp_path / "study").n_cases == 20


def test_several_readers_each_have_their_own_file_and_start_over_keeps_the_old_answers(tmp_path):
    study = make_study(tmp_path / "s", ["normal", "abnormal", "normal"])
    study.record("Ann B.", 1, "normal", 4)
    study.record("cd", 1, "abnormal", 2)
    study.record("cd", 2, "abnormal", 2)
    assert study.readers() == ["ann-b", "cd"]
    assert study.next_case("Ann B.") == 2 and study.next_case("CD") == 3  # the file name ignores case
    kept = study.discard("cd")
    assert kept is not None and kept.parent.name == "discarded" and len(kept.read_text().splitlines()) == 2
    assert study.next_case("cd") == 1 and study.readers() == ["ann-b"]
    with pytest.raises(ConfigError, match="name or initials"):
        reader_study.reader_slug("  ..  ")


def test_export_csv_of_one_reader_and_of_all_readers_also_lands_on_disk(tmp_path):
    study = make_study(tmp_path / "s", ["normal", "abnormal"])
    study.record("A", 1, "normal", 5, note='said "clear", ok', shown_at=10.0, answered_at=12.0)
    study.record("A", 2, "normal", 2)
    study.record("B", 2, "abnormal", 4)
    mine = pd.read_csv(io.StringIO(study.export_csv("A")))
    assert list(mine.columns) == list(reader_study.EXPORT_FIELDS)
    assert mine["case"].tolist() == [1, 2] and mine["truth"].tolist() == ["normal", "abnormal"]
    assert mine.loc[0, "note"] == 'said "clear", ok' and mine.loc[0, "seconds"] == 2.0
    everyone = pd.read_csv(io.StringIO(study.export_csv()))
    assert everyone[["reader", "case", "answer"]].values.tolist() == [
        ["A", 1, "normal"],
        ["A", 2, "normal"],
        ["B", 2, "abnormal"],
    ]
    assert (tmp_path / "s/exports/a.csv").read_text() == study.export_csv("A")
    assert (tmp_path / "s/exports/all-readers.csv").exists()
    assert not list((tmp_path / "s/exports").glob(".*tmp"))


def test_scores_with_patient_grouped_cis_on_a_known_answer_set(tmp_path):
    truths = ["abnormal"] * 5 + ["normal"] * 5
    # The model: one false negative (case 5), AUC 1 from its probabilities (case 5 still ranks above the normals).
    p_abnormal = [0.9, 0.8, 0.7, 0.6, 0.45, 0.4, 0.3, 0.2, 0.1, 0.05]
    predictions = ["abnormal"] * 4 + ["normal"] * 6
    study = make_study(tmp_path / "s", truths, [f"p{k // 2}" for k in range(10)], predictions, p_abnormal)
    # Reader A: misses case 5 (confident), one false positive on case 6 (unsure): acc 0.8, sens 0.8, spec 0.8.
    answers_a = ["abnormal"] * 4 + ["normal", "abnormal"] + ["normal"] * 4
    ratings_a = [5, 4, 4, 3, 5, 1, 5, 5, 4, 3]
    for case, (answer, rating) in enumerate(zip(answers_a, ratings_a, strict=True), start=1):
        study.record("A", case, answer, rating)
    for case, truth in enumerate(truths, start=1):  # reader B: all right
        study.record("B", case, truth, 5)
    study.record("C", 1, "normal", 1)  # unfinished: left out
    scores = reader_study.study_scores(study, n_resamples=300)
    assert list(dict.fromkeys(scores["who"])) == ["a", "b", "readers pooled", "model"]
    value = scores.set_index(["who", "metric"])["estimate"]
    assert value["a", "accuracy"] == pytest.approx(0.8)
    assert value["a", "sensitivity"] == pytest.approx(0.8) and value["a", "specificity"] == pytest.approx(0.8)
    # Signed confidence: abnormal 5,4,4,3 -> 5,4,4,3; normal 5 -> -5 (case 5); abnormal 1 (case 6) -> 1; normals -5,-5,-4,-3.
    # Positives scores {5,4,4,3,-5} vs negatives {1,-5,-5,-4,-3}: pairs won 4*5=20 + case 5 vs (-5,-5: ties 1 each)
    assert value["a", "auc"] == pytest.approx((20 + 0.5 * 2) / 25)
    assert value["b", "accuracy"] == 1.0 and value["b", "auc"] == 1.0
    assert value["readers pooled", "accuracy"] == pytest.approx(0.9)
    assert value["model", "accuracy"] == pytest.approx(0.9) and value["model", "sensitivity"] == pytest.approx(0.8)
    assert value["model", "specificity"] == 1.0 and value["model", "auc"] == 1.0
    rows = scores.dropna(subset=["low"])
    assert len(rows) >= 8 and (rows["low"] <= rows["estimate"] + 1e-12).all()
    assert (rows["estimate"] <= rows["high"] + 1e-12).all()
    a = scores[(scores["who"] == "a") & (scores["metric"] == "accuracy")].iloc[0]
    assert 0.4 <= a["low"] < 0.8 < a["high"] <= 1.0 and a["n"] == 10
    assert scores.loc[scores["who"] == "readers pooled", "n"].iloc[0] == 20
    table = reader_study.score_table(scores)
    assert table.loc["a", "accuracy"].startswith("0.80 (") and list(table.columns) == list(reader_study.METRICS)
    # BI-RADS ratings are the suspicion score as they are.
    assert reader_study.rating_score(np.array(["normal", "abnormal"]), np.array([2, 4]), "birads").tolist() == [2, 4]


def test_a_run_gives_a_fixed_20_case_study_with_films_and_cached_model_predictions(served_run, tmp_path):
    run = logic.validate_run(served_run)
    study = reader_study.study_for_run(run, 20, root=tmp_path / "studies")
    assert study.directory == tmp_path / "studies" / f"{run.name}-test-n20-s0"
    assert study.n_cases == 20 and study.meta["case_set"] == "test-n20-s0" and study.classes == run.classes
    evaluation = run.predictions().set_index("sample_id")
    model = study.model.set_index("case")
    for row in study.cases.itertuples():
        assert model.loc[row.case, "prediction"] == evaluation.loc[row.sample_id, "prediction_name"]
        assert row.truth == evaluation.loc[row.sample_id, "label_name"]
    film, what = reader_study.film_array(study.case(1)["film"], study.case(1)["image"])
    assert what == "original film" and film.shape == (512, 384) and film.dtype == np.uint8
    # The same study on the next start, whatever the sampling would give now.
    assert reader_study.study_for_run(run, 20, root=tmp_path / "studies").cases.equals(study.cases)
    # A whole 20-case session with a reload halfway.
    for case in range(1, 11):
        study.record("R1", case, run.classes[case % 2], 1 + case % 5)
    resumed = Study(study.directory)
    assert resumed.next_case("R1") == 11
    for case in range(11, 21):
        resumed.record("R1", case, run.classes[case % 2], 1 + case % 5)
    scores = reader_study.study_scores(resumed, n_resamples=50)
    assert set(scores["who"]) == {"r1", "model"} and (scores["n"] == 20).all()
    assert json.loads((study.directory / "study.json").read_text())["run"] == run.name


def test_the_whole_split_is_a_case_set_and_the_scale_is_the_studys(served_run, tmp_path):
    run = logic.validate_run(served_run)
    study = reader_study.study_for_run(run, 1000, scale="birads", root=tmp_path / "mine")
    assert study.directory == tmp_path / "mine" / f"{run.name}-test" and study.scale == "birads"
    assert study.n_cases == len(run.predictions())
    with pytest.raises(ConfigError, match="rating scale"):
        reader_study.create_study(tmp_path / "x", StudySpec("r", "test", "test", CLASSES, "stars"), None, None, [])


def test_study_settings_travel_through_the_environment(tmp_path):
    settings = logic.DashboardSettings((tmp_path,), study_dir=tmp_path / "study", rating="birads")
    assert logic.settings_from_env(logic.settings_env(settings)) == settings
    with pytest.raises(ConfigError, match="birads"):
        logic.settings_from_env({logic.RUNS_ENV: str(tmp_path), logic.RATING_ENV: "stars"})


def test_the_cli_passes_the_study_dir_and_rating_scale(served_run, tmp_path, monkeypatch):
    import typer
    from typer.testing import CliRunner

    from mammocad.cli import dashboard as dashboard_cli

    app = typer.Typer()
    app.command()(dashboard_cli.dashboard)
    started = {}
    monkeypatch.setattr(dashboard_cli.os, "execve", lambda path, argv, env: started.update(env=env))
    result = CliRunner().invoke(app, [str(served_run), "--study-dir", str(tmp_path / "s"), "--rating", "birads"])
    assert result.exit_code == 0, result.output
    settings = logic.settings_from_env(started["env"])
    assert settings.study_dir == (tmp_path / "s").resolve() and settings.rating == "birads"
    refused = CliRunner().invoke(app, [str(served_run), "--rating", "stars"])
    assert refused.exit_code == 2 and "--rating must be one of" in refused.output
