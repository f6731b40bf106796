"""What the machine's processors can do fast, and the numeric precision mammocad picks from it.

bf16 autocast (fp32 master weights, bf16 matmuls and convolutions) roughly doubles CPU training and
inference speed where the CPU multiplies bf16 natively (AVX-512 BF16, AMX); elsewhere oneDNN emulates
bf16 and it is slower than fp32, so ``auto`` keeps fp32 there. ``MAMMOCAD_CPU_BF16=0|1`` overrides the
detection (e.g. to compare both on one machine).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from pathlib import Path

import torch

#: CPU feature flags (as /proc/cpuinfo spells them) that mean native bf16 multiply-accumulate.
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
_OVERRIDE_ENV = "MAMMOCAD_CPU_BF16"


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (Linux); empty where that file does not exist."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def cpu_has_fast_bf16() -> bool:
    """True when the CPU multiplies bf16 natively and oneDNN can use it (or ``MAMMOCAD_CPU_BF16=1``)."""
    override = os.environ.get(_OVERRIDE_ENV, "").strip()
    if override in ("0", "1"):
        return override == "1"
    return bool(cpu_flags() & BF16_CPU_FLAGS) and torch.backends.mkldnn.is_available()


def uses_cuda(accelerator: str) -> bool:
    """Whether a Lightning ``accelerator`` setting ends up on a CUDA GPU on this machine."""
    return accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def training_precision(requested: str, accelerator: str = "auto") -> str:
    """The Lightning precision a run trains in.

    ``auto``: ``bf16-mixed`` on CUDA GPUs and on CPUs with native bf16 (fp32 master weights, the
    optimizer steps in fp32), ``32-true`` elsewhere. Any other value is returned unchanged.
    """
    if requested != "auto":
        return requested
    if uses_cuda(accelerator):
        return "bf16-mixed"
    return "bf16-mixed" if cpu_has_fast_bf16() else "32-true"


def inference_dtype(device: torch.device | str = "cpu") -> torch.dtype | None:
    """The autocast dtype for inference on ``device`` (bf16 where it is native), or None for fp32."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.bfloat16
    if kind == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return None


@contextlib.contextmanager
def inference_autocast(device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> Iterator[None]:
    """Autocast for a forward pass on ``device`` in ``dtype`` (default :func:`inference_dtype`).

    Outputs of autocast regions may be bf16: callers convert logits with ``.float()``.
    """
    dtype = dtype if dtype is not None else inference_dtype(device)
    if dtype is None:
        yield
        return
    with torch.autocast(torch.device(device).type, dtype=dtype):
        yield


def precision_label(dtype: torch.dtype | None) -> str:
    """``bf16`` / ``fp16`` / ``fp32``: how reports name an inference dtype."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32") if dtype is not None else "fp32"
