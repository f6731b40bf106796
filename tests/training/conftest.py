"""A small synthetic dataset shared by the training tests (imported, split, 512×384 phantoms)."""

from __future__ import annotations

import pytest

from mammocad.data.importers import import_dataset
from mammocad.data.split import SplitSpec, split_dataset
from mammocad.data.synth import write_synthetic_dataset
from mammocad.training.config import load_run_config


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    source = write_synthetic_dataset(
        root / "src", "csv", {"normal": 40, "benign": 40, "malignant": 40}, seed=3, height=512, width=384
    )
    import_dataset("csv", source, root / "ds")
    split_dataset(root / "ds", SplitSpec(test_size=0.2, val_size=0.25, folds=2, seed=0))
    return root / "ds"


def config(dataset, tmp_path, **overrides):
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
