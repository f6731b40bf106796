"""Hyperparameter search: search-space validation, a tiny real study, resume, failures, pruning, the CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import typer
import yaml
from typer.testing import CliRunner

from mammocad.cli.tune import tune
from mammocad.errors import ConfigError
from mammocad.experiments import tune as tune_module
from mammocad.experiments.tune import (
    check_single_device,
    check_space_against,
    load_search_space,
    mask_url,
    parse_search_space,
    tune_study,
)
from mammocad.training.config import dump_run_config, load_run_config
from mammocad.training.run import RunResult
from tests.browser import render
from tests.conftest import config

SPACE = {
    "metric": "val_loss",
    "seed": 0,
    "params": {
        "train.lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
        "model.drop_rate": {"type": "float", "low": 0.0, "high": 0.7},
    },
}


def space_with(**changes):
    values = json.loads(json.dumps(SPACE))
    for key, value in changes.items():
        if key.startswith("params."):
            name = key.removeprefix("params.")
            if value is None:
                values["params"].pop(name)
            else:
                values["params"][name] = value
        else:
            values[key] = value
    return values


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"params.train.lrr": {"type": "float", "low": 0.1, "high": 1}},
            r"params\.train\.lrr: not a run-config field \(train has: .*\blr\b",
        ),
        (
            {"params.trian.lr": {"type": "float", "low": 0.1, "high": 1}},
            r"params\.trian\.lr: not a run-config field \(sections are: data, ",
        ),
        ({"params.train": {"type": "int", "low": 1, "high": 2}}, r"params\.train: is a section"),
        (
            {"params.train.lr.x": {"type": "int", "low": 1, "high": 2}},
            r"params\.train\.lr\.x: train\.lr is a field, not a section",
        ),
        (
            {"params.output.name": {"type": "categorical", "choices": ["a"]}},
            r"params\.output\.name: output settings cannot be tuned",
        ),
        (
            {"params.train.lr": {"type": "float", "low": 0.1, "high": 0.01}},
            r"params\.train\.lr: low \(0\.1\) must be below high",
        ),
        (
            {"params.train.epochs": {"type": "int", "low": 3, "high": 3}},
            r"params\.train\.epochs: low \(3\) must be below high",
        ),
        (
            {"params.train.lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}},
            r"params\.train\.lr: log: true needs low > 0",
        ),
        (
            {"params.model.drop_rate": {"type": "float", "low": 0, "high": 0.5, "lgo": True}},
            r"params\.model\.drop_rate\.lgo: Extra inputs",
        ),
        ({"params.model.drop_rate": {"type": "floot", "low": 0, "high": 0.5}}, r"params\.model\.drop_rate: .*'floot'"),
        ({"params.model.head": {"type": "categorical", "choices": []}}, r"params\.model\.head\.choices: .*at least 1"),
        ({"metric": "train_loss"}, r"metric: 'train_loss' is not a validation history column \(choose from val_loss"),
        ({"direction": "up"}, r"direction: "),
        ({"sampler": "tpe"}, r"sampler: Extra inputs"),
        ({"pruner": {"n_startup": 2}}, r"pruner\.n_startup: Extra inputs"),
    ],
)
def test_bad_search_space_raises_config_error_naming_the_field(changes, message):
    with pytest.raises(ConfigError, match=message):
        parse_search_space(space_with(**changes))


def test_search_space_file_defaults_and_values_checked_against_the_base_config(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(
        "metric: val_auc_macro\n"
        "pruner: {n_startup_trials: 1, n_warmup_steps: 2}\n"
        "params:\n"
        "  train.lr: {type: float, low: 1.0e-5, high: 1.0e-2, log: true}\n"
        "  train.batch_size: {type: categorical, choices: [8, 16, 32]}\n"
        "  model.head: {type: categorical, choices: [gap, gagm_se_dense]}\n"
        "  train.lr_patience: {type: int, low: 2, high: 8, step: 1}\n"
    )
    space = load_search_space(path)
    assert space.direction == "maximize" and space.pruner.n_warmup_steps == 2
    assert space.params["train.batch_size"].choices == [8, 16, 32]
    assert parse_search_space(SPACE).direction == "minimize"
    base = config(tmp_path / "ds", tmp_path)
    check_space_against(base, space)
    bad = parse_search_space(space_with(**{"params.model.drop_rate": {"type": "float", "low": 0.0, "high": 1.0}}))
    with pytest.raises(ConfigError, match=r"params\.model\.drop_rate: 1\.0 is not a valid value\n.*model\.drop_rate"):
        check_space_against(base, bad)
    with pytest.raises(ConfigError, match=r"train\.devices=2: mammocad tune trains each trial on one device"):
        check_single_device(config(tmp_path / "ds", tmp_path, **{"train.devices": 2, "train.strategy": "ddp"}))
    with pytest.raises(ConfigError, match=r"does not exist"):
        load_search_space(tmp_path / "missing.yaml")
    assert mask_url("postgresql://user:secret@db.lan:5432/optuna") == "postgresql://user:***@db.lan:5432/optuna"


def test_tiny_study_end_to_end_then_resume(dataset, tmp_path):
    base = config(dataset, tmp_path, **{"train.epochs": 1})
    lines: list[str] = []
    result = tune_study(base, parse_search_space(SPACE), 3, progress=lines.append)
    study_dir = tmp_path / "runs" / "tune-baseline_cnn"
    assert result.study_dir == study_dir and result.ran_now == 3
    assert [line.split()[:3] for line in lines] == [["trial", str(n), "COMPLETE"] for n in range(3)]
    trials = pd.read_csv(study_dir / "trials.csv")
    assert len(trials) == 3 and set(trials["state"]) == {"COMPLETE"}
    assert {"params_train.lr", "params_model.drop_rate", "run_dir", "error", "best_epoch", "epochs_done"} <= set(trials)
    for _, row in trials.iterrows():
        run_dir = Path(row["run_dir"])
        assert run_dir == study_dir / "trials" / f"trial-{row['number']}"
        history = pd.read_csv(run_dir / "history.csv")
        assert row["value"] == pytest.approx(history["val_loss"].min())  # objective: best epoch's value
        assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
        trial_config = load_run_config(run_dir / "config.yaml")
        assert trial_config.train.lr == pytest.approx(row["params_train.lr"]) and trial_config.train.devices == 1
    best = trials.loc[trials["value"].idxmin()]
    assert result.best_trial == best["number"] and result.best_value == pytest.approx(best["value"])
    best_config = load_run_config(study_dir / "best_config.yaml")
    assert best_config.train.lr == pytest.approx(best["params_train.lr"])
    assert best_config.model.drop_rate == pytest.approx(best["params_model.drop_rate"])
    assert best_config.output.name == "baseline_cnn-best" and best_config.output.runs_dir == base.output.runs_dir
    summary = json.loads((study_dir / "study.json").read_text())
    assert summary["trials"]["COMPLETE"] == 3 and summary["storage"].startswith("sqlite:///")
    assert summary["best_run_dir"] == str(study_dir / "trials" / f"trial-{best['number']}")
    page = (study_dir / "report.html").read_text()
    assert page.count('class="plotly-graph-div"') >= 3 and "Optimization history" in page
    assert "Plotly.newPlot" in page and "Parameter importances" in page
    shown = render(study_dir / "report.html", tmp_path)  # skipped without Chromium
    assert shown["plotly"] >= 4 and shown["headings"][:4] == ["Summary", "Best trial", "Plots", "Trials"]

    # Same command with a higher target: only the missing trial runs, numbering continues.
    lines.clear()
    again = tune_study(base, parse_search_space(SPACE), 4, progress=lines.append)
    assert again.ran_now == 1 and again.n_finished == 4 and lines[0].startswith("trial 3 COMPLETE")
    assert list(pd.read_csv(study_dir / "trials.csv")["number"]) == [0, 1, 2, 3]
    assert tune_study(base, parse_search_space(SPACE), 4).ran_now == 0


def _fake_train(series: dict[int, list[float]], metric: str, interrupt_at: int | None = None):
    """A stand-in for train(): reports the given per-epoch metric values, trains nothing."""

    def fake(run_config, progress=True, on_epoch=None, run_dir=None, resume=None):
        number = int(run_dir.name.split("-")[1])
        if number == interrupt_at:
            raise KeyboardInterrupt
        run_dir.mkdir(parents=True)
        for epoch, value in enumerate(series[number]):
            on_epoch({"epoch": epoch, "val_loss": 0.5, metric: value})
        return RunResult(run_dir, 0, 0.5, pd.DataFrame())

    return fake


def test_a_crashing_trial_is_recorded_and_the_study_goes_on(tmp_path, monkeypatch):
    fake = _fake_train({n: [0.5 + n / 10] for n in range(3)}, "val_loss")

    def flaky_train(run_config, **kwargs):
        if kwargs["run_dir"].name == "trial-1":
            raise RuntimeError("GPU fell off the bus")
        return fake(run_config, **kwargs)

    monkeypatch.setattr(tune_module, "train", flaky_train)
    base = config(tmp_path / "ds", tmp_path)
    result = tune_study(base, parse_search_space(SPACE), 3, study_dir=tmp_path / "study")
    trials = pd.read_csv(tmp_path / "study" / "trials.csv")
    assert list(trials["state"]) == ["COMPLETE", "FAIL", "COMPLETE"]
    assert trials["error"][1] == "RuntimeError: GPU fell off the bus" and trials["error"].isna().sum() == 2
    assert result.counts["FAIL"] == 1 and result.n_finished == 2 and result.best_trial == 0
    assert (tmp_path / "study" / "best_config.yaml").exists()
    # A failed trial is not finished: the same command again replaces it.
    assert tune_study(base, parse_search_space(SPACE), 3, study_dir=tmp_path / "study").ran_now == 1


def test_pruned_trial_is_stopped_and_recorded(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(optuna.pruners.MedianPruner, "prune", lambda self, study, trial: True)
    base = config(dataset, tmp_path, **{"train.epochs": 2})
    result = tune_study(base, parse_search_space(space_with(metric="val_acc")), 1, study_dir=tmp_path / "study")
    (trial,) = result.study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED and trial.user_attrs["epochs_done"] == 1
    run_dir = Path(trial.user_attrs["run_dir"])
    state = json.loads((run_dir / "run.json").read_text())
    assert state["status"] == "stopped" and "pruned" in state["reason"]
    assert len(pd.read_csv(run_dir / "history.csv")) == 1  # stopped after the first of two epochs
    assert result.n_finished == 1 and result.direction == "maximize" and result.best_trial is None
    assert "no trial completed" in (tmp_path / "study" / "report.html").read_text()


def test_nan_metric_values_neither_crash_nor_prune(tmp_path, monkeypatch):
    nan = float("nan")
    series = {0: [nan, 0.6, nan], 1: [nan, nan], 2: [0.7, 0.65]}
    monkeypatch.setattr(tune_module, "train", _fake_train(series, "val_auc_macro"))
    space = parse_search_space(space_with(metric="val_auc_macro", pruner={"n_startup_trials": 0}))
    result = tune_study(config(tmp_path / "ds", tmp_path), space, 3, study_dir=tmp_path / "s")
    t0, t1, t2 = result.study.trials
    assert t0.state.name == "COMPLETE" and t0.value == 0.6 and t0.intermediate_values == {1: 0.6}
    assert t0.user_attrs["best_epoch"] == 1 and t0.user_attrs["epochs_done"] == 3
    assert t1.state.name == "FAIL" and "NaN in every epoch" in t1.user_attrs["error"]
    assert t2.value == 0.7 and result.best_trial == 2 and result.best_value == 0.7
    assert result.trials["value"].notna().sum() == 2


def test_shared_storage_study_dirs_and_safety_checks(tmp_path, monkeypatch):
    monkeypatch.setattr(tune_module, "train", _fake_train({n: [1.0 / (n + 1)] for n in range(5)}, "val_loss"))
    base = config(tmp_path / "ds", tmp_path)
    space = parse_search_space(SPACE)
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    # Two "machines": their own study dirs, one database and study name.
    first = tune_study(base, space, 2, study_dir=tmp_path / "a", storage=url, study_name="s")
    second = tune_study(base, space, 3, study_dir=tmp_path / "b", storage=url, study_name="s")
    assert (first.ran_now, second.ran_now) == (2, 1)
    assert list(pd.read_csv(tmp_path / "b" / "trials.csv")["number"]) == [0, 1, 2]
    assert not (tmp_path / "b" / "study.db").exists()
    assert json.loads((tmp_path / "b" / "study.json").read_text())["trials"]["COMPLETE"] == 3
    with pytest.raises(ConfigError, match=r"optimises val_loss \(minimize\).*val_acc \(maximize\)"):
        tune_study(base, parse_search_space(space_with(metric="val_acc")), 5, storage=url, study_name="s")
    changed = space_with(**{"params.model.drop_rate": {"type": "categorical", "choices": [0.1, 0.5]}})
    with pytest.raises(ConfigError, match=r"params\.model\.drop_rate: does not fit study 's'"):
        tune_study(base, parse_search_space(changed), 5, storage=url, study_name="s")
    with pytest.raises(ConfigError, match="database URL"):
        tune_study(base, space, 1, storage="shared.db")


def test_killed_worker_trial_fails_by_heartbeat_and_interrupt_keeps_files(tmp_path, monkeypatch):
    base = config(tmp_path / "ds", tmp_path)
    space = parse_search_space(SPACE)
    url = f"sqlite:///{tmp_path / 's' / 'study.db'}"
    # A worker that died mid-trial: a RUNNING trial whose heartbeat stopped.
    storage = tune_module.open_storage(url, heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=storage, study_name="baseline_cnn", direction="minimize")
    with pytest.warns(UserWarning, match="Heartbeat"):
        trial = study.ask()
    storage.record_heartbeat(trial._trial_id)
    time.sleep(1.5)
    monkeypatch.setattr(tune_module, "train", _fake_train({n: [0.5] for n in range(3)}, "val_loss", interrupt_at=2))
    with pytest.raises(KeyboardInterrupt):
        tune_study(base, space, 5, study_dir=tmp_path / "s", heartbeat_interval=1, grace_period=1)
    trials = pd.read_csv(tmp_path / "s" / "trials.csv")
    assert list(trials["state"]) == ["FAIL", "COMPLETE", "FAIL"]  # stale, done, interrupted
    assert trials["error"][0] == tune_module.STALE_ERROR and trials["error"][2] == "KeyboardInterrupt"
    assert not (tmp_path / "s" / "report.html").exists()


def test_cli(dataset, tmp_path):
    app = typer.Typer()
    app.command()(tune)
    runner = CliRunner()
    base = tmp_path / "run.yaml"
    base.write_text(dump_run_config(config(dataset, tmp_path)))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(space_with(**{"params.train.lrr": {"type": "float", "low": 0.1, "high": 1}})))
    result = runner.invoke(app, ["--config", str(base), "--search", str(bad), "--trials", "2"])
    assert result.exit_code == 2 and "params.train.lrr: not a run-config field" in " ".join(result.output.split())

    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({"params": {"model.name": {"type": "categorical", "choices": ["no_such_model"]}}}))
    args = ["--config", base, "--search", broken, "--trials", "1", "--study-dir", tmp_path / "broken"]
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 1 and "no trial completed" in result.output and "trial 0 FAIL" in result.output
    assert (tmp_path / "broken" / "report.html").exists() and not (tmp_path / "broken" / "best_config.yaml").exists()

    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(SPACE))
    args = ["--config", base, "--search", good, "--trials", "1", "--set", "train.epochs=1", "--study-name", "cli"]
    result = runner.invoke(app, [str(a) for a in args])
    text = " ".join(result.output.split())
    assert result.exit_code == 0, text
    assert "trial 0 COMPLETE val_loss=" in text and "best val_loss=" in text and "report.html" in text
    assert (tmp_path / "runs" / "tune-cli" / "best_config.yaml").exists()
