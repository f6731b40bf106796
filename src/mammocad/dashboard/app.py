"""The clinician dashboard, a Streamlit script: ``mammocad dashboard RUN [RUN...]`` starts it.

Settings come from the environment (:func:`mammocad.dashboard.logic.settings_from_env`). Tabs:
blind test, upload & explain, model comparison, latent space, misclassifications; only the open
tab runs (``st.tabs(on_change="rerun")``), so answering a blind-test item does not recompute the
latent space. All computing is in :mod:`mammocad.dashboard.logic`; this file only lays it out.
No patient or image identifier is ever shown (sample ids can embed patient numbers; DICOM tags are not read).
"""

from __future__ import annotations

import os

import streamlit as st

from mammocad.dashboard import logic
from mammocad.errors import MammocadError
from mammocad.serve.engine import InferenceEngine

TABS = ("Blind test", "Upload & explain", "Model comparison", "Latent space", "Misclassifications")
#: One fixed order, so every reader of a run sees the same blind set (their scores compare).
BLIND_SEED = 0
PREDICTED = "predicted class"
#: Display width of evaluation images: model inputs can be as small as 64 px.
CASE_WIDTH = 420


@st.cache_resource(show_spinner="Loading the model…")
def engine_for(run_dir: str) -> InferenceEngine:
    """One engine per run for the whole server (ONNX Runtime when its export is current and faster)."""
    return InferenceEngine(run_dir, backend="auto")


@st.cache_data(show_spinner=False, max_entries=1024)
def case_png(run_dir: str, image: str) -> bytes:
    """A cached evaluation image, as shown to the reader."""
    return logic.display_png(logic.cached_image(engine_for(run_dir), image))


@st.cache_data(show_spinner="Drawing the heatmap…", max_entries=1024)
def case_overlay(run_dir: str, image: str, method: str = "gradcam") -> bytes:
    """The heatmap of the model's predicted class over a cached evaluation image."""
    engine = engine_for(run_dir)
    return engine.explain(logic.cached_image(engine, image), method).overlay_png


@st.cache_data(show_spinner="Computing the latent features…", max_entries=32)
def latent(evaluation_dir: str, layer: str, _run: logic.DashboardRun) -> logic.LatentPoints:
    """The 3-D PCA of one evaluation's features (keyed by the evaluation directory and layer)."""
    return logic.latent_points(_run, layer)


def main() -> None:
    st.set_page_config(page_title="mammocad dashboard", layout="wide")
    try:
        settings = logic.settings_from_env(os.environ)
        runs = logic.load_runs(settings.runs, settings.split)
    except MammocadError as exc:
        st.error(str(exc))
        st.stop()
    by_name = {run.name: run for run in runs}
    with st.sidebar:
        st.title("mammocad")
        run = by_name[st.selectbox("Run", list(by_name), key="run")]
        try:
            engine = engine_for(str(run.run_dir))
        except MammocadError as exc:
            st.error(str(exc))
            st.stop()
        info = engine.info()
        st.caption(
            f"{info['name']} · {info['version']} · {info['task']} ({', '.join(run.classes)}) · "
            f"backend {info['backend']} · evaluated on the {run.split} split"
        )
        st.caption("Research software: not a medical device; not for clinical decisions.")
    tabs = st.tabs(TABS, key="tab", on_change="rerun")
    if tabs[0].open:
        with tabs[0]:
            blind_tab(run, settings.blind_n)
    if tabs[1].open:
        with tabs[1]:
            upload_tab(run, engine)
    if tabs[2].open:
        with tabs[2]:
            comparison_tab(runs)
    if tabs[3].open:
        with tabs[3]:
            latent_tab(run, engine)
    if tabs[4].open:
        with tabs[4]:
            errors_tab(run)


def blind_tab(run: logic.DashboardRun, n: int) -> None:
    """One held-out image at a time: the reader answers, then sees the truth, the model's answer and its heatmap."""
    key = f"blind:{run.name}"
    if key not in st.session_state:
        st.session_state[key] = logic.BlindSession(logic.blind_set(run, n, BLIND_SEED))
    session: logic.BlindSession = st.session_state[key]
    st.caption(
        f"{len(session.items)} held-out images from the {run.split} split, stratified by class, in random order. "
        "Read each image, answer, then compare with the truth and the model."
    )
    item = session.current
    if item is None:
        st.success(f"Blind test complete: {len(session.items)} images read.")
    else:
        st.subheader(f"Case {session.position + 1} of {len(session.items)}")
        left, right = st.columns(2)
        try:
            left.image(
                case_png(str(run.run_dir), str(item.image)), caption="the image as the model saw it", width=CASE_WIDTH
            )
        except MammocadError as exc:
            left.error(str(exc))
        with right:
            st.write("Your reading:")
            for column, name in zip(st.columns(len(run.classes)), run.classes, strict=True):
                column.button(
                    name, key=f"blind_answer_{name}", on_click=_answer, args=(session, name), disabled=session.revealed
                )
            if session.revealed:
                answer = session.answers[session.position]
                st.markdown(
                    f"**Truth: {item.truth}** · you: {answer} ({'right' if answer == item.truth else 'wrong'}) · "
                    f"model: {item.prediction} ({'right' if item.prediction == item.truth else 'wrong'})"
                )
                st.plotly_chart(logic.probability_figure(item.probabilities, item.truth), key="blind_probabilities")
                try:
                    st.image(
                        case_overlay(str(run.run_dir), str(item.image)),
                        caption="Grad-CAM of the model's class",
                        width=CASE_WIDTH,
                    )
                except MammocadError as exc:
                    st.error(str(exc))
                st.button("Next", key="blind_next", on_click=_advance, args=(session,), type="primary")
    show_score(logic.score(session))
    st.button("Start over", key="blind_restart", on_click=st.session_state.pop, args=(key,))


# A double click sends the second click before the rerun disables the button: ignore it rather than
# record a second answer or skip an unseen image.
def _answer(session: logic.BlindSession, name: str) -> None:
    if not session.revealed:
        session.answer(name)


def _advance(session: logic.BlindSession) -> None:
    if session.revealed:
        session.advance()


def show_score(result: logic.BlindScore) -> None:
    """The running score: reader vs model on the answered items."""
    st.subheader("Running score")
    if result.n_answered == 0:
        st.caption("No answer yet.")
        return
    columns = st.columns(6)
    columns[0].metric("Answered", result.n_answered)
    columns[1].metric("Your accuracy", _percent(result.user_accuracy))
    columns[2].metric("Model accuracy", _percent(result.model_accuracy))
    columns[3].metric("κ you vs truth", _number(result.user_kappa))
    columns[4].metric("κ model vs truth", _number(result.model_kappa))
    columns[5].metric("Agreement you–model", _percent(result.agreement))
    test = result.mcnemar
    if test is not None:
        st.caption(
            f"McNemar, you vs the model: p = {test.p_value:.3f} ({test.method}; you right and the model wrong: "
            f"{test.b}, the model right and you wrong: {test.c}). κ: Cohen's kappa (undefined: –)."
        )


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def upload_tab(run: logic.DashboardRun, engine: InferenceEngine) -> None:
    """Any image file in; prediction, probabilities and a heatmap out (the file's name is all that is shown of it)."""
    upload = st.file_uploader(
        "Mammogram: DICOM, PNG, JPEG, PGM or TIFF (the type is read from the content, whatever the name)",
        key="upload_file",
    )
    columns = st.columns(3)
    method = columns[0].selectbox("Method", engine.explain_methods, key="upload_method")
    target = columns[1].selectbox("Class to explain", [PREDICTED, *run.classes], key="upload_target")
    opacity = columns[2].slider("Heatmap opacity", 0.0, 1.0, 0.45, 0.05, key="upload_opacity")
    box = ""
    if engine.needs_box:
        box = st.text_input(
            "Lesion box x0,y0,x1,y1 (original pixels): this model was trained on mass-centred ROIs", key="upload_box"
        )
    if upload is None:
        st.info("Upload an image to see the model's prediction and heatmap.")
        return
    # Recomputed only when the file or a setting changes, not on every rerun; kept per browser session only.
    signature = (run.name, upload.file_id, box, method, target, opacity)
    stored = st.session_state.get("upload_result")
    if stored is None or stored[0] != signature:
        try:
            with st.spinner("Predicting…"):
                result = logic.explain_upload(
                    engine,
                    upload.getvalue(),
                    upload.name,
                    box,
                    method,
                    None if target == PREDICTED else target,
                    opacity,
                )
        except MammocadError as exc:
            st.session_state.pop("upload_result", None)
            st.error(str(exc))
            return
        st.session_state["upload_result"] = stored = (signature, result)
    result = stored[1]
    explanation = result.explanation
    height, width = result.shape
    st.markdown(
        f"**Prediction: {explanation.prediction}** (p = {explanation.probabilities[explanation.prediction]:.2f}) · "
        f"{result.name} ({result.file_format}, {width}×{height})"
    )
    left, right = st.columns([1, 2])
    left.plotly_chart(logic.probability_figure(explanation.probabilities), key="upload_probabilities")
    right.image(
        explanation.overlay_png,
        caption=f"{explanation.method} · class {explanation.target} · layer {explanation.layer}",
    )


def comparison_tab(runs: list[logic.DashboardRun]) -> None:
    """Every run's evaluation side by side: table, radar, scatter pairs."""
    table = logic.comparison_table(runs)
    st.caption(f"Each run on its latest {runs[0].split} evaluation; overfit_*: train minus {runs[0].split}.")
    st.dataframe(
        table,
        column_config={c: st.column_config.NumberColumn(format="%.3f") for c in table.columns if c != "n_images"},
    )
    if len(runs) == 1:
        st.caption("Start the dashboard with more runs to compare them.")
    st.plotly_chart(logic.radar_figure(table), key="comparison_radar")
    st.plotly_chart(logic.scatter_figure(table), key="comparison_scatter")


def latent_tab(run: logic.DashboardRun, engine: InferenceEngine) -> None:
    """3-D PCA of a layer's features on the evaluation images: colour = truth, open ring = misclassified."""
    layers = logic.latent_layers(engine)
    layer = st.selectbox("Layer", layers, index=len(layers) - 1, key="latent_layer")
    try:
        points = latent(str(run.evaluation_dir), layer, run)
    except MammocadError as exc:
        st.error(str(exc))
        return
    st.plotly_chart(logic.latent_figure(points, run.classes), key="latent_plot")


def errors_tab(run: logic.DashboardRun) -> None:
    """The evaluation's wrong predictions, critical first, each with its heatmap."""
    predictions = run.predictions()
    errors = logic.misclassified(predictions)
    if errors.empty:
        st.success(f"No misclassified image among the {len(predictions)} {run.split} images.")
        return
    st.caption(
        f"{len(errors)} of {len(predictions)} {run.split} images misclassified, {int(errors['critical'].sum())} "
        "critical (malignant or abnormal called normal or benign); critical first, then most confident first."
    )
    view = errors[["label_name", "prediction_name", "confidence", "critical"]].rename(
        columns={"label_name": "truth", "prediction_name": "prediction"}
    )
    view.insert(0, "case", range(1, len(view) + 1))
    st.dataframe(view, hide_index=True)
    choice = st.selectbox(
        "Case",
        range(len(errors)),
        format_func=lambda i: (
            f"#{i + 1} · true {errors.at[i, 'label_name']} → {errors.at[i, 'prediction_name']} "
            f"(p = {errors.at[i, 'confidence']:.2f}){' · critical' if errors.at[i, 'critical'] else ''}"
        ),
        key="errors_case",
    )
    row = errors.iloc[choice]
    left, right = st.columns(2)
    try:
        left.image(case_png(str(run.run_dir), row["image"]), caption=f"true {row['label_name']}", width=CASE_WIDTH)
        right.image(
            case_overlay(str(run.run_dir), row["image"]),
            caption=f"Grad-CAM of the prediction, {row['prediction_name']}",
            width=CASE_WIDTH,
        )
    except MammocadError as exc:
        st.error(str(exc))
    probabilities = {c: float(row[f"p_{c}"]) for c in run.classes}
    st.plotly_chart(logic.probability_figure(probabilities, row["label_name"]), key="errors_probabilities")


if __name__ == "__main__":
    main()
