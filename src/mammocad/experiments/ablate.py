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

Directory (new, never overwritten; resumable, each variant a resumable CV)::

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
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mammocad.errors import ConfigError, MammocadError
from mammocad.evaluation.compare import markdown_table
from mammocad.experiments import figures as study_figures
from mammocad.experiments.compare_cv import (
    CVComparisonResult,
    LoadedCV,
    add_tests,
    describe,
    display_table,
    fold_tests,
    load_cv,
    mean_std_table,
    pooled_tests,
)
from mammocad.experiments.cv import (
    CV_FILE,
    SUMMARY_UNIT,
    create_cv,
    cross_validate,
    fold_unit,
    resume_cv,
    summarise,
    train_and_score_fold,
)
from mammocad.experiments.work_queue import (
    DEFAULT_GRACE_S,
    Lease,
    WorkQueue,
    open_recorded_queue,
    queue_record,
    start_queue_work,
    work_until_done,
)
from mammocad.io import (
    atomic_write_bytes,
    atomic_write_text,
    read_config_file,
    unique_new_dir,
    update_json,
)
from mammocad.reporting.html import HtmlReport, figure_to_png
from mammocad.training.config import RunConfig, dump_run_config, load_run_config

ABLATE_FILE = "ablate.json"
REFERENCE = "full"
ProgressFn = Callable[[str], None]
ABLATION_METRICS = ("auc_macro", "f1_macro", "accuracy", "recall_min", "loss")

# Heads without GAGM / without SEVector (the rest of the head unchanged).
_WITHOUT_GAGM = {"gagm_se_dense": "gap_se_dense", "gagm_dense": "gap_dense"}
_WITHOUT_SE = {"gagm_se_dense": "gagm_dense", "gap_se_dense": "gap_dense"}


def _head(config: RunConfig) -> str:
    """The head the model will really use (its default when ``model.head`` is unset)."""
    if config.model.head:
        return config.model.head
    from mammocad.models import create_model

    size = config.preprocess.image_size[0]
    return create_model(config.model.name, num_classes=2, in_chans=config.model.in_chans, input_size=size).head_name


def _dropout(config: RunConfig) -> dict[str, Any]:
    if config.model.drop_rate == 0:
        raise ConfigError("dropout: model.drop_rate is 0 already")
    return {"model.drop_rate": 0.0}


def _batch_norm(config: RunConfig) -> dict[str, Any]:
    if not config.model.batch_norm:
        raise ConfigError("batch_norm: model.batch_norm is false already")
    return {"model.batch_norm": False}


def _augmentation(config: RunConfig) -> dict[str, Any]:
    lesion = config.lesion_options()
    if lesion is not None:  # patches are augmented by their sampling: shift, rotation, zoom
        if not (lesion.rotate or lesion.scale or lesion.jitter):
            raise ConfigError("augmentation: lesion.rotate, lesion.scale and lesion.jitter are off already")
        return {"lesion.rotate": False, "lesion.scale": 0.0, "lesion.jitter": 0.0}
    fields = ("hflip", "vflip", "rotate_p", "brightness_p", "contrast_p")
    if not any(getattr(config.augment, f) for f in fields):
        raise ConfigError("augmentation: every augment probability is 0 already")
    return {f"augment.{f}": 0.0 for f in fields}


def _clahe(config: RunConfig) -> dict[str, Any]:
    if not config.preprocess.clahe:
        raise ConfigError("clahe: preprocess.clahe is false already")
    return {"preprocess.clahe": False}


def _class_weights(config: RunConfig) -> dict[str, Any]:
    train = config.train
    if not train.class_weights and train.sampler == "none" and not train.target_share:
        raise ConfigError("class_weights: no class weighting, weighted sampler or oversampling to remove")
    return {"train.class_weights": False, "train.sampler": "none", "train.target_share": None}


def _gagm(config: RunConfig) -> dict[str, Any]:
    head = _head(config)
    if head not in _WITHOUT_GAGM:
        raise ConfigError(f"gagm: head {head!r} has no GAGM pooling (heads with it: {', '.join(_WITHOUT_GAGM)})")
    return {"model.head": _WITHOUT_GAGM[head]}


def _sevector(config: RunConfig) -> dict[str, Any]:
    head = _head(config)
    if head not in _WITHOUT_SE:
        raise ConfigError(f"sevector: head {head!r} has no SEVector (heads with it: {', '.join(_WITHOUT_SE)})")
    return {"model.head": _WITHOUT_SE[head]}


def _fsl(config: RunConfig) -> dict[str, Any]:
    if config.train.lambda_fs == 0:
        raise ConfigError("fsl: train.lambda_fs is 0 already (set it > 0 in the full model to ablate FSL)")
    return {"train.lambda_fs": 0.0}


def _knowledge_transfer(config: RunConfig) -> dict[str, Any]:
    if config.train.kt_beta == 0:
        raise ConfigError("knowledge_transfer: train.kt_beta is 0 already (set it > 0 in the full model to ablate KT)")
    return {"train.kt_beta": 0.0}


def _lesion(config: RunConfig, toggle: str) -> Any:
    options = config.lesion_options()
    if options is None:
        raise ConfigError(f"{toggle}: only the lesion_aware model has it (model.name is {config.model.name!r})")
    return options


def _hard_negatives(config: RunConfig) -> dict[str, Any]:
    if _lesion(config, "hard_negatives").hard_negative_fraction == 0:
        raise ConfigError("hard_negatives: lesion.hard_negative_fraction is 0 already")
    return {"lesion.hard_negative_fraction": 0.0}


def _flip_tta(config: RunConfig) -> dict[str, Any]:
    if not _lesion(config, "flip_tta").tta_flip:
        raise ConfigError("flip_tta: lesion.tta_flip is false already")
    return {"lesion.tta_flip": False}


def _learned_aggregation(config: RunConfig) -> dict[str, Any]:
    if _lesion(config, "learned_aggregation").aggregation != "learned":
        raise ConfigError("learned_aggregation: lesion.aggregation is not 'learned'")
    return {"lesion.aggregation": "topk", "lesion.bilateral": False}  # bilateral reading needs the learned stage


def _bilateral(config: RunConfig) -> dict[str, Any]:
    if not _lesion(config, "bilateral").bilateral:
        raise ConfigError("bilateral: lesion.bilateral is false already")
    return {"lesion.bilateral": False}


# toggle name -> config overrides that remove the component from ``config`` (ConfigError: nothing to remove)
TOGGLES: dict[str, Callable[[RunConfig], dict[str, Any]]] = {
    "dropout": _dropout,
    "batch_norm": _batch_norm,
    "augmentation": _augmentation,
    "clahe": _clahe,
    "class_weights": _class_weights,
    "gagm": _gagm,
    "sevector": _sevector,
    "fsl": _fsl,
    "knowledge_transfer": _knowledge_transfer,
    "hard_negatives": _hard_negatives,
    "flip_tta": _flip_tta,
    "learned_aggregation": _learned_aggregation,
    "bilateral": _bilateral,
}


class CustomAblation(BaseModel):
    """A named variant: any config overrides (dotted field -> value)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Variant (and directory) name.")
    set: dict[str, Any] = Field(..., min_length=1, description="Dotted config overrides, e.g. train.lr: 1.0e-3.")


class AblationSpec(BaseModel):
    """An ablations file."""

    model_config = ConfigDict(extra="forbid")
    folds: int | None = Field(None, ge=2)
    seed: int = 0
    ablations: list[str | CustomAblation] = Field(..., min_length=1)


def load_ablations(source: str | Path) -> AblationSpec:
    """An ablations file (YAML/JSON), or a comma-separated list of toggle names (``gagm,sevector,fsl``)."""
    path = Path(source)
    if path.suffix.lower() in (".yaml", ".yml", ".json") or path.exists():
        values = read_config_file(path)
    else:
        values = {"ablations": [name.strip() for name in str(source).split(",") if name.strip()]}
    try:
        return AblationSpec(**values)
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]
        raise ConfigError(f"{source}: invalid ablations\n" + "\n".join(lines)) from exc


def variants(config: RunConfig, spec: AblationSpec) -> dict[str, dict[str, Any]]:
    """``{variant name: overrides}``, the full model (no overrides) first; each variant validated."""
    found: dict[str, dict[str, Any]] = {REFERENCE: {}}
    base = config.model_dump(mode="json")
    for entry in spec.ablations:
        if isinstance(entry, str):
            if entry not in TOGGLES:
                raise ConfigError(f"unknown ablation {entry!r}; toggles: {', '.join(TOGGLES)} (or a custom name + set)")
            name, overrides = f"without-{entry}", TOGGLES[entry](config)
        else:
            name, overrides = entry.name, entry.set
        if name in found:
            raise ConfigError(f"ablation {name!r} is listed twice")
        try:
            variant = load_run_config(None, {**_flat(base), **overrides})
        except ConfigError as exc:
            raise ConfigError(f"ablation {name!r}: {exc}") from exc
        if variant == config:
            raise ConfigError(f"ablation {name!r} changes nothing in the config")
        found[name] = overrides
    return found


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value and key != "target_share":
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# Same files as a CV comparison (table, fold tests, pooled tests, report), against the full model.
AblationResult = CVComparisonResult


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
    out = unique_new_dir(target)
    atomic_write_text(out / "config.yaml", dump_run_config(config))
    update_json(
        out / ABLATE_FILE,
        {
            "status": "running",
            "folds": k,
            "seed": spec.seed,
            "n_resamples": n_resamples,
            "reference": REFERENCE,
            "variants": {v: {"overrides": o, "cv_dir": None} for v, o in found.items()},
            "started": datetime.now().isoformat(timespec="seconds"),
            **({"queue": record} if record is not None else {}),
        },
    )
    step = progress or (lambda _message: None)
    if queued:
        _create_variant_cvs(out, step)
        return work_on_ablation(out, storage=storage, workers=workers, gpus=gpus, progress=step)
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
    out = Path(out_dir)
    if not (out / ABLATE_FILE).is_file():
        raise MammocadError(f"{out}: not an ablation directory (no {ABLATE_FILE})")
    state = json.loads((out / ABLATE_FILE).read_text())
    if "queue" in state or workers is not None or storage is not None or gpus is not None:
        return work_on_ablation(out, storage=storage, workers=workers, gpus=gpus, progress=progress, resume=True)
    return _run(out, progress or (lambda _message: None))


def _create_variant_cvs(out: Path, step: ProgressFn) -> dict[str, Any]:
    """Make the CV directory of every variant that has none yet (before workers start); ablate.json's state."""
    state = json.loads((out / ABLATE_FILE).read_text())
    base = _flat(load_run_config(out / "config.yaml").model_dump(mode="json"))
    made = False
    for variant, entry in state["variants"].items():
        if entry["cv_dir"] is not None and (out / entry["cv_dir"] / CV_FILE).exists():
            continue
        variant_config = load_run_config(None, {**base, **entry["overrides"]})
        cv_dir = create_cv(
            variant_config, state["folds"], out / variant, state["seed"], state["n_resamples"], _prefixed(step, variant)
        )
        entry["cv_dir"], made = cv_dir.name, True
    if made:
        state = update_json(out / ABLATE_FILE, {"variants": state["variants"]})
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
    out = Path(out_dir)
    step = progress or (lambda _message: None)
    if not (out / ABLATE_FILE).is_file():
        raise MammocadError(f"{out}: not an ablation directory (no {ABLATE_FILE})")
    state = json.loads((out / ABLATE_FILE).read_text())
    record = state.get("queue")
    if record is None and not resume:
        raise MammocadError(
            f"{out}: this ablation was started without a work queue; `mammocad ablate --resume {out} --workers N` "
            "(or --storage URL) gives it one, then other workers can join"
        )
    if resume:
        if record is None:
            record = queue_record(storage, grace_period)
            update_json(out / ABLATE_FILE, {"queue": record})
        state = _create_variant_cvs(out, step)
    missing = [v for v, e in state["variants"].items() if e["cv_dir"] is None or not (out / e["cv_dir"]).is_dir()]
    if missing:
        raise MammocadError(
            f"{out}: no CV directory for {', '.join(missing)} yet (the command that started the ablation makes "
            f"them before its workers start: join again in a moment; after an interruption `mammocad ablate "
            f"--resume {out}` makes them)"
        )
    queue = open_recorded_queue(out, record, storage)
    queue.add(_units(state), final=SUMMARY_UNIT)
    try:
        if start_queue_work(queue, out / ABLATE_FILE, "ablate", resume, workers, gpus, storage, step):
            step("every unit and the summary are done already")
            return load_ablation_result(out)
        configs: dict[str, RunConfig] = {}

        def do_unit(lease: Lease) -> str | None:
            if lease.claim.final:
                _finalise_ablation(out, queue, step)
                return None
            variant, _, fold_name = lease.claim.name.rpartition("/")
            cv_dir = out / state["variants"][variant]["cv_dir"]
            if variant not in configs:
                configs[variant] = load_run_config(cv_dir / "config.yaml")
            fold = int(fold_name.removeprefix("fold-"))
            return train_and_score_fold(configs[variant], cv_dir, fold, _prefixed(step, variant), lease=lease).name

        work_until_done(queue, do_unit, out / ABLATE_FILE, "units", f"mammocad ablate --resume {out}", step)
    finally:
        queue.close()
    return load_ablation_result(out)


def _finalise_ablation(out: Path, queue: WorkQueue, step: ProgressFn) -> None:
    """The queue's final unit: summarise every variant's CV (with the queue's runs), then the ablation."""
    units = {unit.name: unit for unit in queue.units()}
    state = json.loads((out / ABLATE_FILE).read_text())
    for variant, entry in state["variants"].items():
        cv_dir = out / entry["cv_dir"]
        runs = {str(k): units[f"{variant}/{fold_unit(k)}"].run_dir or fold_unit(k) for k in range(state["folds"])}
        update_json(cv_dir / CV_FILE, {"runs": runs})
        step(f"{variant}: summarising folds")
        summarise(cv_dir, n_resamples=state["n_resamples"])
        update_json(
            cv_dir / CV_FILE,
            {"status": "completed", "ended": datetime.now().isoformat(timespec="seconds"), "error": None},
        )
    step("ablation table, paired tests and report")
    cvs = [load_cv(out / entry["cv_dir"], variant) for variant, entry in state["variants"].items()]
    _write(out, cvs, state)
    update_json(
        out / ABLATE_FILE, {"status": "completed", "ended": datetime.now().isoformat(timespec="seconds"), "error": None}
    )


def load_ablation_result(out_dir: str | Path) -> AblationResult:
    """The result of a finished ablation, read from its files."""
    out = Path(out_dir)

    def table(name: str, **kwargs: Any) -> pd.DataFrame:
        try:
            return pd.read_csv(out / name, **kwargs)
        except pd.errors.EmptyDataError:  # no rows (e.g. no pooled test could run)
            return pd.DataFrame()

    return AblationResult(out, table("ablation.csv", index_col=0), table("fold_tests.csv"), table("significance.csv"))


def _run(out: Path, step: ProgressFn) -> AblationResult:
    state = update_json(out / ABLATE_FILE, {"status": "running"})
    config = load_run_config(out / "config.yaml")
    base = _flat(config.model_dump(mode="json"))
    try:
        for variant, entry in state["variants"].items():
            cv_dir = out / (entry["cv_dir"] or variant)
            done = (cv_dir / CV_FILE).exists() and json.loads((cv_dir / CV_FILE).read_text())["status"] == "completed"
            if done:
                step(f"{variant}: done already")
                continue
            variant_step = _prefixed(step, variant)
            if (cv_dir / CV_FILE).exists():
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
            update_json(out / ABLATE_FILE, {"variants": state["variants"]})
    except BaseException as exc:
        update_json(out / ABLATE_FILE, {"status": "interrupted", "error": f"{type(exc).__name__}: {exc}"})
        raise
    step("ablation table, paired tests and report")
    cvs = [load_cv(out / entry["cv_dir"], variant) for variant, entry in state["variants"].items()]
    result = _write(out, cvs, state)
    update_json(
        out / ABLATE_FILE, {"status": "completed", "ended": datetime.now().isoformat(timespec="seconds"), "error": None}
    )
    return result


def _prefixed(step: ProgressFn, prefix: str) -> ProgressFn:
    return lambda message: step(f"{prefix}: {message}")


def _write(out: Path, cvs: list[LoadedCV], state: dict[str, Any]) -> AblationResult:
    pairs = [(i, 0) for i in range(1, len(cvs))]
    tests = fold_tests(cvs, ABLATION_METRICS[:2], pairs)
    significance = pooled_tests(cvs, pairs) if pairs else pd.DataFrame()
    means = mean_std_table(cvs, ABLATION_METRICS)
    table = means.copy()
    changes = {v: ", ".join(f"{k}={val}" for k, val in e["overrides"].items()) for v, e in state["variants"].items()}
    table.insert(0, "change", [changes[cv.name] or "(full model)" for cv in cvs])
    for metric in ABLATION_METRICS[:2]:
        table[f"{metric}_difference"] = means[f"{metric}_mean"] - means.loc[REFERENCE, f"{metric}_mean"]
        for test, column in (("paired t-test", "p_t"), ("Wilcoxon signed-rank", "p_wilcoxon")):
            rows = tests[(tests["metric"] == metric) & (tests["test"] == test)].set_index("run_a")["p_value"]
            table[f"{metric}_{column}"] = [rows.get(cv.name) for cv in cvs]
    delong = significance[significance["test"] == "DeLong (AUC)"] if len(significance) else significance
    for name in cvs[0].classes:
        rows = delong[delong["class"] == name].set_index("run_a")["p_value"] if len(delong) else pd.Series(dtype=float)
        table[f"delong_p_{name}"] = [rows.get(cv.name) for cv in cvs]
    table = table.astype({c: float for c in table.columns if c != "change"})

    shown = display_table(means, ABLATION_METRICS)
    for metric in ABLATION_METRICS[:2]:
        shown[f"Δ {metric}"] = table[f"{metric}_difference"].map(lambda v: "" if pd.isna(v) else f"{v:+.3f}")
        shown[f"p {metric} (t / W)"] = [
            ""
            if cv.name == REFERENCE
            else f"{table.loc[cv.name, f'{metric}_p_t']:.3g} / {table.loc[cv.name, f'{metric}_p_wilcoxon']:.3g}"
            for cv in cvs
        ]
    shown.insert(0, "change", table["change"])
    atomic_write_text(out / "ablation.csv", table.to_csv())
    atomic_write_text(out / "ablation.md", markdown_table(shown))
    atomic_write_text(out / "fold_tests.csv", tests.to_csv(index=False))
    atomic_write_text(out / "significance.csv", significance.to_csv(index=False))
    png = figure_to_png(study_figures.ablation_figure(means, ["auc_macro", "f1_macro"], REFERENCE))
    atomic_write_bytes(out / "figures" / "ablation.png", png)

    report = HtmlReport(f"Ablation study · {out.name}")
    describe(report, cvs)
    report.paragraph(
        "Each variant removes one component from the full model and is cross-validated on the same folds; "
        "differences and p-values are against the full model (paired across folds)."
    )
    report.heading("Ablation table")
    report.table(shown)
    report.figure(png, "mean ± std across folds per variant (hatched: full model)")
    add_tests(report, tests, significance)
    report.heading("Cross-validation reports")
    links = "".join(f'<li><a href="{cv.cv_dir.name}/report.html">{cv.name}</a></li>' for cv in cvs)
    report.raw(f"<ul>{links}</ul>")
    report.write(out / "report.html")
    return AblationResult(out, table, tests, significance)
