"""A tune study's output files: trials.csv, study.json, best_config.yaml and the HTML report.

Written from the study in the database after every invocation (by whichever worker ends), so each
file shows every worker's trials; :class:`~mammocad.experiments.study_dir.StudyDir` names them.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import yaml
from optuna.trial import TrialState

from mammocad.experiments.search_space import SearchSpace, trial_config
from mammocad.experiments.storage import mask_url
from mammocad.experiments.study_dir import StudyDir, TuneResult, study_counts, trials_table
from mammocad.io import atomic_write_json, atomic_write_text
from mammocad.training.config import RunConfig, dump_run_config


def write_study_files(
    study: optuna.Study,
    config: RunConfig,
    space: SearchSpace,
    study_dir: Path,
    url: str,
    n_trials: int,
    report: bool = True,
) -> TuneResult:
    """trials.csv, study.json, best_config.yaml (when a trial completed) and report.html."""
    layout = StudyDir(study_dir)
    table = trials_table(study)
    atomic_write_text(layout.trials_table_path, table.to_csv(index=False))
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = study.best_trial if complete else None
    best_config_path = None
    if best is not None:
        best_config = trial_config(config, best.params)
        best_config.output.name = f"{config.output.name or best_config.model.name}-best"
        best_config_path = atomic_write_text(layout.best_config_path, dump_run_config(best_config))
    result = TuneResult(
        study_dir=study_dir,
        study_name=study.study_name,
        storage=mask_url(url),
        metric=space.metric,
        direction=str(space.direction),
        n_trials=n_trials,
        counts=study_counts(study),
        best_value=None if best is None else best.value,
        best_params={} if best is None else dict(best.params),
        best_trial=None if best is None else best.number,
        best_run_dir=None if best is None else best.user_attrs.get("run_dir"),
        trials=table,
        report=layout.report_path,
        best_config=best_config_path,
        study=study,
    )
    atomic_write_json(
        layout.summary_path,
        {
            "study_name": result.study_name,
            "storage": result.storage,
            "metric": result.metric,
            "direction": result.direction,
            "n_trials_target": n_trials,
            "trials": result.counts,
            "best_value": result.best_value,
            "best_params": result.best_params,
            "best_trial": result.best_trial,
            "best_run_dir": result.best_run_dir,
            "best_config": None if best_config_path is None else str(best_config_path),
            "search_space": space.model_dump(mode="json"),
        },
    )
    if report:
        write_report(study, result, space)
    return result


def write_report(study: optuna.Study, result: TuneResult, space: SearchSpace) -> Path:
    """report.html: summary, best trial, Optuna's interactive plots, the trials table, the search space."""
    from mammocad.reporting.html import HtmlReport

    page = HtmlReport(f"Hyperparameter search: {result.study_name}")
    page.heading("Summary")
    summary = {
        "study": result.study_name,
        "storage": result.storage,
        "metric": f"{result.metric} ({result.direction})",
        "target finished trials": result.n_trials,
        **{f"trials {state.lower()}": n for state, n in result.counts.items() if n},
        "best value": "—" if result.best_value is None else f"{result.best_value:.6g}",
        "best trial": "—" if result.best_trial is None else result.best_trial,
        "best run": result.best_run_dir or "—",
    }
    page.table(pd.DataFrame({"value": [str(v) for v in summary.values()]}, index=list(summary)), index=True)
    page.heading("Best trial")
    if result.best_trial is None:
        page.paragraph(
            "No trial completed (pruned trials are not candidates), so there is no best trial and no "
            "best_config.yaml. Why trials failed: the error column of the trials table below.",
            note=True,
        )
    else:
        page.table(pd.DataFrame({"value": [str(v) for v in result.best_params.values()]}, index=result.best_params))
        page.paragraph("best_config.yaml holds the base config with these values; train it with mammocad train.")
    page.heading("Plots")
    for title, draw in _plots(study, result.metric):
        page.paragraph(title)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                figure = draw()
            for warning in caught:
                page.paragraph(f"{title}: {warning.message}", note=True)
            page.plotly(figure.to_html(full_html=False, include_plotlyjs=False))
        except _CannotPlot as why:
            page.paragraph(f"{title}: not drawn: {why}", note=True)
        except Exception as exc:
            page.paragraph(f"{title}: not drawn ({type(exc).__name__}: {exc})", note=True)
    page.heading("Trials")
    if len(result.trials):
        page.table(_display_trials(result.trials, result.study_dir), index=False, float_format="{:.4g}")
    else:
        page.paragraph("The study has no trials yet.", note=True)
    page.heading("Search space")
    page.preformatted(yaml.safe_dump(space.model_dump(mode="json"), sort_keys=False))
    return page.write(result.report)


def _display_trials(trials: pd.DataFrame, study_dir: Path) -> pd.DataFrame:
    """The trials table for the report: short column names, first line of errors, run dirs relative."""
    columns = [c for c in ("number", "state", "value", "duration_s") if c in trials.columns]
    columns += [c for c in trials.columns if c.startswith("params_")]
    columns += ["epochs_done", "best_epoch", "host", "error", "run_dir"]
    shown = trials[columns].rename(columns={c: c.removeprefix("params_") for c in columns})

    def short_error(error: Any) -> Any:
        if not isinstance(error, str):
            return error
        line = error.splitlines()[0] if error else error
        return line if len(line) <= 160 else line[:157] + "..."

    def relative(path: Any) -> Any:
        if not isinstance(path, str):
            return path
        with contextlib.suppress(ValueError):
            return str(Path(path).relative_to(study_dir))
        return path

    shown["error"] = shown["error"].map(short_error)
    shown["run_dir"] = shown["run_dir"].map(relative)
    return shown


class _CannotPlot(Exception):
    pass


def _plots(study: optuna.Study, metric: str) -> list[tuple[str, Callable[[], Any]]]:
    from optuna import visualization as vis
    from optuna.importance import PedAnovaImportanceEvaluator

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    varying = [
        name
        for name in {p for t in complete for p in t.params}
        if len({repr(t.params.get(name)) for t in complete}) > 1
    ]

    def history() -> Any:
        if not complete:
            raise _CannotPlot("no trial completed")
        return vis.plot_optimization_history(study, target_name=metric)

    def importances() -> Any:
        if len(complete) < 2 or not varying:
            raise _CannotPlot("needs at least 2 completed trials whose parameters differ")
        return vis.plot_param_importances(study, evaluator=PedAnovaImportanceEvaluator(), target_name=metric)

    def parallel() -> Any:
        if not complete:
            raise _CannotPlot("no trial completed")
        return vis.plot_parallel_coordinate(study, target_name=metric)

    def intermediate() -> Any:
        if not any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
            raise _CannotPlot("no trial reported an epoch")
        return vis.plot_intermediate_values(study)

    return [
        ("Optimization history", history),
        ("Parameter importances", importances),
        ("Parallel coordinates", parallel),
        ("Validation metric per epoch (pruned trials stop early)", intermediate),
    ]


__all__ = ["write_report", "write_study_files"]
