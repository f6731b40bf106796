"""The reader-study tab of the dashboard (Streamlit): identify, read case after case (answers saved as
given), then scores and export. :func:`page` draws it; the study itself is :mod:`.store`, its scores :mod:`.scores`."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mammocad.dashboard.reader_study.scores import score_table, study_scores
from mammocad.dashboard.reader_study.store import SCALES, Study, reader_slug
from mammocad.errors import ConfigError, MammocadError
from mammocad.evaluation.evaluate import CRITICAL_TRUE

if TYPE_CHECKING:
    from mammocad.dashboard.runs import DashboardRun

#: Film height on screen (px): with the header and tabs it fits a 900-px-high window, controls beside it.
FILM_HEIGHT = 560
#: Films larger than this (height, px) are downsampled for st.image (the film viewer shows full resolution).
STATIC_MAX_HEIGHT = 1400
SCORE_RESAMPLES = 1000
STATE = "reader_study"
#: Width of the answer controls (px): fixed, so they never squeeze below usable at 900 px; the film takes the rest.
CONTROLS_WIDTH = 270
#: Only while the reading view is drawn: less page padding (the film and the controls fit a 900-px window),
#: the controls column at its fixed width, compact rating buttons.
READING_CSS = f"""<style>
.block-container {{ padding-top: 3rem !important; padding-left: 1.5rem !important; padding-right: 1.5rem !important; }}
div[data-testid="stColumn"]:has(> div > .st-key-rs_controls),
div[data-testid="stColumn"]:has(.st-key-rs_controls) {{
  flex: 0 0 {CONTROLS_WIDTH}px !important; width: {CONTROLS_WIDTH}px !important; min-width: {CONTROLS_WIDTH}px !important;
}}
div[data-testid="stHorizontalBlock"]:has(.st-key-rs_controls) {{ flex-wrap: nowrap !important; }}
div[data-testid="stHorizontalBlock"]:has(.st-key-rs_controls) > div[data-testid="stColumn"]:not(:has(.st-key-rs_controls)) {{
  flex: 1 1 0 !important; min-width: 0 !important; width: auto !important;
}}
.st-key-rs_controls [class*="st-key-rs_rating_"] button {{ padding-left: 2px; padding-right: 2px; min-width: 0; }}
</style>"""


def film_array(path: str, fallback: str) -> tuple[np.ndarray, str]:
    """The original film at its own bit depth (uint8/uint16, display orientation, for window/level), or the cached
    model input (float in [0, 1]) when the film is unreachable; with a word on which it is."""
    from mammocad.data.images import read_image
    from mammocad.preprocess import read_sample

    if path:
        try:
            return read_image(path).pixels, "original film"
        except (MammocadError, OSError):
            pass
    return read_sample(fallback), "model input (the original film is not reachable)"


def _state(study: Study, reader: str, case: int) -> dict[str, Any]:
    """This browser's working state for one case of one reader of one study (reset when any of them changes)."""
    import streamlit as st

    key = (study.key, reader_slug(reader), case)
    state = st.session_state.get(STATE)
    if state is None or state["key"] != key:
        state = {"key": key, "answer": None, "rating": None, "shown_at": time.time(), "confirm": False}
        st.session_state[STATE] = state
        st.session_state["rs_note"] = ""
    return state


def _choose(field: str, value: Any) -> None:
    import streamlit as st

    st.session_state[STATE][field] = value


def _save(study: Study, reader: str, case: int) -> None:
    """Next: append the answer to disk (once; a double press finds it saved and does nothing)."""
    import streamlit as st

    state = st.session_state[STATE]
    if state["answer"] is None or state["rating"] is None or state["key"][2] != case:
        return
    if any(int(a["case"]) == case for a in study.answers(reader)):
        return
    study.record(reader, case, state["answer"], state["rating"], st.session_state.get("rs_note", ""), state["shown_at"])
    st.session_state.pop(STATE, None)


def _start(study: Study) -> None:
    import streamlit as st

    name = st.session_state.get("rs_reader_name", "").strip()
    try:
        reader_slug(name)
    except ConfigError as exc:
        st.session_state["rs_error"] = str(exc)
        return
    st.session_state.pop("rs_error", None)
    st.query_params["reader"] = name
    st.query_params["study"] = study.meta["case_set"]


def _leave() -> None:
    import streamlit as st

    st.query_params.pop("reader", None)
    st.session_state.pop(STATE, None)


def _discard(study: Study, reader: str) -> None:
    import streamlit as st

    study.discard(reader)
    st.session_state.pop(STATE, None)


def page(study: Study, run: DashboardRun, image_key: str = "") -> None:
    """The reader-study tab: identify, read case after case (answers saved as given), then scores and export."""
    import streamlit as st

    reader = st.query_params.get("reader", "")
    if reader and st.query_params.get("study", study.meta["case_set"]) != study.meta["case_set"]:
        st.info(
            f"Your reading in this browser was on case set {st.query_params['study']!r}; this run's study is "
            f"{study.meta['case_set']!r}. Select that run in the sidebar, or start here."
        )
        reader = ""
    if not reader:
        _identify(study, run)
        return
    number = study.next_case(reader)
    if number is None:
        _finished(study, reader, run)
        return
    _read(study, reader, number, run, image_key)


def _identify(study: Study, run: DashboardRun) -> None:
    import streamlit as st

    scale_name = SCALES[study.scale][0]
    st.subheader("Reader study")
    st.caption(
        f"{study.n_cases} cases ({study.meta['case_set']}, from the {study.meta['split']} split), the same for every "
        f"reader and in the same order. For each case give your class ({', '.join(study.classes)}) and your "
        f"{scale_name} 1-5; each answer is saved as you give it, so you can close the page and resume. Your scores, "
        "and the model's on the same cases, are shown once you have read every case."
    )
    readers = study.readers()
    if readers:
        progress = ", ".join(f"{r} ({len(study.answers(r))}/{study.n_cases})" for r in readers)
        st.caption(f"Readers so far: {progress}. Type the same name to resume.")
    st.text_input("Your name or initials", key="rs_reader_name", max_chars=40)
    st.button("Start or resume reading", key="rs_start", on_click=_start, args=(study,), type="primary")
    if st.session_state.get("rs_error"):
        st.error(st.session_state["rs_error"])
    st.caption(f"Study folder: {study.directory}")


def _read(study: Study, reader: str, number: int, run: DashboardRun, image_key: str) -> None:
    import streamlit as st

    state = _state(study, reader, number)
    case = study.case(number)
    done = len(study.answers(reader))
    film, what = _cached_film(case["film"], case["image"])
    st.html(READING_CSS)
    left, right = st.columns([3, 1], gap="medium")
    with left:
        _show_film(film, what, image_key or f"rs_film_{number}")
    with right.container(key="rs_controls"):
        st.markdown(f"**Case {number} of {study.n_cases}** · reader {reader}")
        st.progress(done / study.n_cases, text=f"{done} answered")
        st.caption("Your class" + ("" if state["answer"] else f" (keys 1-{len(study.classes)})"))
        for k, name in enumerate(study.classes, start=1):
            st.button(
                name,
                key=f"rs_class_{k}",
                on_click=_choose,
                args=("answer", name),
                type="primary" if state["answer"] == name else "secondary",
                shortcut=None if state["answer"] else str(k),
                width="stretch",
            )
        label, levels = SCALES[study.scale]
        st.caption(f"{label}" + (" (keys 1-5)" if state["answer"] else ""))
        for columns, (j, level) in zip(
            [c for c in st.columns(len(levels), gap="small")], enumerate(levels, start=1), strict=True
        ):
            columns.button(
                str(j),
                key=f"rs_rating_{j}",
                help=level,
                on_click=_choose,
                args=("rating", j),
                type="primary" if state["rating"] == j else "secondary",
                shortcut=str(j) if state["answer"] else None,
                width="stretch",
            )
        st.caption(f"{levels[0]} … {levels[-1]}")
        st.text_input("Note (optional)", key="rs_note", max_chars=500)
        ready = state["answer"] is not None and state["rating"] is not None
        st.button(
            "Save & next",
            key="rs_next",
            on_click=_save,
            args=(study, reader, number),
            type="primary",
            disabled=not ready,
            shortcut="Enter",
            width="stretch",
        )
        _restart_controls(study, reader, state)


def _restart_controls(study: Study, reader: str, state: dict[str, Any]) -> None:
    import streamlit as st

    left, right = st.columns(2, gap="small")
    left.button("Switch reader", key="rs_switch", on_click=_leave, type="tertiary")
    if not state["confirm"]:
        right.button("Start over…", key="rs_restart", on_click=_choose, args=("confirm", True), type="tertiary")
        return
    n = len(study.answers(reader))
    _confirm_discard(study, reader, f"Discard your {n} saved answers and start again at case 1?", width="stretch")


def _confirm_discard(study: Study, reader: str, question: str, width: str = "content") -> None:
    """ "Start over" asked twice: the question, then Discard (answers put aside) or Cancel."""
    import streamlit as st

    st.warning(f"{question} (They are kept aside, not deleted.)")
    yes, no = st.columns(2)
    yes.button("Discard", key="rs_confirm", on_click=_discard, args=(study, reader), type="primary", width=width)
    no.button("Cancel", key="rs_cancel", on_click=_choose, args=("confirm", False), width=width)


def _cached_film(path: str, fallback: str) -> tuple[np.ndarray, str]:
    import streamlit as st

    @st.cache_data(show_spinner=False, max_entries=8)  # full-resolution 16-bit films are tens of MB each
    def load(path: str, fallback: str) -> tuple[np.ndarray, str]:
        return film_array(path, fallback)

    return load(path, fallback)


def _show_film(film: np.ndarray, what: str, key: str) -> None:
    import streamlit as st

    try:
        from mammocad.dashboard.viewer import film_viewer
    except ImportError:
        film_viewer = None
    if film_viewer is not None:
        film_viewer(film, key=key, height=FILM_HEIGHT, caption=what)
        return
    height, width = film.shape[:2]
    if film.dtype != np.uint8:  # st.image shows 8 bits: scale the film's own range
        low, high = float(film.min()), float(film.max())
        film = np.rint((film.astype(np.float32) - low) * (255.0 / max(high - low, 1e-6))).astype(np.uint8)
    if height > STATIC_MAX_HEIGHT:  # st.image sends the pixels: no need for more than a screen's worth
        step = int(np.ceil(height / STATIC_MAX_HEIGHT))
        film = film[::step, ::step]
    st.image(film, caption=f"{what} · {width}×{height}", width=max(1, int(FILM_HEIGHT * width / height)))


def _finished(study: Study, reader: str, run: DashboardRun) -> None:
    import streamlit as st

    st.success(f"{reader}: all {study.n_cases} cases read. Thank you. Scores below compare you with the model.")
    scores = _cached_scores(study, reader)
    st.dataframe(score_table(scores), key="rs_scores")
    st.caption(
        f"Estimate (95% CI): patient-grouped percentile bootstrap ({SCORE_RESAMPLES} resamples; a patient's images, "
        f"and in 'readers pooled' every reader's readings of them, move together). Positive: "
        f"{', '.join(c for c in study.classes if c in CRITICAL_TRUE)} "
        f"({', '.join(c for c in study.classes if c not in CRITICAL_TRUE)} negative). AUC from the "
        f"{SCALES[study.scale][0].lower()} ratings (confidence signed by the answer's side) and, for the model, "
        "from its probability of the positive classes. '–': undefined on these cases."
    )
    columns = st.columns(3)
    downloads = (
        ("Download my answers (CSV)", reader, "rs_download_mine"),
        ("Download all readers (CSV)", None, "rs_download_all"),
    )
    for column, (label, who, key) in zip(columns, downloads, strict=False):
        column.download_button(
            label,
            study.export_csv(who),
            file_name=f"{study.meta['case_set']}-{study.export_name(who)}.csv",
            mime="text/csv",
            key=key,
        )
    columns[2].button("Switch reader", key="rs_switch", on_click=_leave)
    st.caption(f"Also on disk: {study.layout.exports_dir}")
    state = st.session_state.setdefault(STATE, {"key": None, "confirm": False})
    if not state.get("confirm"):
        st.button("Start over…", key="rs_restart", on_click=_choose, args=("confirm", True))
    else:
        _confirm_discard(study, reader, "Discard your answers and read every case again?")


def _cached_scores(study: Study, reader: str) -> pd.DataFrame:
    import streamlit as st

    @st.cache_data(show_spinner="Bootstrapping the scores…", max_entries=64)
    def compute(directory: str, stamp: tuple[tuple[str, float], ...]) -> pd.DataFrame:
        return study_scores(Study(directory), n_resamples=SCORE_RESAMPLES)

    stamp = tuple((p.name, p.stat().st_mtime) for p in study.layout.reader_files())
    return compute(str(study.directory), stamp)
