"""Cross-validation: folds, end to end, resume, and refusal of unstratifiable folds."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from mammocad.data.manifest import read_manifest
from mammocad.data.split import cv_split, read_splits
from mammocad.errors import DatasetError
from mammocad.experiments.cv import cross_validate, resume_cv
from mammocad.training import run as run_module
from tests.conftest import config


def test_cv_split_is_patient_grouped_stratified_and_reused(dataset):
    name = cv_split(dataset, "default", folds=3, seed=1)
    assert name == "default-cv3-s1"
    splits = read_splits(dataset, name)
    assert (splits.groupby("patient_id")["fold"].nunique() == 1).all()  # no patient in two folds
    assert sorted(splits["fold"].unique()) == [0, 1, 2]
    # class proportions per fold stay close to the whole set's
    overall = splits["label_name"].value_counts(normalize=True)
    for _, fold in splits.groupby("fold"):
        share = fold["label_name"].value_counts(normalize=True).reindex(overall.index, fill_value=0)
        assert np.abs(share - overall).max() < 0.12
    assert cv_split(dataset, "default", folds=3, seed=1) == name  # second call reuses it
    assert cv_split(dataset, "default", folds=2) == "default"  # the split's own 2 folds


def test_unstratifiable_folds_are_refused_with_counts(dataset, tmp_path):
    patients = read_manifest(dataset)["patient_id"].nunique()
    with pytest.raises(DatasetError, match=r"too few patients.*patients"):
        cv_split(dataset, "default", folds=patients)


def test_cv_end_to_end_and_resume(dataset, tmp_path, monkeypatch):
    cfg = config(dataset, tmp_path, **{"train.epochs": 2, "train.early_stopping_patience": None})
    real_train = run_module.train

    def stop(row):
        raise KeyboardInterrupt  # the user stops the CV after fold 1's first epoch

    def crash_on_second_fold(config, **kwargs):
        if config.data.fold == 1:
            kwargs["on_epoch"] = stop
        return real_train(config, **kwargs)

    monkeypatch.setattr("mammocad.experiments.cv.train", crash_on_second_fold)
    with pytest.raises((KeyboardInterrupt, SystemExit)):  # Lightning turns Ctrl-C into SystemExit(1)
        cross_validate(cfg, folds=2, cv_dir=tmp_path / "cv", n_resamples=50)
    state = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert state["status"] == "interrupted" and list(state["runs"]) == ["0"]

    trained = []
    monkeypatch.setattr(
        "mammocad.experiments.cv.train",
        lambda config, **kw: trained.append((config.data.fold, kw.get("resume"))) or real_train(config, **kw),
    )
    result = resume_cv(tmp_path / "cv")
    assert trained == [(1, tmp_path / "cv" / "fold-1")]  # fold 0 kept, fold 1 continued from its checkpoint
    assert len(pd.read_csv(tmp_path / "cv" / "fold-1" / "history.csv")) == 2
    folds = pd.read_csv(result.cv_dir / "folds.csv")
    assert list(folds["fold"]) == [0, 1]
    oof = pd.read_parquet(result.cv_dir / "oof_predictions.parquet")
    splits = read_splits(dataset, "default")
    dev = splits[splits["split"] != "blind"]
    assert len(oof) == len(dev) and not oof["sample_id"].duplicated().any()  # every image predicted once
    assert set(oof.groupby("patient_id")["fold"].nunique()) == {1}
    summary = json.loads((result.cv_dir / "summary.json").read_text())
    auc = summary["metrics"]["auc_macro"]
    assert auc["mean"] == pytest.approx(folds["auc_macro"].mean())
    assert auc["std"] == pytest.approx(folds["auc_macro"].std(ddof=1))
    summed = np.asarray(summary["confusion_matrix_summed"])
    assert summed.sum() == len(oof)
    assert summary["pooled_oof"]["confidence_intervals"]["auc_macro"]["low"] is not None
    assert json.loads((result.cv_dir / "cv.json").read_text())["status"] == "completed"
    html = result.report.read_text()
    assert "Mean ± std across folds" in html and "fold-1/evaluation/val/report.html" in html
    for name in ("fold_scores", "confusion_summed", "roc_pooled", "learning_curves"):
        assert (result.cv_dir / "figures" / f"{name}.png").stat().st_size > 1000


def test_compare_two_cvs_pairs_folds(dataset, tmp_path):
    from scipy import stats
    from typer.testing import CliRunner

    from mammocad.cli.main import app

    dirs = []
    for name, lr in (("slow", 1e-4), ("fast", 3e-3)):
        cfg = config(dataset, tmp_path, **{"train.epochs": 1, "train.lr": lr})
        dirs.append(cross_validate(cfg, folds=2, cv_dir=tmp_path / name, n_resamples=0).cv_dir)
    result = CliRunner().invoke(app, ["compare", *map(str, dirs), "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    tests = pd.read_csv(tmp_path / "cmp" / "fold_tests.csv")
    folds_a = pd.read_csv(dirs[0] / "folds.csv")["auc_macro"]
    folds_b = pd.read_csv(dirs[1] / "folds.csv")["auc_macro"]
    t_row = tests[(tests["metric"] == "auc_macro") & (tests["test"] == "paired t-test")].iloc[0]
    if (folds_a - folds_b).nunique() > 1:
        assert t_row["p_value"] == pytest.approx(stats.ttest_rel(folds_a, folds_b).pvalue)
    assert set(tests["test"]) == {"paired t-test", "Wilcoxon signed-rank"}
    significance = pd.read_csv(tmp_path / "cmp" / "significance.csv")
    assert {"DeLong (AUC)", "McNemar (accuracy)"} <= set(significance["test"])
    assert significance["n"].max() == len(pd.read_parquet(dirs[0] / "oof_predictions.parquet"))
    assert "Paired tests across folds" in (tmp_path / "cmp" / "report.html").read_text()

    # A CV on other folds cannot be paired.
    other = tmp_path / "other"
    shutil.copytree(dirs[1], other)
    oof = pd.read_parquet(other / "oof_predictions.parquet")
    oof.loc[oof.index[:3], "fold"] = 1 - oof.loc[oof.index[:3], "fold"]
    oof.to_parquet(other / "oof_predictions.parquet")
    mixed = CliRunner().invoke(app, ["compare", str(dirs[0]), str(other), "--out", str(tmp_path / "x")])
    assert mixed.exit_code == 2 and "different folds (3 images" in mixed.output
    mixed = CliRunner().invoke(app, ["compare", str(dirs[0]), str(dirs[0] / "fold-0"), "--out", str(tmp_path / "y")])
    assert mixed.exit_code == 2 and "not a mix" in mixed.output


def test_cv_cli_refuses_too_many_folds_with_counts(dataset, tmp_path):
    from typer.testing import CliRunner

    from mammocad.cli.main import app

    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"data: {{dataset: {dataset}}}\noutput: {{runs_dir: {tmp_path / 'runs'}, mlflow: false}}\n")
    result = CliRunner().invoke(app, ["cv", "--config", str(cfg), "--folds", "50"])
    assert result.exit_code == 2
    assert "cannot make 50 stratified folds" in result.output and "patients" in result.output
    assert not (tmp_path / "runs").exists()


def test_task_level_stratification_is_checked(dataset, tmp_path):
    from mammocad.experiments.cv import check_stratifiable

    cfg = config(dataset, tmp_path, **{"data.task": "benign-malignant", "data.split": "default"})
    assert check_stratifiable(cfg, 2) == ["benign", "malignant"]
    with pytest.raises(
        DatasetError, match=r"cannot make 30 stratified folds for task 'benign-malignant'.*benign: \d+ patients"
    ):
        check_stratifiable(cfg, 30)


def test_cv_runs_ddp_folds_as_their_own_train_commands(dataset, tmp_path, monkeypatch):
    """Lightning's DDP launcher reruns the command per device, so each DDP fold is a `mammocad train`."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cfg = config(
        dataset,
        tmp_path,
        **{"train.epochs": 1, "train.accelerator": "cpu", "train.devices": 2, "train.strategy": "ddp"},
    )
    result = cross_validate(cfg, folds=2, cv_dir=tmp_path / "cv", n_resamples=0)
    assert sorted(p.name for p in result.cv_dir.glob("fold-?")) == ["fold-0", "fold-1"]  # one directory per fold
    for fold in (0, 1):
        state = json.loads((result.cv_dir / f"fold-{fold}" / "run.json").read_text())
        assert state["status"] == "completed"
    assert len(result.oof) == len(read_splits(dataset, "default").query("split != 'blind'"))
