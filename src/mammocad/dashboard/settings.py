"""What ``mammocad dashboard`` hands the Streamlit app: :class:`DashboardSettings`, carried in environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mammocad.errors import ConfigError
from mammocad.parse import parse_int

RUNS_ENV = "MAMMOCAD_DASHBOARD_RUNS"
BLIND_N_ENV = "MAMMOCAD_DASHBOARD_BLIND_N"
SPLIT_ENV = "MAMMOCAD_DASHBOARD_SPLIT"
STUDY_DIR_ENV = "MAMMOCAD_DASHBOARD_STUDY_DIR"
RATING_ENV = "MAMMOCAD_DASHBOARD_RATING"
#: Rating scales of the reader study (see :mod:`mammocad.dashboard.reader_study`).
RATINGS = ("confidence", "birads")
#: The size of the blind test of Dahes (2025).
DEFAULT_BLIND_N = 150
DEFAULT_SPLIT = "test"
#: Splits the dashboard shows: images the model never trained on (a blind test on training images means nothing).
HELD_OUT_SPLITS = ("test", "val", "blind")


@dataclass(frozen=True)
class DashboardSettings:
    """What ``mammocad dashboard`` hands the Streamlit app (through environment variables)."""

    runs: tuple[Path, ...]
    blind_n: int = DEFAULT_BLIND_N
    split: str = DEFAULT_SPLIT
    #: Where reader studies live, ``<study_dir>/<run>-<case set>/`` (None: ``~/.mammocad/studies``).
    study_dir: Path | None = None
    #: What a reader rates with each answer: ``confidence`` 1-5 or ``birads`` 1-5.
    rating: str = RATINGS[0]


def settings_env(settings: DashboardSettings) -> dict[str, str]:
    """The environment variables that carry ``settings`` to the app (read back by :func:`settings_from_env`)."""
    return {
        RUNS_ENV: os.pathsep.join(str(run) for run in settings.runs),
        BLIND_N_ENV: str(settings.blind_n),
        SPLIT_ENV: settings.split,
        STUDY_DIR_ENV: "" if settings.study_dir is None else str(settings.study_dir),
        RATING_ENV: settings.rating,
    }


def settings_from_env(environ: Mapping[str, str]) -> DashboardSettings:
    """The app's settings from ``environ``; ConfigError when no run is given or a value is malformed."""
    runs = tuple(Path(part) for part in environ.get(RUNS_ENV, "").split(os.pathsep) if part.strip())
    if not runs:
        raise ConfigError(f"no run to show: start the dashboard with `mammocad dashboard RUN` (or set {RUNS_ENV})")
    raw_n = environ.get(BLIND_N_ENV, str(DEFAULT_BLIND_N))
    blind_n = parse_int(raw_n)
    if blind_n is None or blind_n < 1:
        raise ConfigError(f"{BLIND_N_ENV} must be a positive integer, got {raw_n!r}")
    split = environ.get(SPLIT_ENV, DEFAULT_SPLIT)
    check_split(split)
    study_dir = environ.get(STUDY_DIR_ENV, "").strip()
    rating = environ.get(RATING_ENV, "").strip() or RATINGS[0]
    if rating not in RATINGS:
        raise ConfigError(f"{RATING_ENV} must be one of {', '.join(RATINGS)}, got {rating!r}")
    return DashboardSettings(runs, blind_n, split, Path(study_dir).expanduser() if study_dir else None, rating)


def check_split(split: str) -> None:
    """ConfigError unless ``split`` is one of :data:`HELD_OUT_SPLITS`."""
    if split not in HELD_OUT_SPLITS:
        raise ConfigError(
            f"the dashboard shows held-out images: choose split {', '.join(HELD_OUT_SPLITS)}, not {split!r}"
        )
