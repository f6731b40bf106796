"""Training and inference throughput on random data, the way shared/bench/keras_ref measures it.

Batch 16, Adam, cross-entropy, random init, in-memory random inputs; reports training images/s,
batch-32 inference images/s and batch-1 latency, per architecture, with and without channels-last.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from mammocad.benchmarks.preprocess import machine_info
from mammocad.models import create_model

ARCHITECTURES = {"baseline_cnn": 224, "icnt": 224, "iiv3": 299}
KERAS_REFERENCE = {  # shared/bench/keras_ref/README.md, 2-core AVX-512 machine
    "baseline_cnn": {"train_img_s": 20.0, "infer_b32_img_s": 70.8},
    "icnt": {"train_img_s": 2.84, "infer_b32_img_s": 11.8},
    "iiv3": {"train_img_s": 3.92, "infer_b32_img_s": 8.5},
}


def _train_rate(model: torch.nn.Module, side: int, in_chans: int, batch: int, steps: int, channels_last: bool) -> float:
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format).train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    images = torch.rand(batch, in_chans, side, side).contiguous(memory_format=memory_format)
    labels = torch.randint(0, 3, (batch,))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(images), labels).backward()
        optimizer.step()

    step()  # warm-up: allocations, kernel selection
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - start)


@torch.inference_mode()
def _infer(
    model: torch.nn.Module, side: int, in_chans: int, channels_last: bool, steps: int
) -> tuple[float, float, float]:
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format).eval()
    big = torch.rand(32, in_chans, side, side).contiguous(memory_format=memory_format)
    one = torch.rand(1, in_chans, side, side).contiguous(memory_format=memory_format)
    model(big)
    start = time.perf_counter()
    for _ in range(max(1, steps // 2)):
        model(big)
    rate = 32 * max(1, steps // 2) / (time.perf_counter() - start)
    latencies = []
    for _ in range(max(5, steps)):
        t0 = time.perf_counter()
        model(one)
        latencies.append(time.perf_counter() - t0)
    latencies.sort()
    return rate, latencies[len(latencies) // 2] * 1000, latencies[int(len(latencies) * 0.95) - 1] * 1000


def run_training_benchmark(
    architectures: list[str] | None = None,
    steps: int = 5,
    batch: int = 16,
    in_chans: int = 1,
    threads: int | None = None,
) -> dict[str, Any]:
    """Measure each architecture; returns the JSON-ready result (with the Keras reference beside it)."""
    if threads:
        torch.set_num_threads(threads)
    result: dict[str, Any] = {
        "benchmark": "training",
        "batch": batch,
        "steps": steps,
        "in_chans": in_chans,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": machine_info(),
        "models": {},
    }
    for name in architectures or list(ARCHITECTURES):
        side = ARCHITECTURES.get(name, 224)
        entry: dict[str, Any] = {"input": side, "keras_reference": KERAS_REFERENCE.get(name)}
        for channels_last in (False, True):
            torch.manual_seed(0)
            model = create_model(name, num_classes=3, in_chans=in_chans)
            key = "channels_last" if channels_last else "contiguous"
            train_rate = _train_rate(model, side, in_chans, batch, steps, channels_last)
            infer_rate, p50, p95 = _infer(model, side, in_chans, channels_last, steps)
            entry[key] = {
                "train_img_s": round(train_rate, 2),
                "infer_b32_img_s": round(infer_rate, 2),
                "latency_b1_p50_ms": round(p50, 1),
                "latency_b1_p95_ms": round(p95, 1),
            }
        best = max(entry["contiguous"]["train_img_s"], entry["channels_last"]["train_img_s"])
        if entry["keras_reference"]:
            entry["train_ratio_vs_keras"] = round(best / entry["keras_reference"]["train_img_s"], 2)
        result["models"][name] = entry
    return result
