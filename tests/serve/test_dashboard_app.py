"""The Streamlit app driven headless by ``streamlit.testing`` (no browser): every tab, a blind-test round, refusals."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from mammocad.dashboard import APP_PATH, logic
from mammocad.dashboard.app import PREDICTED, TABS
from mammocad.serve.engine import EXPLAIN_METHODS

TIMEOUT = 120


@pytest.fixture
def app(served_run, monkeypatch) -> AppTest:
    monkeypatch.setenv(logic.RUNS_ENV, str(served_run))
    monkeypatch.setenv(logic.BLIND_N_ENV, "5")
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
    assert [s.value for s in app.subheader] == ["Case 1 of 5", "Running score"]

    open_tab(app, "Upload & explain")
    assert app.selectbox(key="upload_method").options == list(EXPLAIN_METHODS)
    assert app.selectbox(key="upload_target").options == [PREDICTED, "normal", "abnormal"]
    assert app.slider(key="upload_opacity").value == pytest.approx(0.45)
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
    assert app.selectbox(key="errors_case").value == 0
    # No identifier of a patient or an image reaches the page.
    assert not {"sample_id", "image_id", "patient_id", "image"} & set(errors.columns)


def test_a_blind_test_round_reveals_the_truth_and_updates_the_score(app):
    assert app.button(key="blind_answer_normal").disabled is False
    assert not [m for m in app.markdown if "Truth" in m.value]
    assert "No answer yet." in [c.value for c in app.caption]
    app.button(key="blind_answer_normal").click().run()
    assert not app.exception, app.exception
    revealed = [m.value for m in app.markdown if "Truth" in m.value]
    assert len(revealed) == 1 and "you: normal" in revealed[0]
    assert app.button(key="blind_answer_abnormal").disabled is True
    scores = {metric.label: metric.value for metric in app.metric}
    assert scores["Answered"] == "1" and scores["Your accuracy"] in ("0%", "100%")
    assert any("McNemar" in c.value for c in app.caption)
    app.button(key="blind_next").click().run()
    assert [s.value for s in app.subheader] == ["Case 2 of 5", "Running score"]
    assert not [m for m in app.markdown if "Truth" in m.value]
    app.button(key="blind_restart").click().run()
    assert [s.value for s in app.subheader] == ["Case 1 of 5", "Running score"]


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
