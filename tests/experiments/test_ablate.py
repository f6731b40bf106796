"""Ablation studies: toggles, refusal of no-op ablations, a tiny study end to end with resume."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from mammocad.cli.main import app
from mammocad.errors import ConfigError
from mammocad.experiments.ablate import ablate, load_ablations, resume_ablation, variants
from mammocad.models import create_model
from mammocad.training import run as run_module
from tests.conftest import config


def test_toggles_remove_one_component_each(dataset, tmp_path):
    full = config(
        dataset,
        tmp_path,
        **{"model.name": "efficientnet_lite0", "model.head": "gagm_se_dense", "train.lambda_fs": 0.1},
    )
    spec = load_ablations("gagm,sevector,fsl,dropout,batch_norm,augmentation,clahe,class_weights")
    found = variants(full, spec)
    assert next(iter(found)) == "full" and found["full"] == {}
    assert found["without-gagm"] == {"model.head": "gap_se_dense"}
    assert found["without-sevector"] == {"model.head": "gagm_dense"}
    assert found["without-fsl"] == {"train.lambda_fs": 0.0}
    assert found["without-dropout"] == {"model.drop_rate": 0.0}
    assert found["without-clahe"] == {"preprocess.clahe": False}
    assert found["without-batch_norm"] == {"model.batch_norm": False}
    assert found["without-class_weights"]["train.class_weights"] is False
    assert all(v == 0.0 for v in found["without-augmentation"].values())


def test_no_op_and_unknown_ablations_are_refused(dataset, tmp_path, tmp_path_factory):
    plain = config(dataset, tmp_path)  # baseline CNN: GAP head, lambda_fs = 0
    with pytest.raises(ConfigError, match="gagm: head 'gap' has no GAGM"):
        variants(plain, load_ablations("gagm"))
    with pytest.raises(ConfigError, match="fsl: train.lambda_fs is 0 already"):
        variants(plain, load_ablations("fsl"))
    with pytest.raises(ConfigError, match="unknown ablation 'gagn'"):
        variants(plain, load_ablations("gagn"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("ablations:\n  - name: x\n    set: {train.lrr: 1}\n")
    with pytest.raises(ConfigError, match=r"(?s)ablation 'x'.*train.lrr: Extra inputs"):
        variants(plain, load_ablations(bad))
    bad.write_text("ablations: []\nfolds: 1\n")
    with pytest.raises(ConfigError, match=r"(?s)folds.*ablations"):
        load_ablations(bad)


def test_batch_norm_ablation_keeps_the_model_loadable(tmp_path):
    from mammocad.models.batch_norm import ChannelAffine

    net = create_model("baseline_cnn", num_classes=3, batch_norm=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert any(isinstance(m, ChannelAffine) for m in net.modules())
    assert net.config()["batch_norm"] is False
    assert net(torch.rand(2, 1, 64, 64)).shape == (2, 3)
    with pytest.raises(ConfigError, match="no BatchNorm"):
        create_model("icnt", num_classes=3, batch_norm=False)  # ConvNeXt normalises with LayerNorm


def test_tiny_ablation_end_to_end_and_resume(dataset, tmp_path, monkeypatch):
    full = config(dataset, tmp_path, **{"train.epochs": 1, "model.head": "gagm_se_dense", "train.lambda_fs": 0.1})
    spec_file = tmp_path / "ablations.yaml"
    spec_file.write_text("folds: 2\nablations: [sevector, fsl]\n")
    real_train = run_module.train

    def stop_in_fsl_variant(cfg, **kwargs):
        if cfg.train.lambda_fs == 0 and cfg.model.head == "gagm_se_dense" and cfg.data.fold == 1:
            raise RuntimeError("power cut")
        return real_train(cfg, **kwargs)

    monkeypatch.setattr("mammocad.experiments.cv.train", stop_in_fsl_variant)
    with pytest.raises(RuntimeError, match="power cut"):
        ablate(full, load_ablations(spec_file), out_dir=tmp_path / "abl", n_resamples=0)
    state = json.loads((tmp_path / "abl" / "ablate.json").read_text())
    assert state["status"] == "interrupted"
    assert state["variants"]["without-sevector"]["cv_dir"] == "without-sevector"

    trained = []
    monkeypatch.setattr(
        "mammocad.experiments.cv.train", lambda cfg, **kw: trained.append(cfg.data.fold) or real_train(cfg, **kw)
    )
    result = resume_ablation(tmp_path / "abl")
    assert trained == [1]  # only the missing fold of the FSL variant trains again
    table = pd.read_csv(result.out_dir / "ablation.csv", index_col=0)
    assert list(table.index) == ["full", "without-sevector", "without-fsl"]
    assert table.loc["full", "auc_macro_difference"] == 0
    assert table.loc["without-fsl", "change"] == "train.lambda_fs=0.0"
    assert {"auc_macro_p_t", "auc_macro_p_wilcoxon", "delong_p_abnormal"} <= set(table.columns)
    assert pd.isna(table.loc["full", "auc_macro_p_t"])
    html = result.report.read_text()
    assert "Ablation table" in html and "without-fsl/report.html" in html
    assert (result.out_dir / "figures" / "ablation.png").stat().st_size > 1000
    # every variant used the same folds
    folds = {
        v: pd.read_parquet(result.out_dir / v / "oof_predictions.parquet").set_index("sample_id")["fold"].sort_index()
        for v in table.index
    }
    assert all(folds[v].equals(folds["full"]) for v in folds)


def test_ablate_cli_refuses_a_bad_toggle_before_training(dataset, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"data: {{dataset: {dataset}}}\noutput: {{runs_dir: {tmp_path / 'runs'}, mlflow: false}}\n")
    result = CliRunner().invoke(app, ["ablate", "--config", str(cfg), "--ablations", "sevector"])
    assert result.exit_code == 2
    assert "sevector: head 'gap' has no SEVector" in result.output
    assert not (tmp_path / "runs").exists()


def test_the_lesion_aware_ablations_are_valid_for_the_mias_config(tmp_path):
    from pathlib import Path

    from mammocad.experiments.ablate import load_ablations, variants
    from mammocad.training.config import load_run_config

    root = Path(__file__).resolve().parents[2]
    config = load_run_config(root / "configs" / "mias-lesion-aware.yaml", {"data.dataset": str(tmp_path)})
    found = variants(config, load_ablations(root / "configs" / "ablations-lesion-aware.yaml"))
    assert {"full", "without-hard_negatives", "without-bilateral", "without-learned_aggregation"} <= set(found)
    assert found["without-learned_aggregation"] == {"lesion.aggregation": "topk", "lesion.bilateral": False}
