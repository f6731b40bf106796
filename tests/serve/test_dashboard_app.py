"""The Streamlit app driven headless by ``streamlit.testing`` (no browser): every tab, a reader study, refusals."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from mammocad.dashboard import APP_PATH, logic
from mammocad.dashboard.app import PREDICTED, TABS
from mammocad.serve.engine import EXPLAIN_METHODS

TIMEOUT = 120


@pytest.fixture
def app(served_run, monkeypatch, tmp_path) -> AppTest:
    monkeypatch.setenv(logic.RUNS_ENV, str(served_run))
    monkeypatch.setenv(logic.BLIND_N_ENV, "5")
    monkeypatch.setenv(logic.STUDY_DIR_ENV, str(tmp_path / "study"))
    test = AppTest.from_file(str(APP_PATH), default_timeout=TIMEOUT)
    test.run()
    assert not test.exception, test.exception
    return test


def open_tab(app: AppTest, label: str) -> AppTest:
    app.session_state["tab"] = label
    app.run()
    assert not app.exception, app.exception
    assert not app.error, [e.value for e in app.error]
    return app


def test_every_tab_renders(app, served_run):
    assert [tab.label for tab in app.tabs] == list(TABS)
    assert app.selectbox(key="run").value == served_run.name
    assert [s.value for s in app.subheader] == ["Reader study"]

    open_tab(app, "Upload & explain")
    assert app.selectbox(key="upload_method").options == list(EXPLAIN_METHODS)
    assert app.selectbox(key="upload_target").options == [PREDICTED, "normal", "abnormal"]
    assert not app.slider  # the heatmap's opacity is a slider in the film viewer, in the browser
    assert "Upload an image" in app.info[0].value

    open_tab(app, "Model comparison")
    table = app.dataframe[0].value
    metrics = logic.validate_run(served_run).metrics()
    assert table.loc[served_run.name, "accuracy"] == pytest.approx(metrics["metrics"]["accuracy"])
    assert {chart.key for chart in app.get("plotly_chart")} == {"comparison_radar", "comparison_scatter"}

    open_tab(app, "Latent space")
    assert app.selectbox(key="latent_layer").value == "head.pool"
    assert [chart.key for chart in app.get("plotly_chart")] == ["latent_plot"]

    open_tab(app, "Misclassifications")
    errors = app.dataframe[0].value
    assert list(errors.columns) == ["case", "truth", "prediction", "confidence", "critical"]
    assert app.selectbox(key=f"errors_case:{served_run.name}").value == 0
    # No identifier of a patient or an image reaches the page.
    assert not {"sample_id", "image_id", "patient_id", "image"} & set(errors.columns)


def texts(app: AppTest) -> str:
    return " | ".join(e.value for e in [*app.markdown, *app.caption, *app.success, *app.warning, *app.error])


def answer(app: AppTest, klass: int, rating: int, note: str = "") -> AppTest:
    app.button(key=f"rs_class_{klass}").click().run()
    assert app.button(key="rs_next").disabled  # a class alone is not an answer
    app.button(key=f"rs_rating_{rating}").click().run()
    if note:
        app.text_input(key="rs_note").input(note)
    app.button(key="rs_next").click().run()
    assert not app.exception, app.exception
    return app


def test_a_reader_study_saves_each_answer_resumes_after_a_reload_and_scores_at_the_end(app, served_run, tmp_path):
    study_dir = tmp_path / "study" / f"{served_run.name}-test-n5-s0"
    app.button(key="rs_start").click().run()
    assert "name or initials" in app.error[0].value  # no reader, no study
    app.text_input(key="rs_reader_name").input("Dr X")
    app.button(key="rs_start").click().run()
    assert app.query_params["reader"] == "Dr X"
    assert "**Case 1 of 5** · reader Dr X" in texts(app)
    assert not app.dataframe  # blind: no score, truth or model answer while reading
    answer(app, 1, 4, note="dense")
    lines = (study_dir / "readers" / "dr-x.jsonl").read_text().splitlines()
    assert len(lines) == 1 and '"note": "dense"' in lines[0] and '"rating": 4' in lines[0]
    assert "**Case 2 of 5**" in texts(app)
    assert app.button(key="rs_next").disabled and app.text_input(key="rs_note").value == ""

    # A reload: a new browser session with the same URL resumes at the first unanswered case.
    reloaded = AppTest.from_file(str(APP_PATH), default_timeout=TIMEOUT)
    reloaded.query_params["reader"] = "Dr X"
    reloaded.run()
    assert "**Case 2 of 5**" in texts(reloaded)

    # Start over asks first; Cancel keeps everything.
    reloaded.button(key="rs_restart").click().run()
    assert "Discard your 1 saved answers" in texts(reloaded)
    reloaded.button(key="rs_cancel").click().run()
    assert "Discard your" not in texts(reloaded) and "**Case 2 of 5**" in texts(reloaded)
    for _ in range(4):
        answer(reloaded, 2, 5)
    assert "all 5 cases read" in reloaded.success[0].value
    scores = reloaded.dataframe[0].value
    assert list(scores.index) == ["dr-x", "model"] and list(scores.columns) == [
        "accuracy",
        "sensitivity",
        "specificity",
        "auc",
    ]
    assert {b.label for b in reloaded.get("download_button")} == {
        "Download my answers (CSV)",
        "Download all readers (CSV)",
    }
    assert (study_dir / "exports" / "dr-x.csv").read_text().count("\n") == 6

    # A second reader starts at case 1 on the same cases; the first reader's answers stay.
    reloaded.button(key="rs_switch").click().run()
    reloaded.text_input(key="rs_reader_name").input("YZ")
    reloaded.button(key="rs_start").click().run()
    assert "**Case 1 of 5** · reader YZ" in texts(reloaded)
    answer(reloaded, 2, 1)
    reloaded.button(key="rs_restart").click().run()
    reloaded.button(key="rs_confirm").click().run()
    assert "**Case 1 of 5** · reader YZ" in texts(reloaded)
    assert len(list((study_dir / "readers" / "discarded").glob("yz-*.jsonl"))) == 1
    assert len((study_dir / "readers" / "dr-x.jsonl").read_text().splitlines()) == 5


def test_an_incomplete_run_is_refused_with_its_reason(tmp_path, monkeypatch):
    (tmp_path / "run").mkdir()
    monkeypatch.setenv(logic.RUNS_ENV, str(tmp_path / "run"))
    test = AppTest.from_file(str(APP_PATH), default_timeout=TIMEOUT)
    test.run()
    assert not test.exception
    assert "not a trained run" in test.error[0].value
    assert not test.tabs


def test_no_run_given_says_how_to_start(monkeypatch):
    monkeypatch.delenv(logic.RUNS_ENV, raising=False)
    test = AppTest.from_file(str(APP_PATH), default_timeout=TIMEOUT)
    test.run()
    assert "mammocad dashboard RUN" in test.error[0].value


def viewer_pages(app: AppTest) -> list[str]:
    """The film viewers on the page (``components.html`` iframes): their HTML."""
    return [node.proto.srcdoc for node in app.get("iframe")]


def test_an_upload_is_shown_in_the_film_viewer_and_cached(app, upload_png):
    open_tab(app, "Upload & explain")
    app.file_uploader(key="upload_file").upload("mammogram.png", upload_png, "image/png").run()
    assert not app.exception, app.exception
    assert any("Answer:" in m.value for m in app.markdown)
    pages = viewer_pages(app)
    assert len(pages) == 1 and '"overlay": "' in pages[0]  # film and overlay side by side
    assert "relative contribution to" in pages[0]  # the colour bar's meaning
    assert any("Heatmap: gradcam · class" in c.value for c in app.caption)
    assert app.session_state["upload_computed"] == 1
    app.run()  # a rerun (any widget) does not recompute the heatmap
    assert app.session_state["upload_computed"] == 1

    app.selectbox(key="upload_method").set_value("eigencam").run()
    assert not app.exception, app.exception
    assert app.session_state["upload_computed"] == 2
    assert app.selectbox(key="upload_target").disabled
    caption = next(c.value for c in app.caption if c.value.startswith("Heatmap:"))
    assert "class-agnostic" in caption and "class normal" not in caption and "class abnormal" not in caption
    assert "class-agnostic" in viewer_pages(app)[0]


def test_a_run_switch_starts_that_runs_own_study_and_labels(served_run, tmp_path, monkeypatch):
    import shutil

    other = tmp_path / "other-run"
    shutil.copytree(served_run, other, ignore=shutil.ignore_patterns("export"))
    monkeypatch.setenv(logic.RUNS_ENV, f"{served_run}:{other}")
    monkeypatch.setenv(logic.BLIND_N_ENV, "5")
    monkeypatch.setenv(logic.STUDY_DIR_ENV, str(tmp_path / "study"))
    app = AppTest.from_file(str(APP_PATH), default_timeout=TIMEOUT)
    app.query_params["reader"] = "Dr X"
    app.run()
    app.button(key="rs_class_2").click().run()
    assert app.button(key="rs_class_2").proto.type == "primary"
    app.selectbox(key="run").select(other.name).run()
    assert not app.exception, app.exception
    # The other run's own study, nothing carried over from the half-answered case.
    assert "**Case 1 of 5** · reader Dr X" in texts(app)
    assert app.button(key="rs_class_2").proto.type == "secondary"
    assert (tmp_path / "study" / "other-run-test-n5-s0" / "study.json").exists()
    open_tab(app, "Misclassifications")
    assert app.selectbox(key="errors_case:other-run").value == 0


def test_every_screen_says_what_the_model_was_trained_on(app):
    """The fitness banner (model card headline and warnings) sits above the tabs, whatever the tab."""
    app.run()
    banners = [element.value for element in list(app.warning) + list(app.info)]
    assert any("synthetic" in text.lower() for text in banners), banners
