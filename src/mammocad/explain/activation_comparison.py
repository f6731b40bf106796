"""Activation maps of several runs side by side on the same inputs (``mammocad explain --compare``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mammocad.errors import ConfigError
from mammocad.explain.layout import ActivationComparisonDir
from mammocad.explain.subjects import cached_subjects, unique_names
from mammocad.io import atomic_write_bytes, atomic_write_json, unique_new_dir
from mammocad.training.predict import load_run


def _run_labels(run_dirs: Sequence[str | Path]) -> list[str]:
    """Run names, with their parent folder when the names alone collide (CV folds: ``kt-cv5/fold-0``)."""
    paths = [Path(r).resolve() for r in run_dirs]
    names = [p.name for p in paths]
    if len(set(names)) == len(names):
        return names
    return [f"{p.parent.name}/{p.name}" for p in paths]


def compare_activations(
    run_dirs: Sequence[str | Path],
    split: str = "val",
    *,
    labels: Sequence[str] | None = None,
    dataset: str | Path | None = None,
    limit: int | None = 8,
    layer: str | None = None,
    out_dir: str | Path | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Activation maps of several runs (e.g. knowledge transfer vs plain fine-tuning) on the same inputs.

    The inputs are the first run's ``split`` samples (first ``limit``); every run must be scorable on them
    (same task classes). Writes ``activation-comparison.png`` and ``activation-comparison.json`` (per run
    and input: d between the lesion mask's and the input's activation maps, and its mean) into ``out_dir``
    (new; default ``<first run>/explain/activation-comparison``). Returns (out_dir, the JSON document).
    """
    from mammocad.evaluation.predictions import run_config, split_frame
    from mammocad.explain.activation import compare_activation_maps

    if len(run_dirs) < 2:
        raise ConfigError("comparing activation maps needs two or more runs")
    runs = [load_run(r) for r in run_dirs]
    names = unique_names(list(labels) if labels else _run_labels(run_dirs), safe=False)
    if len(names) != len(runs):
        raise ConfigError(f"{len(names)} labels for {len(runs)} runs")
    part = split_frame(runs[0], run_config(run_dirs[0]), dataset, split)
    part = part.head(limit) if limit is not None else part
    subjects, _failures = cached_subjects(runs[0], part, dataset or run_config(run_dirs[0]).data.dataset)
    inputs = [(s.name, s.tensor, s.mask) for s in subjects]
    png, distances = compare_activation_maps(dict(zip(names, (r.model for r in runs), strict=True)), inputs, layer)
    out = ActivationComparisonDir(
        unique_new_dir(Path(out_dir) if out_dir is not None else ActivationComparisonDir.default(run_dirs[0]))
    )
    document = {
        "runs": dict(zip(names, (str(r) for r in run_dirs), strict=True)),
        "split": split,
        "inputs": [s.name for s in subjects],
        "layer": layer or "each run's last layer group",
        "distance": distances,
        "mean_distance": {
            name: (float(np.mean([d for d in values if d is not None])) if any(d is not None for d in values) else None)
            for name, values in distances.items()
        },
    }
    atomic_write_bytes(out.figure_path, png)
    atomic_write_json(out.document_path, document)
    return out.path, document
