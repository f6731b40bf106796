"""Training and inference speed, side by side with the papers' Keras stack in the same invocation.

Each measurement runs in its own fresh process, mammocad's and Keras's alike, one after the other
(never two at once: on a small machine they would slow each other down), with the order of the two
frameworks alternating from one repetition to the next so that neither always runs on a warmer or
cooler machine. Reported per architecture: the median and spread over repetitions, the CPU share
other processes took while each measurement ran, and the ratios mammocad / Keras. Without a Keras
interpreter the ratios are reported as unavailable: speeds copied from another machine or another
TensorFlow version say nothing about this one.

mammocad's side is :mod:`mammocad.benchmarks.measurement` (training as ``mammocad train`` runs it,
inference as the server does); ``python -m mammocad.benchmarks.training --arch icnt`` still runs one
such measurement and prints one JSON line.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mammocad.benchmarks.measurement import (
    ARCHITECTURES,
    INFER_BATCH,
    NUM_CLASSES,
    TRAIN_BATCH,
    main,
    measure,
    measure_inference,
    measure_training,
)
from mammocad.benchmarks.timing import cpu_share, timed_calls

#: Keras modes: the papers' stack in fp32 and with its mixed_bfloat16 policy. Keras's ConvNeXt builds its
#: depthwise convolutions as grouped Conv2D, which TensorFlow runs ~5x slower on CPU; the reference
#: script's --dw-fix swaps in DepthwiseConv2D, so ICNT is always compared against that faster Keras.
KERAS_MODES = {"fp32": [], "bf16": ["--bf16"]}
KERAS_ARCH_FLAGS = {"icnt": ["--dw-fix"]}
UNAVAILABLE = "unavailable: no Keras interpreter given (--keras PYTHON); ratios need both stacks measured in one run"


@dataclass(frozen=True)
class KerasReference:
    """The papers' stack: a Python with TensorFlow/Keras and the reference benchmark script."""

    python: Path
    script: Path

    def command(self, arch: str, mode: str) -> list[str]:
        return [str(self.python), str(self.script), "--arch", arch, *KERAS_ARCH_FLAGS.get(arch, []), *KERAS_MODES[mode]]


def default_keras_script() -> Path | None:
    """``shared/bench/keras_ref/keras_bench.py`` beside the checkout, or ``$MAMMOCAD_KERAS_BENCH``."""
    env = os.environ.get("MAMMOCAD_KERAS_BENCH")
    if env:
        return Path(env)
    for base in (Path.cwd(), *Path.cwd().parents[:2]):
        candidate = base / "shared" / "bench" / "keras_ref" / "keras_bench.py"
        if candidate.is_file():
            return candidate
    candidate = Path.cwd().parent / "shared" / "bench" / "keras_ref" / "keras_bench.py"
    return candidate if candidate.is_file() else None


def _last_json_line(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def run_process(command: list[str], timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one measurement process; its last stdout line is the JSON result (or an ``error`` entry)."""
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s: {' '.join(command)}"}
    except OSError as exc:
        return {"error": f"cannot run {command[0]}: {exc}"}
    result = _last_json_line(done.stdout)
    if done.returncode != 0 or result is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {done.returncode}: {' | '.join(tail) or 'no output'}"}
    result["process_wall_s"] = round(time.perf_counter() - started, 1)
    return result


def _spread(values: list[float]) -> dict[str, float | int]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "n": len(values),
    }


def _summaries(results: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
    good = [r for r in results if "error" not in r]
    out: dict[str, Any] = {}
    for key in keys:
        values = [float(r[key]) for r in good if r.get(key) is not None]
        if values:
            out[key] = _spread(values)
    shares = [r.get("other_cpu_share", r.get("train_other_cpu_share")) for r in good]
    shares = [float(s) for s in shares if s is not None]
    if shares:
        out["other_cpu_share_max"] = max(shares)
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        out["errors"] = errors
    return out


def side_by_side(
    architectures: list[str] | None = None,
    repetitions: int = 2,
    keras: KerasReference | None = None,
    keras_modes: tuple[str, ...] = ("fp32", "bf16"),
    in_chans: int = 3,
    mammocad_options: list[str] | None = None,
    timeout: float = 1800.0,
    on_result: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Measure mammocad (and Keras, when given) on each architecture, ``repetitions`` times, alternating.

    Returns the JSON-ready document: per architecture the raw results, medians and spread of training
    img/s, batch-32 inference img/s (Keras: eager and ``tf.function``) and batch-1 latency, and the
    ratios mammocad / Keras (training vs each Keras mode; inference vs Keras's fastest ``tf.function``
    mode). ``mammocad_options`` are extra flags for the child (e.g. ``--precision 32-true``).
    """
    from mammocad.benchmarks.preprocess import machine_info

    names = architectures or list(ARCHITECTURES)
    unknown = [n for n in names if n not in ARCHITECTURES]
    if unknown:
        from mammocad.errors import ConfigError

        raise ConfigError(f"unknown benchmark architecture(s) {unknown}; choose from {sorted(ARCHITECTURES)}")
    doc: dict[str, Any] = {
        "benchmark": "train-and-infer side by side",
        "repetitions": repetitions,
        "train_batch": TRAIN_BATCH,
        "infer_batch": INFER_BATCH,
        "in_chans": in_chans,
        "machine": machine_info(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "keras": {"python": str(keras.python), "script": str(keras.script), "modes": list(keras_modes)}
        if keras
        else None,
        "models": {},
    }
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for name in names:
        raw: dict[str, list[dict[str, Any]]] = {
            "mammocad": [],
            **{f"keras_{m}": [] for m in (keras_modes if keras else ())},
        }
        for rep in range(repetitions):
            jobs: list[tuple[str, list[str]]] = [
                (
                    "mammocad",
                    [
                        sys.executable,
                        "-m",
                        "mammocad.benchmarks.measurement",
                        "--arch",
                        name,
                        "--in-chans",
                        str(in_chans),
                        *list(mammocad_options or []),
                    ],
                )
            ]
            keras_jobs = [(f"keras_{m}", keras.command(name, m)) for m in keras_modes] if keras else []
            # Alternate which framework goes first, so order effects (a warmer machine) cancel out.
            jobs = keras_jobs + jobs if rep % 2 == 0 else jobs + keras_jobs
            for label, command in jobs:
                result = run_process(command, timeout, env)
                result["repetition"] = rep
                raw[label].append(result)
                if on_result is not None:
                    on_result(f"{name} {label} #{rep + 1}", result)
                time.sleep(2)  # let the machine settle between processes
        doc["models"][name] = _compare(name, raw)
    return doc


def _compare(name: str, raw: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    entry: dict[str, Any] = {"input": ARCHITECTURES[name], "raw": raw}
    mammocad = _summaries(
        raw["mammocad"],
        (
            "train_img_per_s",
            "infer_b32_img_per_s",
            "infer_b32_img_per_s_ort_fp32",
            "infer_b32_img_per_s_ort_int8",
            "infer_b1_ms_p50",
            "data_wait_share",
        ),
    )
    entry["mammocad"] = mammocad
    keras_labels = [k for k in raw if k.startswith("keras_")]
    if not keras_labels:
        entry["ratios"] = UNAVAILABLE
        return entry
    ratios: dict[str, Any] = {}
    best_graph: float | None = None
    for label in keras_labels:
        summary = _summaries(
            raw[label],
            ("train_img_per_s", "infer_b32_img_per_s", "x_tffunc_infer_b32_img_per_s", "infer_b1_ms_p50"),
        )
        entry[label] = summary
        if "train_img_per_s" in summary and "train_img_per_s" in mammocad:
            ratios[f"train_vs_{label}"] = round(
                mammocad["train_img_per_s"]["median"] / summary["train_img_per_s"]["median"], 3
            )
        graph = summary.get("x_tffunc_infer_b32_img_per_s", {}).get("median")
        if graph is not None and (best_graph is None or graph > best_graph):
            best_graph = graph
    if best_graph:
        for key, value in mammocad.items():
            if key.startswith("infer_b32_img_per_s"):
                backend = key.removeprefix("infer_b32_img_per_s").lstrip("_") or "torch"
                ratios[f"infer_b32_{backend}_vs_keras_tffunc_best"] = round(value["median"] / best_graph, 3)
    entry["ratios"] = ratios or "unavailable: a side failed (see errors)"
    return entry


__all__ = [
    "ARCHITECTURES",
    "INFER_BATCH",
    "KERAS_ARCH_FLAGS",
    "KERAS_MODES",
    "NUM_CLASSES",
    "TRAIN_BATCH",
    "UNAVAILABLE",
    "KerasReference",
    "cpu_share",
    "default_keras_script",
    "measure",
    "measure_inference",
    "measure_training",
    "run_process",
    "side_by_side",
    "timed_calls",
]


if __name__ == "__main__":
    main()
