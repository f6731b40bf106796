"""The card ``GET /model`` shows about the served run: its provenance and fitness (the training model
card), or what the run directory itself records when that card cannot be built."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mammocad.training.run_dir import RunDir

if TYPE_CHECKING:
    from mammocad.serve.engine import InferenceEngine

logger = logging.getLogger("mammocad.serve")


def run_card_of(engine: InferenceEngine) -> dict[str, Any]:
    """Provenance and fitness of the served run: ``mammocad.training.model_card.model_card(run_dir)``.

    Where that is not available (or fails on this run), what the run directory itself records: its
    training status and dates, task, classes and image counts per split, dataset name and split, and
    which held-out evaluations exist; ``source`` says which, ``warnings`` why.
    """
    run_dir = Path(engine.run.run_dir)
    warnings: list[str] = []
    try:
        from mammocad.training.model_card import model_card
    except ImportError:
        warnings.append("no model card module in this version: provenance from the run files only")
    else:
        try:
            card = model_card(run_dir)
            # Server paths mean nothing to a client (and are scrubbed anyway): the names stay.
            for section in card.values():
                if isinstance(section, dict):
                    section.pop("path", None)
            return {"source": "model_card", **card}
        except Exception as exc:  # a card is extra information: the API still serves without one
            logger.warning("model card of %s failed (%s)", run_dir.name, type(exc).__name__)
            warnings.append(f"the model card could not be built ({type(exc).__name__}): run files only")
    return {"source": "run files", **_run_files_card(run_dir), "warnings": warnings}


def _run_files_card(run_dir: Path) -> dict[str, Any]:
    """What the run directory records: status and dates, what it was trained on, its evaluations' numbers."""
    run = RunDir(run_dir)
    status = run.read_state()
    trained_on: dict[str, Any] = {key: status[key] for key in ("task", "classes", "counts", "refit") if key in status}
    try:
        data = run.read_config_dict().get("data") or {}
        if data.get("dataset"):
            trained_on["dataset"] = Path(str(data["dataset"])).name  # its name, never the server's path
        if data.get("split"):
            trained_on["split"] = str(data["split"])
    except (ValueError, AttributeError):
        pass
    evaluations = {}
    for evaluation in run.evaluations():
        metrics = evaluation.read_metrics_or_empty()
        evaluations[evaluation.name] = {
            key: value for key, value in metrics.items() if isinstance(value, (int, float, str, bool))
        }
    return {
        "run": {
            "name": run_dir.name,
            **{key: status[key] for key in ("status", "started", "ended", "early_stopped") if key in status},
        },
        "trained_on": trained_on,
        "evaluation": evaluations,
    }
