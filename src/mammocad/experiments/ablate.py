"""``mammocad ablate``: remove one component at a time, cross-validate each variant on the same folds.

An ablations file lists toggles (each removes one component of the full model) and/or custom
variants (any config overrides)::

    folds: 5                    # optional; --folds overrides it
    seed: 0                     # fold seed when the split has no such folds
    ablations:
      - gagm                    # GAGM pooling -> plain global average pooling
      - sevector                # drop the SEVector channel attention
      - fsl                     # Feature Smoothing Loss off (train.lambda_fs = 0)
      - name: lr-1e-3           # a custom variant
        set: {train.lr: 1.0e-3}

Toggles (:data:`TOGGLES`): dropout, batch_norm, augmentation, clahe, class_weights, gagm, sevector,
fsl, knowledge_transfer; for the lesion-aware model also hard_negatives (mining off), flip_tta,
bilateral and learned_aggregation (→ the fixed top-k mean). A toggle that would change nothing for the given config (e.g. ``fsl`` with lambda_fs = 0,
``gagm`` on a GAP head) is refused before anything trains.

Directory (new, never overwritten; resumable, each variant a resumable CV; paths and reads in
:class:`~mammocad.experiments.layout.AblationDir`)::

    ablate.json               status, folds, variants with their overrides and CV directories
    config.yaml               the full model's config
    full/, without-<toggle>/, <custom>/   one CV directory per variant (see ``mammocad cv``)
    ablation.csv / .md        mean ± std per variant, difference to the full model and p-values
    fold_tests.csv, significance.csv      paired t-test / Wilcoxon per fold; DeLong / McNemar pooled OOF
    figures/ablation.png, report.html
    queue.db                  with workers (default storage only): the work queue

Many workers (``workers``/``storage``/``gpus`` of :func:`ablate`, :func:`work_on_ablation`): every
variant's CV directory is made first, then each variant × fold is a unit of one shared
:mod:`~mammocad.experiments.work_queue` (``<variant>/fold-<k>``), taken by whichever worker is free;
the final unit summarises every variant's CV and writes the ablation table, once.

This module runs the study; the variants are :mod:`~mammocad.experiments.ablation_variants`', the
table and report :mod:`~mammocad.experiments.ablation_summary`'s (both re-exported here).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from mammocad.errors import MammocadError
from mammocad.experiments.ablation_summary import (
    ABLATION_METRICS,
    AblationResult,
    load_ablation_result,
    write_ablation,
)
from mammocad.experiments.ablation_variants import (
    REFERENCE,
    TOGGLES,
    AblationSpec,
    CustomAblation,
    flat_config,
    load_ablations,
    variants,
)
from mammocad.experiments.compare_cv import LoadedCV, load_cv
from mammocad.experiments.cv import (
    SUMMARY_UNIT,
    create_cv,
    cross_validate,
    fold_unit,
    resume_cv,
    summarise,
    train_and_score_fold,
)
from mammocad.experiments.layout import AblationDir, CVDir
from mammocad.experiments.work_queue import (
    DEFAULT_GRACE_S,
    Lease,
    WorkQueue,
    open_recorded_queue,
    queue_record,
    start_queue_work,
    work_until_done,
)
from mammocad.io import now_iso, unique_new_dir
from mammocad.progress import ProgressFn
from mammocad.training.config import RunConfig, load_run_config

#: The ablation's state file (kept under its old name; the layout is :class:`AblationDir`'s).
ABLATE_FILE = AblationDir.STATE


def ablate(
    config: RunConfig,
    spec: AblationSpec,
    folds: int | None = None,
    out_dir: str | Path | None = None,
    n_resamples: int = 1000,
    progress: ProgressFn | None = None,
    *,
    workers: int | None = None,
    storage: str | None = None,
    gpus: list[str] | None = None,
    grace_period: float = DEFAULT_GRACE_S,
) -> AblationResult:
    """Cross-validate the full model and every variant of ``spec`` on the same folds; compare them.

    Args:
        config: the full model's run config.
        spec: the ablations (see the module docstring).
        folds: number of folds (default: ``spec.folds``, else 5).
        out_dir: new directory (made unique); default ``<runs_dir>/<name>-ablation-<timestamp>``.
        n_resamples: patient-bootstrap resamples of each CV's pooled OOF CIs.
        progress: called with a short message as each step starts.
        workers, storage, gpus, grace_period: spread the variant × fold units over a work queue
            (see :func:`work_on_ablation` and :func:`~mammocad.experiments.cv.cross_validate`); None:
            the variants run one after another in this process.
    """
    k = folds or spec.folds or 5
    queued = workers is not None or storage is not None or gpus is not None
    record = queue_record(storage, grace_period) if queued else None  # refuses a bad grace before any file
    found = variants(config, spec)  # refuses bad toggles before anything is created
    name = config.output.name or config.model.name
    target = out_dir or config.output.runs_dir / f"{name}-ablation-{datetime.now():%Y%m%d-%H%M%S}"
    out = AblationDir(unique_new_dir(target))
    out.write_config(config)
    out.update_state(
        {
            "status": "running",
            "folds": k,
            "seed": spec.seed,
            "n_resamples": n_resamples,
            "reference": REFERENCE,
            "variants": {v: {"overrides": o, "cv_dir": None} for v, o in found.items()},
            "started": now_iso(),
            **({"queue": record} if record is not None else {}),
        },
    )
    step = progress or (lambda _message: None)
    if queued:
        _create_variant_cvs(out, step)
        return work_on_ablation(out.path, storage=storage, workers=workers, gpus=gpus, progress=step)
    return _run(out, step)


def resume_ablation(
    out_dir: str | Path,
    progress: ProgressFn | None = None,
    *,
    workers: int | None = None,
    storage: str | None = None,
    gpus: list[str] | None = None,
) -> AblationResult:
    """Continue an interrupted ablation: finished variants are kept, the others resume their CV.

    An ablation with a work queue (or given ``workers``/``storage``/``gpus``, which give it one)
    continues through :func:`work_on_ablation`, its failed units tried again.
    """
    out = AblationDir(out_dir)
    out.require()
    state = out.read_state()
    if "queue" in state or workers is not None or storage is not None or gpus is not None:
        return work_on_ablation(out.path, storage=storage, workers=workers, gpus=gpus, progress=progress, resume=True)
    return _run(out, progress or (lambda _message: None))


def _create_variant_cvs(out: AblationDir, step: ProgressFn) -> dict[str, Any]:
    """Make the CV directory of every variant that has none yet (before workers start); ablate.json's state."""
    state = out.read_state()
    base = flat_config(out.read_config().model_dump(mode="json"))
    made = False
    for variant, entry in state["variants"].items():
        if entry["cv_dir"] is not None and out.variant(entry["cv_dir"]).exists():
            continue
        variant_config = load_run_config(None, {**base, **entry["overrides"]})
        cv_dir = create_cv(
            variant_config,
            state["folds"],
            out.variant(variant).path,
            state["seed"],
            state["n_resamples"],
            _prefixed(step, variant),
        )
        entry["cv_dir"], made = cv_dir.name, True
    if made:
        state = out.update_state({"variants": state["variants"]})
    return state


def _units(state: dict[str, Any]) -> list[str]:
    """``<variant>/fold-<k>`` for every variant and fold, variant by variant."""
    return [f"{variant}/{fold_unit(k)}" for variant in state["variants"] for k in range(state["folds"])]


def work_on_ablation(
    out_dir: str | Path,
    *,
    storage: str | None = None,
    workers: int | None = None,
    gpus: list[str] | None = None,
    progress: ProgressFn | None = None,
    resume: bool = False,
    grace_period: float = DEFAULT_GRACE_S,
) -> AblationResult:
    """Work on an ablation's queue until no unit is left; the result once every unit and the summary are done.

    As :func:`~mammocad.experiments.cv.work_on_cv`, with variant × fold units (``mammocad ablate
    --join DIR`` runs it); ``resume`` also tries failed units again, and gives an ablation made
    without a queue one (its missing variant CVs made first).

    Raises:
        IncompleteWork: units failed (or their workers stopped too often); the message lists them.
    """
    out = AblationDir(out_dir)
    step = progress or (lambda _message: None)
    out.require()
    state = out.read_state()
    record = state.get("queue")
    if record is None and not resume:
        raise MammocadError(
            f"{out.path}: this ablation was started without a work queue; `mammocad ablate --resume {out.path} --workers N` "
            "(or --storage URL) gives it one, then other workers can join"
        )
    if resume:
        if record is None:
            record = queue_record(storage, grace_period)
            out.update_state({"queue": record})
        state = _create_variant_cvs(out, step)
    missing = [
        v for v, e in state["variants"].items() if e["cv_dir"] is None or not out.variant(e["cv_dir"]).path.is_dir()
    ]
    if missing:
        raise MammocadError(
            f"{out.path}: no CV directory for {', '.join(missing)} yet (the command that started the ablation makes "
            f"them before its workers start: join again in a moment; after an interruption `mammocad ablate "
            f"--resume {out.path}` makes them)"
        )
    queue = open_recorded_queue(out.path, record, storage)
    queue.add(_units(state), final=SUMMARY_UNIT)
    try:
        if start_queue_work(queue, out.state_path, "ablate", resume, workers, gpus, storage, step):
            step("every unit and the summary are done already")
            return load_ablation_result(out.path)
        configs: dict[str, RunConfig] = {}

        def do_unit(lease: Lease) -> str | None:
            if lease.claim.final:
                _finalise_ablation(out, queue, step)
                return None
            variant, _, fold_name = lease.claim.name.rpartition("/")
            cv = out.variant(state["variants"][variant]["cv_dir"])
            if variant not in configs:
                configs[variant] = cv.read_config()
            fold = CVDir.fold_number(fold_name)
            return train_and_score_fold(configs[variant], cv.path, fold, _prefixed(step, variant), lease=lease).name

        work_until_done(queue, do_unit, out.state_path, "units", f"mammocad ablate --resume {out.path}", step)
    finally:
        queue.close()
    return load_ablation_result(out.path)


def _finalise_ablation(out: AblationDir, queue: WorkQueue, step: ProgressFn) -> None:
    """The queue's final unit: summarise every variant's CV (with the queue's runs), then the ablation."""
    units = {unit.name: unit for unit in queue.units()}
    state = out.read_state()
    for variant, entry in state["variants"].items():
        cv = out.variant(entry["cv_dir"])
        runs = {str(k): units[f"{variant}/{fold_unit(k)}"].run_dir or fold_unit(k) for k in range(state["folds"])}
        cv.update_state({"runs": runs})
        step(f"{variant}: summarising folds")
        summarise(cv.path, n_resamples=state["n_resamples"])
        cv.mark_completed()
    step("ablation table, paired tests and report")
    write_ablation(out.path, _load_variant_cvs(out, state), state)
    out.mark_completed()


def _load_variant_cvs(out: AblationDir, state: dict[str, Any]) -> list[LoadedCV]:
    """Every variant's finished CV, the full model first (as ``ablate.json`` lists them)."""
    return [load_cv(out.variant(entry["cv_dir"]).path, variant) for variant, entry in state["variants"].items()]


def _run(out: AblationDir, step: ProgressFn) -> AblationResult:
    state = out.update_state({"status": "running"})
    config = out.read_config()
    base = flat_config(config.model_dump(mode="json"))
    try:
        for variant, entry in state["variants"].items():
            cv = out.variant(entry["cv_dir"] or variant)
            cv_dir = cv.path
            if cv.exists() and cv.read_state()["status"] == "completed":
                step(f"{variant}: done already")
                continue
            variant_step = _prefixed(step, variant)
            if cv.exists():
                resume_cv(cv_dir, progress=variant_step)
            else:
                variant_config = load_run_config(None, {**base, **entry["overrides"]})
                cv_dir = cross_validate(
                    variant_config,
                    state["folds"],
                    cv_dir,
                    seed=state["seed"],
                    n_resamples=state["n_resamples"],
                    progress=variant_step,
                ).cv_dir
            state["variants"][variant]["cv_dir"] = cv_dir.name
            out.update_state({"variants": state["variants"]})
    except BaseException as exc:
        out.mark_interrupted(exc)
        raise
    step("ablation table, paired tests and report")
    result = write_ablation(out.path, _load_variant_cvs(out, state), state)
    out.mark_completed()
    return result


def _prefixed(step: ProgressFn, prefix: str) -> ProgressFn:
    return lambda message: step(f"{prefix}: {message}")


__all__ = [
    "ABLATE_FILE",
    "ABLATION_METRICS",
    "REFERENCE",
    "TOGGLES",
    "AblationResult",
    "AblationSpec",
    "CustomAblation",
    "ProgressFn",
    "ablate",
    "load_ablation_result",
    "load_ablations",
    "resume_ablation",
    "variants",
    "work_on_ablation",
]
