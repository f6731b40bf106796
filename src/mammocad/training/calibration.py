"""Calibrated probabilities and the indeterminate answer.

Temperature scaling: one scalar T > 0 divides the model's logits before the softmax,
``p = softmax(z / T)``. T is fitted at the end of training on the validation split (minimising the
negative log-likelihood over log T with LBFGS) and stored in ``RUN/calibration.json``::

    {"temperature": 1.7, "fitted_on": "val", "n_val": 24,
     "nll_before": 0.92, "nll_after": 0.81, "ece_before": 0.14, "ece_after": 0.05,
     "indeterminate": {"min_probability": 0.5, "min_margin": 0.1}}

Every path that produces probabilities from a run (``predict``, ``evaluate``, the API, the dashboard,
the ONNX export) applies it; a run without ``calibration.json`` uses T = 1 and says so
(:func:`read_calibration` returns a ``note``). ``mammocad calibrate RUN`` (re)fits it
(:mod:`mammocad.training.recalibration` scores the val images for both fits).

Indeterminate: a prediction whose top probability is below ``min_probability`` or whose margin over
the second class is below ``min_margin`` is labelled ``indeterminate`` (the probabilities are still
reported). The thresholds come from the run config's ``predict:`` section at training time and are
stored in ``calibration.json``; edit them there (or refit with ``mammocad calibrate --min-probability
--min-margin``) to change them for an existing run.

This module imports no torch at import time (the model card and the API read it cheaply).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mammocad.io import now_iso, read_json_object
from mammocad.training.run_dir import RunDir

INDETERMINATE = "indeterminate"
#: Default thresholds of the indeterminate answer.
DEFAULT_MIN_PROBABILITY = 0.5
DEFAULT_MIN_MARGIN = 0.1
NO_CALIBRATION_NOTE = (
    f"uncalibrated: this run has no {RunDir.CALIBRATION} (temperature 1); fit one with `mammocad calibrate RUN`"
)


def default_thresholds() -> dict[str, float]:
    return {"min_probability": DEFAULT_MIN_PROBABILITY, "min_margin": DEFAULT_MIN_MARGIN}


def _thresholds_from_config(run_dir: Path) -> dict[str, float] | None:
    """The thresholds in the ``predict:`` section of the run's config, if it has them (read without pydantic)."""
    section = RunDir(run_dir).read_config_dict().get("predict") or {}  # missing or unreadable: the defaults
    found = {k: float(section[k]) for k in ("min_probability", "min_margin") if k in section}
    return found or None


def read_calibration(run_dir: str | Path) -> dict[str, Any]:
    """The run's calibration: ``temperature``, ``indeterminate`` thresholds, ``calibrated`` (bool), and a
    ``note`` when the run has none (T = 1). Never raises for a missing or unreadable file."""
    run_dir = Path(run_dir)
    data = read_json_object(RunDir(run_dir).calibration_path)
    temperature = data.get("temperature")
    ok = isinstance(temperature, int | float) and math.isfinite(temperature) and temperature > 0
    thresholds = default_thresholds() | (_thresholds_from_config(run_dir) or {}) | (data.get("indeterminate") or {})
    result = dict(data) | {
        "temperature": float(temperature) if ok else 1.0,
        "calibrated": bool(ok),
        "indeterminate": {k: float(thresholds[k]) for k in ("min_probability", "min_margin")},
    }
    if not ok:
        result["note"] = NO_CALIBRATION_NOTE
    return result


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise ``softmax(logits / temperature)`` in float64, numerically stable."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def is_indeterminate(probs: Sequence[float] | np.ndarray, thresholds: dict[str, float]) -> bool:
    """True when the top probability or the margin over the runner-up is below its threshold."""
    p = np.sort(np.asarray(probs, dtype=float))[::-1]
    if p.size == 0:
        return True
    margin = p[0] - (p[1] if p.size > 1 else 0.0)
    return bool(p[0] < thresholds.get("min_probability", 0.0) or margin < thresholds.get("min_margin", 0.0))


def decide(probs: Sequence[float] | np.ndarray, classes: Sequence[str], thresholds: dict[str, float]) -> str:
    """The label to report: the top class, or ``indeterminate`` (see :func:`is_indeterminate`)."""
    if is_indeterminate(probs, thresholds):
        return INDETERMINATE
    return str(classes[int(np.argmax(probs))])


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    p = softmax(logits, temperature)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(labels)), labels], 1e-12, None))))


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of the top-class confidence (equal-width bins)."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            total += inside.mean() * abs(confidence[inside].mean() - correct[inside].mean())
    return float(total)


def fit_temperature(logits: np.ndarray, labels: np.ndarray, max_iter: int = 200) -> float:
    """The T > 0 minimising the NLL of ``softmax(logits / T)`` (LBFGS on log T); 1.0 for empty input."""
    import torch

    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return 1.0
    z = torch.tensor(logits)  # copies: the inputs may be read-only views
    y = torch.tensor(labels)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = float(log_t.detach().exp())
    # Keep T within sane bounds (a perfectly separated val set drives T -> 0).
    temperature = min(max(temperature, 0.05), 20.0)
    if not math.isfinite(temperature) or nll(logits, labels, temperature) > nll(logits, labels, 1.0):
        return 1.0
    return temperature


def calibration_document(
    logits: np.ndarray,
    labels: np.ndarray,
    thresholds: dict[str, float] | None = None,
    fitted_on: str = "val",
) -> dict[str, Any]:
    """Fit T on ``logits``/``labels`` and describe it (the content of ``calibration.json``)."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    thresholds = default_thresholds() | (thresholds or {})
    document: dict[str, Any] = {
        "method": "temperature",
        "fitted_on": fitted_on,
        "n_val": len(labels),
        "indeterminate": {k: float(thresholds[k]) for k in ("min_probability", "min_margin")},
        "fitted": now_iso(),
    }
    if len(labels) == 0:
        return document | {"temperature": 1.0, "note": f"no {fitted_on} images: temperature left at 1"}
    temperature = fit_temperature(logits, labels)
    document |= {
        "temperature": round(temperature, 6),
        "nll_before": nll(logits, labels, 1.0),
        "nll_after": nll(logits, labels, temperature),
        "ece_before": ece(softmax(logits, 1.0), labels),
        "ece_after": ece(softmax(logits, temperature), labels),
    }
    if len(labels) < 30:
        document["note"] = f"fitted on only {len(labels)} {fitted_on} images: the temperature is uncertain"
    return document


__all__ = [
    "INDETERMINATE",
    "calibration_document",
    "decide",
    "ece",
    "fit_temperature",
    "is_indeterminate",
    "read_calibration",
    "softmax",
]
