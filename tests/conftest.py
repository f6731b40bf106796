"""Shared fixtures: the real-data path (skip cleanly when absent), a small synthetic training set, image writers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mammocad.data.importers import import_dataset
from mammocad.data.privacy import KEY_FILE_ENV
from mammocad.data.split import SplitSpec, split_dataset
from mammocad.data.synth import write_synthetic_dataset
from mammocad.training.config import load_run_config

MIAS_ENV = "MAMMOCAD_MIAS_DIR"
REAL_FORMATS_ENV = "MAMMOCAD_REAL_FORMATS_DIR"


@pytest.fixture(scope="session", autouse=True)
def pseudonym_key_file(tmp_path_factory) -> Iterator[Path]:
    """A pseudonym key of the test session's own (never the real ``~/.config/mammocad`` one): set
    through the environment, so that subprocesses and CLI runs use it too."""
    path = tmp_path_factory.mktemp("mammocad-home") / "pseudonym.key"
    previous = os.environ.get(KEY_FILE_ENV)
    os.environ[KEY_FILE_ENV] = str(path)
    yield path
    if previous is None:
        os.environ.pop(KEY_FILE_ENV, None)
    else:
        os.environ[KEY_FILE_ENV] = previous


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throw-away PostgreSQL server for the session (``postgresql+psycopg://...`` URL of an empty
    database), or $MAMMOCAD_TEST_POSTGRES_URL's; skipped without server binaries or psycopg."""
    from tests.postgres import postgres_server

    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def mias_dir() -> Path:
    """The real MIAS dev subset, from $MAMMOCAD_MIAS_DIR; the test is skipped when it is absent."""
    value = os.environ.get(MIAS_ENV)
    if not value:
        pytest.skip(f"{MIAS_ENV} is not set (real MIAS data not available)")
    path = Path(value)
    if not (path / "Info.txt").exists():
        pytest.skip(f"{MIAS_ENV}={value} has no Info.txt")
    return path


@pytest.fixture(scope="session")
def real_formats() -> Path:
    """The real published metadata files (CBIS-DDSM CSVs, KAUMDS workbook, BCDR, INbreast), from
    $MAMMOCAD_REAL_FORMATS_DIR; the test is skipped when it is absent."""
    value = os.environ.get(REAL_FORMATS_ENV)
    if not value or not Path(value).is_dir():
        pytest.skip(f"{REAL_FORMATS_ENV} is not set or not a folder (real dataset files not available)")
    return Path(value)


def real_file(root: Path, relative: str) -> Path:
    """A file or folder below the real-formats folder; skips the test when this copy lacks it."""
    path = root / relative
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path


def write_pgm(path: Path, pixels: np.ndarray) -> Path:
    """Write a binary (P5) PGM, 8- or 16-bit, the way MIAS files are stored."""
    height, width = pixels.shape
    maxval = 65535 if pixels.dtype == np.uint16 else 255
    header = f"P5\n{width} {height}\n{maxval}\n".encode()
    body = pixels.astype(">u2").tobytes() if maxval > 255 else pixels.astype(np.uint8).tobytes()
    path.write_bytes(header + body)
    return path


def textured(seed: int, shape: tuple[int, int] = (64, 64)) -> np.ndarray:
    """A distinct uint8 image per seed (so duplicate detection does not merge test files)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    """120 synthetic 512×384 phantoms (40 per class), imported and split (2 folds); shared by the session."""
    root = tmp_path_factory.mktemp("train")
    source = write_synthetic_dataset(
        root / "src", "csv", {"normal": 40, "benign": 40, "malignant": 40}, seed=3, height=512, width=384
    )
    import_dataset("csv", source, root / "ds")
    split_dataset(root / "ds", SplitSpec(test_size=0.2, val_size=0.25, folds=2, seed=0))
    return root / "ds"


def config(dataset, tmp_path, **overrides):
    """A fast run config (64², baseline CNN, 2 epochs, no MLflow) on ``dataset`` with overrides."""
    values = {
        "data.dataset": str(dataset),
        "preprocess.image_size": 64,
        "model.name": "baseline_cnn",
        "train.epochs": 2,
        "train.batch_size": 4,
        "train.lr": 1e-3,
        "data.task": "normal-abnormal",
        "output.runs_dir": str(tmp_path / "runs"),
        "output.mlflow": False,
        "augment.rotate_p": 0.0,
    }
    values.update(overrides)
    return load_run_config(None, values)
