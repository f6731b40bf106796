"""The model card of a run: what the model is, what it was trained on, how it scored, what it is fit for.

:func:`model_card` reads only small JSON/YAML files of the run directory (``run.json``, ``model.json``,
``provenance.json``, ``calibration.json``, the latest ``evaluation/*/metrics.json``); it never re-reads
the dataset (its provenance is recorded at training time, see ``training/run_records.py``) and imports no
torch. The result is a plain JSON-able dict, shown by ``mammocad predict``, the reports, the API's
``/model`` and the dashboard banner::

    {
      "run": {"name": "baseline_cnn-2026...", "path": "/.../runs/...", "status": "completed"},
      "model": {"architecture": "baseline_cnn", "input_size": [64, 64], "in_chans": 1,
                "classes": ["normal", "abnormal"], "task": "normal-abnormal", "preprocess_mode": "full"},
      "trained_on": {"dataset": "ds", "path": "...", "source": ["csv"], "synthetic": true,
                     "synthetic_evidence": "...", "n_images": 120, "n_patients": 40,
                     "per_class": {"normal": 40, ...}, "per_split": {"train": {"n_images": .., "n_patients": ..,
                     "per_class": {..}}, "val": .., "test": ..}, "recorded": true},
      "evaluation": {"split": "test", "n": 24, "n_patients": 8, "path": ".../metrics.json",
                     "metrics": {"auc": {"value": .61, "ci": [.41, .80]}, "accuracy": {...},
                                 "balanced_accuracy": {...}},
                     "chance": {"auc": 0.5, "balanced_accuracy": 0.333}, "at_chance": true} | null,
      "calibration": {"temperature": 1.4, "calibrated": true, "indeterminate": {"min_probability": .5,
                      "min_margin": .1}, ...},
      "fit_for": "research and demonstration on synthetic phantoms only" | "...",
      "warnings": ["Trained on synthetic phantoms only: ...", ...],
      "headline": "NOT FOR CLINICAL USE: ..."
    }
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from mammocad.io import read_json_object
from mammocad.training.calibration import read_calibration
from mammocad.training.run_dir import RunDir

SYNTHETIC_WARNING = "Trained on synthetic phantoms only: not validated on real mammograms; do not use for patients."
RESEARCH_WARNING = "Research software: not a medical device; no prediction is a diagnosis."
NO_EVALUATION_WARNING = "Not evaluated yet: run `mammocad evaluate RUN` to measure its test performance."


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


# --- evaluation -------------------------------------------------------------------------------


def latest_evaluation_file(run_dir: Path) -> Path | None:
    """The newest ``evaluation/*/metrics.json`` of the run, preferring test-split evaluations."""
    found = [e.metrics_path for e in RunDir(run_dir).evaluations() if e.metrics_path.is_file()]
    if not found:
        return None
    tests = [p for p in found if read_json_object(p).get("split") == "test"]
    return max(tests or found, key=lambda p: p.stat().st_mtime)


def _metric(document: dict[str, Any], point_key: str, ci_key: str) -> dict[str, Any] | None:
    metrics = document.get("metrics") or {}
    value = _number(metrics.get(point_key))
    ci = (document.get("confidence_intervals") or {}).get(ci_key) or {}
    low, high = _number(ci.get("low")), _number(ci.get("high"))
    if value is None and low is None:
        return None
    return {"value": value, "ci": [low, high] if low is not None and high is not None else None}


def summarise_evaluation(document: dict[str, Any]) -> dict[str, Any]:
    """A ``metrics.json`` document (from ``mammocad evaluate``) as the card's ``evaluation`` entry."""
    classes = document.get("classes") or []
    n_classes = max(len(classes), 2)
    metrics = {
        "auc": _metric(document, "auc_macro", "auc_macro"),
        "accuracy": _metric(document, "accuracy", "accuracy"),
        "balanced_accuracy": _metric(document, "recall_macro", "balanced_accuracy"),
    }
    metrics = {k: v for k, v in metrics.items() if v is not None}
    chance = {"auc": 0.5, "balanced_accuracy": round(1.0 / n_classes, 4)}
    return {
        "split": document.get("split"),
        "dataset": Path(str(document.get("dataset"))).name if document.get("dataset") else None,
        "n": document.get("n_images"),
        "n_patients": document.get("n_patients"),
        "metrics": metrics,
        "chance": chance,
        "at_chance": at_chance(metrics, n_classes),
    }


def at_chance(metrics: dict[str, Any], n_classes: int) -> bool | None:
    """True when AUC's CI reaches down to 0.5 or balanced accuracy's CI reaches down to 1/n_classes
    (includes chance, or lies below it); without CIs, when the point estimate is at or below chance.
    None when neither metric is known."""
    verdicts = []
    for name, level in (("auc", 0.5), ("balanced_accuracy", 1.0 / n_classes)):
        entry = metrics.get(name)
        if not entry:
            continue
        if entry.get("ci"):
            verdicts.append(entry["ci"][0] <= level)
        elif entry.get("value") is not None:
            verdicts.append(entry["value"] <= level)
    return any(verdicts) if verdicts else None


def _chance_sentence(evaluation: dict[str, Any]) -> str | None:
    if not evaluation.get("at_chance"):
        return None
    metrics, chance = evaluation["metrics"], evaluation["chance"]
    parts = []
    below = False
    for name, label in (("auc", "AUC"), ("balanced_accuracy", "balanced accuracy")):
        entry = metrics.get(name)
        if not entry:
            continue
        text = f"{label} {_fmt(entry.get('value'))}"
        if entry.get("ci"):
            low, high = entry["ci"]
            text += f", 95% CI {_fmt(low)}–{_fmt(high)}"
            below = below or high < chance[name]
        parts.append(text)
    where = f"{evaluation.get('split') or 'test'} performance"
    verdict = "is worse than chance" if below else "is not distinguishable from chance"
    return f"Its {where} {verdict} ({'; '.join(parts)}; chance = AUC 0.50, balanced accuracy {chance['balanced_accuracy']:.2f})."


def chance_flag(metrics: dict[str, Any]) -> str | None:
    """A warning sentence when an evaluation cannot be told from chance, else None (for comparison tables).

    ``metrics``: a ``metrics.json`` document of ``mammocad evaluate`` (with ``metrics``,
    ``confidence_intervals`` and ``classes``), or a card's ``evaluation`` entry."""
    if not metrics:
        return None
    evaluation = metrics if "chance" in metrics and "at_chance" in metrics else summarise_evaluation(metrics)
    return _chance_sentence(evaluation)


# --- the card ---------------------------------------------------------------------------------


def _trained_on(run_dir: Path, run: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    provenance = read_json_object(RunDir(run_dir).provenance_path)
    if provenance:
        return provenance | {"recorded": True}
    # A run from before provenance.json: what run.json and the config say; the dataset (if still there)
    # is asked only whether it is synthetic.
    from mammocad.data.provenance import dataset_provenance

    dataset = (config.get("data") or {}).get("dataset")
    found = dataset_provenance(dataset) if dataset else {}
    classes = run.get("classes") or []
    counts = run.get("counts") or {}
    per_split = {
        split: {"n_images": int(sum(values)), "n_patients": None, "per_class": dict(zip(classes, values, strict=False))}
        for split, values in counts.items()
        if isinstance(values, list)
    }
    per_class = {c: int(sum(s["per_class"].get(c, 0) for s in per_split.values())) for c in classes}
    return {
        "dataset": found.get("dataset") or (Path(dataset).name if dataset else None),
        "path": found.get("path") or dataset,
        "source": found.get("source", []),
        "synthetic": bool(found.get("synthetic")),
        "synthetic_evidence": found.get("synthetic_evidence"),
        "n_images": sum(s["n_images"] for s in per_split.values()) if per_split else None,
        "n_patients": None,
        "per_class": per_class,
        "per_split": per_split,
        "recorded": False,
    }


def model_card(run_dir: str | Path, evaluation: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run's model card (see the module docstring for the keys). Never raises for missing files.

    ``evaluation``: a ``metrics.json`` document to describe instead of the run's latest evaluation
    (``evaluate`` passes the one it is writing)."""
    run_dir = Path(run_dir)
    files = RunDir(run_dir)
    run = files.read_state()
    meta = files.read_model()
    config = files.read_config_dict()
    spec = meta.get("model") or {}
    preprocess = meta.get("preprocess") or config.get("preprocess") or {}
    size = preprocess.get("image_size")
    classes = list(meta.get("classes") or run.get("classes") or [])
    task = meta.get("task") or run.get("task") or (config.get("data") or {}).get("task")
    model = {
        "architecture": spec.get("name") or (config.get("model") or {}).get("name"),
        "input_size": [size, size] if isinstance(size, int) else size,
        "in_chans": spec.get("in_chans"),
        "classes": classes,
        "n_classes": len(classes),
        "task": task,
        "preprocess_mode": preprocess.get("mode"),
        "weights": (meta.get("weights") or {}).get("final"),
    }
    trained_on = _trained_on(run_dir, run, config)
    given = evaluation
    evaluation_path = None if given is not None else latest_evaluation_file(run_dir)
    evaluation = summarise_evaluation(given) if given is not None else None
    if evaluation_path is not None:
        evaluation = summarise_evaluation(read_json_object(evaluation_path)) | {"path": str(evaluation_path)}
    calibration = read_calibration(run_dir)

    warnings: list[str] = []
    if trained_on.get("synthetic"):
        warnings.append(SYNTHETIC_WARNING)
    status = run.get("status")
    if status and status != "completed":
        warnings.append(f"Its training did not complete (status: {status}).")
    if evaluation is None:
        warnings.append(NO_EVALUATION_WARNING)
    else:
        sentence = _chance_sentence(evaluation)
        if sentence:
            warnings.append(sentence)
        if (evaluation.get("n") or 0) and evaluation["n"] < 100:
            warnings.append(f"Evaluated on only {evaluation['n']} images: its confidence intervals are wide.")
    if not calibration.get("calibrated"):
        warnings.append(f"Its probabilities are not calibrated (no {RunDir.CALIBRATION}; temperature 1).")
    warnings.append(RESEARCH_WARNING)

    if trained_on.get("synthetic"):
        fit_for = "software testing and demonstration on synthetic phantom images only"
        headline = (
            "NOT FOR CLINICAL USE: trained on synthetic phantoms only; its outputs say nothing about real mammograms."
        )
    elif evaluation is not None and evaluation.get("at_chance"):
        fit_for = "nothing yet: its test performance cannot be told from chance"
        headline = "NOT FOR CLINICAL USE: this model performs at chance level on its test split."
    elif evaluation is None:
        fit_for = "research only: not yet evaluated"
        headline = "Research model, not evaluated: not for clinical use."
    else:
        auc = (evaluation["metrics"].get("auc") or {}).get("value")
        fit_for = "research only: evaluated on its own test split, not externally validated"
        headline = f"Research model (test AUC {_fmt(auc)} on {evaluation.get('n')} images): not for clinical use."
    return {
        "run": {"name": run_dir.name, "id": run_dir.name, "path": str(run_dir), "status": status},
        "model": model,
        "trained_on": trained_on,
        "evaluation": evaluation,
        "calibration": calibration,
        "fit_for": fit_for,
        "warnings": warnings,
        "headline": headline,
    }


def prediction_caveat(card: dict[str, Any]) -> str | None:
    """The short caveat every prediction of this run carries, or None (e.g. a real-data run that beats chance)."""
    if card.get("trained_on", {}).get("synthetic"):
        return "synthetic-trained model: not valid for real mammograms"
    if (card.get("evaluation") or {}).get("at_chance"):
        return "model performs at chance level"
    return None


__all__ = [
    "at_chance",
    "chance_flag",
    "latest_evaluation_file",
    "model_card",
    "prediction_caveat",
    "summarise_evaluation",
]
