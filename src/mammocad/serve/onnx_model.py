"""The model as ONNX (TorchScript-based exporter) and the ONNX Runtime sessions that run it."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mammocad.training.predict import LoadedRun

#: The ONNX opset exports are written with (``mammocad export --opset``).
OPSET = 17


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
    """An ONNX Runtime CPU session: all graph optimisations (constant folding, Conv+BN+activation fusion,
    NCHWc layouts), sequential execution, ``threads`` intra-op threads (None: one per physical core,
    which ONNX Runtime's own default also picks; hyper-threads only slow GEMM-bound convolutions)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
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
