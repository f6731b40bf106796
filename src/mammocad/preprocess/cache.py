"""The old home of the preprocessing driver, kept so ``mammocad.preprocess.cache`` imports still work.

The driver is :mod:`mammocad.preprocess.driver`; the cache folder's layout and reading it back are
:mod:`mammocad.preprocess.cache_dir`.
"""

from mammocad.preprocess.cache_dir import (
    CACHE_DIR,
    FAILURES_NAME,
    SAMPLE_COLUMNS,
    SAMPLES_NAME,
    SKIPPED_NAME,
    cache_dir_for,
    load_preprocessed,
    read_sample,
)
from mammocad.preprocess.driver import PreprocessResult, preprocess_dataset
from mammocad.progress import CountProgressFn as ProgressFn

__all__ = [
    "CACHE_DIR",
    "FAILURES_NAME",
    "SAMPLES_NAME",
    "SAMPLE_COLUMNS",
    "SKIPPED_NAME",
    "PreprocessResult",
    "ProgressFn",
    "cache_dir_for",
    "load_preprocessed",
    "preprocess_dataset",
    "read_sample",
]
