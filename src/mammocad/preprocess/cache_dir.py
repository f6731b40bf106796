"""The preprocessing cache folder: every file in it, and reading the finished samples back.

``<dataset>/cache/<config.cache_key()>/`` holds::

    config.json          the config, pipeline version and class names
    images/<sample>.png  the preprocessed image
    masks/<sample>.png   its lesion mask (uint8 0/255; only samples with one)
    meta/<sample>.json   one row of the samples table, written last (atomically): marks the sample done
    samples.parquet      every finished sample (see SAMPLE_COLUMNS), written atomically per call
    skipped.json         what was skipped and why
    failures.json        the unreadable inputs, with the size and modification time of their files,
                         so they are retried only once the files change

No other module spells these names; training epochs read the PNGs through :func:`load_preprocessed`
and :func:`read_sample`, never the DICOMs.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from mammocad.errors import DatasetError, ImageReadError
from mammocad.folders import Folder
from mammocad.preprocess.config import PreprocessConfig

#: The folder of a dataset that holds one cache folder per preprocessing config.
CACHE_DIR = "cache"
SAMPLES_NAME = "samples.parquet"
SKIPPED_NAME = "skipped.json"
FAILURES_NAME = "failures.json"
CONFIG_NAME = "config.json"

#: Columns of ``samples.parquet``. ``image``/``mask`` are relative to the cache dir (absolute in
#: :func:`load_preprocessed`); the geometry columns rebuild a :class:`~mammocad.preprocess.Geometry`
#: (``Geometry.from_record``); ``lesion_index`` is -1 in full mode.
SAMPLE_COLUMNS = (
    "sample_id",
    "image_id",
    "lesion_index",
    "label",
    "label_name",
    "patient_id",
    "study_id",
    "official_split",
    "laterality",
    "view",
    "pathology",
    "lesion_type",
    "lesion_pathology",
    "image",
    "mask",
    "original_height",
    "original_width",
    "crop_x0",
    "crop_y0",
    "crop_x1",
    "crop_y1",
    "flipped",
    "output_height",
    "output_width",
)


class CacheDir(Folder):
    """One config's cache folder (``<dataset>/cache/<key>``): the paths of its files."""

    @classmethod
    def of(cls, dataset_dir: str | Path, config: PreprocessConfig) -> CacheDir:
        """The cache folder of ``config`` inside a dataset."""
        return cls(Path(dataset_dir) / CACHE_DIR / config.cache_key())

    @property
    def dataset_dir(self) -> Path:
        """The dataset the cache belongs to (lesion mask paths are relative to it)."""
        return self.path.parent.parent

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_NAME

    @property
    def samples_path(self) -> Path:
        return self.path / SAMPLES_NAME

    @property
    def skipped_path(self) -> Path:
        return self.path / SKIPPED_NAME

    @property
    def failures_path(self) -> Path:
        return self.path / FAILURES_NAME

    def meta_path(self, sample_id: str) -> Path:
        """The row of a finished sample (its presence marks the sample done)."""
        return self.path / "meta" / f"{sample_id}.json"

    @staticmethod
    def image_name(sample_id: str) -> str:
        """A sample's image, relative to the cache folder (as ``samples.parquet`` stores it)."""
        return f"images/{sample_id}.png"

    @staticmethod
    def mask_name(sample_id: str) -> str:
        """A sample's lesion mask, relative to the cache folder (as ``samples.parquet`` stores it)."""
        return f"masks/{sample_id}.png"


def cache_dir_for(dataset_dir: str | Path, config: PreprocessConfig) -> Path:
    """The cache directory of ``config`` inside a dataset."""
    return CacheDir.of(dataset_dir, config).path


def load_preprocessed(dataset_dir: str | Path, config: PreprocessConfig) -> pd.DataFrame:
    """The samples table of a preprocessed cache, with ``image``/``mask`` as absolute paths.

    Raises :class:`~mammocad.errors.DatasetError` when the dataset was not preprocessed with
    ``config`` yet.
    """
    cache = CacheDir.of(Path(dataset_dir).resolve(), config)
    if not cache.samples_path.exists():
        raise DatasetError(f"{cache.path}: not preprocessed with this config yet; run `mammocad preprocess` first")
    samples = pd.read_parquet(cache.samples_path)
    samples["image"] = [str(cache.path / p) for p in samples["image"]]
    samples["mask"] = [str(cache.path / p) if isinstance(p, str) else None for p in samples["mask"]]
    return samples


def read_sample(path: str | Path) -> np.ndarray:
    """Read a cached sample PNG (uint8 or uint16, as written)."""
    pixels = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ImageReadError(path, "cached sample is missing or unreadable; delete the cache folder and rerun")
    return pixels


__all__ = [
    "CACHE_DIR",
    "CONFIG_NAME",
    "FAILURES_NAME",
    "SAMPLES_NAME",
    "SAMPLE_COLUMNS",
    "SKIPPED_NAME",
    "CacheDir",
    "cache_dir_for",
    "load_preprocessed",
    "read_sample",
]
