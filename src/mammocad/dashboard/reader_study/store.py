"""A reader study's folder on disk: :class:`StudyLayout` (its file names), :func:`create_study`,
:func:`study_for_run` and :class:`Study` (cases, the model's predictions, every reader's answers).

Answers are appended and fsynced as they are given (a reload or a crash loses nothing); everything
else is written atomically. Plain Python, tested without Streamlit.
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
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mammocad.dashboard.blind_test import stratified_positions
from mammocad.errors import ConfigError, MammocadError
from mammocad.folders import Folder
from mammocad.io import atomic_write_text
from mammocad.training.run_dir import RunDir

if TYPE_CHECKING:
    from mammocad.dashboard.runs import DashboardRun

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


class StudyLayout(Folder):
    """The files of a study folder (see :mod:`mammocad.dashboard.reader_study`); no other code spells them."""

    META = "study.json"
    CASES = "cases.csv"
    MODEL = "model.csv"
    READERS = "readers"
    DISCARDED = "discarded"
    EXPORTS = "exports"
    #: A reader's answers: one JSON line per answer.
    ANSWERS = ".jsonl"
    #: The export name of every reader's answers together (one reader's is their slug).
    ALL_READERS = "all-readers"

    @property
    def meta_path(self) -> Path:
        """``study.json``: written last, so its presence means the study is complete."""
        return self.path / self.META

    @property
    def cases_path(self) -> Path:
        return self.path / self.CASES

    @property
    def model_path(self) -> Path:
        return self.path / self.MODEL

    @property
    def readers_dir(self) -> Path:
        return self.path / self.READERS

    @property
    def discarded_dir(self) -> Path:
        return self.readers_dir / self.DISCARDED

    @property
    def exports_dir(self) -> Path:
        return self.path / self.EXPORTS

    def exists(self) -> bool:
        return self.meta_path.exists()

    def reader_path(self, slug: str) -> Path:
        return self.readers_dir / f"{slug}{self.ANSWERS}"

    def reader_files(self) -> list[Path]:
        """Every reader's answers file, sorted."""
        return sorted(self.readers_dir.glob(f"*{self.ANSWERS}"))

    def discarded_path(self, slug: str, when: datetime) -> Path:
        """Where "Start over" puts a reader's answers aside (``readers/discarded/<reader>-<time>.jsonl``)."""
        return self.discarded_dir / f"{slug}-{when:%Y%m%dT%H%M%S%f}{self.ANSWERS}"

    def export_path(self, name: str) -> Path:
        return self.exports_dir / f"{name}.csv"


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

        dataset = RunDir(run_dir).read_config().data.dataset
        manifest = read_manifest(dataset).set_index("image_id")["image_path"]
    except (MammocadError, OSError, KeyError, ValueError):
        return [""] * len(image_ids)
    return [str(resolve_path(dataset, manifest.get(i)) or "") for i in image_ids]


def select_cases(predictions: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` rows of an evaluation's predictions (all when ``n`` covers them), stratified by class, seeded order."""
    frame = predictions.sort_values("sample_id", kind="stable").reset_index(drop=True)
    chosen = stratified_positions(frame["label_name"].to_numpy(), n, np.random.default_rng(seed))
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
    layout = StudyLayout(directory)
    if layout.exists():
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
    atomic_write_text(layout.cases_path, table.to_csv(index=False))
    atomic_write_text(layout.model_path, predictions.to_csv(index=False))
    meta = {
        "run": spec.run_name,
        "split": spec.split,
        "case_set": spec.case_set,
        "classes": list(spec.classes),
        "scale": spec.scale,
        "created": now(),
    }
    atomic_write_text(layout.meta_path, json.dumps(meta, indent=2))  # last: its presence means "complete"


def study_for_run(
    run: DashboardRun, n: int, seed: int = 0, scale: str = DEFAULT_SCALE, root: Path | None = None
) -> Study:
    """The study of a dashboard run (:class:`~mammocad.dashboard.runs.DashboardRun`) on its evaluated split.

    The folder is ``<root>/<run>-<case set>`` (root default ``~/.mammocad/studies``): one per run and case set,
    so several runs share a root. The case set and the model's predictions come from the run's evaluation.
    """
    predictions = run.predictions()
    name = case_set_name(run.split, n, len(predictions), seed)
    directory = default_study_dir(run.name, name, root)
    if not StudyLayout(directory).exists():
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
        self.layout = StudyLayout(self.directory)
        if not self.layout.exists():
            raise MammocadError(f"{self.directory} is not a reader study (no {StudyLayout.META})")
        self.meta: dict[str, Any] = json.loads(self.layout.meta_path.read_text())
        self.cases = pd.read_csv(self.layout.cases_path, dtype=str, keep_default_na=False)
        self.cases["case"] = self.cases["case"].astype(int)
        self.model = pd.read_csv(self.layout.model_path)
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
        return self.layout.reader_path(reader_slug(reader))

    def readers(self) -> list[str]:
        """The readers with answers on disk (file names), sorted."""
        return sorted(p.stem for p in self.layout.reader_files())

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
        target = self.layout.discarded_path(path.stem, datetime.now(UTC))
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
        atomic_write_text(self.layout.export_path(self.export_name(reader)), text)
        return text

    def export_name(self, reader: str | None = None) -> str:
        """The name of a reader's export (their slug), or of every reader's (``all-readers``)."""
        return StudyLayout.ALL_READERS if reader is None else reader_slug(reader)
