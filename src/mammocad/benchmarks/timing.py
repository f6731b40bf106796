"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``fn``, after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timed_calls(fn: Callable[[], object], min_calls: int, min_seconds: float) -> list[float]:
    """Seconds per call of ``fn``, called until both ``min_calls`` calls and ``min_seconds`` have passed."""
    durations: list[float] = []
    start = time.perf_counter()
    while len(durations) < min_calls or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        durations.append(time.perf_counter() - t0)
    return durations


def _proc_stat() -> tuple[int, int]:
    try:
        with open("/proc/stat") as handle:
            fields = [int(x) for x in handle.readline().split()[1:9]]
    except OSError:
        return 0, 0
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return user + nice + system + irq + softirq, steal


@contextmanager
def cpu_share() -> Iterator[dict[str, float]]:
    """Fills the yielded dict with the CPU share this process and *other* processes used meanwhile.

    ``other_cpu_share`` near 0 means nothing else disturbed the timing.
    """
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    busy0, steal0 = _proc_stat()
    times0 = os.times()
    wall0 = time.perf_counter()
    out: dict[str, float] = {}
    yield out
    busy1, steal1 = _proc_stat()
    times1 = os.times()
    capacity = (time.perf_counter() - wall0) * (os.cpu_count() or 1)
    own = (times1.user + times1.system) - (times0.user + times0.system)
    other = (busy1 - busy0) / ticks - own if busy1 else 0.0
    out.update(
        {
            "own_cpu_share": round(own / capacity, 3),
            "other_cpu_share": round(max(other, 0.0) / capacity, 3),
            "steal_share": round((steal1 - steal0) / ticks / capacity, 3),
        }
    )


__all__ = ["cpu_share", "median_seconds", "timed_calls"]
