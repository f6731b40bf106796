"""Quantised variants of an ONNX export: static int8 quantisation calibrated on the run's validation
images, and each variant's parity check against fp32 on its test split (what decides it may be served)."""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mammocad.errors import MammocadError
from mammocad.io import atomic_write_bytes, atomic_write_json
from mammocad.progress import ProgressFn
from mammocad.serve.export_files import META_FILE, ONNX_FILE, VARIANT_FILES, VARIANTS, file_digest
from mammocad.serve.onnx_model import ort_session
from mammocad.training.predict import LoadedRun

#: Validation images (at most) that calibrate the int8 activation ranges.
CALIBRATION_IMAGES = 64
#: A variant is fit to serve when, on the run's evaluation split, its macro AUC is within this of fp32's...
PARITY_MAX_AUC_CHANGE = 0.01
#: ... and its top class agrees with fp32's on at least this share of the images.
PARITY_MIN_AGREEMENT = 0.98


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


def write_variants(
    run: LoadedRun,
    folder: Path,
    meta: dict[str, Any],
    variants: tuple[str, ...],
    calibration_images: int,
    progress: ProgressFn | None,
) -> dict[str, dict[str, Any]]:
    """Quantise, check and record each of ``variants`` into ``folder`` (``meta``: its model.json, updated)."""
    step = progress or (lambda _message: None)
    wanted = check_variants(run, variants)
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


def check_variants(run: LoadedRun, variants: tuple[str, ...]) -> list[str]:
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
