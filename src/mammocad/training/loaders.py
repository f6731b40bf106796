"""The training and validation DataLoaders of a full-image run (the lesion-aware model has its own:
:class:`~mammocad.training.lesion.PatchData`), and the mask check of knowledge transfer."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, WeightedRandomSampler

from mammocad.errors import DatasetError
from mammocad.procs import die_with_parent
from mammocad.training.config import RunConfig
from mammocad.training.data import CachedImageDataset, TaskData, build_augment, oversampled_indices


class DataLoaderWorkerInit:
    """``worker_init_fn`` of the training DataLoaders: the worker ends with its parent process (a killed
    ``mammocad train`` leaves no worker behind), then is seeded as Lightning seeds workers."""

    def __call__(self, worker_id: int) -> None:
        die_with_parent()
        if os.environ.get("PL_SEED_WORKERS") == "1":  # seed_everything(workers=True)
            from lightning.fabric.utilities.seed import pl_worker_init_function

            pl_worker_init_function(worker_id)


def training_loaders(task: TaskData, config: RunConfig) -> tuple[DataLoader, DataLoader]:
    """The shuffled (or weighted, or oversampled) training loader and the validation loader."""
    in_chans = config.model.in_chans
    train_set = CachedImageDataset(
        task.train,
        in_chans,
        build_augment(config.augment),
        config.data.cache_in_memory,
        with_masks=config.train.kt_beta > 0,
    )
    val_set = CachedImageDataset(task.val, in_chans, None, config.data.cache_in_memory)
    generator = torch.Generator().manual_seed(config.train.seed)
    labels = task.train["target"].to_numpy()
    sampler = None
    if config.train.target_share:
        indices = oversampled_indices(labels, task.classes, config.train.target_share, config.train.seed)
        train_set = torch.utils.data.Subset(train_set, indices.tolist())
    if config.train.sampler == "weighted":
        counts = np.bincount(labels, minlength=len(task.classes)).astype(float)
        sample_labels = labels if not config.train.target_share else labels[indices]
        weights = 1.0 / counts[sample_labels]
        sampler = WeightedRandomSampler(torch.as_tensor(weights), num_samples=len(sample_labels), generator=generator)
    workers = config.train.num_workers
    common = {
        "batch_size": config.train.batch_size,
        "num_workers": workers,
        # Persistent workers carry their random state from epoch to epoch, out of the checkpoint's
        # reach: deterministic runs start them anew each epoch, seeded from the saved generator.
        "persistent_workers": workers > 0 and not config.train.deterministic,
        "worker_init_fn": DataLoaderWorkerInit() if workers > 0 else None,
    }
    train_loader = DataLoader(
        train_set,
        shuffle=sampler is None,
        sampler=sampler,
        generator=generator,
        drop_last=len(train_set) > config.train.batch_size,
        **common,
    )
    val_loader = DataLoader(val_set, shuffle=False, **common)
    return train_loader, val_loader


def check_masks(task: TaskData, config: RunConfig) -> int:
    """How many training images have a lesion mask; refuses knowledge transfer when none has.

    Images without a mask (normals in a full-image task) still train, with no transfer term.
    """
    if config.train.kt_beta == 0:
        return 0
    masks = task.train["mask"] if "mask" in task.train else pd.Series(dtype=object)
    masked = int(sum(isinstance(m, str) and bool(m) for m in masks))
    if masked == 0:
        raise DatasetError(
            f"{config.data.dataset}: knowledge transfer (train.kt_beta = {config.train.kt_beta}) needs lesion masks, "
            f"but none of the {len(task.train)} training images has one. Use a dataset with masks or outlines "
            "(CBIS-DDSM, BCDR, MIAS circles, synthetic phantoms), or set train.kt_beta = 0."
        )
    return masked


__all__ = ["DataLoaderWorkerInit", "check_masks", "training_loaders"]
