"""Latency of the lesion-aware model on one whole film, and its patch-stage training throughput.

One 1024² film (a MIAS film when a MIAS folder is given, else a synthetic phantom of that size) goes
through decode → preprocessing (breast crop, CLAHE, resize to the working resolution) → the dense
patch heatmap and the image-level probabilities, with and without flip TTA, for EfficientNet-Lite0
(ImageNet weights offline; the head's weights do not change the cost). Training: patch-stage
images/s at the configured patch size and batch.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mammocad.benchmarks.preprocess import machine_info
from mammocad.benchmarks.timing import median_seconds
from mammocad.data.images import read_image
from mammocad.models import create_model
from mammocad.preprocess import PreprocessConfig, preprocess_image
from mammocad.training.predict import pixels_to_input


def _film(mias: Path | None, workdir: Path) -> Path:
    if mias is not None and (mias / "mdb001.pgm").exists():
        return mias / "mdb001.pgm"
    from mammocad.data.synth import write_synthetic_dataset

    source = write_synthetic_dataset(workdir, "folders", {"malignant": 1}, seed=0, height=1024, width=1024)
    return next(p for p in Path(source).rglob("*") if p.suffix in (".png", ".pgm", ".dcm"))


def run_lesion_benchmark(
    mias: Path | None = None,
    backbone: str = "efficientnet_lite0",
    image_size: int = 512,
    patch_size: int = 96,
    batch_size: int = 32,
    repeats: int = 5,
    train_steps: int = 5,
) -> dict[str, Any]:
    """Seconds per film for each step (medians of ``repeats``) and patch training images/s."""
    torch.manual_seed(0)
    config = PreprocessConfig(image_size=image_size)
    pretrained: bool | str = "offline" if backbone.startswith("efficientnet_lite") else False
    with tempfile.TemporaryDirectory() as tmp:
        path = _film(mias, Path(tmp))
        image = read_image(path)
        result: dict[str, Any] = {
            "machine": machine_info(),
            "threads": torch.get_num_threads(),
            "film": path.name if mias is not None else "synthetic phantom",
            "film_pixels": list(image.pixels.shape),
            "backbone": backbone,
            "image_size": image_size,
            "patch_size": patch_size,
        }
        result["decode_s"] = round(median_seconds(lambda: read_image(path), repeats), 4)
        result["preprocess_s"] = round(median_seconds(lambda: preprocess_image(image, config), repeats), 4)
    pixels = preprocess_image(image, config).pixels
    batch = pixels_to_input(pixels, 1)[None]
    for tta in (False, True):
        model = create_model(
            "lesion_aware", num_classes=3, backbone=backbone, pretrained=pretrained, patch_size=patch_size, tta_flip=tta
        ).eval()
        with torch.inference_mode():
            seconds = median_seconds(lambda model=model: _film_outputs(model, batch), repeats)
            heat = model.lesion_map(batch)
        key = "tta" if tta else "no_tta"
        result[f"heatmap_and_probabilities_{key}_s"] = round(seconds, 4)
        result[f"film_total_{key}_s"] = round(result["decode_s"] + result["preprocess_s"] + seconds, 4)
    result["heatmap_grid"] = list(heat.shape[-2:])
    result["patch_train_img_per_s"] = round(_patch_train_rate(backbone, patch_size, batch_size, train_steps), 2)
    return result


def _film_outputs(model: torch.nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What serving a film needs, from one heatmap pass: the heatmap and the image probabilities."""
    heatmap = model.heatmap(batch)
    logits = model.head.classify(model.head.features_from_heatmap(heatmap))
    return heatmap, torch.softmax(logits, dim=1)


def _patch_train_rate(backbone: str, patch_size: int, batch_size: int, steps: int) -> float:
    model = create_model("lesion_aware", num_classes=3, backbone=backbone, patch_size=patch_size).train()
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    patches = torch.rand(batch_size, 1, patch_size, patch_size).contiguous(memory_format=torch.channels_last)
    labels = torch.as_tensor(np.arange(batch_size) % 3)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model.patch_logits(patches), labels).backward()
        optimizer.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch_size * steps / (time.perf_counter() - start)
