"""Knowledge-transfer training: masks travel with their images, the term is logged, bad setups are refused."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from mammocad.data.importers import import_dataset
from mammocad.data.split import SplitSpec, split_dataset
from mammocad.data.synth import write_synthetic_dataset
from mammocad.errors import ConfigError, DatasetError
from mammocad.experiments.ablate import TOGGLES
from mammocad.training.config import AugmentConfig
from mammocad.training.data import CachedImageDataset, build_augment, load_task_data
from mammocad.training.run import check_masks, train
from tests.conftest import config


def test_kt_run_trains_and_logs_the_distance(dataset, tmp_path):
    run = train(config(dataset, tmp_path, **{"train.kt_beta": 1.0, "augment.rotate_p": 0.5}), progress=False)
    assert run.history["train_kt_distance"].notna().all()
    assert ((run.history["train_kt_distance"] >= 0) & (run.history["train_kt_distance"] <= 2)).all()
    state = json.loads((run.run_dir / "run.json").read_text())
    assert state["status"] == "completed" and state["kt_masked_train_images"] > 0
    plain = train(config(dataset, tmp_path), progress=False)
    assert plain.history["train_kt_distance"].isna().all()


def test_kt_without_masks_stops_with_the_reason(tmp_path):
    source = write_synthetic_dataset(tmp_path / "src", "folders", {"normal": 6, "benign": 6, "malignant": 6}, seed=1)
    import_dataset("folders", source, tmp_path / "ds")
    split_dataset(tmp_path / "ds", SplitSpec(test_size=0.2, val_size=0.25, seed=0))
    with pytest.raises(DatasetError, match="needs lesion masks.*train.kt_beta = 0"):
        train(config(tmp_path / "ds", tmp_path, **{"train.kt_beta": 1.0}), progress=False)


def test_unknown_kt_layer_lists_the_layer_groups(dataset, tmp_path):
    cfg = config(dataset, tmp_path, **{"train.kt_beta": 1.0, "train.kt_layers": ["denseblock4"]})
    with pytest.raises(ConfigError, match="layer groups: backbone.block1"):
        train(cfg, progress=False)


def test_masks_follow_the_geometric_augmentation_but_not_the_colour_jitter(tmp_path):
    from mammocad.io import atomic_write_png

    image = np.zeros((16, 16), dtype=np.uint8)
    image[2:6, 1:4] = 200
    mask = (image > 0).astype(np.uint8) * 255
    atomic_write_png(tmp_path / "i.png", image)
    atomic_write_png(tmp_path / "m.png", mask)
    frame = pd.DataFrame(
        {"image": [str(tmp_path / "i.png")] * 2, "mask": [str(tmp_path / "m.png"), None], "target": [1, 0]}
    )
    flip_only = AugmentConfig(hflip=1.0, vflip=0.0, rotate_p=0.0, brightness_p=1.0, brightness=0.5, contrast_p=0.0)
    items = CachedImageDataset(frame, 3, build_augment(flip_only), with_masks=True)
    flipped, label, flipped_mask, has_mask = items[0]
    assert flipped.shape == flipped_mask.shape == (3, 16, 16) and int(label) == 1 and float(has_mask) == 1.0
    expected = torch.from_numpy(mask[:, ::-1].copy() > 0).float()
    torch.testing.assert_close(flipped_mask[0], expected)  # flipped with the image, still exactly 0/1
    assert (flipped[0][expected > 0] > 0).all() and (flipped[0][expected == 0] == 0).all()
    _, _, empty, no_mask = items[1]
    assert float(no_mask) == 0.0 and float(empty.sum()) == 0.0


def test_knowledge_transfer_ablation_toggle(dataset, tmp_path):
    with pytest.raises(ConfigError, match="kt_beta is 0 already"):
        TOGGLES["knowledge_transfer"](config(dataset, tmp_path))
    assert TOGGLES["knowledge_transfer"](config(dataset, tmp_path, **{"train.kt_beta": 0.5})) == {"train.kt_beta": 0.0}


@pytest.mark.parametrize("fmt", ["cbis-ddsm", "bcdr", "mias"])
def test_roi_datasets_give_every_lesion_roi_its_mask(fmt, tmp_path):
    """The ROI sources KT is for: CBIS-DDSM ROI masks, BCDR outlines, MIAS circles (synthetic files)."""
    counts = {"benign": 8, "malignant": 8} if fmt != "mias" else {"normal": 4, "benign": 8, "malignant": 8}
    source = write_synthetic_dataset(tmp_path / "src", fmt, counts, seed=2)
    import_dataset(fmt, source, tmp_path / "ds")
    split_dataset(tmp_path / "ds", SplitSpec(test_size=0.2, val_size=0.25, seed=0))
    cfg = config(
        tmp_path / "ds",
        tmp_path,
        **{
            "train.kt_beta": 1.0,
            "data.task": "benign-malignant",
            "preprocess.mode": "roi",
            "preprocess.roi_min_size": 64,
        },
    )
    task = load_task_data(cfg.data, cfg.preprocess)
    assert check_masks(task, cfg) == len(task.train) > 0


def test_kt_on_real_mias_rois(mias_dir, tmp_path):
    """MIAS circles as lesion masks on mass-centred ROIs: every benign/malignant ROI trains with KT."""
    import_dataset("mias", mias_dir, tmp_path / "ds")
    split_dataset(tmp_path / "ds", SplitSpec(test_size=0.2, val_size=0.25, seed=0))
    cfg = config(
        tmp_path / "ds",
        tmp_path,
        **{"train.kt_beta": 1.0, "train.epochs": 1, "data.task": "benign-malignant", "preprocess.mode": "roi"},
    )
    run = train(cfg, progress=False)
    state = json.loads((run.run_dir / "run.json").read_text())
    assert state["kt_masked_train_images"] == sum(state["counts"]["train"]) > 20
    assert 0 < run.history["train_kt_distance"].iloc[0] < 2
