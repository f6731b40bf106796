"""After a SIGKILL: workers die with their parent, and what a killed import/preprocess left is listed,
then removed by the next command (never what a live process is writing)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mammocad.cli.main import app
from mammocad.data.importers import import_dataset
from mammocad.data.synth import write_synthetic_dataset
from mammocad.io import atomic_write_text, find_leftovers, staging_dir
from mammocad.preprocess import PreprocessConfig, preprocess_dataset
from mammocad.preprocess.cache import cache_dir_for
from mammocad.procs import die_with_parent, host_tag, owner_token, pid_alive

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _python(script: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _children(pid: int) -> set[int]:
    """Direct children of ``pid`` (psutil when installed, else /proc)."""
    try:
        import psutil  # type: ignore[import-not-found]

        return {child.pid for child in psutil.Process(pid).children()}
    except ImportError:
        pass
    found: set[int] = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            data = stat.read_bytes()
        except OSError:
            continue
        if int(data[data.rindex(b")") + 2 :].split()[1]) == pid:  # field 4: the parent's PID
            found.add(int(stat.parent.name))
    return found


def _wait_gone(pids: set[int], timeout: float = 5.0) -> set[int]:
    """The PIDs of ``pids`` still alive after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        alive = {pid for pid in alive if pid_alive(pid)}
        time.sleep(0.05)
    return alive


def _dead_pid() -> int:
    """The PID of a process that has ended (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def _stale_name(name: str, pid: int) -> str:
    """A temporary name as a dead process ``pid`` would have left it."""
    return f".{name}.{pid}-0-{host_tag()}.abcd1234.tmp"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("use_prctl", [True, False], ids=["prctl", "watcher-thread"])
def test_worker_dies_with_its_killed_parent(use_prctl):
    parent = _python(
        f"""
        import os, sys, time
        from mammocad.procs import die_with_parent
        parent = os.getpid()
        if os.fork() == 0:
            die_with_parent(parent, use_prctl={use_prctl})
            print(os.getpid(), flush=True)  # armed: the test may kill the parent now
            time.sleep(60)
            os._exit(0)
        time.sleep(60)
        """
    )
    try:
        child = int(parent.stdout.readline())
        assert pid_alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert not _wait_gone({child}), "the worker outlived its killed parent"
    finally:
        parent.kill()
        parent.wait()


def test_die_with_parent_exits_when_the_parent_is_already_gone():
    child = _python(f"from mammocad.procs import die_with_parent; die_with_parent({_dead_pid()}); print('alive')")
    out, _ = child.communicate(timeout=30)
    assert child.returncode == 1 and "alive" not in out
    die_with_parent(os.getppid())  # a live parent: returns (and this test process lives on)


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("leftovers")
    source = write_synthetic_dataset(root / "src", "csv", {"normal": 8, "malignant": 8}, seed=1, height=256, width=192)
    import_dataset("csv", source, root / "ds")
    return root / "ds"


def test_killed_preprocess_leaves_no_worker_and_the_next_run_cleans_up(small_dataset):
    # The real `mammocad preprocess` command, each image slowed to 0.25 s so the kill lands mid-run.
    command = _python(
        """
        import sys, time
        import mammocad.preprocess.driver as driver
        real = driver.run_job
        def slow(*args):
            time.sleep(0.25)
            return real(*args)
        slow.__qualname__ = slow.__name__ = "run_job"  # pickled by reference into the (forked) workers
        slow.__module__ = driver.__name__
        driver.run_job = slow
        from mammocad.cli.main import main
        sys.argv = ["mammocad", "preprocess", sys.argv[1], "--image-size", "40", "--workers", "2"]
        main()
        """,
        str(small_dataset),
    )
    try:
        deadline = time.monotonic() + 60
        workers: set[int] = set()
        while len(workers) < 2 and time.monotonic() < deadline and command.poll() is None:
            workers = _children(command.pid)
            time.sleep(0.02)
        assert len(workers) == 2, command.stderr.read() if command.poll() is not None else "no workers started"
        time.sleep(0.3)
        assert command.poll() is None, command.stderr.read()  # still preprocessing
        command.send_signal(signal.SIGKILL)
        assert command.wait() == -signal.SIGKILL
    finally:
        command.kill()
        command.wait()
    assert not _wait_gone(workers), "preprocess workers outlived the killed command"
    config = PreprocessConfig(image_size=40)
    cache = cache_dir_for(small_dataset, config)
    assert not (cache / "samples.parquet").exists(), "the kill did not land mid-run"

    # A temporary file of a killed worker, and one of a live process (this one): listed, only the first removed.
    (cache / "images").mkdir(parents=True, exist_ok=True)
    stale = cache / "images" / _stale_name("x.png", command.pid)
    live = cache / "images" / f".y.png.{owner_token()}.abcd1234.tmp"
    stale.write_bytes(b"half a png")
    live.write_bytes(b"being written")
    info = runner.invoke(app, ["data", "info", str(small_dataset)])
    assert info.exit_code == 0, info.output
    assert "leftovers of interrupted commands: 2 (1 whose process is gone)" in info.output
    assert f"PID {command.pid}, which is gone" in info.output and "next `mammocad preprocess`" in info.output
    assert "being written by PID" in info.output

    result = preprocess_dataset(small_dataset, config, workers=2)
    assert result.n_samples == 16
    assert not stale.exists() and live.exists()
    live.unlink()
    assert find_leftovers(small_dataset) == []


def test_killed_import_leaves_nothing_a_command_accepts_and_the_next_import_cleans_up(tmp_path, small_dataset):
    out = tmp_path / "datasets" / "mine"
    # A process killed (SIGKILL) in the middle of an import: files written into its staging folder.
    killed = _python(
        """
        import os, signal, sys
        from pathlib import Path
        from mammocad.io import staging_dir
        with staging_dir(sys.argv[1]) as scratch:
            (scratch / "manifest.parquet").write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGKILL)
        """,
        str(out),
    )
    killed.wait(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert not out.exists()
    (partial,) = find_leftovers(out.parent)
    assert partial.folder and partial.stale and partial.pid == killed.pid

    info = runner.invoke(app, ["data", "info", str(out)])
    assert info.exit_code == 2  # no dataset: nothing accepts it
    assert f"PID {killed.pid}, which is gone" in info.output and "next `mammocad data import`" in info.output
    assert "Traceback" not in info.output

    with staging_dir(tmp_path / "datasets" / "other") as live:  # an import running now (this process)
        (source,) = (small_dataset.parent / "src").glob("*.csv")
        import_dataset("csv", source, out)
        assert not partial.path.exists() and live.exists()  # the killed one removed, the live one kept
    assert (out / "manifest.parquet").exists()
    assert find_leftovers(out.parent) == []


def test_atomic_write_killed_before_its_rename_leaves_a_named_stale_file(tmp_path):
    target = tmp_path / "run.json"
    killed = _python(
        """
        import os, signal, sys
        import mammocad.io as io
        io.os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
        io.atomic_write_text(sys.argv[1], "{}")
        """,
        str(target),
    )
    killed.wait(timeout=60)
    legacy = tmp_path / ".old.json.k2j3l4m5.tmp"  # an older mammocad's name: owner unknown, never removed
    legacy.write_text("")
    atomic_write_text(tmp_path / "ok.json", "{}")
    found = {item.path.name: item for item in find_leftovers(tmp_path)}
    assert not target.exists() and len(found) == 2
    (stale,) = [item for item in found.values() if item.pid == killed.pid]
    assert stale.stale and stale.path.name.startswith(".run.json.")
    assert found[legacy.name].state == "unknown" and "owner unknown" in found[legacy.name].describe()
