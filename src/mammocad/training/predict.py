"""Inference from a run directory alone: load the model, preprocess any image, predict."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mammocad.data.images import DEFAULT_MAX_PIXELS, MammoImage, read_image
from mammocad.devices import inference_autocast
from mammocad.errors import ImageReadError, MammocadError
from mammocad.models import create_model
from mammocad.models.weights import load_weights
from mammocad.preprocess import PreprocessConfig, Preprocessed, preprocess_image, preprocess_roi
from mammocad.preprocess.checks import check_input
from mammocad.training.calibration import decide, read_calibration
from mammocad.training.run_dir import WEIGHT_KINDS, RunDir


@dataclass
class LoadedRun:
    """A trained model ready for inference, with what it needs to preprocess inputs."""

    run_dir: Path
    model: torch.nn.Module
    classes: list[str]
    preprocess: PreprocessConfig
    meta: dict[str, Any]
    #: The run's calibration (see :mod:`mammocad.training.calibration`): ``temperature``,
    #: ``indeterminate`` thresholds, ``calibrated``; T = 1 with a ``note`` for runs without one.
    calibration: dict[str, Any] = field(default_factory=lambda: read_calibration(Path("/nonexistent")))

    @property
    def temperature(self) -> float:
        return float(self.calibration.get("temperature", 1.0))

    @property
    def thresholds(self) -> dict[str, float]:
        return dict(self.calibration["indeterminate"])

    def label(self, probs: np.ndarray) -> str:
        """The answer to report for one image's probabilities: its top class, or ``indeterminate``."""
        return decide(probs, self.classes, self.thresholds)


def run_weights(run_dir: Path, meta: dict[str, Any], which: str | None = None) -> Path:
    """The weights file ``load_run`` loads (``meta`` is the run's model.json); MammocadError when it is missing.

    ``which``: ``best``/``last``; None = the weights the run ended with.
    """
    which = which or meta["weights"].get("final", "best")
    if which not in WEIGHT_KINDS:
        raise MammocadError(f"unknown weights {which!r}; choose best or last")
    weights = RunDir(run_dir).weights_path(which, meta)
    if not weights.exists():
        from mammocad.training.status import no_checkpoint_message

        explained = no_checkpoint_message(run_dir, which)  # a killed or failed run says so, with the fix
        if explained is not None:
            raise MammocadError(explained)
        raise MammocadError(
            f"run {run_dir} has no {which} weights ({weights.name}): no {which} checkpoint was written; "
            "was its training finished?"
        )
    return weights


def load_run(run_dir: str | Path, which: str | None = None) -> LoadedRun:
    """Rebuild the model of a run directory in eval mode.

    ``which``: ``best`` (lowest validation loss) or ``last`` weights; None = the weights the run ended
    with (``best`` unless it was trained with ``train.restore_best_weights: false``).
    """
    run_dir = Path(run_dir)
    meta = RunDir(run_dir).require_model()
    from mammocad.training.status import reconcile_status

    reconcile_status(run_dir, "predict/evaluate")  # a run whose training process was killed is marked so
    weights = run_weights(run_dir, meta, which)
    spec = dict(meta["model"])
    model = create_model(
        spec.pop("name"),
        num_classes=spec.pop("num_classes"),
        in_chans=spec.pop("in_chans"),
        pretrained=False,
        head=spec.pop("head", None),
        drop_rate=spec.pop("drop_rate", 0.5),
        se_reduction=spec.pop("se_reduction", 16),
        batch_norm=spec.pop("batch_norm", True),
        **spec,  # input_size and the architecture's own options (timm keywords, lesion_aware's settings)
    )
    load_weights(model, weights)
    model.eval()
    classes = list(meta["classes"])
    return LoadedRun(run_dir, model, classes, PreprocessConfig(**meta["preprocess"]), meta, read_calibration(run_dir))


Box = tuple[int, int, int, int]


def prepare(run: LoadedRun, path: str | Path, lesion_box: Box | None = None) -> torch.Tensor:
    """Read and preprocess one image exactly as the training cache did; the model input (C, H, W).

    A run trained on mass-centred ROIs (``preprocess.mode: roi``) needs the lesion's box
    ``(x0, y0, x1, y1)`` in the original image's pixels; a full-image run ignores it.
    """
    return prepare_image(run, path, lesion_box)[0]


def prepare_image(
    run: LoadedRun,
    path: str | Path,
    lesion_box: Box | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    budget_mb: float | None = None,
) -> tuple[torch.Tensor, Preprocessed, MammoImage]:
    """:func:`prepare`, also returning the preprocessing result (pixels, geometry) and the decoded image.

    Images over ``max_pixels``, or needing more memory than the decode budget ``budget_mb`` (see
    :func:`~mammocad.data.decode_budget.decode_budget_mb`), are refused from their header, before decoding."""
    image = read_image(path, max_pixels=max_pixels, budget_mb=budget_mb)
    check_input(image, str(path))  # no breast, not a mammogram: refused (InputRefused), never classified
    if run.preprocess.mode == "roi":
        if lesion_box is None:
            raise MammocadError(
                f"{run.run_dir} was trained on mass-centred ROIs: give each image's lesion box "
                "(x0,y0,x1,y1 in original pixels; CLI: --box)"
            )
        result = preprocess_roi(image, run.preprocess, lesion_box)
    else:
        result = preprocess_image(image, run.preprocess)
    return pixels_to_input(result.pixels, run.model.in_chans), result, image


def pixels_to_input(pixels: np.ndarray, in_chans: int) -> torch.Tensor:
    """Cached/preprocessed pixels (uint8 or uint16, H x W) -> the float model input (in_chans, H, W) in [0, 1]."""
    scale = 1.0 / (65535.0 if pixels.dtype == np.uint16 else 255.0)
    tensor = torch.from_numpy(pixels.astype(np.float32) * scale)[None]
    return tensor.expand(in_chans, -1, -1)


@torch.inference_mode()
def predict_tensors(run: LoadedRun, batch: torch.Tensor) -> np.ndarray:
    """Calibrated class probabilities for a batch of preprocessed inputs (N x C x H x W in [0, 1]).

    bf16 autocast where the CPU has native bf16 (:func:`mammocad.devices.inference_dtype`), as served.
    """
    with inference_autocast():
        logits = run.model(batch)
    return torch.softmax(logits.float() / run.temperature, dim=1).numpy()


def predict_paths(
    run: LoadedRun, paths: list[str | Path], batch_size: int = 16, lesion_boxes: list[Box] | None = None
) -> pd.DataFrame:
    """Per-image calibrated probabilities, one row per path in input order.

    Columns: ``path``; ``label``, the answer to report (the top class, or ``indeterminate`` when the top
    probability or its margin is below the run's thresholds); ``prediction``, the top class;
    ``p_<class>`` for every class; ``caveat`` (what the model is not fit for, e.g. a synthetic-trained
    run; None when there is nothing to say); ``refused`` and ``error``. Unreadable files (missing,
    corrupt, truncated, over the decode budget, or failing in a decoder) and refused inputs (no breast
    found, not a mammogram: ``refused`` True) get the reason in ``error`` and no prediction; the
    others go on. ``lesion_boxes`` (one per path) are needed by ROI-trained runs.
    """
    from mammocad.preprocess.checks import InputRefused
    from mammocad.training.model_card import model_card, prediction_caveat

    if lesion_boxes is not None and len(lesion_boxes) != len(paths):
        raise MammocadError(f"{len(lesion_boxes)} lesion boxes for {len(paths)} images")
    caveat = prediction_caveat(model_card(run.run_dir))
    rows: list[dict[str, Any]] = []
    pending: list[tuple[int, str, torch.Tensor]] = []

    def flush() -> None:
        if not pending:
            return
        probs = predict_tensors(run, torch.stack([t for _, _, t in pending]))
        for (order, name, _), p in zip(pending, probs, strict=True):
            row: dict[str, Any] = {
                "order": order,
                "path": name,
                "label": run.label(p),
                "prediction": run.classes[int(p.argmax())],
                "caveat": caveat,
                "refused": False,
                "error": None,
            }
            row.update({f"p_{c}": float(v) for c, v in zip(run.classes, p, strict=True)})
            rows.append(row)
        pending.clear()

    for order, path in enumerate(paths):
        try:
            box = lesion_boxes[order] if lesion_boxes is not None else None
            pending.append((order, str(path), prepare(run, path, box)))
        except ImageReadError as exc:
            refused = isinstance(exc, InputRefused)
            rows.append(
                {
                    "order": order,
                    "path": str(path),
                    "label": None,
                    "prediction": None,
                    "refused": refused,
                    "error": exc.reason,
                }
            )
        if len(pending) >= batch_size:
            flush()
    flush()
    columns = ["path", "label", "prediction", *(f"p_{c}" for c in run.classes), "caveat", "refused", "error"]
    return pd.DataFrame(rows).sort_values("order").reindex(columns=columns).reset_index(drop=True)
