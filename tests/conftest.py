"""Shared fixtures: the real-data path (skip cleanly when absent) and small image writers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

MIAS_ENV = "MAMMOCAD_MIAS_DIR"


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
