"""The ``preprocess`` stage: breast crop, CLAHE, resize, mass-centred ROIs, cached by config."""

from mammocad.preprocess.cache_dir import cache_dir_for, load_preprocessed, read_sample
from mammocad.preprocess.config import PreprocessConfig
from mammocad.preprocess.driver import PreprocessResult, preprocess_dataset
from mammocad.preprocess.pipeline import Geometry, Preprocessed, preprocess_image, preprocess_roi

__all__ = [
    "Geometry",
    "PreprocessConfig",
    "PreprocessResult",
    "Preprocessed",
    "cache_dir_for",
    "load_preprocessed",
    "preprocess_dataset",
    "preprocess_image",
    "preprocess_roi",
    "read_sample",
]
