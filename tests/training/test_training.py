"""Training: a short run learns, resumes after an interruption, and predicts from its directory alone."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from mammocad.data.manifest import lesions_of
from mammocad.errors import ConfigError, DatasetError, MammocadError
from mammocad.models.weights import read_state_dict
from mammocad.training.config import load_run_config
from mammocad.training.data import oversampled_indices, task_classes
from mammocad.training.predict import load_run, predict_paths
from mammocad.training.run import train
from tests.conftest import config


def test_short_training_improves_validation_loss_and_writes_the_run(dataset, tmp_path):
    # Benign vs malignant mass ROIs (round vs spiculated) from the offline ImageNet EfficientNet-Lite0
    # with its backbone frozen (a linear-probe-like head): learnable in a few steps, where a randomly
    # initialised CNN needs hundreds, and stable (frozen BatchNorm) whatever the thread count.
    result = train(
        config(
            dataset,
            tmp_path,
            **{
                "model.name": "efficientnet_lite0",
                "model.pretrained": True,
                "model.freeze_all_but_last": 0,
                "preprocess.mode": "roi",
                "preprocess.image_size": 96,
                "data.task": "benign-malignant",
                "train.batch_size": 8,
                "train.epochs": 3,
            },
        ),
        progress=False,
    )
    history = result.history
    assert list(history["epoch"]) == [0, 1, 2]
    assert history["val_loss"].min() < history["val_loss"].iloc[0]
    run = result.run_dir
    for name in (
        "config.yaml",
        "run.json",
        "model.json",
        "history.csv",
        "checkpoints/best.safetensors",
        "checkpoints/last.safetensors",
        "checkpoints/last.ckpt",
    ):
        assert (run / name).exists(), name
    state = json.loads((run / "run.json").read_text())
    assert state["status"] == "completed" and state["classes"] == ["benign", "malignant"]
    assert set(history.columns) >= {
        "train_loss",
        "val_loss",
        "train_acc",
        "val_acc",
        "val_f1_macro",
        "val_auc_macro",
        "lr",
    }
    assert 0 <= history["val_auc_macro"].iloc[-1] <= 1
    # An ROI-trained run predicts from the original image plus the lesion box, and refuses without one.
    manifest = pd.read_parquet(dataset / "manifest.parquet")
    row = manifest[manifest["pathology"] == "malignant"].iloc[0]
    lesion = lesions_of(row)[0]
    loaded = load_run(run)
    image = str(dataset / row["image_path"])
    table = predict_paths(loaded, [image], lesion_boxes=[(lesion.x0, lesion.y0, lesion.x1, lesion.y1)])
    assert table["error"].isna().all() and table[["p_benign", "p_malignant"]].sum(axis=1).iloc[0] == pytest.approx(1)
    with pytest.raises(MammocadError, match="lesion box"):
        predict_paths(loaded, [image])


def test_checkpoint_predict_round_trip_is_identical(dataset, tmp_path):
    result = train(config(dataset, tmp_path, **{"train.epochs": 1}), progress=False)
    loaded = load_run(result.run_dir)
    manifest = pd.read_parquet(dataset / "manifest.parquet")
    paths = [str(dataset / p) for p in manifest["image_path"].head(5)]
    first = predict_paths(loaded, paths)
    second = predict_paths(load_run(result.run_dir), paths)
    probs = first[[c for c in first.columns if c.startswith("p_")]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert first.equals(second)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    mixed = predict_paths(loaded, [paths[0], str(bad), paths[1]])
    assert list(mixed["path"]) == [paths[0], str(bad), paths[1]]
    assert mixed["error"].isna().tolist() == [True, False, True]


def test_resume_continues_from_the_last_epoch(dataset, tmp_path):
    first = train(config(dataset, tmp_path, **{"train.epochs": 1}), progress=False)
    # An interrupted run: raise the epoch budget in its saved config and resume.
    cfg_path = first.run_dir / "config.yaml"
    cfg_path.write_text(cfg_path.read_text().replace("epochs: 1", "epochs: 3"))
    resumed = train(load_run_config(cfg_path), resume=first.run_dir, progress=False)
    assert resumed.run_dir == first.run_dir
    assert list(resumed.history["epoch"]) == [0, 1, 2]


def test_task_mismatch_stops_before_training(dataset, tmp_path):
    with pytest.raises(DatasetError, match="birads"):
        train(config(dataset, tmp_path, **{"data.task": "birads"}), progress=False)


def test_bad_config_names_the_field():
    with pytest.raises(ConfigError, match=r"train\.lr"):
        load_run_config(None, {"data.dataset": "x", "train.lr": -1})
    with pytest.raises(ConfigError, match=r"model\.nmae"):
        load_run_config(None, {"data.dataset": "x", "model.nmae": "vgg16"})


def test_tasks_and_oversampling():
    manifest = pd.DataFrame(
        {"pathology": ["normal", "benign", "malignant", None], "birads": [1, 3, 5, None], "label_name": list("abcd")}
    )
    classes, target = task_classes(manifest, "normal-abnormal")
    assert classes == ["normal", "abnormal"] and target.tolist() == ["normal", "abnormal", "abnormal", None]
    classes, target = task_classes(manifest, "birads")
    assert classes == ["birads_1", "birads_3", "birads_5"]
    labels = np.array([0] * 5 + [1] * 60 + [2] * 35)
    epoch = oversampled_indices(labels, ["normal", "benign", "malignant"], {"normal": 0.33}, seed=0)
    share = np.mean(labels[epoch] == 0)
    assert abs(share - 0.33) < 0.01 and set(np.flatnonzero(labels == 0)) <= set(epoch)


def test_every_configurable_task_has_classes():
    """The task list is defined once (``TASKS``, from the config's type); each one maps to classes."""
    from mammocad.errors import DatasetError
    from mammocad.training.config import TASKS, DataConfig

    assert DataConfig(dataset="x", task=TASKS[-1]).task == TASKS[-1]
    manifest = pd.DataFrame(
        {"pathology": ["normal", "benign", "malignant"], "birads": [1, 3, 5], "label_name": list("abc")}
    )
    for task in TASKS:
        classes, target = task_classes(manifest, task)
        assert len(classes) >= 2 and target.notna().any(), task
    with pytest.raises(DatasetError, match="unknown task"):
        task_classes(manifest, "four-class")


def test_class_weighted_training_uses_training_counts_only(dataset, tmp_path):
    result = train(
        config(dataset, tmp_path, **{"train.epochs": 1, "train.sampler": "weighted", "train.lambda_fs": 0.1}),
        progress=False,
    )
    counts = json.loads((result.run_dir / "run.json").read_text())["counts"]
    assert sum(counts["train"]) > 0 and sum(counts["val"]) > 0
    assert torch.isfinite(torch.tensor(result.history["train_loss"].to_numpy())).all()


def test_augmentation_can_be_switched_off_entirely():
    from mammocad.training.config import AugmentConfig
    from mammocad.training.data import build_augment

    off = AugmentConfig(hflip=0, vflip=0, rotate_p=0, brightness_p=0, contrast_p=0)
    assert build_augment(off) is None
    image = torch.rand(1, 32, 32)
    flipped = build_augment(AugmentConfig(hflip=1.0, vflip=0, rotate_p=0, brightness_p=0, contrast_p=0))(image)
    assert torch.equal(flipped, image.flip(-1))


def test_macro_auc_matches_hand_computed_values():
    from mammocad.training.module import macro_auc

    labels = np.array([0, 0, 1, 1])
    binary = np.array([[0.9, 0.1], [0.4, 0.6], [0.65, 0.35], [0.2, 0.8]])
    # positives score 0.35 and 0.8, negatives 0.1 and 0.6: 3 of 4 pairs ranked right.
    assert macro_auc(labels, binary) == pytest.approx(0.75)
    three = np.eye(3)[[0, 1, 2, 2]] * 0.7 + 0.1
    assert macro_auc(np.array([0, 1, 2, 2]), three) == pytest.approx(1.0)
    assert np.isnan(macro_auc(np.array([1, 1]), binary[:2]))


def test_restore_best_weights_off_keeps_the_last_epoch(dataset, tmp_path):
    run = train(config(dataset, tmp_path, **{"train.epochs": 2, "train.restore_best_weights": False}), progress=False)
    assert json.loads((run.run_dir / "model.json").read_text())["weights"]["final"] == "last"
    loaded = load_run(run.run_dir).model.state_dict()
    last = read_state_dict(run.run_dir / "checkpoints" / "last.safetensors")
    assert all(torch.equal(loaded[k], last[k]) for k in last)
    best = load_run(run.run_dir, "best")  # still reachable by name
    assert best.meta["weights"]["final"] == "last"


def test_flatten_dotted_is_the_inverse_of_set_dotted():
    """One flattener serves resume (config changes), ablate (variant overrides) and MLflow (parameters)."""
    from mammocad.training.config import flatten_dotted, set_dotted

    nested = {"train": {"lr": 1e-3, "target_share": {"normal": 0.3}, "extra": {}}, "model": {"name": "icnt"}}
    flat = flatten_dotted(nested)
    assert flat == {"train.lr": 1e-3, "train.target_share.normal": 0.3, "train.extra": {}, "model.name": "icnt"}
    rebuilt: dict = {}
    for key, value in flat.items():
        set_dotted(rebuilt, key, value)
    assert rebuilt == nested
    assert flatten_dotted(nested, keep=("target_share",))["train.target_share"] == {"normal": 0.3}
    assert "train.extra" not in flatten_dotted(nested, empty_as_value=False)
