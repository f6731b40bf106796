"""The inference benchmark helpers: GEMM rate, FLOP counts, ONNX Runtime runners, throughput (no timing asserts)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from mammocad.benchmarks.inference import (
    gemm_rate,
    interleaved_throughput,
    meets_target,
    model_gflop,
    ort_gemm_rate,
    ort_session,
    physical_cores,
    throughput,
    torch_runner,
)


class TinyNet(nn.Module):
    """conv 3x3 (3 -> 8, padding 1) + global average pool + linear (8 -> 3): FLOP countable by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def test_model_gflop_equals_the_hand_count():
    side = 16
    conv_macs = 8 * 3 * 3 * 3 * side * side  # out channels x in channels x kernel x output pixels
    linear_macs = 8 * 3
    assert model_gflop(TinyNet(), side, 3) == pytest.approx(2 * (conv_macs + linear_macs) / 1e9)
    assert model_gflop(nn.Conv2d(1, 4, 5), 32, 1) == pytest.approx(2 * 4 * 25 * 28 * 28 / 1e9)


def test_gemm_rate_is_plausible():
    rate = gemm_rate("fp32", size=256, seconds=0.05)
    assert math.isfinite(rate) and 0.1 < rate < 1e5  # GFLOP/s: more than a pocket calculator, less than a GPU
    assert gemm_rate("bf16", size=128, seconds=0.01) > 0
    pytest.importorskip("onnxruntime")
    assert 0.1 < ort_gemm_rate(size=256, seconds=0.05) < 1e5
    with pytest.raises(ValueError, match="fp32 or bf16"):
        gemm_rate("fp8")


def test_throughput_reports_rates_and_latencies():
    calls = []

    def run(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return batch.sum(axis=(1, 2, 3))

    result = throughput(run, np.ones((4, 1, 8, 8), dtype=np.float32), min_seconds=0.0, min_calls=6)
    assert result["calls"] == 6 and len(calls) == 7 and result["batch"] == 4  # one warm-up call, untimed
    assert result["img_s_min"] <= result["img_s"] <= result["img_s_max"]
    assert 0 < result["latency_p50_ms"] <= result["latency_p95_ms"]
    both = interleaved_throughput({"a": run, "b": run}, np.ones((2, 1, 4, 4), dtype=np.float32), rounds=3)
    assert set(both) == {"a", "b"} and both["a"]["calls"] == both["b"]["calls"] == 3


def test_ort_runners_match_pytorch():
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = TinyNet().eval()
    batch = np.random.default_rng(0).random((5, 3, 16, 16), dtype=np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(batch)).numpy()
    assert np.abs(ort_session(model, 16, 3, "fp32")(batch) - expected).max() < 1e-5
    assert np.abs(torch_runner(model, "fp32")(batch) - expected).max() < 1e-5
    int8 = ort_session(model, 16, 3, "int8", calibration=batch)(batch)
    assert int8.shape == expected.shape and np.abs(int8 - expected).max() < 0.05  # quantised, calibrated on it
    with pytest.raises(ValueError, match="unknown variant"):
        ort_session(model, 16, 3, "fp16")


def test_targets_and_cores():
    assert physical_cores() >= 1
    assert meets_target("baseline_cnn", 180.0, 0.1, 114.6) and not meets_target("baseline_cnn", 150.0, 0.9, 114.6)
    assert meets_target("icnt", 30.0, 0.6, 16.8) and not meets_target("icnt", 30.0, 0.4, 16.8)
    assert meets_target("icnt", 30.0, 0.6, None) is None  # no Keras measured in this run: unavailable
