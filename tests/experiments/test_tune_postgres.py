"""``mammocad tune`` on a real PostgreSQL server: workers sharing one study, a worker killed mid-trial,
resume, the password masked in the study files, and the driver/URL handling (see tests/postgres.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from mammocad.errors import ConfigError
from mammocad.experiments import storage as storage_module
from mammocad.experiments import tune as tune_module
from mammocad.experiments.tune import STALE_ERROR, database_url, mask_url, open_storage
from mammocad.training.config import dump_run_config
from tests.conftest import config
from tests.experiments.test_tune import SPACE, _fake_train
from tests.postgres import new_database

PASSWORD = "s3cret-pw"


def user_url(postgres_url: str) -> str:
    """A fresh database on the test server, as a user writes it: plain ``postgresql://`` with a password
    (trust authentication ignores it; an external server's own password is kept)."""
    url = make_url(new_database(postgres_url, "tune"))
    url = url.set(drivername="postgresql", password=url.password or PASSWORD)
    return url.render_as_string(hide_password=False)


def load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=database_url(url))


def tune_command(config_file: Path, space_file: Path, trials: int, url: str, study_dir: Path, *extra: str) -> list[str]:
    mammocad = Path(sys.executable).with_name("mammocad")
    entry = (
        [str(mammocad)] if mammocad.exists() else [sys.executable, "-c", "from mammocad.cli.main import main; main()"]
    )
    args = ["--config", config_file, "--search", space_file, "--trials", trials, "--storage", url]
    args += ["--study-name", "shared", "--study-dir", study_dir, *extra]
    return [*entry, "tune", *(str(a) for a in args)]


def start_worker(command: list[str], log: Path) -> subprocess.Popen:
    # Its own process group, so that a kill also reaches any data-loader processes it started.
    return subprocess.Popen(
        command, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ}
    )


def inputs(dataset: Path, tmp_path: Path, epochs: int) -> tuple[Path, Path]:
    config_file = tmp_path / "run.yaml"
    config_file.write_text(dump_run_config(config(dataset, tmp_path, **{"train.epochs": epochs})))
    space_file = tmp_path / "space.yaml"
    space_file.write_text(yaml.safe_dump(SPACE))
    return config_file, space_file


def trial_dirs(*study_dirs: Path) -> list[str]:
    return sorted(p.name for d in study_dirs for p in (d / "trials").glob("trial-*"))


def test_postgres_url_forms_and_a_missing_driver(monkeypatch):
    assert database_url("postgresql://u:pw@db:5432/optuna") == "postgresql+psycopg://u:pw@db:5432/optuna"
    assert database_url("postgres://u@db/optuna") == "postgresql+psycopg://u@db/optuna"
    assert database_url("postgresql+psycopg://u@db/o") == "postgresql+psycopg://u@db/o"
    assert database_url("sqlite:///x.db") == "sqlite:///x.db"
    monkeypatch.setattr(storage_module, "_importable", lambda module: module == "psycopg2")
    assert database_url("postgresql://u@db/optuna") == "postgresql://u@db/optuna"  # SQLAlchemy's default driver
    monkeypatch.setattr(storage_module, "_importable", lambda module: False)
    with pytest.raises(ConfigError, match=r"postgresql://u:\*\*\*@db/o: no PostgreSQL driver.*postgres extra"):
        database_url("postgresql://u:pw@db/o")
    # An explicit driver that is not installed: the same hint (psycopg2 is not in the environment).
    with pytest.raises(
        ConfigError, match=r"database driver missing .*psycopg2.*psycopg2-binary, or write postgresql://"
    ):
        open_storage("postgresql+psycopg2://u:pw@127.0.0.1:1/o")


def test_open_storage_on_postgres_and_unreachable_server(postgres_url, monkeypatch):
    url = user_url(postgres_url)
    monkeypatch.setattr(storage_module.time, "sleep", lambda seconds: None)  # open_storage's retries
    storage = open_storage(url, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(storage=storage, study_name="plain", direction="minimize")
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    assert [t.state.name for t in load(url, "plain").trials] == ["COMPLETE", "COMPLETE"]
    with pytest.raises(tune_module.MammocadError, match=r"postgres:\*\*\*@127\.0\.0\.1:1/.*cannot open"):
        open_storage(f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/nothing")


@pytest.mark.slow  # two `mammocad tune` processes (torch start-up, real training): ~40 s, minutes on a busy machine
def test_two_worker_processes_share_one_study(dataset, postgres_url, tmp_path):
    url = user_url(postgres_url)
    config_file, space_file = inputs(dataset, tmp_path, epochs=1)
    n_trials = 4
    workers = [
        start_worker(
            tune_command(config_file, space_file, n_trials, url, tmp_path / f"machine{i}", "--seed", str(i)),
            tmp_path / f"worker{i}.log",
        )
        for i in range(2)
    ]
    for worker in workers:
        worker.wait(timeout=300)
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert [w.returncode for w in workers] == [0, 0], logs

    trials = load(url, "shared").trials
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == n_trials
    # Workers asking at the same instant may get one trial too many: it is recorded unrun, never trained.
    assert all(t.user_attrs["error"].startswith("not run") for t in trials if t.state.name != "COMPLETE")
    # Each trial ran once, in one worker's study dir, and both workers ran trials of the same study.
    ran = trial_dirs(tmp_path / "machine0", tmp_path / "machine1")
    assert ran == sorted(f"trial-{t.number}" for t in complete)
    assert {Path(t.user_attrs["run_dir"]).parent.parent.name for t in complete} <= {"machine0", "machine1"}
    for t in complete:
        assert json.loads((Path(t.user_attrs["run_dir"]) / "run.json").read_text())["status"] == "completed"
    printed = sorted(int(line.split()[1]) for log in logs for line in log.splitlines() if line.startswith("trial "))
    assert printed == sorted(t.number for t in trials)  # each trial reported by exactly one worker

    # The storage is shown with its password masked everywhere.
    masked = mask_url(url)
    assert masked.startswith("postgresql://postgres:***@127.0.0.1:") and PASSWORD not in masked
    finished = []
    for machine in ("machine0", "machine1"):
        summary = json.loads((tmp_path / machine / "study.json").read_text())
        assert summary["storage"] == masked
        finished.append(summary["trials"]["COMPLETE"])  # as each worker saw it when it stopped
        page = (tmp_path / machine / "report.html").read_text()
        assert masked in page and PASSWORD not in page
        assert PASSWORD not in (tmp_path / machine / "trials.csv").read_text()
    assert all(PASSWORD not in log for log in logs)
    assert max(finished) == n_trials


def test_in_process_workers_share_a_postgres_study_exactly(postgres_url, tmp_path, monkeypatch):
    """Three workers (threads) on one study: exactly the target number of trials is trained, even when
    workers ask for trials at the same moment."""
    fake = _fake_train({n: [1.0 / (n + 1)] for n in range(40)}, "val_loss")

    def slow_fake(run_config, **kwargs):
        time.sleep(0.3)  # long enough for the workers' trials to overlap
        return fake(run_config, **kwargs)

    monkeypatch.setattr(tune_module, "train", slow_fake)
    url = user_url(postgres_url)
    base = config(tmp_path / "ds", tmp_path)
    space = tune_module.parse_search_space(SPACE)
    results: dict[int, tune_module.TuneResult] = {}

    def worker(i: int) -> None:
        results[i] = tune_module.tune_study(
            base, space, 7, study_dir=tmp_path / f"w{i}", storage=url, study_name="threads", seed=i
        )

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == 3
    trials = load(url, "threads").trials
    assert sum(t.state.name == "COMPLETE" for t in trials) == 7
    assert all(t.user_attrs["error"].startswith("not run") for t in trials if t.state.name != "COMPLETE")
    assert sorted(trial_dirs(*(tmp_path / f"w{i}" for i in range(3)))) == sorted(
        f"trial-{t.number}" for t in trials if t.state.name == "COMPLETE"
    )
    assert sum(r.ran_now for r in results.values()) == len(trials)
    assert {r.storage for r in results.values()} == {mask_url(url)} and PASSWORD not in mask_url(url)


def test_abandoned_trial_is_failed_by_heartbeat_and_replaced_on_postgres(postgres_url, tmp_path, monkeypatch):
    monkeypatch.setattr(tune_module, "train", _fake_train({n: [0.5] for n in range(5)}, "val_loss"))
    url = user_url(postgres_url)
    base = config(tmp_path / "ds", tmp_path)
    space = tune_module.parse_search_space(SPACE)
    first = tune_module.tune_study(
        base, space, 1, study_dir=tmp_path / "s", storage=url, study_name="hb", heartbeat_interval=1, grace_period=1
    )
    assert first.ran_now == 1
    # A worker that died mid-trial: a RUNNING trial whose heartbeat stopped.
    study = optuna.load_study(study_name="hb", storage=open_storage(url, heartbeat_interval=1, grace_period=1))
    with pytest.warns(UserWarning, match="Heartbeat"):
        abandoned = study.ask()
    study._storage.record_heartbeat(abandoned._trial_id)
    time.sleep(1.5)
    result = tune_module.tune_study(
        base, space, 3, study_dir=tmp_path / "s", storage=url, study_name="hb", heartbeat_interval=1, grace_period=1
    )
    assert result.ran_now == 2 and result.counts["COMPLETE"] == 3 and result.counts["FAIL"] == 1
    table = pd.read_csv(tmp_path / "s" / "trials.csv").set_index("number")
    assert table.loc[abandoned.number, "state"] == "FAIL" and table.loc[abandoned.number, "error"] == STALE_ERROR
    assert list(table.index) == [0, 1, 2, 3]  # resumed: numbering continues, trial 0 kept
    summary = json.loads((tmp_path / "s" / "study.json").read_text())
    assert summary["storage"] == mask_url(url) and PASSWORD not in (tmp_path / "s" / "report.html").read_text()


def running_trial_with_an_epoch(url: str) -> optuna.trial.FrozenTrial | None:
    try:
        trials = load(url, "shared").trials
    except KeyError:  # the worker has not created the study yet
        return None
    return next((t for t in trials if t.state.name == "RUNNING" and t.user_attrs.get("epochs_done")), None)


@pytest.mark.slow  # a `mammocad tune` process, killed, then the study finished in-process: ~40 s and more
def test_killed_worker_trial_fails_by_heartbeat_and_the_command_resumes(dataset, postgres_url, tmp_path):
    url = user_url(postgres_url)
    config_file, space_file = inputs(dataset, tmp_path, epochs=2)
    command = tune_command(config_file, space_file, 2, url, tmp_path / "study", "--heartbeat", "1", "--grace", "2")
    worker = start_worker(command, tmp_path / "killed.log")
    try:
        deadline = time.monotonic() + 240
        while (victim := running_trial_with_an_epoch(url)) is None:
            assert worker.poll() is None, (tmp_path / "killed.log").read_text()
            assert time.monotonic() < deadline, "the worker never got into a trial"
            time.sleep(0.2)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)  # mid-trial: after its first epoch, before its last
        worker.wait(timeout=60)
    time.sleep(3)  # past --grace: the rerun below must not take the dead trial for a live worker's
    before = {t.number: t.state.name for t in load(url, "shared").trials}
    assert before[victim.number] == "RUNNING"  # nobody has noticed yet
    done_before = sorted(n for n, state in before.items() if state == "COMPLETE")

    # The same command again (in-process here): the dead trial is failed by its stale heartbeat and
    # replaced; finished trials are kept and numbering continues.
    app_args = command[command.index("tune") + 1 :]
    result = CliRunner().invoke(_tune_app(), app_args)
    assert result.exit_code == 0, result.output
    trials = load(url, "shared").trials
    states = {t.number: t.state.name for t in trials}
    assert states[victim.number] == "FAIL"
    assert sum(state == "COMPLETE" for state in states.values()) == 2
    assert all(states[n] == "COMPLETE" for n in done_before)  # not run again
    rerun = [int(line.split()[1]) for line in result.output.splitlines() if line.startswith("trial ")]
    assert rerun and min(rerun) > max(before)  # only new trials, numbered after the old ones
    table = pd.read_csv(tmp_path / "study" / "trials.csv")
    assert table.set_index("number").loc[victim.number, "error"] == STALE_ERROR
    assert "2/2 finished" in " ".join(result.output.split())

    # Once more: the study is complete, nothing runs.
    again = CliRunner().invoke(_tune_app(), app_args)
    assert again.exit_code == 0, again.output
    assert not [line for line in again.output.splitlines() if line.startswith("trial ")]
    assert len(load(url, "shared").trials) == len(trials)


def _tune_app():
    import typer

    from mammocad.cli.tune import tune

    app = typer.Typer()
    app.command()(tune)
    return app
