"""The layout of an ONNX export folder (``RUN/export/`` by default), spelled once.

Its metadata file shares its name with the run's ``model.json`` (:attr:`RunDir.MODEL`): a folder holding
an export describes the model it holds the same way a run does.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from mammocad.training.run_dir import RunDir

#: The export folder inside a run directory (``mammocad export RUN`` without ``--out``).
EXPORT_DIR = RunDir.EXPORT
#: The fp32 classifier: input ``input`` (N, C, H, W) float32 in [0, 1] -> ``logits`` (N, classes).
ONNX_FILE = "model.onnx"
#: The static int8 QDQ variant (``mammocad export RUN --int8``).
INT8_FILE = "model.int8.onnx"
#: The export's metadata: classes, preprocessing, versions, checks and its ``variants``.
META_FILE = RunDir.MODEL
#: Model variants an export can hold, and their files in the export folder.
VARIANTS = ("fp32", "int8")
VARIANT_FILES = {"fp32": ONNX_FILE, "int8": INT8_FILE}


def default_export_dir(run_dir: str | Path) -> Path:
    """Where a run's export goes when no folder is given (``RUN/export``)."""
    return RunDir(run_dir).export_dir


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
