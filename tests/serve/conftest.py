"""A trained, evaluated and ONNX-exported run shared by the serving and dashboard tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from mammocad.evaluation.evaluate import evaluate_run
from mammocad.serve.export import export_onnx
from mammocad.training.run import train
from tests.conftest import config


@pytest.fixture(scope="session")
def served_run(dataset, tmp_path_factory) -> Path:
    """A 1-epoch baseline CNN (64², normal vs abnormal) with a test-split evaluation and an ONNX export."""
    run_dir = train(config(dataset, tmp_path_factory.mktemp("served"), **{"train.epochs": 1}), progress=False).run_dir
    evaluate_run(run_dir, split="test", n_resamples=0, tsne=False)
    export_onnx(run_dir)
    return run_dir


@pytest.fixture(scope="session")
def upload_png(dataset) -> bytes:
    """A real PNG from the synthetic dataset's source images."""
    from mammocad.data.manifest import read_manifest, resolve_path

    row = read_manifest(dataset).iloc[0]
    return Path(resolve_path(dataset, row["image_path"])).read_bytes()


@pytest.fixture(scope="module")
def engine(served_run):
    """The served run on the PyTorch backend (a module may override it, e.g. with the default backend)."""
    from mammocad.serve.engine import InferenceEngine

    return InferenceEngine(served_run, backend="torch")


@pytest.fixture(scope="module")
def client(engine):
    """An in-process client of the API serving ``engine``."""
    from fastapi.testclient import TestClient

    from mammocad.serve.api import create_app

    return TestClient(create_app(engine))
