"""The clinician dashboard, a Streamlit script: ``mammocad dashboard RUN [RUN...]`` starts it.

Settings come from the environment (:func:`mammocad.dashboard.settings.settings_from_env`). Tabs:
blind test, upload & explain, model comparison, latent space, misclassifications; only the open
tab runs (``st.tabs(on_change="rerun")``), so answering a blind-test item does not recompute the
latent space. All computing is in the modules beside this one (runs, latent, figures, uploads,
reader_study); this file only lays it out.
No patient or image identifier is ever shown (sample ids can embed patient numbers; DICOM tags are not read).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import streamlit as st

from mammocad.dashboard import reader_study
from mammocad.dashboard.figures import latent_figure, probability_figure, radar_figure, scatter_figure
from mammocad.dashboard.latent import LatentPoints, latent_layers, latent_points
from mammocad.dashboard.runs import DashboardRun, cached_image, comparison_table, display_png, load_runs, misclassified
from mammocad.dashboard.settings import DashboardSettings, settings_from_env
from mammocad.dashboard.uploads import explain_upload
from mammocad.dashboard.viewer import film_viewer
from mammocad.errors import MammocadError
from mammocad.explain.overlay import is_class_agnostic
from mammocad.serve.engine import InferenceEngine

TABS = ("Blind test", "Upload & explain", "Model comparison", "Latent space", "Misclassifications")
#: One fixed order, so every reader of a run sees the same blind set (their scores compare).
BLIND_SEED = 0
PREDICTED = "predicted class"
#: Display width of evaluation images: model inputs can be as small as 64 px.
CASE_WIDTH = 420
#: Height of the film viewer (pixels): two panes side by side, controls underneath.
VIEWER_HEIGHT = 760


@st.cache_resource(show_spinner="Loading the model…")
def engine_for(run_dir: str) -> InferenceEngine:
    """One engine per run for the whole server (ONNX Runtime when its export is current and faster)."""
    return InferenceEngine(run_dir, backend="auto")


@st.cache_data(show_spinner=False, max_entries=1024)
def case_png(run_dir: str, image: str) -> bytes:
    """A cached evaluation image, as shown to the reader."""
    return display_png(cached_image(engine_for(run_dir), image))


@st.cache_data(show_spinner="Drawing the heatmap…", max_entries=1024)
def case_overlay(run_dir: str, image: str, method: str = "gradcam") -> bytes:
    """The heatmap of the model's predicted class over a cached evaluation image."""
    engine = engine_for(run_dir)
    return engine.explain(cached_image(engine, image), method).overlay_png


@st.cache_data(show_spinner="Computing the latent features…", max_entries=32)
def latent(evaluation_dir: str, layer: str, _run: DashboardRun) -> LatentPoints:
    """The 3-D PCA of one evaluation's features (keyed by the evaluation directory and layer)."""
    return latent_points(_run, layer)


@st.cache_data(show_spinner=False, max_entries=32)
def card_for(run_dir: str) -> dict:
    """The run's model card (small files only; cached per run directory)."""
    from mammocad.training.model_card import model_card

    return model_card(run_dir)


def fitness_banner(run: DashboardRun) -> None:
    """What the model was trained on and how good it measured, above every tab (never a sidebar footnote)."""
    card = card_for(str(run.run_dir))
    text = card.get("headline", "")
    # The sidebar already says "research software"; a warning the headline already states is not repeated.
    warnings = [
        w
        for w in card.get("warnings", [])
        if not w.startswith("Research software") and w.split(":", 1)[0].lower() not in text.lower()
    ]
    if warnings:
        # One compact paragraph: it must never push the film below the fold.
        st.warning(f"**{text}** " + " · ".join(warnings), icon="⚠️")
    else:
        st.info(text, icon="ℹ️")


def main() -> None:
    st.set_page_config(page_title="mammocad dashboard", layout="wide")
    try:
        settings = settings_from_env(os.environ)
        runs = load_runs(settings.runs, settings.split)
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
    fitness_banner(run)
    tabs = st.tabs(TABS, key="tab", on_change="rerun")
    if tabs[0].open:
        with tabs[0]:
            blind_tab(run, settings)
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


def blind_tab(run: DashboardRun, settings: DashboardSettings) -> None:
    """The blind test as a reader study (:mod:`mammocad.dashboard.reader_study`): answers on disk, scores at the end."""
    try:
        study = study_for(str(run.run_dir), run, settings.blind_n, settings.rating, settings.study_dir)
    except (MammocadError, OSError) as exc:
        st.error(f"cannot open the reader study: {exc}")
        return
    reader_study.page(study, run)


@st.cache_resource(show_spinner="Preparing the reader study…", max_entries=32)
def study_for(run_dir: str, _run: DashboardRun, n: int, rating: str, root: Path | None) -> reader_study.Study:
    """The run's study folder, created once (cases.csv, model.csv); answers are read from disk on every view."""
    return reader_study.study_for_run(_run, n, BLIND_SEED, rating, root)


def upload_tab(run: DashboardRun, engine: InferenceEngine) -> None:
    """Any image file in; prediction, probabilities and a heatmap out (the file's name is all that is shown of it).

    The film and its heatmap are shown side by side in the film viewer (zoom, pan, window/level);
    the heatmap's opacity is a slider in the browser, so changing it reruns nothing here.
    """
    upload = st.file_uploader(
        "Mammogram: DICOM, PNG, JPEG, PGM or TIFF (the type is read from the content, whatever the name)",
        key="upload_file",
    )
    columns = st.columns(2)
    method = columns[0].selectbox("Method", engine.explain_methods, key="upload_method")
    agnostic = is_class_agnostic(method)
    target = columns[1].selectbox(
        "Class to explain",
        [PREDICTED, *run.classes],
        key="upload_target",
        disabled=agnostic,
        help="EigenCAM and the lesion map ignore the class: they show where the network responds."
        if agnostic
        else None,
    )
    box = ""
    if engine.needs_box:
        box = st.text_input(
            "Lesion box x0,y0,x1,y1 (original pixels): this model was trained on mass-centred ROIs", key="upload_box"
        )
    if upload is None:
        st.info("Upload an image to see the model's prediction and heatmap.")
        return
    data = upload.getvalue()
    # Recomputed only when the file or a setting changes, not on every rerun (opacity lives in the
    # browser); kept per browser session only, keyed by the file's hash, method and class.
    signature = (run.name, hashlib.sha256(data).hexdigest(), box, method, PREDICTED if agnostic else target)
    stored = st.session_state.get("upload_result")
    if stored is None or stored[0] != signature:
        try:
            with st.spinner("Predicting…"):
                result = explain_upload(
                    engine, data, upload.name, box, method, None if agnostic or target == PREDICTED else target
                )
        except MammocadError as exc:
            st.session_state.pop("upload_result", None)
            st.error(str(exc))
            return
        st.session_state["upload_result"] = stored = (signature, result)
        st.session_state["upload_computed"] = st.session_state.get("upload_computed", 0) + 1
    result = stored[1]
    explanation = result.explanation
    height, width = result.shape
    answer = explanation.label or explanation.prediction
    top = f"p = {explanation.probabilities[explanation.prediction]:.2f}"
    if answer != explanation.prediction:  # below the run's thresholds: say so, never a bold class
        top = f"top class {explanation.prediction}, {top}: below the run's confidence thresholds"
    st.markdown(f"**Answer: {answer}** ({top}) · {result.name} ({result.file_format}, {width}×{height})")
    st.plotly_chart(probability_figure(explanation.probabilities), key="upload_probabilities")
    st.caption(f"Heatmap: {result.caption}")
    film_viewer(
        result.film,
        result.overlay_rgba,
        key="upload_viewer",
        height=VIEWER_HEIGHT,
        caption="Left: the film as decoded (windowed as in training), at its own aspect ratio. Right: the same film "
        "under the heatmap, shown only on the breast and only where the map exceeds the colour bar's floor.",
        colorbar=result.colorbar,
    )


def comparison_tab(runs: list[DashboardRun]) -> None:
    """Every run's evaluation side by side: table, radar, scatter pairs."""
    table = comparison_table(runs)
    st.caption(f"Each run on its latest {runs[0].split} evaluation; overfit_*: train minus {runs[0].split}.")
    st.dataframe(
        table,
        column_config={c: st.column_config.NumberColumn(format="%.3f") for c in table.columns if c != "n_images"},
    )
    if len(runs) == 1:
        st.caption("Start the dashboard with more runs to compare them.")
    st.plotly_chart(radar_figure(table), key="comparison_radar")
    st.plotly_chart(scatter_figure(table), key="comparison_scatter")


def latent_tab(run: DashboardRun, engine: InferenceEngine) -> None:
    """3-D PCA of a layer's features on the evaluation images: colour = truth, open ring = misclassified."""
    layers = latent_layers(engine)
    layer = st.selectbox("Layer", layers, index=len(layers) - 1, key="latent_layer")
    try:
        points = latent(str(run.evaluation_dir), layer, run)
    except MammocadError as exc:
        st.error(str(exc))
        return
    st.plotly_chart(latent_figure(points, run.classes), key="latent_plot")


def errors_tab(run: DashboardRun) -> None:
    """The evaluation's wrong predictions, critical first, each with its heatmap."""
    predictions = run.predictions()
    errors = misclassified(predictions)
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
        key=f"errors_case:{run.name}",  # per run: a run switch must not keep the other run's labels
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
    st.plotly_chart(probability_figure(probabilities, row["label_name"]), key="errors_probabilities")


if __name__ == "__main__":
    main()
