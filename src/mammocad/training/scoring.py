"""A run's model on the cached images of its dataset: which samples a split holds, and their logits.

The run's own config says how the images were preprocessed and which task (classes) it learned;
scoring reuses that config (with another dataset swapped in, when asked), so the same cache entries
training read are scored. Training fits its temperature on these logits; evaluation builds on them
(:mod:`mammocad.evaluation.predictions`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from mammocad.devices import inference_autocast
from mammocad.errors import DatasetError, MammocadError
from mammocad.models.net import MammoNet
from mammocad.training.config import RunConfig
from mammocad.training.data import CachedImageDataset, partition, task_frame
from mammocad.training.lesion import contralateral_index, paired_features
from mammocad.training.predict import LoadedRun
from mammocad.training.run_dir import RunDir

SPLITS = ("train", "val", "test", "blind", "all")


def run_config(run_dir: str | Path) -> RunConfig:
    """The resolved config a run was trained with (``config.yaml`` in its directory)."""
    run = RunDir(run_dir)
    if not run.has_config():
        raise MammocadError(f"{run_dir}: not a run directory (no {run.CONFIG})")
    return run.read_config()


def split_frames(
    run: LoadedRun, config: RunConfig, dataset: str | Path | None, splits: tuple[str, ...]
) -> dict[str, pd.DataFrame]:
    """The cached samples of each of ``splits`` (train/val/test/blind/all) for the run's task on ``dataset``.

    The manifest, split table and cache index are read once for all of them. Raises
    :class:`DatasetError` when the dataset's task classes differ from the run's or a split is
    unknown; a split with no image for the task comes back empty (see :func:`split_frame`).
    """
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise DatasetError(f"unknown split {unknown[0]!r}; choose from {', '.join(SPLITS)}")
    data = config.data.model_copy(update={"dataset": Path(dataset)}) if dataset is not None else config.data
    # Scoring a whole dataset needs no split: an external test set can be imported and evaluated as is.
    classes, frame = task_frame(data, config.preprocess, allow_unsplit="all" in splits)
    if classes != run.classes:
        raise DatasetError(
            f"{data.dataset}: task {data.task!r} gives classes {classes}, but {run.run_dir.name} was trained on "
            f"{run.classes}; evaluate on a dataset with the same classes"
        )
    unsplit = (frame["split"] == "unsplit").all()
    parts = {s: frame.iloc[:0] for s in SPLITS} if unsplit else partition(frame, data.fold, data.split)
    parts["all"] = frame.reset_index(drop=True)
    return {split: parts[split] for split in splits}


def split_frame(run: LoadedRun, config: RunConfig, dataset: str | Path | None, split: str) -> pd.DataFrame:
    """The cached samples of one split; raises :class:`DatasetError` when it holds no image for the task."""
    part = split_frames(run, config, dataset, (split,))[split]
    if part.empty:
        where = dataset if dataset is not None else config.data.dataset
        raise DatasetError(f"{where}: the {split} split has no images for task {config.data.task!r}")
    return part


def default_feature_layers(model: MammoNet) -> list[str]:
    """Layers worth a latent-space look: the backbone's output and the stages its head declares.

    For the papers' heads that is the pooled vector (GAP or GAGM), the SEVector output and the
    Dense(256) layer (see ``MammoNet.latent_layers`` and the head contract in ``mammocad.models.heads``).
    """
    return model.latent_layers()


@torch.inference_mode()
def frame_logits(
    run: LoadedRun, part: pd.DataFrame, layers: list[str] | None = None, batch_size: int = 32
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The model's raw logits (N, C) for the cached images of ``part`` (before any temperature), and features."""
    model = run.model.eval()
    modules = dict(model.named_modules())
    unknown = [name for name in layers or [] if name not in modules]
    if unknown:
        raise MammocadError(f"unknown layer(s) {unknown}; the model's layers include {default_feature_layers(model)}")
    captured: dict[str, list[np.ndarray]] = {name: [] for name in layers or []}
    seen: set[str] = set()  # layers already captured for the current batch

    def hook_for(name: str) -> Callable[[nn.Module, object, torch.Tensor], None]:
        def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            if name in seen:  # a second pass in one forward (flip TTA): keep the first, unflipped one
                return
            seen.add(name)
            value = output.float()
            if value.ndim == 4:
                value = value.mean(dim=(2, 3))
            captured[name].append(value.flatten(1).cpu().numpy())

        return hook

    handles = [modules[name].register_forward_hook(hook_for(name)) for name in captured]
    dataset = CachedImageDataset(part, model.in_chans, None, in_memory=False)
    # A bilateral lesion-aware model reads each film with its other breast's: first every film's own
    # heatmap statistics, then the pairs (both breasts of a patient are always in the same split).
    bilateral = getattr(getattr(model, "head", None), "bilateral", False)
    outputs: list[torch.Tensor] = []
    try:
        for start in range(0, len(dataset), batch_size):
            batch = torch.stack([dataset[i][0] for i in range(start, min(start + batch_size, len(dataset)))])
            seen.clear()
            with inference_autocast():  # the precision the server predicts in, so metrics describe it
                outputs.append(model.head.own_features(model.heatmap(batch)) if bilateral else model(batch))
    finally:
        for handle in handles:
            handle.remove()
    logits = torch.cat([output.float() for output in outputs])
    if bilateral:
        logits = model.head.classify(paired_features(model.head, logits, contralateral_index(part)))
    return logits.detach().numpy(), {name: np.concatenate(chunks) for name, chunks in captured.items()}


__all__ = ["SPLITS", "default_feature_layers", "frame_logits", "run_config", "split_frame", "split_frames"]
