"""Batch inference near the CPU's limit: the machine's GEMM rate, a model's GFLOP, and img/s per backend.

The question this module answers: how close does each way of running a classifier get to what the
CPU can do? The yardstick is :func:`gemm_rate` (a square matmul, the best case for the FMA units);
a backend's achieved GFLOP/s is ``img/s x`` :func:`model_gflop`. Backends compared by
:func:`run_inference_benchmark`, on random-init models and random inputs (speed does not depend on
the weights), interleaved call by call in one process so a shared, noisy CPU hits them alike:

- ``torch_fp32``: eager PyTorch, float32, channels-last;
- ``torch_bf16``: the same under ``torch.autocast("cpu", torch.bfloat16)`` (AVX-512 BF16 where present);
- ``ort_fp32``: ONNX Runtime, all graph optimisations, one intra-op thread per physical core;
- ``ort_int8``: the static int8 QDQ model (per-channel weights) that ``mammocad export --int8`` writes.

The target set for the project: batch-32 img/s at least 1.5 x the papers' Keras stack (tf.function,
measured in the same invocation by ``mammocad bench infer --keras PYTHON``; without it the speed
half of the target is unavailable, never judged against numbers copied from another machine) and, for ICNT and IIV3, at least half the machine's fp32 GEMM rate.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mammocad.models.modes import evaluation_mode
from mammocad.progress import ProgressFn

#: The benchmark architectures and their input side (the papers' sizes).
ARCHITECTURES = {"baseline_cnn": 224, "icnt": 224, "iiv3": 299}
#: The targets: img/s >= this x Keras, and (large models) achieved GFLOP/s >= this share of the fp32 GEMM rate.
TARGET_SPEEDUP_VS_KERAS = 1.5
TARGET_GEMM_SHARE = 0.5
GEMM_TARGET_ARCHITECTURES = ("icnt", "iiv3")
BACKENDS = ("torch_fp32", "torch_bf16", "ort_fp32", "ort_int8")

RunFn = Callable[[np.ndarray], np.ndarray]


def physical_cores() -> int:
    """Physical CPU cores available to this process (hyper-threads count once; Linux sysfs, else ``os.cpu_count``)."""
    available = (
        sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    )
    cores: set[tuple[str, str]] = set()
    for cpu in available:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(
                ((topology / "physical_package_id").read_text().strip(), (topology / "core_id").read_text().strip())
            )
        except OSError:
            return max(1, len(available))
    return max(1, len(cores))


def gemm_rate(dtype: str = "fp32", size: int = 2048, seconds: float = 2.0) -> float:
    """The machine's GEMM rate: GFLOP/s of a ``size`` x ``size`` torch matmul (2 n³ FLOP), best of repeated calls.

    Args:
        dtype: ``fp32`` or ``bf16`` (bf16 uses the CPU's AVX-512 BF16 / AMX units where PyTorch has them).
        size: the matrices' side.
        seconds: how long to keep measuring (at least 3 timed calls after a warm-up).

    Returns:
        The best (highest) GFLOP/s over the timed calls: the rate the cores reach when nothing else
        interferes, which is the fair ceiling on a shared machine.
    """
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    if dtype not in dtypes:
        raise ValueError(f"unknown dtype {dtype!r}; choose fp32 or bf16")
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(size, size, generator=generator).to(dtypes[dtype])
    b = torch.rand(size, size, generator=generator).to(dtypes[dtype])
    torch.mm(a, b)  # warm-up: thread pool, kernel selection
    best, calls, deadline = 0.0, 0, time.perf_counter() + seconds
    while calls < 3 or time.perf_counter() < deadline:
        start = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
        calls += 1
    return best


def ort_gemm_rate(size: int = 2048, seconds: float = 2.0) -> float:
    """GFLOP/s of the same fp32 square matmul in ONNX Runtime (its own MLAS kernels), best of repeated calls.

    A second yardstick beside :func:`gemm_rate`: PyTorch's fp32 matmul goes through MKL, which on
    some CPUs (AMD) does not use its widest kernels, while ONNX Runtime's convolutions run on MLAS.
    """
    from onnx import TensorProto, helper, numpy_helper

    b = np.random.default_rng(0).random((size, size), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "gemm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [size, size])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])],
        [numpy_helper.from_array(b, "b")],
    )
    # IR version 9: what ONNX Runtime >= 1.16 reads (the onnx package writes newer by default).
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    from mammocad.serve.export import ort_session as make_session

    session = make_session(model.SerializeToString())
    a = {"a": np.random.default_rng(1).random((size, size), dtype=np.float32)}
    session.run(["c"], a)
    best, calls, deadline = 0.0, 0, time.perf_counter() + seconds
    while calls < 3 or time.perf_counter() < deadline:
        start = time.perf_counter()
        session.run(["c"], a)
        best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
        calls += 1
    return best


def model_gflop(model: torch.nn.Module, side: int, in_chans: int) -> float:
    """Forward GFLOP of one ``in_chans`` x ``side`` x ``side`` image (FlopCounterMode: 2 FLOP per multiply-add).

    Counts convolutions, matmuls and linear layers (what dominates a CNN); element-wise ops,
    normalisation and pooling are not counted, as is the convention for GFLOP figures.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with evaluation_mode(model), torch.no_grad(), counter:
        model(torch.zeros(1, in_chans, side, side))
    return counter.get_total_flops() / 1e9


def ort_session(
    model_or_onnx_path: torch.nn.Module | str | Path,
    side: int,
    in_chans: int,
    variant: str = "fp32",
    calibration: np.ndarray | None = None,
    threads: int | None = None,
) -> RunFn:
    """An ONNX Runtime CPU runner for a torch model or an ONNX file: ``run(batch (N, C, H, W) float32) -> logits``.

    Args:
        model_or_onnx_path: a torch module (exported to a temporary ONNX file, dynamic batch) or an
            ONNX file with input ``input`` and output ``logits`` (``mammocad export`` writes those).
        side, in_chans: the input's spatial side and channels (for the export and random calibration).
        variant: ``fp32`` (as exported) or ``int8`` (static QDQ, per-channel weights, quantised here).
        calibration: int8 calibration images (N, C, H, W) float32 in [0, 1]; None: 8 seeded random ones
            (fine for speed, not for accuracy: exports calibrate on the run's validation images).
        threads: intra-op threads (None: one per physical core).

    Returns:
        A callable running one batch through the session (all graph optimisations on).
    """
    from mammocad.serve.export import VARIANTS, onnx_bytes, quantize_int8
    from mammocad.serve.export import ort_session as make_session

    if variant not in ("fp32", "int8"):
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(v for v in VARIANTS if v != 'fp16')}")
    with tempfile.TemporaryDirectory(prefix="mammocad-ort-") as folder:
        source = Path(folder) / "model.onnx"
        if isinstance(model_or_onnx_path, torch.nn.Module):
            example = torch.rand(1, in_chans, side, side, generator=torch.Generator().manual_seed(0))
            source.write_bytes(onnx_bytes(model_or_onnx_path.eval(), example))
        else:
            source = Path(model_or_onnx_path)
        if variant == "int8":
            if calibration is None:
                calibration = np.random.default_rng(0).random((8, in_chans, side, side), dtype=np.float32)
            quantised = Path(folder) / "model.int8.onnx"
            quantize_int8(source, quantised, calibration)
            source = quantised
        session = make_session(source.read_bytes(), threads or physical_cores())

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run(["logits"], {"input": np.ascontiguousarray(batch, dtype=np.float32)})[0]

    return run


def torch_runner(model: torch.nn.Module, dtype: str = "fp32") -> RunFn:
    """An eager PyTorch runner ``run(batch) -> logits``: channels-last, inference mode, bf16 autocast for ``bf16``."""
    model = model.eval().to(memory_format=torch.channels_last)
    autocast = dtype == "bf16"

    @torch.inference_mode()
    def run(batch: np.ndarray) -> np.ndarray:
        images = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return model(images).float().numpy()

    return run


def throughput(run_fn: RunFn, batch: np.ndarray, min_seconds: float = 5.0, min_calls: int = 5) -> dict[str, Any]:
    """Images per second of ``run_fn`` on ``batch``: one warm-up call, then calls until both minimums are met.

    Returns:
        ``img_s`` (median over calls), ``img_s_min``/``img_s_max`` (the spread), ``latency_p50_ms`` and
        ``latency_p95_ms`` (per call, i.e. per batch), ``calls`` timed and ``batch`` size.
    """
    run_fn(batch)
    seconds: list[float] = []
    deadline = time.perf_counter() + min_seconds
    while len(seconds) < min_calls or time.perf_counter() < deadline:
        start = time.perf_counter()
        run_fn(batch)
        seconds.append(time.perf_counter() - start)
    return _summary(seconds, len(batch))


def _summary(seconds: list[float], batch_size: int) -> dict[str, Any]:
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, max(0, int(np.ceil(0.95 * len(ordered))) - 1))]
    return {
        "img_s": round(batch_size / statistics.median(ordered), 2),
        "img_s_min": round(batch_size / ordered[-1], 2),
        "img_s_max": round(batch_size / ordered[0], 2),
        "latency_p50_ms": round(statistics.median(ordered) * 1000, 3),
        "latency_p95_ms": round(p95 * 1000, 3),
        "calls": len(ordered),
        "batch": batch_size,
    }


def interleaved_throughput(
    runners: dict[str, RunFn], batch: np.ndarray, rounds: int = 5, min_seconds: float = 0.0
) -> dict[str, dict[str, Any]]:
    """:func:`throughput` of several runners measured in turn, one call each per round, so that load from
    other processes on a shared CPU hits every runner alike (compare their ratios, not the absolutes)."""
    for run_fn in runners.values():
        run_fn(batch)  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    deadline = time.perf_counter() + min_seconds
    done = 0
    while done < rounds or time.perf_counter() < deadline:
        for name, run_fn in runners.items():
            start = time.perf_counter()
            run_fn(batch)
            seconds[name].append(time.perf_counter() - start)
        done += 1
    return {name: _summary(values, len(batch)) for name, values in seconds.items()}


def run_inference_benchmark(
    architectures: list[str] | None = None,
    batch_size: int = 32,
    rounds: int = 5,
    in_chans: int = 3,
    backends: tuple[str, ...] = BACKENDS,
    progress: ProgressFn | None = None,
    keras_b32_img_s: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Batch inference of each architecture on every backend, against the GEMM rate and the Keras reference.

    Returns the JSON-ready result: the machine's GEMM rates (``fp32`` and ``bf16``: :func:`gemm_rate`,
    the yardstick of the target; ``fp32_onnxruntime``: :func:`ort_gemm_rate`), and per architecture
    its GFLOP per image and, per backend, :func:`throughput`'s fields plus ``gflop_s`` (achieved),
    ``share_of_gemm`` (of the fp32 rate, or the bf16 rate for ``torch_bf16``), ``share_of_fp32_gemm``,
    ``share_of_ort_fp32_gemm``, ``vs_keras`` and ``meets_target``; ``best`` names the fastest backend
    and whether it meets the target.
    """
    from mammocad.benchmarks.preprocess import machine_info
    from mammocad.models import create_model

    step = progress or (lambda _message: None)
    step("measuring the GEMM rate")
    rates = {
        "fp32": round(gemm_rate("fp32"), 1),
        "bf16": round(gemm_rate("bf16"), 1),
        "fp32_onnxruntime": round(ort_gemm_rate(), 1),
    }
    result: dict[str, Any] = {
        "benchmark": "inference",
        "batch": batch_size,
        "rounds": rounds,
        "in_chans": in_chans,
        "torch": torch.__version__,
        "onnxruntime": _ort_version(),
        "threads": {"torch": torch.get_num_threads(), "onnxruntime": physical_cores()},
        "machine": machine_info(),
        "gemm_gflop_s": rates,
        "targets": {"speedup_vs_keras": TARGET_SPEEDUP_VS_KERAS, "share_of_gemm": TARGET_GEMM_SHARE},
        "models": {},
    }
    for name in architectures or list(ARCHITECTURES):
        side = ARCHITECTURES.get(name, 224)
        torch.manual_seed(0)
        model = create_model(name, num_classes=3, in_chans=in_chans).eval()
        gflop = model_gflop(model, side, in_chans)
        batch = np.random.default_rng(0).random((batch_size, in_chans, side, side), dtype=np.float32)
        step(f"{name}: building the runners")
        makers: dict[str, Callable[[], RunFn]] = {
            "torch_fp32": lambda model=model: torch_runner(model, "fp32"),
            "torch_bf16": lambda model=model: torch_runner(model, "bf16"),
            "ort_fp32": lambda model=model, side=side: ort_session(model, side, in_chans, "fp32"),
            "ort_int8": lambda model=model, side=side: ort_session(model, side, in_chans, "int8"),
        }
        runners = {backend: makers[backend]() for backend in backends}
        step(f"{name}: {rounds} interleaved rounds of batch {batch_size}")
        timings = interleaved_throughput(runners, batch, rounds)
        keras = (keras_b32_img_s or {}).get(name)
        entry: dict[str, Any] = {"input": side, "gflop_per_image": round(gflop, 3), "keras_b32_img_s": keras}
        for backend, timing in timings.items():
            achieved = timing["img_s"] * gflop
            rate = rates["bf16" if backend == "torch_bf16" else "fp32"]
            timing["gflop_s"] = round(achieved, 1)
            timing["share_of_gemm"] = round(achieved / rate, 3)
            timing["share_of_fp32_gemm"] = round(achieved / rates["fp32"], 3)
            timing["share_of_ort_fp32_gemm"] = round(achieved / rates["fp32_onnxruntime"], 3)
            timing["vs_keras"] = round(timing["img_s"] / keras, 2) if keras else None
            timing["meets_target"] = meets_target(name, timing["img_s"], timing["share_of_fp32_gemm"], keras)
            entry[backend] = timing
        best = max(timings, key=lambda backend: timings[backend]["img_s"])
        entry["best"] = {
            "backend": best,
            "img_s": timings[best]["img_s"],
            "meets_target": timings[best]["meets_target"],
        }
        result["models"][name] = entry
        del runners, model
    return result


def _timings(entry: dict[str, Any]) -> list[str]:
    return [k for k, v in entry.items() if isinstance(v, dict) and "img_s" in v and k != "best"]


def merge_runs(runs: list[dict[str, Any]], keras_b32_img_s: dict[str, float]) -> dict[str, Any]:
    """One document from several :func:`run_inference_benchmark` runs (architectures, repetitions).

    Per architecture and backend it keeps the repetition with the median rate, and judges the target
    against ``keras_b32_img_s``, the Keras ``tf.function`` rates measured in the same invocation.
    """
    merged = dict(runs[0])
    merged["models"] = {}
    repeats: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        for name, entry in run["models"].items():
            repeats.setdefault(name, []).append(entry)
    for name, entries in repeats.items():
        entry = dict(entries[0])
        keras = keras_b32_img_s.get(name)
        entry["keras_b32_img_s"] = keras
        for backend in _timings(entry):
            ranked = sorted((e[backend] for e in entries), key=lambda timing: timing["img_s"])
            timing = dict(ranked[len(ranked) // 2])
            timing["vs_keras"] = round(timing["img_s"] / keras, 2) if keras else None
            timing["meets_target"] = meets_target(name, timing["img_s"], timing["share_of_fp32_gemm"], keras)
            entry[backend] = timing
        best = max(_timings(entry), key=lambda backend: entry[backend]["img_s"])
        entry["best"] = {"backend": best, "img_s": entry[best]["img_s"], "meets_target": entry[best]["meets_target"]}
        merged["models"][name] = entry
    return merged


def meets_target(architecture: str, img_s: float, share_of_fp32_gemm: float, keras_img_s: float | None) -> bool | None:
    """Whether a batch-32 rate meets the project's target (None: no Keras reference for the architecture).

    ≥ :data:`TARGET_SPEEDUP_VS_KERAS` x Keras, and for ICNT and IIV3 also ≥ :data:`TARGET_GEMM_SHARE`
    of the fp32 GEMM rate (for int8 or bf16 the achieved GFLOP/s still counts against the fp32 rate).
    """
    keras = keras_img_s
    if keras is None:
        return None
    fast_enough = img_s >= TARGET_SPEEDUP_VS_KERAS * keras
    if architecture in GEMM_TARGET_ARCHITECTURES:
        return fast_enough and share_of_fp32_gemm >= TARGET_GEMM_SHARE
    return fast_enough


def _ort_version() -> str | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__
