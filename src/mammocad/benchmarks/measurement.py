"""One mammocad speed measurement, in its own process: training and inference images/s of one architecture.

Training runs the way ``mammocad train`` does by default (its Lightning module, optimizer, precision and
memory format; batch 16, in-memory random data, like the papers' Keras script); inference runs the way
the server does (eval mode, channels-last, bf16 autocast where the CPU has native bf16).
:func:`mammocad.benchmarks.training.side_by_side` starts it once per repetition.

``python -m mammocad.benchmarks.measurement --arch icnt`` runs one measurement and prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

from mammocad.benchmarks.timing import cpu_share, timed_calls

#: Benchmark architectures and their input side, as in the Keras reference script.
ARCHITECTURES = {"baseline_cnn": 224, "icnt": 224, "iiv3": 299}
NUM_CLASSES = 3
TRAIN_BATCH = 16
INFER_BATCH = 32


def measure_training(
    arch: str,
    in_chans: int = 3,
    precision: str = "auto",
    channels_last: bool = True,
    fused_adam: bool = True,
    compile_model: bool = False,
    warmup: int = 3,
    min_steps: int = 10,
    min_seconds: float = 20.0,
    batch: int = TRAIN_BATCH,
) -> dict[str, Any]:
    """Training images/s of ``arch`` through mammocad's Lightning module, as ``mammocad train`` runs it.

    The step is timed from the trainer's batch-start to batch-end hooks (forward, backward, optimizer),
    like Keras's ``train_on_batch``; the data wait between steps is reported separately.
    """
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, Dataset

    from mammocad.devices import training_precision
    from mammocad.models import create_model
    from mammocad.training.config import TrainConfig
    from mammocad.training.module import ClassifierModule

    side = ARCHITECTURES.get(arch, 224)
    torch.manual_seed(0)
    config = TrainConfig(precision=precision, channels_last=channels_last)
    resolved = training_precision(config.precision, "cpu")
    model = create_model(arch, num_classes=NUM_CLASSES, in_chans=in_chans)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile_model:
        model.compile()  # as train.compile does; the compile time lands in train_warmup_s
    images = torch.rand(batch, in_chans, side, side)
    labels = torch.randint(0, NUM_CLASSES, (batch,))
    total_steps = warmup + 10_000

    class Repeated(Dataset):  # the same batch every step, as the Keras script does
        def __len__(self) -> int:
            return batch * total_steps

        def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
            return images[index % batch], labels[index % batch]

    class Module(ClassifierModule):
        def configure_optimizers(self) -> Any:  # no validation here, so no plateau scheduler
            if fused_adam:
                from mammocad.training.module import make_optimizer

                return make_optimizer(self.model, self.config)
            params = [p for p in self.model.parameters() if p.requires_grad]
            return torch.optim.Adam(params, lr=self.config.lr, weight_decay=self.config.weight_decay)

    class Timer(L.Callback):
        def __init__(self) -> None:
            self.step_starts: list[float] = []
            self.step_seconds: list[float] = []
            self.waits: list[float] = []
            self.last_end: float | None = None
            self.timed_start: float | None = None

        def on_train_batch_start(self, trainer: L.Trainer, *_: Any) -> None:
            now = time.perf_counter()
            if self.last_end is not None:
                self.waits.append(now - self.last_end)
            self.step_starts.append(now)

        def on_train_batch_end(self, trainer: L.Trainer, *_: Any) -> None:
            now = time.perf_counter()
            self.last_end = now
            self.step_seconds.append(now - self.step_starts[-1])
            done = len(self.step_seconds)
            if done == warmup:
                self.timed_start = now
            elif self.timed_start is not None and done - warmup >= min_steps and now - self.timed_start >= min_seconds:
                trainer.should_stop = True

    timer = Timer()
    module = Module(model, config, class_weights=None)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        precision=resolved,
        max_epochs=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    loader = DataLoader(Repeated(), batch_size=batch, shuffle=False)
    with cpu_share() as load:
        trainer.fit(module, loader)
    timed = timer.step_seconds[warmup:]
    waits = timer.waits[warmup:]
    return {
        "train_img_per_s": round(batch * len(timed) / sum(timed), 3),
        "train_steps_timed": len(timed),
        "train_step_s_median": round(statistics.median(timed), 4),
        "train_warmup_s": round(sum(timer.step_seconds[:warmup]), 2),
        "data_wait_share": round(sum(waits) / (sum(waits) + sum(timed)), 4),
        "precision": resolved,
        "channels_last": channels_last,
        "fused_adam": fused_adam,
        "compiled": compile_model,
        **{f"train_{k}": v for k, v in load.items()},
    }


def measure_inference(
    arch: str,
    in_chans: int = 3,
    precision: str = "auto",
    channels_last: bool = True,
    backends: tuple[str, ...] = ("torch", "ort_fp32", "ort_int8"),
    warmup: int = 2,
    min_batches: int = 5,
    min_seconds: float = 15.0,
    latency_calls: int = 30,
    latency_seconds: float = 5.0,
) -> dict[str, Any]:
    """Batch-32 images/s and batch-1 latency of ``arch`` on the server's backends.

    ``torch`` is the server's PyTorch path (eval, channels-last, bf16 autocast where the CPU has native
    bf16); ``ort_fp32`` / ``ort_int8`` are ONNX Runtime on the exported graph and its static int8 QDQ
    variant (random calibration: speed does not depend on it; a real export calibrates on validation
    images and serves int8 only when its accuracy-parity check passes). Keys: ``infer_b32_img_per_s``
    (torch), ``infer_b32_img_per_s_<backend>`` for each ONNX backend, and the batch-1 latency of torch.
    """
    import numpy as np
    import torch

    from mammocad.benchmarks.inference import ort_session
    from mammocad.devices import inference_autocast, inference_dtype, precision_label
    from mammocad.models import create_model

    side = ARCHITECTURES.get(arch, 224)
    torch.manual_seed(0)
    model = create_model(arch, num_classes=NUM_CLASSES, in_chans=in_chans).eval()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    dtype = {"auto": inference_dtype("cpu"), "bf16": torch.bfloat16, "fp32": None}[precision]
    big = torch.rand(INFER_BATCH, in_chans, side, side).contiguous(memory_format=memory_format)
    one = torch.rand(1, in_chans, side, side).contiguous(memory_format=memory_format)

    def run(batch: torch.Tensor) -> None:
        with torch.inference_mode(), inference_autocast("cpu", dtype):
            model(batch).float().numpy()

    result: dict[str, Any] = {"infer_precision": precision_label(dtype)}
    with cpu_share() as load:
        if "torch" in backends:
            for _ in range(warmup):
                run(big)
            b32 = timed_calls(lambda: run(big), min_batches, min_seconds)
            for _ in range(3):
                run(one)
            b1 = sorted(timed_calls(lambda: run(one), latency_calls, latency_seconds))
            result.update(
                {
                    "infer_b32_img_per_s": round(INFER_BATCH * len(b32) / sum(b32), 3),
                    "infer_b1_ms_p50": round(statistics.median(b1) * 1000, 2),
                    "infer_b1_ms_p95": round(b1[min(len(b1) - 1, int(0.95 * len(b1)))] * 1000, 2),
                }
            )
        batch = np.ascontiguousarray(big.numpy())
        for backend in (b for b in backends if b.startswith("ort_")):
            runner = ort_session(model.to(memory_format=torch.contiguous_format), side, in_chans, backend[4:])
            for _ in range(warmup):
                runner(batch)
            seconds = timed_calls(lambda runner=runner: runner(batch), min_batches, min_seconds)
            result[f"infer_b32_img_per_s_{backend}"] = round(INFER_BATCH * len(seconds) / sum(seconds), 3)
    result.update({f"infer_{k}": v for k, v in load.items()})
    return result


def measure(arch: str, in_chans: int = 3, **options: Any) -> dict[str, Any]:
    """One architecture's training and inference measurement, with what it ran on."""
    import platform

    import torch

    train_keys = ("precision", "channels_last", "fused_adam", "compile_model", "warmup", "min_steps", "min_seconds")
    train_options = {k: v for k, v in options.items() if k in train_keys}
    infer_options = {k: v for k, v in options.items() if k in ("channels_last", "backends")}
    if options.get("min_infer_seconds") is not None:
        infer_options.update(min_seconds=options["min_infer_seconds"], latency_seconds=options["min_infer_seconds"] / 3)
        infer_options.update(min_batches=2, latency_calls=5)
    if options.get("infer_precision"):
        infer_options["precision"] = options["infer_precision"]
    result: dict[str, Any] = {
        "framework": "mammocad",
        "arch": arch,
        "input": ARCHITECTURES.get(arch, 224),
        "in_chans": in_chans,
        "loadavg_at_start": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    if options.get("train", True):
        result.update(measure_training(arch, in_chans, **train_options))
    if options.get("infer", True):
        result.update(measure_inference(arch, in_chans, **infer_options))
    result.update(
        {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "python": platform.python_version(),
        }
    )
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="One mammocad speed measurement; prints one JSON line.")
    parser.add_argument("--arch", required=True, choices=sorted(ARCHITECTURES))
    parser.add_argument("--in-chans", type=int, default=3)
    parser.add_argument("--precision", default="auto", help="training precision (Lightning), default auto")
    parser.add_argument("--infer-precision", default="auto", choices=("auto", "bf16", "fp32"))
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--no-fused-adam", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (train.compile)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps")
    parser.add_argument("--min-steps", type=int, default=10, help="timed training steps, at least")
    parser.add_argument("--min-seconds", type=float, default=20.0, help="timed training seconds, at least")
    parser.add_argument("--min-infer-seconds", type=float, default=None, help="shorter inference timing (smoke)")
    parser.add_argument(
        "--infer-backends", default="torch,ort_fp32,ort_int8", help="comma-separated: torch, ort_fp32, ort_int8"
    )
    parser.add_argument("--no-train", action="store_true")
    parser.add_argument("--no-infer", action="store_true")
    args = parser.parse_args(argv)
    import logging
    import warnings

    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    result = measure(
        args.arch,
        args.in_chans,
        precision=args.precision,
        infer_precision=args.infer_precision,
        channels_last=not args.no_channels_last,
        fused_adam=not args.no_fused_adam,
        compile_model=args.compile,
        backends=tuple(b for b in args.infer_backends.split(",") if b),
        warmup=args.warmup,
        min_steps=args.min_steps,
        min_seconds=args.min_seconds,
        min_infer_seconds=args.min_infer_seconds,
        train=not args.no_train,
        infer=not args.no_infer,
    )
    print(json.dumps(result), flush=True)


__all__ = [
    "ARCHITECTURES",
    "INFER_BATCH",
    "NUM_CLASSES",
    "TRAIN_BATCH",
    "main",
    "measure",
    "measure_inference",
    "measure_training",
]


if __name__ == "__main__":
    main()
