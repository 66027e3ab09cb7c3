"""Shared helpers of the benchmark suite: timing, the machine's copy bandwidth, machine facts, tables.

Every figure in the suite is a ratio to a reference measured in the same run (the copy bandwidth, the
previous implementation, a naive loop), never an absolute target: absolute times depend on the machine
and on what else runs on it.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "Timing",
    "measure",
    "measure_interleaved",
    "copy_bandwidth",
    "machine_info",
    "machine_markdown",
    "markdown_table",
    "fmt_bytes",
    "fmt_seconds",
    "fmt_rate",
    "numeric_leaves",
]


@dataclass(frozen=True)
class Timing:
    """Seconds per call: the best and the median of ``samples`` timed samples of ``number`` calls each.

    ``best``/``median`` are wall-clock (:func:`time.perf_counter`); ``cpu_best``/``cpu_median`` the
    process's CPU time over the same samples (:func:`time.process_time`, all threads): on a machine
    shared with other work the CPU time of single-threaded code is close to its wall time on an idle
    machine, a cross-check of the wall-clock figures.
    """

    best: float
    median: float
    samples: int
    number: int
    cpu_best: float = float("nan")
    cpu_median: float = float("nan")

    def as_dict(self) -> dict[str, float]:
        return {
            "best": self.best,
            "median": self.median,
            "samples": self.samples,
            "number": self.number,
            "cpu_best": self.cpu_best,
            "cpu_median": self.cpu_median,
        }


def _timing(wall: list[float], cpu: list[float], number: int) -> Timing:
    return Timing(min(wall), statistics.median(wall), len(wall), number, min(cpu), statistics.median(cpu))


def measure(
    fn: Callable[[], Any],
    *,
    repeat: int = 5,
    min_repeat: int = 3,
    budget: float = 2.0,
    min_sample: float = 0.01,
    warmup: int = 1,
) -> Timing:
    """Time ``fn()`` with :func:`time.perf_counter` (and CPU time): warm up, then best and median of
    several samples.

    Parameters
    ----------
    fn : callable
        The work to time (called without arguments).
    repeat : int
        Timed samples wanted.
    min_repeat : int
        Samples taken even when they overrun ``budget``.
    budget : float
        Seconds to spend on timed samples at most (beyond ``min_repeat``).
    min_sample : float
        A sample of fast work repeats the call ``number`` times so that it lasts at least this long
        (timer resolution and call overhead stay negligible); the result is per call.
    warmup : int
        Untimed calls first (caches, allocator, lazily built structures).
    """
    t_first = 0.0
    for _ in range(max(warmup, 1)):
        t0 = time.perf_counter()
        fn()
        t_first = time.perf_counter() - t0
    number = 1
    if t_first < min_sample:
        number = max(1, int(math.ceil(min_sample / max(t_first, 1e-7))))
    per_sample = max(t_first * number, 1e-9)
    samples = int(min(repeat, max(min_repeat, budget // per_sample)))
    times, cpu = [], []
    for _ in range(samples):
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t0) / number)
        cpu.append((time.process_time() - c0) / number)
    return _timing(times, cpu, number)


def measure_interleaved(
    fns: dict[str, Callable[[], Any]],
    *,
    repeat: int = 7,
    min_repeat: int = 3,
    budget: float = 2.0,
    min_sample: float = 0.01,
) -> dict[str, Timing]:
    """Time several functions sample by sample in turn (A, B, C, then B, C, A, ...): best and median.

    For comparisons (before/after, one thread or two) on a shared machine: a burst of load hits every
    contender alike instead of whichever happened to be timed during it, and the order rotates so that
    no contender always runs first after another's allocations were freed (a fresh page-faulting
    allocation costs the first one). At least one sample per contender and position; ``budget`` (in
    seconds) is for all of them together.
    """
    names = list(fns)
    first = {}
    for name in names:
        t0 = time.perf_counter()
        fns[name]()
        first[name] = time.perf_counter() - t0
    number = {
        k: max(1, int(math.ceil(min_sample / max(t, 1e-7)))) if t < min_sample else 1
        for k, t in first.items()
    }
    per_round = max(sum(first[k] * number[k] for k in names), 1e-9)
    samples = max(len(names), int(min(repeat, max(min_repeat, budget // per_round))))
    times: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    for i in range(samples):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            fn = fns[name]
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(number[name]):
                fn()
            times[name].append((time.perf_counter() - t0) / number[name])
            cpu[name].append((time.process_time() - c0) / number[name])
    return {k: _timing(times[k], cpu[k], number[k]) for k in names}


def copy_bandwidth(n_bytes: int = 256 * 2**20, repeat: int = 7) -> dict[str, float]:
    """The machine's memory copy bandwidth, measured now.

    ``np.copyto`` of a float64 array of ``n_bytes`` (far larger than any cache) into another; bandwidth
    = bytes read + bytes written (``2 n_bytes``) / the best time of ``repeat`` copies, after one warm-up
    copy that also faults in the destination's pages.

    Returns
    -------
    dict
        ``bytes_per_s`` (read + written per second), ``array_bytes``, ``best_s``, ``median_s``.
    """
    n = max(1, n_bytes // 8)
    src = np.random.default_rng(0).random(n)
    dst = np.empty_like(src)
    t = measure(lambda: np.copyto(dst, src), repeat=repeat, min_repeat=repeat, budget=1e9, min_sample=0.0)
    return {
        "bytes_per_s": 2.0 * src.nbytes / t.best,
        "array_bytes": float(src.nbytes),
        "best_s": t.best,
        "median_s": t.median,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return float(line.split()[1]) * 1024.0
    except OSError:
        pass
    return None


def _caches() -> str:
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    out = []
    try:
        for idx in sorted(base.glob("index*")):
            level = (idx / "level").read_text().strip()
            kind = (idx / "type").read_text().strip()
            size = (idx / "size").read_text().strip()
            if kind != "Instruction":
                out.append(f"L{level} {size}")
    except OSError:
        return "unknown"
    return ", ".join(out) or "unknown"


def _blas() -> str:
    try:
        from threadpoolctl import threadpool_info  # optional

        info = threadpool_info()
        if info:
            return "; ".join(
                f"{d.get('internal_api')} {d.get('version')} ({d.get('num_threads')} threads, "
                f"{d.get('architecture')})"
                for d in info
            )
    except ImportError:
        pass
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        extra = blas.get("openblas configuration", "")
        return f"{blas.get('name')} {blas.get('version')}" + (f" ({extra})" if extra else "")
    except Exception:  # noqa: BLE001 - show_config's layout differs across numpy versions
        return "unknown"


def machine_info() -> dict[str, Any]:
    """Facts about this machine and software, for the report."""
    import scipy

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()
    except OSError:  # pragma: no cover
        load = (float("nan"),) * 3
    env_threads = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS") if k in os.environ}
    return {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cores": cores,
        "caches": _caches(),
        "memory_bytes": _mem_total(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "blas": _blas(),
        "platform": platform.platform(),
        "load_average": tuple(round(x, 2) for x in load),
        "thread_env": env_threads,
    }


def machine_markdown(info: dict[str, Any]) -> str:
    mem = info.get("memory_bytes")
    lines = [
        f"- date: {info['date']}",
        f"- CPU: {info['cpu']}, {info['cores']} cores available; caches {info['caches']}",
        f"- memory: {fmt_bytes(mem) if mem else 'unknown'}",
        f"- Python {info['python']}, numpy {info['numpy']}, scipy {info['scipy']}",
        f"- BLAS: {info['blas']}",
        f"- platform: {info['platform']}",
        f"- load average (1, 5, 15 min) at the start: {', '.join(str(x) for x in info['load_average'])}"
        + (
            f"; at the end: {', '.join(str(x) for x in info['load_average_end'])}"
            if "load_average_end" in info
            else ""
        ),
    ]
    if info.get("thread_env"):
        lines.append("- thread settings: " + ", ".join(f"{k}={v}" for k, v in info["thread_env"].items()))
    return "\n".join(lines)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table (cells already formatted as strings, or anything ``str`` can print)."""
    head = "| " + " | ".join(header) + " |"
    sep = "|" + "|".join("---" for _ in header) + "|"
    body = ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join([head, sep, *body])


def fmt_bytes(x: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.0f} B"


def fmt_seconds(x: float) -> str:
    if x >= 1.0:
        return f"{x:.3g} s"
    if x >= 1e-3:
        return f"{x * 1e3:.3g} ms"
    return f"{x * 1e6:.3g} us"


def fmt_rate(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g}"


def numeric_leaves(obj: Any, path: str = "") -> list[tuple[str, float]]:
    """Every number in a nested results structure (bools excluded), with its path: for checks."""
    out: list[tuple[str, float]] = []
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return out
    if isinstance(obj, (int, float, np.integer, np.floating)):
        return [(path, float(obj))]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.extend(numeric_leaves(v, f"{path}.{k}" if path else str(k)))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.extend(numeric_leaves(v, f"{path}[{i}]"))
    return out
