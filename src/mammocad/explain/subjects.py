"""The inputs the explain stage works on: one :class:`Subject` per image, and how cached samples become them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mammocad.data.images import read_image
from mammocad.data.manifest import read_manifest, resolve_path
from mammocad.errors import ImageReadError, MammocadError
from mammocad.preprocess import Geometry, read_sample
from mammocad.preprocess.pipeline import to_unit
from mammocad.training.predict import LoadedRun, pixels_to_input

#: Inputs per forward/backward pass.
BATCH = 8


@dataclass
class Subject:
    """One input to explain: the model input, where it came from and how to map back onto it."""

    name: str
    source: str
    tensor: torch.Tensor  # (C, H, W) in [0, 1]
    geometry: Geometry | None = None
    original: np.ndarray | None = None  # 2-D float [0, 1], the decoded original image
    mask: np.ndarray | None = None  # lesion mask on the input grid (0/255), if known
    label: str | None = None


def cached_subjects(
    run: LoadedRun, part: pd.DataFrame, dataset: str | Path
) -> tuple[list[Subject], list[dict[str, Any]]]:
    """Subjects for cached samples (rows of a task frame); originals decoded from the manifest's paths."""
    manifest = read_manifest(dataset).set_index("image_id")
    subjects, failures = [], []
    for row in part.to_dict("records"):
        try:
            geometry = Geometry.from_record(row) if "original_height" in row else None
            mask = read_sample(row["mask"]) if isinstance(row.get("mask"), str) and row["mask"] else None
            original = None
            path = resolve_path(dataset, manifest.loc[row["image_id"], "image_path"])
            if path is not None and path.exists():
                original = to_unit(read_image(path), run.preprocess)
            tensor = pixels_to_input(read_sample(row["image"]), run.model.in_chans)
            label = row.get("target_name")
            subjects.append(
                Subject(str(row["sample_id"]), str(row["image_id"]), tensor, geometry, original, mask, label)
            )
        except (ImageReadError, MammocadError, KeyError) as exc:
            failures.append({"source": str(row.get("sample_id")), "status": "error", "reason": str(exc)})
    return subjects, failures


def safe_name(name: str) -> str:
    """``name`` with every run of characters unsafe in a file name replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def unique_names(names: list[str], safe: bool = True) -> list[str]:
    """``names`` made unique (``-2``, ``-3``... on repeats), file-name safe unless ``safe`` is False."""
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        base = (safe_name(name) if safe else name) or "image"
        count = seen.get(base, 0)
        seen[base] = count + 1
        unique.append(base if count == 0 else f"{base}-{count + 1}")
    return unique
