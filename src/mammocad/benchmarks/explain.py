"""Explanation latency per image and the training cost of knowledge transfer, on random inputs.

Per architecture (random init, 1 grey channel): Grad-CAM and Grad-CAM++ on one image (forward +
backward + map), activation maps at every layer group, the Lesion/Background interpretation of one
ROI (GLCM variance + 2·g² + 1 inputs in one pass) and the GLCM variance map alone; and training
images/s with and without the knowledge-transfer mask branch (batch 8). Where the CPU has native
bfloat16, Grad-CAM under bf16 autocast too, with its largest difference from the float32 map.

``overlay_ms``: one Grad-CAM drawn over a 2048×1536 film and PNG-encoded, by the float path the
``explain`` command's files use (``display_overlay``: map back at full size, float blends; OpenCV's
PNG) and by the uint8 path the API uses (``heatmap_picture``, ``encode_png`` on every core), timed
interleaved, with the largest pixel difference.
"""

from __future__ import annotations

import statistics
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


def _overlay_paths(repeats: int, film_hw: tuple[int, int] = (2048, 1536)) -> dict[str, Any]:
    """Median ms of drawing + PNG-encoding one heatmap over a ``film_hw`` film, float path vs uint8 path."""
    from mammocad.data.images import MammoImage
    from mammocad.data.synth.phantom import generate_case
    from mammocad.explain.display import MAX_OVERLAY_SIDE, display_overlay
    from mammocad.explain.overlay import heatmap_picture
    from mammocad.explain.png import encode_png
    from mammocad.preprocess import PreprocessConfig
    from mammocad.preprocess.pipeline import preprocess_image, to_unit
    from mammocad.reporting.html import array_to_png

    config = PreprocessConfig(image_size=224)
    pixels = generate_case(0, "malignant", height=film_hw[0], width=film_hw[1]).pixels
    image = MammoImage(pixels, int(np.iinfo(pixels.dtype).max), "png")
    geometry = preprocess_image(image, config).geometry
    film = to_unit(image, config)
    yy, xx = np.mgrid[0:224, 0:224] / 224
    heat = np.exp(-((yy - 0.45) ** 2 + (xx - 0.4) ** 2) / 0.03).astype(np.float32)

    def float_path() -> np.ndarray:
        picture = display_overlay(film, geometry, geometry.map_to_original(heat), 0.45)
        array_to_png(picture)
        return picture

    def uint8_path() -> np.ndarray:
        picture = heatmap_picture(film, heat, geometry, 0.45, MAX_OVERLAY_SIDE)
        encode_png(picture)
        return picture

    times: dict[str, list[float]] = {"float_path": [], "uint8_path": []}
    pictures = {"float_path": float_path(), "uint8_path": uint8_path()}  # warm-up
    for _ in range(repeats):
        for name, draw in (("float_path", float_path), ("uint8_path", uint8_path)):
            start = time.perf_counter()
            draw()
            times[name].append(time.perf_counter() - start)
    medians = {name: round(statistics.median(values) * 1000, 1) for name, values in times.items()}
    difference = np.abs(pictures["float_path"].astype(int) - pictures["uint8_path"].astype(int)).max()
    return {
        "film": list(film_hw),
        **medians,
        "speedup": round(medians["float_path"] / medians["uint8_path"], 2),
        "max_pixel_difference": int(difference),
    }


def run_explain_benchmark(models: list[str] | None = None, repeats: int = 5, kt_steps: int = 3) -> dict[str, Any]:
    """Latency (seconds per image, median of ``repeats``) of each explanation, and KT's training cost."""
    from mammocad.explain.glcm import glcm_variance_map

    torch.manual_seed(0)
    result: dict[str, Any] = {"machine": machine_info(), "threads": torch.get_num_threads(), "models": {}}
    roi = (np.random.default_rng(0).random((224, 224)) * 255).astype(np.uint8)
    result["glcm_variance_224_s"] = round(median_seconds(lambda: glcm_variance_map(roi), repeats), 5)
    result["overlay_ms"] = _overlay_paths(repeats)
    for name in models or list(ARCHITECTURES):
        result["models"][name] = _measure(name, ARCHITECTURES.get(name, 224), repeats, kt_steps)
    return result


def _measure(name: str, side: int, repeats: int, kt_steps: int) -> dict[str, Any]:
    from mammocad.devices import cpu_has_fast_bf16
    from mammocad.explain.cam import cams_and_logits, class_activation_maps
    from mammocad.explain.lesion_background import lesion_background

    model = create_model(name, num_classes=2).eval()
    image = torch.rand(1, 1, side, side)
    entry: dict[str, Any] = {"input": side}
    entry["gradcam_s"] = round(median_seconds(lambda: class_activation_maps(model, image, "gradcam"), repeats), 4)
    if cpu_has_fast_bf16():
        fp32 = class_activation_maps(model, image, "gradcam")
        bf16 = cams_and_logits(model, image, "gradcam", bf16=True)[0]
        seconds = median_seconds(lambda: cams_and_logits(model, image, "gradcam", bf16=True), repeats)
        entry["gradcam_bf16_s"] = round(seconds, 4)
        entry["gradcam_bf16_max_difference"] = round(float(np.abs(bf16 - fp32).max()), 4)
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
