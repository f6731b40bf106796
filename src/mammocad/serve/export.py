"""Export a run's model to ONNX, with the preprocessing metadata a server needs, and check it.

``export_onnx(run_dir)`` writes ``RUN/export/`` (new; an existing export is never overwritten)::

    model.onnx       the classifier: input ``input`` (N, C, H, W) float32 in [0, 1] -> ``logits`` (N, classes)
    model.json       classes, preprocessing, input shape, model name/version, opset, weights' SHA-256,
                     and the measured largest |ONNX - PyTorch| logit difference

The exported graph normalises its own input (as the PyTorch model does), so the same [0, 1] tensor
goes to either runtime.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mammocad.errors import MammocadError
from mammocad.io import atomic_write_bytes, atomic_write_json
from mammocad.training.predict import LoadedRun, load_run

EXPORT_DIR = "export"
ONNX_FILE = "model.onnx"
META_FILE = "model.json"
#: The largest |ONNX - PyTorch| logit difference an export may have; larger fails the export.
TOLERANCE = 1e-4
OPSET = 17


@dataclass
class ExportResult:
    """Where the export went and how closely ONNX Runtime reproduces PyTorch on check inputs."""

    onnx_path: Path
    meta_path: Path
    max_abs_diff: float


def model_version(run: LoadedRun) -> str:
    """``<run name>@<first 12 hex of the weights' SHA-256>``: changes whenever the weights do."""
    return f"{run.run_dir.name}@{weights_digest(run)[:12]}"


def weights_digest(run: LoadedRun) -> str:
    """SHA-256 of the weights file the run serves."""
    which = run.meta["weights"].get("final", "best")
    path = run.run_dir / run.meta["weights"].get(which, f"checkpoints/{which}.safetensors")
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def onnx_bytes(model: torch.nn.Module, example: torch.Tensor, opset: int = OPSET) -> bytes:
    """The model as ONNX with a dynamic batch axis (TorchScript-based exporter: handles every timm backbone here)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo, which is slower and fails on some timm models.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            buffer,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    return buffer.getvalue()


def ort_session(model: bytes | str | Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session (all graph optimisations; ``threads`` intra-op threads, None = all cores)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def max_difference(run: LoadedRun, session: Any, inputs: torch.Tensor) -> float:
    """Largest |ONNX - PyTorch| over the logits of ``inputs`` (N, C, H, W)."""
    with torch.inference_mode():
        expected = run.model(inputs).float().numpy()
    got = session.run(["logits"], {"input": inputs.numpy().astype(np.float32)})[0]
    return float(np.abs(got - expected).max())


def export_onnx(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    which: str | None = None,
    opset: int = OPSET,
    check_inputs: torch.Tensor | None = None,
) -> ExportResult:
    """Export a run's model to ONNX and verify it against PyTorch.

    Args:
        run_dir: a trained run directory.
        out_dir: where to write (must not exist; default ``RUN/export``).
        which: ``best``/``last`` weights (None: the weights the run ended with).
        opset: ONNX opset.
        check_inputs: inputs (N, C, H, W) in [0, 1] compared between runtimes (None: 4 seeded random
            images, batch sizes 1 and 3 both checked).

    Returns:
        :class:`ExportResult`. Raises MammocadError when the output exists or the runtimes differ by
        more than :data:`TOLERANCE`.
    """
    run = load_run(run_dir, which)
    out = Path(out_dir) if out_dir is not None else run.run_dir / EXPORT_DIR
    if out.exists():
        raise MammocadError(f"{out} already exists; exports are never overwritten (choose another --out)")
    height, width = run.preprocess.image_size
    shape = (run.model.in_chans, height, width)
    example = torch.rand(1, *shape, generator=torch.Generator().manual_seed(0))
    model_bytes = onnx_bytes(run.model, example, opset)
    session = ort_session(model_bytes)
    if check_inputs is None:
        check_inputs = torch.rand(4, *shape, generator=torch.Generator().manual_seed(1))
    diff = max(max_difference(run, session, check_inputs[:1]), max_difference(run, session, check_inputs[1:4]))
    if not diff <= TOLERANCE:
        raise MammocadError(f"ONNX export of {run.run_dir} differs from PyTorch by {diff:.2e} (> {TOLERANCE:.0e})")
    meta = {
        "format": "onnx",
        "opset": opset,
        "input": {"name": "input", "shape": ["batch", *shape], "dtype": "float32", "range": [0.0, 1.0]},
        "output": {
            "name": "logits",
            "shape": ["batch", len(run.classes)],
            # raw logits: probabilities are softmax(logits / temperature) (the run's calibration.json at export)
            "apply": "softmax(logits / temperature)",
            "temperature": run.temperature,
            "indeterminate": run.thresholds,
        },
        "classes": run.classes,
        "task": run.meta.get("task"),
        "model": run.meta["model"],
        "preprocess": run.meta["preprocess"],
        "version": model_version(run),
        "weights_sha256": weights_digest(run),
        "max_abs_diff_vs_pytorch": diff,
        "torch": torch.__version__,
    }
    atomic_write_bytes(out / ONNX_FILE, model_bytes)
    atomic_write_json(out / META_FILE, meta)
    return ExportResult(out / ONNX_FILE, out / META_FILE, diff)


def read_export(run: LoadedRun, export_dir: str | Path | None = None) -> tuple[Path, dict[str, Any]] | None:
    """The run's ONNX export (path, metadata) if there is one that matches the weights it serves, else None.

    A stale export (the weights changed since) is ignored, so a server never answers with an old model.
    """
    folder = Path(export_dir) if export_dir is not None else run.run_dir / EXPORT_DIR
    onnx_path, meta_path = folder / ONNX_FILE, folder / META_FILE
    if not (onnx_path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if meta.get("weights_sha256") != weights_digest(run):
        return None
    return onnx_path, meta
