"""The dashboard's blind test as a reader study: a fixed case set, named readers, answers on disk, scores vs the model.

A *study* is a folder ``<root>/<run>-<case set>/`` (root ``~/.mammocad/studies`` or ``mammocad dashboard
--study-dir``):

- ``study.json``: run, split, case-set name, classes, rating scale (``confidence`` 1-5 or ``birads`` 1-5);
- ``cases.csv``: the fixed case set in reading order (case number, sample/image/patient ids, truth, cached
  model input, original film); written once, so every reader reads the same cases in the same order;
- ``model.csv``: the model's predictions on those cases (from the run's evaluation), cached with the study;
- ``readers/<reader>.jsonl``: one line per answer, appended and fsynced as it is given (a reload or a crash
  loses nothing; a reader resumes at the first case they have not answered); ``readers/discarded/``
  keeps what "Start over" put aside;
- ``exports/<reader>.csv``, ``exports/all-readers.csv``: the answers as CSV (written atomically).

Scores (accuracy, sensitivity, specificity, AUC of the ratings; positive = ``malignant``/``abnormal``) have
patient-grouped bootstrap CIs and are compared with the model on the same cases; the page shows them to a
reader only once that reader has answered every case. Everything above the ``---- page`` line is plain Python
(tested without Streamlit); :func:`page` draws it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from mammocad.errors import ConfigError, MammocadError
from mammocad.evaluation.bootstrap import cluster_bootstrap
from mammocad.evaluation.evaluate import CRITICAL_TRUE

STUDIES_ROOT = Path("~/.mammocad/studies")
#: Rating scales a study can ask for with each answer (1-5 both; BI-RADS 1-5 as in a screening read).
SCALES = {
    "confidence": ("Confidence", ("1 guess", "2", "3", "4", "5 certain")),
    "birads": (
        "BI-RADS",
        ("1 negative", "2 benign", "3 probably benign", "4 suspicious", "5 highly suggestive"),
    ),
}
DEFAULT_SCALE = "confidence"
CASE_COLUMNS = ("case", "sample_id", "image_id", "patient_id", "truth", "image", "film")
ANSWER_FIELDS = (
    "reader",
    "case",
    "answer",
    "rating",
    "scale",
    "note",
    "shown_at",
    "answered_at",
    "seconds",
)
EXPORT_FIELDS = (*ANSWER_FIELDS, "truth")
METRICS = ("accuracy", "sensitivity", "specificity", "auc")


# ---- files ---------------------------------------------------------------------------------------


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a fsynced temporary file and a rename (never half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8", newline="") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def reader_slug(name: str) -> str:
    """A reader's file name from their typed name/initials; ConfigError when nothing usable is left."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name.strip()).strip("-_").lower()[:40]
    if not slug:
        raise ConfigError("type your name or initials (letters or digits) to start")
    return slug


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# ---- case sets -----------------------------------------------------------------------------------


def case_set_name(split: str, n: int, total: int, seed: int) -> str:
    """``blind`` (the whole split) or ``test-n20-s0`` (a seeded sample of ``n`` of the split's ``total`` images)."""
    return split if n >= total else f"{split}-n{n}-s{seed}"


def default_study_dir(run_name: str, case_set: str, root: Path | None = None) -> Path:
    """``~/.mammocad/studies/<run>-<case set>`` (outside the run: a study outlives re-evaluations)."""
    return (root or STUDIES_ROOT).expanduser() / f"{run_name}-{case_set}"


def film_paths(run_dir: Path, image_ids: Sequence[str]) -> list[str]:
    """The original film of each image id (the dataset's manifest), '' where the dataset is not reachable."""
    try:
        from mammocad.data.manifest import read_manifest, resolve_path
        from mammocad.evaluation.predictions import run_config

        dataset = run_config(run_dir).data.dataset
        manifest = read_manifest(dataset).set_index("image_id")["image_path"]
    except (MammocadError, OSError, KeyError, ValueError):
        return [""] * len(image_ids)
    return [str(resolve_path(dataset, manifest.get(i)) or "") for i in image_ids]


def select_cases(predictions: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` rows of an evaluation's predictions (all when ``n`` covers them), stratified by class, seeded order."""
    from mammocad.dashboard.logic import _stratified

    frame = predictions.sort_values("sample_id", kind="stable").reset_index(drop=True)
    chosen = _stratified(frame["label_name"].to_numpy(), n, np.random.default_rng(seed))
    return frame.iloc[chosen].reset_index(drop=True)


@dataclass(frozen=True)
class StudySpec:
    """What a new study is made of (an existing study keeps what it was created with)."""

    run_name: str
    split: str
    case_set: str
    classes: tuple[str, ...]
    scale: str = DEFAULT_SCALE


def create_study(
    directory: Path, spec: StudySpec, cases: pd.DataFrame, model: pd.DataFrame, films: Sequence[str]
) -> None:
    """Write ``study.json``, ``cases.csv`` and ``model.csv`` (atomic; an existing study is left alone).

    ``cases``/``model``: rows of an evaluation's predictions in reading order (``sample_id``,
    ``image_id``, ``patient_id``, ``label_name``, ``image``; ``prediction_name``, ``p_<class>``).
    """
    if spec.scale not in SCALES:
        raise ConfigError(f"rating scale must be one of {', '.join(SCALES)}, got {spec.scale!r}")
    if (directory / "study.json").exists():
        return
    table = pd.DataFrame(
        {
            "case": range(1, len(cases) + 1),
            "sample_id": cases["sample_id"].astype(str).to_numpy(),
            "image_id": cases["image_id"].astype(str).to_numpy(),
            "patient_id": cases["patient_id"].astype(str).to_numpy(),
            "truth": cases["label_name"].astype(str).to_numpy(),
            "image": cases["image"].astype(str).to_numpy(),
            "film": list(films),
        }
    )
    predictions = pd.DataFrame(
        {
            "case": table["case"],
            "prediction": model["prediction_name"].astype(str).to_numpy(),
            **{f"p_{c}": model[f"p_{c}"].astype(float).to_numpy() for c in spec.classes},
        }
    )
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / "cases.csv", table.to_csv(index=False))
    atomic_write(directory / "model.csv", predictions.to_csv(index=False))
    meta = {
        "run": spec.run_name,
        "split": spec.split,
        "case_set": spec.case_set,
        "classes": list(spec.classes),
        "scale": spec.scale,
        "created": now(),
    }
    atomic_write(directory / "study.json", json.dumps(meta, indent=2))  # last: its presence means "complete"


def study_for_run(run: Any, n: int, seed: int = 0, scale: str = DEFAULT_SCALE, root: Path | None = None) -> Study:
    """The study of a dashboard run (:class:`~mammocad.dashboard.logic.DashboardRun`) on its evaluated split.

    The folder is ``<root>/<run>-<case set>`` (root default ``~/.mammocad/studies``): one per run and case set,
    so several runs share a root. The case set and the model's predictions come from the run's evaluation.
    """
    predictions = run.predictions()
    name = case_set_name(run.split, n, len(predictions), seed)
    directory = default_study_dir(run.name, name, root)
    if not (directory / "study.json").exists():
        cases = select_cases(predictions, n, seed)
        create_study(
            directory,
            StudySpec(run.name, run.split, name, tuple(run.classes), scale),
            cases,
            cases,
            film_paths(run.run_dir, cases["image_id"].astype(str).tolist()),
        )
    return Study(directory)


# ---- the study store -----------------------------------------------------------------------------


class Study:
    """A study folder: its cases, the model's predictions, and every reader's answers (read from disk each time)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        meta_path = self.directory / "study.json"
        if not meta_path.exists():
            raise MammocadError(f"{self.directory} is not a reader study (no study.json)")
        self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        self.cases = pd.read_csv(self.directory / "cases.csv", dtype=str, keep_default_na=False)
        self.cases["case"] = self.cases["case"].astype(int)
        self.model = pd.read_csv(self.directory / "model.csv")
        self.classes: tuple[str, ...] = tuple(self.meta["classes"])
        self.scale: str = self.meta["scale"]

    @property
    def key(self) -> str:
        """Identifies the study in a browser session (run + case set + folder)."""
        return f"{self.meta['run']}:{self.meta['case_set']}:{self.directory}"

    @property
    def n_cases(self) -> int:
        return len(self.cases)

    def reader_path(self, reader: str) -> Path:
        return self.directory / "readers" / f"{reader_slug(reader)}.jsonl"

    def readers(self) -> list[str]:
        """The readers with answers on disk (file names), sorted."""
        return sorted(p.stem for p in (self.directory / "readers").glob("*.jsonl"))

    def answers(self, reader: str) -> list[dict[str, Any]]:
        """A reader's answers, one per case (the first given; a torn last line from a crash is skipped)."""
        path = self.reader_path(reader)
        if not path.exists():
            return []
        seen: dict[int, dict[str, Any]] = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            seen.setdefault(int(record["case"]), record)
        return [seen[k] for k in sorted(seen)]

    def next_case(self, reader: str) -> int | None:
        """The first case number this reader has not answered (None when they are done)."""
        done = {int(a["case"]) for a in self.answers(reader)}
        return next((int(k) for k in self.cases["case"] if int(k) not in done), None)

    def finished(self, reader: str) -> bool:
        return self.next_case(reader) is None

    def case(self, number: int) -> dict[str, Any]:
        return self.cases.loc[self.cases["case"] == number].iloc[0].to_dict()

    def record(
        self,
        reader: str,
        case: int,
        answer: str,
        rating: int,
        note: str = "",
        shown_at: float | None = None,
        answered_at: float | None = None,
    ) -> dict[str, Any]:
        """Append one answer to the reader's file and fsync it; MammocadError for a bad or repeated answer."""
        if answer not in self.classes:
            raise MammocadError(f"answer must be one of {', '.join(self.classes)}, got {answer!r}")
        if not 1 <= int(rating) <= len(SCALES[self.scale][1]):
            raise MammocadError(f"{SCALES[self.scale][0]} must be 1-{len(SCALES[self.scale][1])}, got {rating}")
        if case not in set(self.cases["case"]):
            raise MammocadError(f"no case {case} in this study")
        if any(int(a["case"]) == case for a in self.answers(reader)):
            raise MammocadError(f"case {case} is already answered")
        answered_at = time.time() if answered_at is None else answered_at
        shown_at = answered_at if shown_at is None else shown_at
        record = {
            "reader": reader.strip(),
            "case": int(case),
            "answer": answer,
            "rating": int(rating),
            "scale": self.scale,
            "note": note.strip(),
            "shown_at": datetime.fromtimestamp(shown_at, UTC).isoformat(timespec="milliseconds"),
            "answered_at": datetime.fromtimestamp(answered_at, UTC).isoformat(timespec="milliseconds"),
            "seconds": round(max(0.0, answered_at - shown_at), 3),
        }
        path = self.reader_path(reader)
        path.parent.mkdir(parents=True, exist_ok=True)
        # A torn last line (a crash mid-write) must not swallow this answer: start a fresh line.
        torn = path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
        with path.open("a", encoding="utf-8") as handle:
            handle.write(("\n" if torn else "") + json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return record

    def discard(self, reader: str) -> Path | None:
        """Put a reader's answers aside (``readers/discarded/<reader>-<time>.jsonl``) so they start over."""
        path = self.reader_path(reader)
        if not path.exists():
            return None
        target = path.parent / "discarded" / f"{path.stem}-{datetime.now(UTC):%Y%m%dT%H%M%S%f}.jsonl"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        return target

    # -- export --

    def answers_table(self, readers: Sequence[str] | None = None) -> pd.DataFrame:
        """Answers of ``readers`` (all by default) with the truth, one row per reader and case."""
        rows = []
        truth = dict(zip(self.cases["case"], self.cases["truth"], strict=True))
        for reader in self.readers() if readers is None else readers:
            for record in self.answers(reader):
                rows.append({**{f: record.get(f, "") for f in ANSWER_FIELDS}, "truth": truth[int(record["case"])]})
        return pd.DataFrame(rows, columns=list(EXPORT_FIELDS))

    def export_csv(self, reader: str | None = None) -> str:
        """One reader's answers (or every reader's) as CSV text, also written to ``exports/`` (atomically)."""
        table = self.answers_table(None if reader is None else [reader])
        buffer = io.StringIO()
        table.to_csv(buffer, index=False, quoting=csv.QUOTE_MINIMAL)
        text = buffer.getvalue()
        name = "all-readers" if reader is None else reader_slug(reader)
        atomic_write(self.directory / "exports" / f"{name}.csv", text)
        return text


# ---- scores --------------------------------------------------------------------------------------


def positive(labels: Sequence[str] | np.ndarray) -> np.ndarray:
    """True where a class counts as positive for sensitivity/specificity/AUC (malignant or abnormal)."""
    return np.isin(np.asarray(labels, dtype=str), CRITICAL_TRUE)


def rating_score(answers: np.ndarray, ratings: np.ndarray, scale: str) -> np.ndarray:
    """A reader's suspicion score for the ROC curve: BI-RADS as is; confidence signed by the answer's side."""
    ratings = ratings.astype(float)
    if scale == "birads":
        return ratings
    return np.where(positive(answers), ratings, -ratings)


@dataclass(frozen=True)
class Observations:
    """Who read what: truth, answer and score per reading, grouped by patient for the bootstrap."""

    truth: np.ndarray
    answer: np.ndarray
    score: np.ndarray
    patients: np.ndarray


def _metric(name: str, obs: Observations, idx: np.ndarray) -> float | None:
    truth, answer = obs.truth[idx], obs.answer[idx]
    pos, called = positive(truth), positive(answer)
    if name == "accuracy":
        return float((truth == answer).mean()) if idx.size else None
    if name == "sensitivity":
        return float(called[pos].mean()) if pos.any() else None
    if name == "specificity":
        return float((~called[~pos]).mean()) if (~pos).any() else None
    if pos.all() or not pos.any():  # auc
        return None
    return float(roc_auc_score(pos, obs.score[idx]))


def metric_rows(who: str, obs: Observations, n_resamples: int, seed: int) -> list[dict[str, Any]]:
    """One row per metric: estimate and patient-grouped percentile bootstrap 95% CI."""
    rows = []
    for name in METRICS:
        if n_resamples > 0:
            result = cluster_bootstrap(
                obs.patients, lambda idx, name=name: _metric(name, obs, idx), n_resamples=n_resamples, seed=seed
            )
            estimate, low, high = result.estimate, result.low, result.high
        else:
            estimate, low, high = _metric(name, obs, np.arange(obs.truth.size)), None, None
        rows.append({"who": who, "metric": name, "estimate": estimate, "low": low, "high": high, "n": obs.truth.size})
    return rows


def study_scores(
    study: Study, readers: Sequence[str] | None = None, n_resamples: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """Each finished reader, the readers pooled, and the model on the same cases: metric, estimate, 95% CI.

    ``readers`` default: every reader who answered every case. Pooled: all their readings together,
    resampled by patient (a patient's readings by every reader move together). Columns: who, metric,
    estimate, low, high, n (readings).
    """
    readers = [r for r in study.readers() if study.finished(r)] if readers is None else list(readers)
    cases = study.cases.set_index("case")
    rows: list[dict[str, Any]] = []
    pooled: list[Observations] = []
    for reader in readers:
        answers = pd.DataFrame(study.answers(reader))
        if answers.empty:
            continue
        numbers = answers["case"].astype(int).to_numpy()
        obs = Observations(
            truth=cases.loc[numbers, "truth"].to_numpy(dtype=str),
            answer=answers["answer"].to_numpy(dtype=str),
            score=rating_score(answers["answer"].to_numpy(dtype=str), answers["rating"].to_numpy(), study.scale),
            patients=cases.loc[numbers, "patient_id"].to_numpy(dtype=str),
        )
        pooled.append(obs)
        rows += metric_rows(reader, obs, n_resamples, seed)
    if len(pooled) > 1:
        joined = Observations(
            *(np.concatenate([getattr(o, f) for o in pooled]) for f in Observations.__dataclass_fields__)
        )
        rows += metric_rows("readers pooled", joined, n_resamples, seed)
    model = study.model.set_index("case").loc[cases.index]
    positives = [f"p_{c}" for c in study.classes if c in CRITICAL_TRUE]
    model_obs = Observations(
        truth=cases["truth"].to_numpy(dtype=str),
        answer=model["prediction"].to_numpy(dtype=str),
        score=model[positives].sum(axis=1).to_numpy(dtype=float),
        patients=cases["patient_id"].to_numpy(dtype=str),
    )
    rows += metric_rows("model", model_obs, n_resamples, seed)
    return pd.DataFrame(rows, columns=["who", "metric", "estimate", "low", "high", "n"])


def score_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Scores as ``who`` × metric cells reading ``0.85 (0.70–0.95)``; '–' where undefined."""

    def cell(row: pd.Series) -> str:
        if row["estimate"] is None or pd.isna(row["estimate"]):
            return "–"
        if row["low"] is None or pd.isna(row["low"]):
            return f"{row['estimate']:.2f}"
        return f"{row['estimate']:.2f} ({row['low']:.2f}–{row['high']:.2f})"

    table = scores.assign(value=scores.apply(cell, axis=1))
    wide = table.pivot(index="who", columns="metric", values="value")
    order = list(dict.fromkeys(scores["who"]))
    return wide.loc[order, [m for m in METRICS if m in wide.columns]]


# ---- page ----------------------------------------------------------------------------------------

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


def page(study: Study, run: Any, image_key: str = "") -> None:
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


def _identify(study: Study, run: Any) -> None:
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


def _read(study: Study, reader: str, number: int, run: Any, image_key: str) -> None:
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
    st.warning(f"Discard your {n} saved answers and start again at case 1? (They are kept aside, not deleted.)")
    yes, no = st.columns(2)
    yes.button("Discard", key="rs_confirm", on_click=_discard, args=(study, reader), type="primary", width="stretch")
    no.button("Cancel", key="rs_cancel", on_click=_choose, args=("confirm", False), width="stretch")


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


def _finished(study: Study, reader: str, run: Any) -> None:
    import streamlit as st

    st.success(f"{reader}: all {study.n_cases} cases read. Thank you. Scores below compare you with the model.")
    scores = _cached_scores(study, reader)
    st.dataframe(score_table(scores), key="rs_scores")
    st.caption(
        "Estimate (95% CI): patient-grouped percentile bootstrap (1000 resamples; a patient's images, and in "
        f"'readers pooled' every reader's readings of them, move together). Positive: "
        f"{', '.join(c for c in study.classes if c in CRITICAL_TRUE)} "
        f"({', '.join(c for c in study.classes if c not in CRITICAL_TRUE)} negative). AUC from the "
        f"{SCALES[study.scale][0].lower()} ratings (confidence signed by the answer's side) and, for the model, "
        "from its probability of the positive classes. '–': undefined on these cases."
    )
    slug = reader_slug(reader)
    columns = st.columns(3)
    columns[0].download_button(
        "Download my answers (CSV)",
        study.export_csv(reader),
        file_name=f"{study.meta['case_set']}-{slug}.csv",
        mime="text/csv",
        key="rs_download_mine",
    )
    columns[1].download_button(
        "Download all readers (CSV)",
        study.export_csv(None),
        file_name=f"{study.meta['case_set']}-all-readers.csv",
        mime="text/csv",
        key="rs_download_all",
    )
    columns[2].button("Switch reader", key="rs_switch", on_click=_leave)
    st.caption(f"Also on disk: {study.directory / 'exports'}")
    state = st.session_state.setdefault(STATE, {"key": None, "confirm": False})
    if not state.get("confirm"):
        st.button("Start over…", key="rs_restart", on_click=_choose, args=("confirm", True))
    else:
        st.warning("Discard your answers and read every case again? (They are kept aside, not deleted.)")
        yes, no = st.columns(2)
        yes.button("Discard", key="rs_confirm", on_click=_discard, args=(study, reader), type="primary")
        no.button("Cancel", key="rs_cancel", on_click=_choose, args=("confirm", False))


def _cached_scores(study: Study, reader: str) -> pd.DataFrame:
    import streamlit as st

    @st.cache_data(show_spinner="Bootstrapping the scores…", max_entries=64)
    def compute(directory: str, stamp: tuple[tuple[str, float], ...]) -> pd.DataFrame:
        return study_scores(Study(directory), n_resamples=SCORE_RESAMPLES)

    files = sorted((study.directory / "readers").glob("*.jsonl"))
    stamp = tuple((p.name, p.stat().st_mtime) for p in files)
    return compute(str(study.directory), stamp)
