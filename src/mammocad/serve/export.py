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
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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
#: Model variants an export can hold, and their files in the export folder.
VARIANTS = ("fp32", "int8")
VARIANT_FILES = {"fp32": ONNX_FILE, "int8": "model.int8.onnx"}
#: Validation images (at most) that calibrate the int8 activation ranges.
CALIBRATION_IMAGES = 64
#: A variant is fit to serve when, on the run's evaluation split, its macro AUC is within this of fp32's...
PARITY_MAX_AUC_CHANGE = 0.01
#: ... and its top class agrees with fp32's on at least this share of the images.
PARITY_MIN_AGREEMENT = 0.98


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


def quantize_int8(source: str | Path, target: str | Path, calibration: np.ndarray, batch_size: int = 4) -> Path:
    """Write ``source`` (an fp32 ONNX model) as a static int8 QDQ model at ``target`` (atomically).

    Weights are quantised per output channel (int8, symmetric), activations per tensor (uint8) with
    ranges from running ``calibration`` (N, C, H, W float32 in [0, 1], preprocessed as the model's
    inputs are) through the fp32 model (min/max). The model is first run through ONNX Runtime's
    quantisation pre-processing (shape inference, graph optimisation) so that BatchNorm is folded
    into the convolutions before their weights are quantised. The node writing the graph's output
    stays in float (see :func:`_output_nodes`). Returns ``target``.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    images = np.ascontiguousarray(calibration, dtype=np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise MammocadError(f"int8 calibration needs a non-empty (N, C, H, W) batch, got shape {images.shape}")

    class Batches(CalibrationDataReader):
        """The calibration images a batch at a time; ``set_range`` picks batches (strided calibration)."""

        def __init__(self) -> None:
            self.all = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
            self.batches = iter(self.all)

        def __len__(self) -> int:
            return len(self.all)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.batches = iter(self.all[start_index:end_index])

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {"input": batch}

    target = Path(target)
    with tempfile.TemporaryDirectory(prefix="mammocad-quant-") as folder:
        prepared, quantised = Path(folder) / "prepared.onnx", Path(folder) / "int8.onnx"
        root = logging.getLogger()
        level = root.level
        # The quantiser logs "Axis 1 is out-of-range" for every LayerNorm weight (left per-tensor, as it should)
        # and "please consider pre-processing" (done here) on the root logger: noise for an export.
        root.setLevel(max(level, logging.ERROR))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
                quantize_static(
                    str(prepared),
                    str(quantised),
                    Batches(),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    nodes_to_exclude=_output_nodes(prepared),
                    # Ranges merged after every batch: the calibrator otherwise keeps every intermediate
                    # tensor of every image in memory (7 GB for ICNT on 64 images).
                    extra_options={"CalibStridedMinMax": 1},
                )
        finally:
            root.setLevel(level)
        atomic_write_bytes(target, quantised.read_bytes())
    return target


def _output_nodes(model_path: Path) -> list[str]:
    """Names of the nodes that write the graph's outputs (the classifier's last layer), kept in float.

    Quantising the logits would clip them to the calibration images' range: an image unlike those
    (or more confidently classified) would get logits clipped to the same value, i.e. equal
    probabilities. One small matmul in fp32 costs nothing measurable.
    """
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    outputs = {output.name for output in graph.output}
    return [node.name for node in graph.node if outputs.intersection(node.output) and node.name]


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
    variants: tuple[str, ...] = (),
    calibration_images: int = CALIBRATION_IMAGES,
    progress: Callable[[str], None] | None = None,
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
    _check_variants(run, variants)  # before anything is written
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
    meta["variants"] = {"fp32": {"file": ONNX_FILE, "sha256": hashlib.sha256(model_bytes).hexdigest(), "fit": True}}
    atomic_write_bytes(out / ONNX_FILE, model_bytes)
    atomic_write_json(out / META_FILE, meta)
    written = _write_variants(run, out, meta, variants, calibration_images, progress) if variants else {}
    return ExportResult(out / ONNX_FILE, out / META_FILE, diff, written)


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


def add_variants(
    run_dir: str | Path,
    variants: tuple[str, ...],
    export_dir: str | Path | None = None,
    which: str | None = None,
    calibration_images: int = CALIBRATION_IMAGES,
    progress: Callable[[str], None] | None = None,
) -> ExportResult:
    """Add ``variants`` (``int8``) to a run's current export, each checked for parity against fp32.

    The fp32 export and any variant already written are never overwritten (MammocadError instead);
    ``model.json`` is rewritten atomically with the new ``variants`` entries. Needs the run's dataset
    and preprocessing cache (calibration and parity images). Returns :class:`ExportResult` with the
    variants written.
    """
    run = load_run(run_dir, which)
    folder = Path(export_dir) if export_dir is not None else run.run_dir / EXPORT_DIR
    current = read_export(run, folder)
    if current is None:
        raise MammocadError(
            f"{folder} holds no current ONNX export of {run.run_dir} to add variants to; "
            f"export it first: mammocad export {run.run_dir} --onnx"
        )
    onnx_path, meta = current
    written = _write_variants(run, folder, meta, variants, calibration_images, progress)
    return ExportResult(onnx_path, folder / META_FILE, float(meta.get("max_abs_diff_vs_pytorch", 0.0)), written)


def _write_variants(
    run: LoadedRun,
    folder: Path,
    meta: dict[str, Any],
    variants: tuple[str, ...],
    calibration_images: int,
    progress: Callable[[str], None] | None,
) -> dict[str, dict[str, Any]]:
    """Quantise, check and record each of ``variants`` into ``folder`` (``meta``: its model.json, updated)."""
    step = progress or (lambda _message: None)
    wanted = _check_variants(run, variants)
    if not wanted:
        return {}
    existing = [folder / VARIANT_FILES[v] for v in wanted if (folder / VARIANT_FILES[v]).exists()]
    if existing:
        raise MammocadError(f"{existing[0]} already exists; exports are never overwritten (choose another --out)")
    step("reading the calibration and parity images from the preprocessing cache")
    calibration_split, calibration, parity_split, parity_part = _variant_data(run, calibration_images)
    fp32_session = ort_session(folder / ONNX_FILE)
    step(f"fp32 on {len(parity_part)} {parity_split} images (the parity reference)")
    labels = parity_part["target"].to_numpy(dtype=np.int64)
    reference = _split_probabilities(run, fp32_session, parity_part)
    written: dict[str, dict[str, Any]] = {}
    for variant in wanted:
        target = folder / VARIANT_FILES[variant]
        step(f"{variant}: quantising (calibrated on {len(calibration)} {calibration_split} images)")
        quantize_int8(folder / ONNX_FILE, target, calibration)
        step(f"{variant}: parity check on {len(parity_part)} {parity_split} images")
        probs = _split_probabilities(run, ort_session(target), parity_part)
        entry = {
            "file": target.name,
            "sha256": file_digest(target),
            "quantization": {
                "method": "onnxruntime static quantisation, QDQ format",
                "weights": "int8, per output channel, symmetric",
                "activations": "uint8, per tensor, min/max calibration",
                "calibration": {
                    "split": calibration_split,
                    "images": len(calibration),
                    "preprocessing": "the run's preprocessing cache (as training read it)",
                },
            },
            "parity": {"split": parity_split, **parity(labels, reference, probs, run.classes)},
        }
        entry["fit"] = entry["parity"]["passed"]
        meta.setdefault("variants", {})[variant] = entry
        atomic_write_json(folder / META_FILE, meta)
        written[variant] = entry
    return written


def _check_variants(run: LoadedRun, variants: tuple[str, ...]) -> list[str]:
    """The variants to write besides fp32 (in order, once each); MammocadError for an unknown one or a
    model that cannot have any."""
    wanted = [v for v in dict.fromkeys(variants) if v != "fp32"]
    unknown = [v for v in wanted if v not in VARIANTS]
    if unknown:
        raise MammocadError(f"unknown ONNX variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    if wanted and getattr(getattr(run.model, "head", None), "bilateral", False):
        raise MammocadError(
            f"{run.run_dir}: a bilateral lesion-aware model reads each film with its other breast's; its export "
            "has no quantised variants (serve the fp32 export)"
        )
    return wanted


def parity(labels: np.ndarray, reference: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """How a variant's probabilities ``probs`` (N, C) compare with fp32's ``reference`` on images of ``labels``.

    Returns ``n_images``, ``auc_macro_fp32``, ``auc_macro`` (mammocad's evaluation metric: one-vs-rest
    ROC AUC averaged over the classes where it is defined), ``auc_change`` (variant - fp32; None when
    the split cannot define an AUC), ``max_abs_prob_diff``, ``argmax_agreement`` (share of images with
    the same top class), the ``tolerance`` applied, ``passed`` and, when it failed, ``reasons``.
    """
    from mammocad.evaluation.metrics import classification_metrics

    auc_fp32 = classification_metrics(labels, reference, classes)["auc_macro"]
    auc = classification_metrics(labels, probs, classes)["auc_macro"]
    change = None if auc is None or auc_fp32 is None else float(auc) - float(auc_fp32)
    agreement = float((probs.argmax(axis=1) == reference.argmax(axis=1)).mean())
    reasons = []
    if change is not None and abs(change) > PARITY_MAX_AUC_CHANGE:
        reasons.append(f"macro AUC changed by {change:+.4f} (limit ±{PARITY_MAX_AUC_CHANGE})")
    if agreement < PARITY_MIN_AGREEMENT:
        reasons.append(f"top class agrees with fp32 on {agreement:.1%} of images (limit {PARITY_MIN_AGREEMENT:.0%})")
    result: dict[str, Any] = {
        "n_images": len(labels),
        "auc_macro_fp32": auc_fp32,
        "auc_macro": auc,
        "auc_change": change,
        "max_abs_prob_diff": float(np.abs(probs - reference).max()),
        "argmax_agreement": agreement,
        "tolerance": {"max_abs_auc_change": PARITY_MAX_AUC_CHANGE, "min_argmax_agreement": PARITY_MIN_AGREEMENT},
        "passed": not reasons,
    }
    if change is None:
        result["note"] = "AUC undefined on this split (a class is absent): judged on agreement alone"
    if reasons:
        result["reasons"] = reasons
    return result


def _variant_data(run: LoadedRun, calibration_images: int) -> tuple[str, np.ndarray, str, Any]:
    """(calibration split, calibration images, parity split, parity samples) from the run's own dataset.

    Calibration: at most ``calibration_images`` validation images (seeded sample; the training split
    when there is no validation split). Parity: the whole test split (validation when there is none).
    """
    from mammocad.errors import DatasetError
    from mammocad.evaluation.predictions import run_config, split_frames

    if calibration_images < 1:
        raise MammocadError(f"calibration needs at least 1 image, got {calibration_images}")
    try:
        parts = split_frames(run, run_config(run.run_dir), None, ("train", "val", "test"))
    except DatasetError as exc:
        raise MammocadError(
            f"{run.run_dir}: quantised variants calibrate on the run's validation images and are checked on its "
            f"test split, read from its dataset's preprocessing cache, which is unavailable: {exc}"
        ) from exc
    calibration_split = "val" if not parts["val"].empty else "train"
    parity_split = "test" if not parts["test"].empty else "val"
    if parts[calibration_split].empty or parts[parity_split].empty:
        raise MammocadError(f"{run.run_dir}: its dataset has no validation or test images to check a variant on")
    pool = parts[calibration_split]
    if len(pool) > calibration_images:
        pool = pool.sample(n=calibration_images, random_state=0).sort_index()
    calibration = np.concatenate(list(_split_batches(run, pool)))
    return calibration_split, calibration, parity_split, parts[parity_split]


def _split_batches(run: LoadedRun, part: Any, batch_size: int = 32) -> Iterator[np.ndarray]:
    """The cached images of ``part`` as float32 model inputs (N, C, H, W) in [0, 1], a batch at a time."""
    from mammocad.training.data import CachedImageDataset

    dataset = CachedImageDataset(part, run.model.in_chans, None, in_memory=False)
    for start in range(0, len(dataset), batch_size):
        stop = min(start + batch_size, len(dataset))
        yield torch.stack([dataset[i][0] for i in range(start, stop)]).float().numpy()


def _split_probabilities(run: LoadedRun, session: Any, part: Any) -> np.ndarray:
    """Served probabilities (the run's temperature applied) of a session on the cached images of ``part``."""
    logits = np.concatenate([session.run(["logits"], {"input": batch})[0] for batch in _split_batches(run, part)])
    shifted = logits / run.temperature
    shifted -= shifted.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
