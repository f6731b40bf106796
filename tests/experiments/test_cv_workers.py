"""Folds spread over workers: the shared work queue, and cv/ablate with several worker processes.

The queue tests (claims, heartbeats, takeover, fencing, the final unit) are fast and need no
training. The end-to-end ones start real `mammocad` worker processes on the tiny config the other
CV tests use and are marked slow (30-60 s each on 2 busy cores).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from mammocad.cli.main import app
from mammocad.errors import ConfigError
from mammocad.experiments.work_queue import (
    WorkQueue,
    gpu_groups,
    parse_gpus,
    run_worker,
    worker_environment,
    worker_id,
)
from mammocad.procs import Owner, host_tag, process_started
from tests.conftest import config

REMOTE = "elsewhere/1-1-000000"  # a worker on another host: only its heartbeat tells whether it lives
REMOTE_2 = "elsewhere/2-2-000000"


def sqlite_queue(tmp_path: Path, grace: float = 180.0, max_attempts: int = 3) -> WorkQueue:
    return WorkQueue(f"sqlite:///{tmp_path / 'queue.db'}", uuid.uuid4().hex, grace, max_attempts)


# ---------------------------------------------------------------------------------------------
# The queue


def check_claim_heartbeat_takeover(queue: WorkQueue) -> None:
    """Shared by SQLite and PostgreSQL: claim order, the final unit, expiry, takeover and fencing."""
    queue.add(["fold-0", "fold-1"], final="summary")
    queue.add(["fold-0", "fold-1"], final="summary")  # idempotent: every worker adds the units
    assert [u.name for u in queue.units()] == ["fold-0", "fold-1", "summary"]
    first = queue.claim(REMOTE)
    second = queue.claim(worker_id())
    assert (first.name, first.attempt, second.name) == ("fold-0", 1, "fold-1")
    assert queue.claim(worker_id()) is None  # fold-0 is held (fresh heartbeat), the summary waits
    assert queue.heartbeat(first) and queue.finish(second, "fold-1")
    assert queue.claim(worker_id()) is None
    time.sleep(queue.grace_period + 0.3)  # REMOTE stops sending heartbeats
    taken = queue.claim(worker_id())
    assert (taken.name, taken.attempt, taken.taken_from) == ("fold-0", 2, REMOTE)
    # The stopped worker's attempt is fenced off: its heartbeat and result change nothing.
    assert not queue.heartbeat(first) and not queue.finish(first, "fold-0")
    assert queue.finish(taken, "fold-0-2")
    summary = queue.claim(REMOTE_2)
    assert summary.final and summary.name == "summary"
    assert queue.finish(summary)
    units = {u.name: u for u in queue.units()}
    assert {u.state for u in units.values()} == {"done"}
    assert units["fold-0"].run_dir == "fold-0-2" and units["fold-0"].attempts == 2
    assert queue.claim(worker_id()) is None


def test_claim_heartbeat_takeover_and_the_final_unit_on_sqlite(tmp_path):
    check_claim_heartbeat_takeover(sqlite_queue(tmp_path, grace=0.5))


def test_claim_heartbeat_takeover_on_postgresql(request):
    try:
        url = request.getfixturevalue("postgres_url")
    except pytest.FixtureLookupError:
        pytest.skip("no postgres_url fixture")
    queue = WorkQueue(url, uuid.uuid4().hex, grace_period=0.5)
    check_claim_heartbeat_takeover(queue)
    # and two workers sharing it, the final unit run once
    other = WorkQueue(url, uuid.uuid4().hex, grace_period=5)
    ran = run_threaded_workers(other, [f"fold-{k}" for k in range(6)])
    assert sorted(ran) == sorted([*(f"fold-{k}" for k in range(6)), "summary"])


CLAIMER = """
import os, sys, time
from pathlib import Path
from mammocad.experiments.work_queue import WorkQueue, worker_id
queue = WorkQueue(sys.argv[1], sys.argv[2])
Path(sys.argv[3], f"ready-{os.getpid()}").touch()
while not Path(sys.argv[3], "go").exists():  # every process starts claiming at the same moment
    time.sleep(0.01)
got = []
while (claim := queue.claim(worker_id())) is not None:
    got.append(claim.name)
    time.sleep(0.01)  # a unit's work
    assert queue.finish(claim, worker_id())
print(len(got))
"""


def test_claims_from_concurrent_processes_are_exclusive(tmp_path):
    queue = sqlite_queue(tmp_path)
    names = [f"unit-{k}" for k in range(40)]
    queue.add(names)
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, queue.url, queue.queue_id, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    wait_for(lambda: len(list(tmp_path.glob("ready-*"))) == 4, "the claiming processes to start", timeout=120)
    (tmp_path / "go").touch()
    counts = [int(p.communicate(timeout=120)[0]) for p in processes]
    assert all(p.returncode == 0 for p in processes)
    units = queue.units()
    assert sum(counts) == len(names)  # every unit claimed once, by one process
    assert all(u.state == "done" and u.attempts == 1 for u in units)
    assert len({u.run_dir for u in units}) > 1  # the processes really competed


def test_a_dead_local_worker_is_taken_over_without_waiting_for_the_grace(tmp_path):
    queue = sqlite_queue(tmp_path, grace=1000)
    queue.add(["fold-0"])
    sleeper = subprocess.Popen(["sleep", "60"])
    dead = f"host/{Owner(sleeper.pid, process_started(sleeper.pid) or 0, host_tag()).token}"
    queue.claim(dead)
    assert queue.claim(worker_id()) is None  # alive: its unit stays its own
    sleeper.kill()
    sleeper.wait()
    taken = queue.claim(worker_id())
    assert taken is not None and taken.taken_from == dead


def test_units_whose_workers_keep_dying_fail_and_retry_failed_resets_them(tmp_path):
    queue = sqlite_queue(tmp_path, grace=0.2, max_attempts=2)
    queue.add(["fold-0"], final="summary")
    queue.claim(REMOTE)
    time.sleep(0.4)
    assert queue.claim(REMOTE_2).attempt == 2
    time.sleep(0.4)
    assert queue.claim(worker_id()) is None  # the second stop used up the attempts
    unit = queue.units()[0]
    assert unit.state == "failed" and "stopped" in unit.error and "2 times" in unit.error
    assert queue.units()[1].state == "pending"  # the summary never runs on a failed fold
    assert queue.retry_failed() == ["fold-0"]
    again = queue.claim(worker_id())
    assert again.name == "fold-0" and again.attempt == 1


def run_threaded_workers(queue: WorkQueue, names: list[str], workers: int = 2) -> list[str]:
    """``workers`` threads running :func:`run_worker` on ``names`` + a final unit; the units run, in order."""
    queue.add(names, final="summary")
    ran: list[str] = []
    lock = threading.Lock()

    def do_unit(lease):
        time.sleep(0.05)
        with lock:
            ran.append(lease.claim.name)
        return f"run-{lease.claim.name}"

    threads = [
        threading.Thread(target=run_worker, args=(queue, do_unit), kwargs={"worker": f"thread-{k}/x"})
        for k in range(workers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return ran


def test_two_worker_loops_run_every_unit_once_and_the_final_unit_last(tmp_path):
    queue = sqlite_queue(tmp_path, grace=5)
    names = [f"fold-{k}" for k in range(8)]
    ran = run_threaded_workers(queue, names)
    assert sorted(ran[:-1]) == names and ran[-1] == "summary"
    units = queue.units()
    assert all(u.state == "done" and u.attempts == 1 for u in units)
    assert {u.worker for u in units if not u.final} == {"thread-0/x", "thread-1/x"}
    assert units[0].run_dir == "run-fold-0"


def test_a_failing_unit_is_recorded_and_the_worker_goes_on(tmp_path):
    queue = sqlite_queue(tmp_path, grace=5)
    queue.add(["fold-0", "fold-1"], final="summary")

    def do_unit(lease):
        if lease.claim.name == "fold-0":
            raise RuntimeError("out of memory")
        return lease.claim.name

    report = run_worker(queue, do_unit)
    assert report.failed == {"fold-0": "RuntimeError: out of memory"} and report.finished == ["fold-1"]
    assert not report.complete
    states = {u.name: (u.state, u.error) for u in queue.units()}
    assert states["fold-0"] == ("failed", "RuntimeError: out of memory") and states["summary"][0] == "pending"


def test_ctrl_c_gives_the_unit_back(tmp_path):
    queue = sqlite_queue(tmp_path)
    queue.add(["fold-0"])

    def interrupted(_lease):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_worker(queue, interrupted)
    unit = queue.units()[0]
    assert (unit.state, unit.attempts) == ("pending", 0)
    assert queue.claim(worker_id()).attempt == 1


def test_a_worker_whose_unit_was_taken_over_stops_it(tmp_path):
    # Heartbeats slower than the grace: the worker looks stopped to the others (a stalled machine).
    queue = sqlite_queue(tmp_path, grace=0.2)
    queue.add(["fold-0"])
    calls = []

    def stalled(lease):
        calls.append(lease.claim.attempt)
        if len(calls) == 1:
            time.sleep(0.35)
            assert queue.claim(REMOTE).attempt == 2  # another worker takes the unit over
            deadline = time.monotonic() + 10
            while not lease.lost and time.monotonic() < deadline:
                time.sleep(0.05)
            lease.check()  # raises UnitLost: the worker drops the unit
        return "mine"

    report = run_worker(queue, stalled, heartbeat_interval=0.5, poll_interval=0.05, worker="me/x")
    # REMOTE never sends a heartbeat either, so after the grace this worker takes the unit back.
    assert calls == [1, 3] and report.lost == ["fold-0"] and report.finished == ["fold-0"]
    unit = queue.units()[0]
    assert (unit.state, unit.worker, unit.attempts, unit.run_dir) == ("done", "me/x", 3, "mine")


def test_gpus_are_shared_out_among_workers():
    assert parse_gpus("0, 1,3") == ["0", "1", "3"] and parse_gpus(None) is None
    with pytest.raises(ConfigError, match="GPU numbers"):
        parse_gpus("0,x")
    with pytest.raises(ConfigError, match="twice"):
        parse_gpus("1,1")
    assert gpu_groups(["0", "1", "2", "3"], 2) == [["0", "1"], ["2", "3"]]
    assert gpu_groups(["0", "1"], 4) == [["0"], ["1"], ["0"], ["1"]]
    with pytest.raises(ConfigError, match="evenly"):
        gpu_groups(["0", "1", "2"], 2)
    env = worker_environment("worker 1", ["2", "3"], 2, "postgresql://u:secret@db/x")
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3" and env["MAMMOCAD_CV_STORAGE"] == "postgresql://u:secret@db/x"
    assert env["MAMMOCAD_WORKER_PARENT"] == str(os.getpid())


# ---------------------------------------------------------------------------------------------
# cv / ablate with workers


def config_file(dataset: Path, tmp_path: Path, **overrides) -> Path:
    from mammocad.training.config import dump_run_config

    path = tmp_path / "run.yaml"
    path.write_text(dump_run_config(config(dataset, tmp_path, **{"train.epochs": 1, **overrides})))
    return path


def queue_of(directory: Path, state_file: str = "cv.json") -> WorkQueue:
    from mammocad.experiments.work_queue import open_recorded_queue

    return open_recorded_queue(directory, json.loads((directory / state_file).read_text())["queue"])


def test_join_and_resume_refuse_what_they_cannot_work_on(dataset, tmp_path):
    from mammocad.experiments.cv import create_cv, work_on_cv
    from mammocad.experiments.work_queue import queue_record

    def run(*arguments: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, list(arguments))
        return result.exit_code, " ".join(result.output.split())  # unwrapped

    code, output = run("cv", "--join", str(tmp_path))
    assert code == 2 and "not a cross-validation directory" in output
    code, output = run("cv", "--join", str(tmp_path), "--config", "x.yaml")
    assert code == 2 and "leave out" in output and "--config and --set" in output
    cfg = config_file(dataset, tmp_path)
    code, output = run("cv", "--config", str(cfg), "--gpus", "0,a", "-o", str(tmp_path / "g"))
    assert code == 2 and "GPU numbers" in output and not (tmp_path / "g").exists()
    plain = create_cv(config(dataset, tmp_path), 2, tmp_path / "plain", 0, 0)
    code, output = run("cv", "--join", str(plain))
    assert code == 2 and "started without a work queue" in output
    code, output = run("ablate", "--join", str(plain))
    assert code == 2 and "not an ablation directory" in output
    queued = create_cv(config(dataset, tmp_path), 2, tmp_path / "queued", 0, 0, queue=queue_record(None))
    with pytest.raises(ConfigError, match=r"its work queue is in sqlite:///.*queued/queue\.db"):
        work_on_cv(queued, storage=f"sqlite:///{tmp_path / 'other.db'}")
    masked = create_cv(
        config(dataset, tmp_path), 2, tmp_path / "pg", 0, 0, queue=queue_record("postgresql://u:secret@db.lan/q")
    )
    assert "secret" not in (masked / "cv.json").read_text()
    with pytest.raises(ConfigError, match=r"postgresql://u:\*\*\*@db.lan/q; give that URL with its password"):
        work_on_cv(masked)


@pytest.mark.slow
def test_two_workers_train_each_fold_once_and_match_a_single_worker(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the same threads in both CVs (and modest CPU use)
    cfg = config_file(dataset, tmp_path)
    common = ["cv", "--config", str(cfg), "--folds", "2", "--resamples", "0"]
    result = CliRunner().invoke(app, [*common, "-o", str(tmp_path / "multi"), "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "auc_macro:" in result.output and "report:" in result.output
    multi = tmp_path / "multi"
    units = {u.name: u for u in queue_of(multi).units()}
    assert all(u.state == "done" and u.attempts == 1 for u in units.values())  # each fold trained once
    assert len({units["fold-0"].worker, units["fold-1"].worker}) == 2  # by two worker processes
    assert sorted(p.name for p in multi.glob("fold-*") if p.is_dir()) == ["fold-0", "fold-1"]
    state = json.loads((multi / "cv.json").read_text())
    assert state["status"] == "completed" and state["runs"] == {"0": "fold-0", "1": "fold-1"}

    # The same CV without workers, in a process of its own as well (the same threads: the same numbers).
    single = tmp_path / "single"
    done = subprocess.run(
        [sys.executable, "-m", "mammocad.cli.main", *common, "-o", str(single)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (single / "queue.db").exists() and "queue" not in json.loads((single / "cv.json").read_text())
    pd.testing.assert_frame_equal(pd.read_csv(multi / "folds.csv"), pd.read_csv(single / "folds.csv"))
    summaries = [json.loads((d / "summary.json").read_text()) for d in (multi, single)]
    for summary in summaries:
        summary.pop("cv_dir")
    assert summaries[0] == summaries[1]
    pd.testing.assert_frame_equal(
        pd.read_parquet(multi / "oof_predictions.parquet"), pd.read_parquet(single / "oof_predictions.parquet")
    )


def start_worker(arguments: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "mammocad.cli.main", *arguments], stdout=out, stderr=subprocess.STDOUT, env=env
        )


def wait_for(condition, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def training(run_dir: Path) -> bool:
    try:
        return json.loads((run_dir / "run.json").read_text()).get("status") == "running"
    except (OSError, ValueError):
        return False


@pytest.mark.slow
def test_a_killed_worker_s_fold_is_taken_over_by_the_other_worker(dataset, tmp_path):
    """Two workers join a CV; the one training fold 0 is killed (SIGKILL) and made to look like a
    machine that vanished; after the grace the other trains fold 0 anew beside the partial run."""
    from mammocad.experiments.cv import create_cv
    from mammocad.experiments.work_queue import queue_record

    cfg = config(dataset, tmp_path, **{"train.epochs": 3})
    cv_dir = create_cv(cfg, 2, tmp_path / "cv", 0, 0, queue=queue_record(None, grace_period=3))
    workers = [start_worker(["cv", "--join", str(cv_dir)], tmp_path / f"w{k}.log") for k in range(2)]
    by_pid = {str(process.pid): k for k, process in enumerate(workers)}
    queue = queue_of(cv_dir)

    def holders() -> dict[str, int]:
        return {u.name: by_pid[u.worker.rsplit("/", 1)[1].split("-")[0]] for u in queue.units() if u.state == "running"}

    try:
        wait_for(
            lambda: len(set(holders().values())) == 2 and training(cv_dir / "fold-0"),
            "both workers to hold a fold, fold 0 training",
        )
        victim = holders()["fold-0"]
        workers[victim].send_signal(signal.SIGKILL)
        workers[victim].wait()
        # Make it look like a worker on another host (a vanished machine): only the grace tells it stopped.
        with queue._engine.begin() as connection:
            table = queue._table
            connection.execute(
                table.update()
                .where((table.c.queue == queue.queue_id) & (table.c.unit == "fold-0"))
                .values(worker=REMOTE)
            )
        run_json = cv_dir / "fold-0" / "run.json"
        run_json.write_text(json.dumps({**json.loads(run_json.read_text()), "host": "elsewhere"}))
        partial = run_json.read_text()
        survivor = workers[1 - victim]
        assert survivor.wait(timeout=600) == 0, (tmp_path / f"w{1 - victim}.log").read_text()
    finally:
        for process in workers:
            if process.poll() is None:
                process.kill()
    log = (tmp_path / f"w{1 - victim}.log").read_text()
    assert "fold-0: taking over from elsewhere" in log and "left as it is, training anew" in log
    units = {u.name: u for u in queue.units()}
    assert units["fold-0"].attempts == 2 and units["fold-0"].run_dir == "fold-0-2"
    assert units["fold-1"].attempts == 1 and units["summary"].attempts == 1
    assert run_json.read_text() == partial  # the stopped worker's partial run left as it was
    state = json.loads((cv_dir / "cv.json").read_text())
    assert state["status"] == "completed" and state["runs"] == {"0": "fold-0-2", "1": "fold-1"}
    assert list(pd.read_csv(cv_dir / "folds.csv")["run"]) == ["fold-0-2", "fold-1"]
    assert (cv_dir / "report.html").exists()


@pytest.mark.slow
def test_ablate_with_two_workers(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cfg = config_file(dataset, tmp_path, **{"model.head": "gagm_se_dense", "train.lambda_fs": 0.1})
    out = tmp_path / "abl"
    arguments = ["ablate", "--config", str(cfg), "--ablations", "fsl", "--folds", "2", "-o", str(out)]
    result = CliRunner().invoke(app, [*arguments, "--workers", "2", "--resamples", "0"])
    assert result.exit_code == 0, result.output
    units = {u.name: u for u in queue_of(out, "ablate.json").units()}
    assert set(units) == {"full/fold-0", "full/fold-1", "without-fsl/fold-0", "without-fsl/fold-1", "summary"}
    assert all(u.state == "done" and u.attempts == 1 for u in units.values())
    assert len({u.worker for u in units.values() if not u.final}) == 2
    table = pd.read_csv(out / "ablation.csv", index_col=0)
    assert list(table.index) == ["full", "without-fsl"] and table.loc["full", "auc_macro_difference"] == 0
    for variant in ("full", "without-fsl"):
        state = json.loads((out / variant / "cv.json").read_text())
        assert state["status"] == "completed" and state["runs"] == {"0": "fold-0", "1": "fold-1"}
    assert json.loads((out / "ablate.json").read_text())["status"] == "completed"
    # Resuming a finished ablation changes nothing and says so.
    before = (out / "ablation.csv").stat().st_mtime_ns
    again = CliRunner().invoke(app, ["ablate", "--resume", str(out)])
    assert again.exit_code == 0 and "done already" in again.output
    assert (out / "ablation.csv").stat().st_mtime_ns == before


def test_failed_folds_end_the_cv_with_exit_code_1_and_resume_tries_them_again(dataset, tmp_path, monkeypatch):
    from mammocad.experiments.cv import work_on_cv
    from mammocad.experiments.work_queue import IncompleteWork

    def out_of_memory(config, **_kwargs):
        raise RuntimeError(f"out of memory in fold {config.data.fold}")

    monkeypatch.setattr("mammocad.experiments.cv.train", out_of_memory)
    cfg = config_file(dataset, tmp_path)
    cv_dir = tmp_path / "cv"
    result = CliRunner().invoke(app, ["cv", "--config", str(cfg), "--folds", "2", "-o", str(cv_dir), "--workers", "1"])
    output = " ".join(result.output.split())
    assert result.exit_code == 1, result.output
    assert "fold-0 (RuntimeError: out of memory in fold 0)" in output and f"mammocad cv --resume {cv_dir}" in output
    state = json.loads((cv_dir / "cv.json").read_text())
    assert state["status"] == "interrupted" and "out of memory in fold 1" in state["error"]
    units = {u.name: u for u in queue_of(cv_dir).units()}
    assert [units[n].state for n in ("fold-0", "fold-1", "summary")] == ["failed", "failed", "pending"]
    assert not (cv_dir / "summary.json").exists()
    lines = []
    with pytest.raises(IncompleteWork):
        work_on_cv(cv_dir, resume=True, progress=lines.append)
    assert "trying again: fold-0, fold-1" in lines
    assert all(u.attempts == 1 for u in queue_of(cv_dir).units() if not u.final)  # reset, then tried once more


@pytest.mark.slow
def test_two_workers_on_a_postgresql_queue(request, dataset, tmp_path, monkeypatch):
    try:
        url = request.getfixturevalue("postgres_url")
    except pytest.FixtureLookupError:
        pytest.skip("no postgres_url fixture")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MAMMOCAD_CV_STORAGE", url)  # handed on to the workers through their environment
    cv_dir = tmp_path / "cv"
    cfg = config_file(dataset, tmp_path)
    result = CliRunner().invoke(
        app, ["cv", "--config", str(cfg), "--folds", "2", "-o", str(cv_dir), "--workers", "2", "--resamples", "0"]
    )
    assert result.exit_code == 0, result.output
    assert not (cv_dir / "queue.db").exists()
    record = json.loads((cv_dir / "cv.json").read_text())["queue"]
    assert record["storage"].startswith("postgresql")
    from mammocad.experiments.work_queue import open_recorded_queue

    units = open_recorded_queue(cv_dir, record, url).units()
    assert [(u.name, u.state, u.attempts) for u in units] == [
        ("fold-0", "done", 1),
        ("fold-1", "done", 1),
        ("summary", "done", 1),
    ]
    assert json.loads((cv_dir / "cv.json").read_text())["status"] == "completed"
