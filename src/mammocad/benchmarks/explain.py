"""Explanation latency per image and the training cost of knowledge transfer, on random inputs.

Per architecture (random init, 1 grey channel): Grad-CAM and Grad-CAM++ on one image (forward +
backward + map), activation maps at every layer group, the Lesion/Background interpretation of one
ROI (GLCM variance + 2·g² + 1 inputs in one pass) and the GLCM variance map alone; and training
images/s with and without the knowledge-transfer mask branch (batch 8).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from mammocad.benchmarks.preprocess import machine_info
from mammocad.benchmarks.timing import median_seconds
from mammocad.models import create_model
from mammocad.models.activation_maps import activation_maps, recording, resolve_layers
from mammocad.models.losses.knowledge_transfer import knowledge_transfer_loss

ARCHITECTURES = {"baseline_cnn": 224, "densenet121": 224}


def _kt_train_rate(model: torch.nn.Module, side: int, batch: int, steps: int, transfer: bool) -> float:
    model = model.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    images = torch.rand(batch, 1, side, side).contiguous(memory_format=torch.channels_last)
    masks = (torch.rand(batch, 1, side, side) > 0.8).float().contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 2, (batch,))
    layers = resolve_layers(model, None) if transfer else []

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with recording(model, layers) as roi:
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        if transfer:
            model.eval()
            with torch.no_grad(), recording(model, layers) as target:
                model.forward_features(masks)
            model.train()
            loss = loss + knowledge_transfer_loss(target.outputs, roi.outputs, 1.0)[0]
        loss.backward()
        optimizer.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - start)


def run_explain_benchmark(models: list[str] | None = None, repeats: int = 5, kt_steps: int = 3) -> dict[str, Any]:
    """Latency (seconds per image, median of ``repeats``) of each explanation, and KT's training cost."""
    from mammocad.explain.glcm import glcm_variance_map

    torch.manual_seed(0)
    result: dict[str, Any] = {"machine": machine_info(), "threads": torch.get_num_threads(), "models": {}}
    roi = (np.random.default_rng(0).random((224, 224)) * 255).astype(np.uint8)
    result["glcm_variance_224_s"] = round(median_seconds(lambda: glcm_variance_map(roi), repeats), 5)
    for name in models or list(ARCHITECTURES):
        result["models"][name] = _measure(name, ARCHITECTURES.get(name, 224), repeats, kt_steps)
    return result


def _measure(name: str, side: int, repeats: int, kt_steps: int) -> dict[str, Any]:
    from mammocad.explain.cam import class_activation_maps
    from mammocad.explain.lesion_background import lesion_background

    model = create_model(name, num_classes=2).eval()
    image = torch.rand(1, 1, side, side)
    entry: dict[str, Any] = {"input": side}
    entry["gradcam_s"] = round(median_seconds(lambda: class_activation_maps(model, image, "gradcam"), repeats), 4)
    seconds = median_seconds(lambda: class_activation_maps(model, image, "gradcam++"), repeats)
    entry["gradcam++_s"] = round(seconds, 4)
    entry["activation_maps_s"] = round(median_seconds(lambda: activation_maps(model, image), repeats), 4)
    entry["lesion_background_grid"] = list(lesion_background(model, image[0]).activation.shape)
    seconds = median_seconds(lambda: lesion_background(model, image[0]), max(1, repeats // 2))
    entry["lesion_background_s"] = round(seconds, 3)
    plain = _kt_train_rate(create_model(name, num_classes=2), side, 8, kt_steps, transfer=False)
    transfer = _kt_train_rate(create_model(name, num_classes=2), side, 8, kt_steps, transfer=True)
    entry["train_img_s"] = round(plain, 2)
    entry["train_img_s_with_kt"] = round(transfer, 2)
    entry["kt_step_cost_ratio"] = round(plain / transfer, 3)
    return entry
