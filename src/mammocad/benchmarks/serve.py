"""Serving latency: one uploaded image through decode → preprocess → predict → Grad-CAM, PyTorch vs ONNX Runtime.

Per architecture (random init — latency does not depend on the weights — 1 grey channel, the
papers' input size) a throw-away run directory is written and exported to ONNX; a synthetic
full-field phantom encoded as PNG is the upload. Each stage is timed separately (median of
``repeats``) for both backends; Grad-CAM always runs in PyTorch (it needs gradients). Then a
bounded load test of ``POST /predict`` on loopback (real uvicorn server, ONNX Runtime backend).

``predict_with_cam`` is what ``POST /explain`` does for one upload, timed end to end (decode →
preprocess → one forward + backward giving the probabilities and the Grad-CAM → map back →
overlay → PNG, both overlays): p50 and p95 against :data:`CAM_TARGET_MS`, and the median of each
stage (:attr:`~mammocad.serve.engine.Explanation.timings_ms`). Where the CPU has native bfloat16,
the same with ``cam_bf16`` (interleaved with float32, so both see the same machine load) and the
largest difference between the two heatmaps.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from mammocad.benchmarks.preprocess import machine_info
from mammocad.benchmarks.timing import median_seconds
from mammocad.data.synth.phantom import generate_case
from mammocad.devices import cpu_has_fast_bf16
from mammocad.models import create_model
from mammocad.models.weights import save_weights
from mammocad.preprocess import PreprocessConfig
from mammocad.serve.engine import InferenceEngine
from mammocad.serve.export import export_onnx
from mammocad.training.run_dir import RunDir

ARCHITECTURES = {"baseline_cnn": 224, "icnt": 224}
CLASSES = ["normal", "benign", "malignant"]
#: The latency one upload → prediction + Grad-CAM overlays should stay under on 2 CPU cores (p50).
CAM_TARGET_MS = 250.0


def throwaway_run(folder: Path, name: str, side: int) -> Path:
    """A minimal run directory (its model description and best weights) for a random-init ``name`` at ``side``², 3 classes."""
    model = create_model(name, num_classes=len(CLASSES), in_chans=1, pretrained=False).eval()
    run = RunDir(folder / name)
    save_weights(model, run.weights_path("best"))
    run.write_model(
        {
            "model": model.config(),
            "classes": CLASSES,
            "task": "3class",
            "preprocess": PreprocessConfig(image_size=side).model_dump(mode="json"),
            "weights": {"best": RunDir.weights_name("best"), "final": "best"},
        }
    )
    return run.path


def phantom_png(height: int = 2048, width: int = 1536) -> bytes:
    """A synthetic malignant CC view, PNG-encoded (the upload every measurement decodes)."""
    case = generate_case(0, "malignant", height=height, width=width)
    ok, buffer = cv2.imencode(".png", case.pixels)
    if not ok:
        raise RuntimeError("PNG encoding of the phantom failed")
    return buffer.tobytes()


def _measure(run_dir: Path, upload: bytes, repeats: int) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    for backend in ("torch", "onnx"):
        engine = InferenceEngine(run_dir, backend=backend)
        image = engine.decode(upload, "phantom.png")
        decode = median_seconds(lambda engine=engine: engine.decode(upload, "phantom.png"), repeats)
        predict = median_seconds(lambda engine=engine, image=image: engine.predict([image]), repeats)
        batch = torch.stack([image.tensor] * 16)
        batch16 = median_seconds(lambda engine=engine, batch=batch: engine.predict_tensors(batch), max(1, repeats // 2))
        entry[backend] = {
            "decode_preprocess_ms": round(decode * 1000, 1),
            "predict_ms": round(predict * 1000, 2),
            "predict_b16_img_s": round(16 / batch16, 1),
            "decode_to_prediction_ms": round((decode + predict) * 1000, 1),
        }
    entry["predict_with_cam"] = _predict_with_cam(run_dir, upload, repeats)
    # explain() predicts too (the CAM's forward pass gives the probabilities): upload → Grad-CAM is
    # decode + explain, whatever backend serves /predict.
    gradcam = entry["predict_with_cam"]["stages_p50_ms"]["explain"]
    entry["gradcam_with_overlays_ms"] = gradcam
    for backend in ("torch", "onnx"):
        row = entry[backend]
        row["decode_to_gradcam_ms"] = round(row["decode_preprocess_ms"] + gradcam, 1)
    entry["onnx_speedup_predict"] = round(entry["torch"]["predict_ms"] / entry["onnx"]["predict_ms"], 2)
    entry["onnx_speedup_b16"] = round(entry["onnx"]["predict_b16_img_s"] / entry["torch"]["predict_b16_img_s"], 2)
    return entry


def _predict_with_cam(run_dir: Path, upload: bytes, repeats: int) -> dict[str, Any]:
    """One upload through ``decode`` + ``explain(gradcam)``: p50/p95 end to end and the median per stage (ms)."""
    engine = InferenceEngine(run_dir, backend="torch")
    variants = ["fp32", "bf16"] if cpu_has_fast_bf16() else ["fp32"]
    samples: dict[str, list[dict[str, float]]] = {variant: [] for variant in variants}
    heatmaps: dict[str, np.ndarray] = {}
    shape: list[int] = []
    png_bytes = 0
    for repeat in range(repeats + 1):  # the first round warms up and is not counted
        for variant in variants:  # interleaved: both precisions see the same machine load
            engine.cam_bf16 = variant == "bf16"
            start = time.perf_counter()
            image = engine.decode(upload, "phantom.png")
            decoded = time.perf_counter()
            result = engine.explain(image, "gradcam")
            end = time.perf_counter()
            heatmaps[variant] = result.heatmap
            shape, png_bytes = result.summary()["heatmap_shape"], len(result.overlay_png)
            if repeat:
                samples[variant].append(
                    {
                        "total": (end - start) * 1000,
                        "decode_preprocess": (decoded - start) * 1000,
                        "explain": (end - decoded) * 1000,
                        **result.timings_ms,
                    }
                )
    engine.cam_bf16 = False
    fp32 = _latency(samples["fp32"])
    entry: dict[str, Any] = {
        "target_ms": CAM_TARGET_MS,
        "repeats": repeats,
        **fp32,
        "meets_target": fp32["p50_ms"] < CAM_TARGET_MS,
        "overlay_shape": shape,
        "overlay_png_bytes": png_bytes,
    }
    if "bf16" in samples:
        entry["bf16"] = {
            **_latency(samples["bf16"]),
            "max_heatmap_difference": round(float(np.abs(heatmaps["bf16"] - heatmaps["fp32"]).max()), 4),
        }
    return entry


def _latency(samples: list[dict[str, float]]) -> dict[str, Any]:
    totals = sorted(sample["total"] for sample in samples)
    p95 = totals[min(len(totals) - 1, round(0.95 * (len(totals) - 1)))]
    stages = {stage: round(statistics.median(sample[stage] for sample in samples), 1) for stage in samples[0]}
    stages.pop("total")
    return {"p50_ms": round(statistics.median(totals), 1), "p95_ms": round(p95, 1), "stages_p50_ms": stages}


def run_serve_benchmark(
    models: list[str] | None = None,
    repeats: int = 7,
    load_requests: int = 1000,
    load_concurrency: int = 16,
    image_hw: tuple[int, int] = (2048, 1536),
) -> dict[str, Any]:
    """Per-stage latency of each architecture on both backends, and a loopback load test of the first one."""
    torch.manual_seed(0)
    upload = phantom_png(*image_hw)
    result: dict[str, Any] = {
        "machine": machine_info(),
        "threads": torch.get_num_threads(),
        "upload": {"format": "png", "height": image_hw[0], "width": image_hw[1], "bytes": len(upload)},
        "models": {},
    }
    names = models or list(ARCHITECTURES)
    with tempfile.TemporaryDirectory(prefix="mammocad-bench-serve-") as folder:
        for name in names:
            run_dir = throwaway_run(Path(folder), name, ARCHITECTURES.get(name, 224))
            export_onnx(run_dir)
            result["models"][name] = {"input": ARCHITECTURES.get(name, 224), **_measure(run_dir, upload, repeats)}
        if load_requests > 0:
            from mammocad.serve.api import create_app
            from mammocad.serve.loadtest import load_test

            engine = InferenceEngine(Path(folder) / names[0], backend="onnx")
            stats = load_test(create_app(engine), upload, requests=load_requests, concurrency=load_concurrency)
            result["load_test"] = {"model": names[0], "backend": "onnx", "endpoint": "/predict", **stats}
    return result
