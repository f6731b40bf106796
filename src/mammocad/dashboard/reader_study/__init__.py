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
reader only once that reader has answered every case. The study (:mod:`.store`) and its scores
(:mod:`.scores`) are plain Python (tested without Streamlit); :func:`~.ui.page` draws the tab.
"""

from mammocad.dashboard.reader_study.scores import (
    METRICS,
    Observations,
    metric_rows,
    positive,
    rating_score,
    score_table,
    study_scores,
)
from mammocad.dashboard.reader_study.store import (
    ANSWER_FIELDS,
    CASE_COLUMNS,
    DEFAULT_SCALE,
    EXPORT_FIELDS,
    SCALES,
    STUDIES_ROOT,
    Study,
    StudyLayout,
    StudySpec,
    case_set_name,
    create_study,
    default_study_dir,
    film_paths,
    now,
    reader_slug,
    select_cases,
    study_for_run,
)
from mammocad.dashboard.reader_study.ui import (
    CONTROLS_WIDTH,
    FILM_HEIGHT,
    READING_CSS,
    SCORE_RESAMPLES,
    STATE,
    STATIC_MAX_HEIGHT,
    film_array,
    page,
)
from mammocad.io import atomic_write_text as atomic_write  # the old name of the study's atomic writer

__all__ = [
    "ANSWER_FIELDS",
    "CASE_COLUMNS",
    "CONTROLS_WIDTH",
    "DEFAULT_SCALE",
    "EXPORT_FIELDS",
    "FILM_HEIGHT",
    "METRICS",
    "READING_CSS",
    "SCALES",
    "SCORE_RESAMPLES",
    "STATE",
    "STATIC_MAX_HEIGHT",
    "STUDIES_ROOT",
    "Observations",
    "Study",
    "StudyLayout",
    "StudySpec",
    "atomic_write",
    "case_set_name",
    "create_study",
    "default_study_dir",
    "film_array",
    "film_paths",
    "metric_rows",
    "now",
    "page",
    "positive",
    "rating_score",
    "reader_slug",
    "score_table",
    "select_cases",
    "study_for_run",
    "study_scores",
]
