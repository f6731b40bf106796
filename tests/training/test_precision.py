"""Training precision: bf16 autocast where the CPU multiplies bf16 natively, fp32 elsewhere; the run
records what it used; a fixed small task ends at the same validation loss in both."""

from __future__ import annotations

import json

import pandas as pd
import torch

from mammocad.devices import cpu_has_fast_bf16, inference_autocast, inference_dtype, training_precision
from mammocad.training.config import TrainConfig, load_run_config
from mammocad.training.module import make_optimizer
from mammocad.training.run import train
from tests.conftest import config

#: bf16 keeps 8 bits of mantissa: the best validation loss (the epoch a run keeps) may differ this much.
VAL_LOSS_TOLERANCE = 0.02


def test_auto_follows_the_cpu(monkeypatch):
    monkeypatch.setenv("MAMMOCAD_CPU_BF16", "1")
    assert cpu_has_fast_bf16() and training_precision("auto", "cpu") == "bf16-mixed"
    assert inference_dtype("cpu") == torch.bfloat16
    monkeypatch.setenv("MAMMOCAD_CPU_BF16", "0")
    assert training_precision("auto", "cpu") == "32-true" and inference_dtype("cpu") is None
    with inference_autocast("cpu"):  # fp32: no autocast region
        assert not torch.is_autocast_enabled("cpu")
    assert training_precision("16-mixed", "cpu") == "16-mixed"  # an explicit choice is kept


def test_fused_adam_on_cpu():
    model = torch.nn.Linear(4, 2)
    optimizer = make_optimizer(model, TrainConfig())
    assert optimizer.defaults["fused"] is True
    model(torch.rand(3, 4)).sum().backward()
    before = model.weight.detach().clone()
    optimizer.step()
    assert not torch.equal(before, model.weight)


def test_bf16_reaches_the_fp32_validation_loss(dataset, tmp_path):
    losses = {}
    for precision in ("32-true", "bf16-mixed"):
        run = train(
            config(dataset, tmp_path / precision, **{"train.precision": precision, "train.epochs": 3}), progress=False
        )
        saved = load_run_config(run.run_dir / "config.yaml")
        assert saved.train.precision == precision
        assert json.loads((run.run_dir / "run.json").read_text())["precision"] == precision
        history = pd.read_csv(run.run_dir / "history.csv")
        assert (history["train_images_per_s"] > 0).all() and (history["data_wait_s"] >= 0).all()
        losses[precision] = history["val_loss"].tolist()
    fp32, bf16 = losses["32-true"], losses["bf16-mixed"]
    assert abs(min(fp32) - min(bf16)) <= VAL_LOSS_TOLERANCE, (fp32, bf16)


def test_auto_is_resolved_in_the_saved_config(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("MAMMOCAD_CPU_BF16", "0")
    run = train(config(dataset, tmp_path, **{"train.epochs": 1}), progress=False)
    assert load_run_config(run.run_dir / "config.yaml").train.precision == "32-true"
