"""Export a run's model to ONNX, with the preprocessing metadata a server needs, and check it.

``export_onnx(run_dir)`` writes ``RUN/export/`` (new; an existing export is never overwritten)::

    model.onnx       the classifier: input ``input`` (N, C, H, W) float32 in [0, 1] -> ``logits`` (N, classes)
    model.json       classes, preprocessing, input shape, model name/version, opset, weights' SHA-256,
                     the measured largest |ONNX - PyTorch| logit difference, and ``variants``
    model.int8.onnx  (``variants=("int8",)``, ``mammocad export RUN --int8``) static int8 QDQ model

The exported graph normalises its own input (as the PyTorch model does), so the same [0, 1] tensor
goes to either runtime.

Variants (:data:`VARIANTS`): ``fp32`` is the export itself; ``int8`` is quantised with per-channel
int8 weights and uint8 activations calibrated on (at most :data:`CALIBRATION_IMAGES` of) the run's
validation images, read from the preprocessing cache training read. Every variant is then checked
against fp32 on the run's test split (validation when there is none): macro AUC, its change, the
largest probability change and argmax agreement go to ``model.json["variants"][name]["parity"]``,
with ``fit`` False when the change is over :data:`PARITY_MAX_AUC_CHANGE` or the agreement under
:data:`PARITY_MIN_AGREEMENT`. An unfit variant stays on disk (for inspection) and is never served
(:func:`variant_path` refuses it). fp16 is not offered: ONNX Runtime's CPU provider runs the
fp16 graph slower than fp32 (it casts around most kernels; measured in docs/serving.md).

This module exports and finds exports; :mod:`~mammocad.serve.onnx_model` converts the model and runs
ONNX Runtime, :mod:`~mammocad.serve.quantize` writes and checks the variants, and
:mod:`~mammocad.serve.export_files` names the folder's files. Their public names stay importable from here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mammocad.errors import MammocadError
from mammocad.io import atomic_write_bytes, atomic_write_json
from mammocad.progress import ProgressFn
from mammocad.serve.export_files import (
    EXPORT_DIR,
    INT8_FILE,
    META_FILE,
    ONNX_FILE,
    VARIANT_FILES,
    VARIANTS,
    default_export_dir,
    file_digest,
)
from mammocad.serve.onnx_model import OPSET, max_difference, onnx_bytes, ort_session
from mammocad.serve.quantize import (
    CALIBRATION_IMAGES,
    PARITY_MAX_AUC_CHANGE,
    PARITY_MIN_AGREEMENT,
    check_variants,
    parity,
    quantize_int8,
    write_variants,
)
from mammocad.training.predict import LoadedRun, load_run
from mammocad.training.run_dir import RunDir

#: The largest |ONNX - PyTorch| logit difference an export may have; larger fails the export.
TOLERANCE = 1e-4


@dataclass
class ExportResult:
    """Where the export went, how closely ONNX Runtime reproduces PyTorch on check inputs, and the variants
    written (name -> their ``model.json`` entry: file, quantisation, parity, fit)."""

    onnx_path: Path
    meta_path: Path
    max_abs_diff: float
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)


def model_version(run: LoadedRun) -> str:
    """``<run name>@<first 12 hex of the weights' SHA-256>``: changes whenever the weights do."""
    return f"{run.run_dir.name}@{weights_digest(run)[:12]}"


def weights_digest(run: LoadedRun) -> str:
    """SHA-256 of the weights file the run serves."""
    which = run.meta["weights"].get("final", "best")
    return file_digest(RunDir(run.run_dir).weights_path(which, run.meta))


def export_onnx(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    which: str | None = None,
    opset: int = OPSET,
    check_inputs: torch.Tensor | None = None,
    variants: tuple[str, ...] = (),
    calibration_images: int = CALIBRATION_IMAGES,
    progress: ProgressFn | None = None,
) -> ExportResult:
    """Export a run's model to ONNX and verify it against PyTorch (and write and check ``variants``).

    Args:
        run_dir: a trained run directory.
        out_dir: where to write (must not exist; default ``RUN/export``).
        which: ``best``/``last`` weights (None: the weights the run ended with).
        opset: ONNX opset.
        check_inputs: inputs (N, C, H, W) in [0, 1] compared between runtimes (None: 4 seeded random
            images, batch sizes 1 and 3 both checked).
        variants: extra variants to write (``int8``; see :func:`add_variants`, which needs the run's
            dataset and preprocessing cache).
        calibration_images: at most this many validation images calibrate an int8 variant.
        progress: called with a short message as each variant step starts.

    Returns:
        :class:`ExportResult`. Raises MammocadError when the output exists or the runtimes differ by
        more than :data:`TOLERANCE`.
    """
    run = load_run(run_dir, which)
    check_variants(run, variants)  # before anything is written
    out = Path(out_dir) if out_dir is not None else default_export_dir(run.run_dir)
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
    meta["variants"] = {"fp32": {"file": ONNX_FILE, "sha256": hashlib.sha256(model_bytes).hexdigest(), "fit": True}}
    atomic_write_bytes(out / ONNX_FILE, model_bytes)
    atomic_write_json(out / META_FILE, meta)
    written = write_variants(run, out, meta, variants, calibration_images, progress) if variants else {}
    return ExportResult(out / ONNX_FILE, out / META_FILE, diff, written)


def read_export(run: LoadedRun, export_dir: str | Path | None = None) -> tuple[Path, dict[str, Any]] | None:
    """The run's ONNX export (path, metadata) if there is one that matches the weights it serves, else None.

    A stale export (the weights changed since) is ignored, so a server never answers with an old model.
    """
    folder = Path(export_dir) if export_dir is not None else default_export_dir(run.run_dir)
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


def add_variants(
    run_dir: str | Path,
    variants: tuple[str, ...],
    export_dir: str | Path | None = None,
    which: str | None = None,
    calibration_images: int = CALIBRATION_IMAGES,
    progress: ProgressFn | None = None,
) -> ExportResult:
    """Add ``variants`` (``int8``) to a run's current export, each checked for parity against fp32.

    The fp32 export and any variant already written are never overwritten (MammocadError instead);
    ``model.json`` is rewritten atomically with the new ``variants`` entries. Needs the run's dataset
    and preprocessing cache (calibration and parity images). Returns :class:`ExportResult` with the
    variants written.
    """
    run = load_run(run_dir, which)
    folder = Path(export_dir) if export_dir is not None else default_export_dir(run.run_dir)
    current = read_export(run, folder)
    if current is None:
        raise MammocadError(
            f"{folder} holds no current ONNX export of {run.run_dir} to add variants to; "
            f"export it first: mammocad export {run.run_dir} --onnx"
        )
    onnx_path, meta = current
    written = write_variants(run, folder, meta, variants, calibration_images, progress)
    return ExportResult(onnx_path, folder / META_FILE, float(meta.get("max_abs_diff_vs_pytorch", 0.0)), written)


def variant_path(folder: str | Path, meta: dict[str, Any], variant: str) -> Path:
    """The ONNX file to serve for ``variant`` of an export (``meta``: its model.json).

    Raises MammocadError when the variant is unknown, was never written (with the command that
    writes it), failed its parity check (with the numbers), or its file is missing or changed since.
    """
    if variant not in VARIANTS:
        raise MammocadError(f"unknown ONNX variant {variant!r}; choose from {', '.join(VARIANTS)}")
    folder = Path(folder)
    entry = meta.get("variants", {}).get(variant)
    if entry is None:
        if variant == "fp32":  # an export from before variants were recorded
            return folder / ONNX_FILE
        raise MammocadError(
            f"{folder} has no {variant} variant; write it with: mammocad export RUN --{variant} "
            "(adds it to the current export)"
        )
    if not entry.get("fit", False):
        numbers = entry.get("parity", {})
        why = "; ".join(numbers.get("reasons", [])) or "no passing parity check recorded"
        raise MammocadError(
            f"the {variant} variant in {folder} failed its parity check against fp32 on "
            f"{numbers.get('n_images', '?')} {numbers.get('split', '')} images ({why}); it is not served"
        )
    path = folder / entry["file"]
    if not path.is_file():
        raise MammocadError(f"{path} is missing; its {variant} variant cannot be served")
    if "sha256" in entry and file_digest(path) != entry["sha256"]:
        raise MammocadError(f"{path} changed since its parity check (SHA-256 differs); export the variant again")
    return path


__all__ = [
    "CALIBRATION_IMAGES",
    "EXPORT_DIR",
    "INT8_FILE",
    "META_FILE",
    "ONNX_FILE",
    "OPSET",
    "PARITY_MAX_AUC_CHANGE",
    "PARITY_MIN_AGREEMENT",
    "TOLERANCE",
    "VARIANTS",
    "VARIANT_FILES",
    "ExportResult",
    "add_variants",
    "default_export_dir",
    "export_onnx",
    "file_digest",
    "max_difference",
    "model_version",
    "onnx_bytes",
    "ort_session",
    "parity",
    "quantize_int8",
    "read_export",
    "variant_path",
    "weights_digest",
]
