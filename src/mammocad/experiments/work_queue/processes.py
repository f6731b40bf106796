"""Local worker processes: ``mammocad cv/ablate --join DIR`` started N times, each with its GPUs and cores."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence

from mammocad.errors import ConfigError
from mammocad.procs import die_with_parent
from mammocad.progress import ProgressFn

#: Environment variable read for ``--storage`` by ``cv`` and ``ablate`` (keeps passwords off the command line).
STORAGE_ENV = "MAMMOCAD_CV_STORAGE"
#: Set by :func:`start_local_workers` in each worker: the launching process (workers die with it).
PARENT_ENV = "MAMMOCAD_WORKER_PARENT"
#: Set by :func:`start_local_workers` in each worker: a short label for its progress lines.
LABEL_ENV = "MAMMOCAD_WORKER_LABEL"


def parse_gpus(text: str | None) -> list[str] | None:
    """``"0,1,3"`` -> ``["0", "1", "3"]`` (ASCII digits only); None/empty -> None."""
    if text is None or not text.strip():
        return None
    ids = [part.strip() for part in text.split(",")]
    bad = [part for part in ids if not (part.isascii() and part.isdigit())]
    if bad:
        raise ConfigError(f"--gpus {text!r}: expected GPU numbers separated by commas, e.g. 0,1,2,3 (got {bad[0]!r})")
    if len(set(ids)) != len(ids):
        raise ConfigError(f"--gpus {text!r}: a GPU is listed twice")
    return ids


def gpu_groups(gpus: Sequence[str], workers: int) -> list[list[str]]:
    """The GPUs each of ``workers`` sees: consecutive equal groups, or shared round-robin when fewer GPUs.

    8 GPUs, 4 workers: ``[0,1] [2,3] [4,5] [6,7]``; 2 GPUs, 4 workers: ``[0] [1] [0] [1]``.
    """
    if len(gpus) >= workers:
        if len(gpus) % workers:
            raise ConfigError(
                f"--gpus: {len(gpus)} GPUs cannot be split evenly over {workers} workers "
                "(give a multiple of --workers, or fewer GPUs)"
            )
        size = len(gpus) // workers
        return [list(gpus[k * size : (k + 1) * size]) for k in range(workers)]
    return [[gpus[k % len(gpus)]] for k in range(workers)]


def worker_environment(label: str, gpus: Sequence[str] | None, workers: int, storage: str | None) -> dict[str, str]:
    """The environment of one local worker process: its GPUs, CPU threads, label, parent and storage."""
    env = dict(os.environ)
    env[PARENT_ENV] = str(os.getpid())
    env[LABEL_ENV] = label
    if storage is not None:
        env[STORAGE_ENV] = storage  # through the environment: a password stays out of the process list
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    if "OMP_NUM_THREADS" not in env:
        # N workers on one machine would each start a thread per core; share the cores between them.
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
    return env


def start_local_workers(
    arguments: Sequence[str],
    workers: int,
    gpus: Sequence[str] | None = None,
    storage: str | None = None,
    say: ProgressFn | None = None,
) -> list[int]:
    """Run ``workers`` copies of ``mammocad ARGUMENTS`` (each a worker) and wait for them; exit codes.

    Each worker gets its share of ``gpus`` (``CUDA_VISIBLE_DEVICES``, see :func:`gpu_groups`), of the
    CPU cores (``OMP_NUM_THREADS`` unless set), a label for its lines and the storage URL through the
    environment; it dies with this process. Ctrl+C (or any error here) stops the workers: they give
    their units back and exit.
    """
    groups = gpu_groups(gpus, workers) if gpus else [None] * workers
    command = [sys.executable, "-m", "mammocad.cli.main", *arguments]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for k in range(workers):
            env = worker_environment(f"worker {k}", groups[k], workers, storage)
            if say is not None:
                seen = f" (CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']})" if groups[k] else ""
                say(f"starting worker {k}{seen}")
            processes.append(subprocess.Popen(command, env=env))
        return [process.wait() for process in processes]
    except BaseException:
        for process in processes:
            if process.poll() is None:
                with contextlib.suppress(OSError):
                    process.send_signal(signal.SIGINT)
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        raise


def become_local_worker() -> str:
    """Set up a worker started by :func:`start_local_workers` (dies with its parent); its label ('' if none)."""
    parent = os.environ.get(PARENT_ENV)
    if parent and parent.isdigit():
        die_with_parent(int(parent))
    return os.environ.get(LABEL_ENV, "")
