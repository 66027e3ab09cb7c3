"""The dmtl performance benchmark suite.

Run it with ``python -m benchmarks [NAME ...] [--quick] [--out FILE]`` from the repository root, or
``dmtl bench [NAME ...] [--quick]`` from anywhere in a source checkout. Each benchmark is a module
``benchmarks/bench_<name>.py`` with ``run(quick: bool) -> dict`` and ``markdown(results) -> str``; a full
run of the whole suite writes ``benchmarks/RESULTS.md`` (figures, machine, commands), ``--quick`` only
prints. The core benchmarks run first, in :data:`BENCHMARKS` order; any other ``bench_*.py`` module is
picked up after them. ``mpi`` and unlisted modules are optional: skipped with a note when they cannot be
imported or run here, but a failed correctness check (``AssertionError``) fails the suite in every
benchmark: a wrong result is never reported as "skipped".
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["BENCHMARKS", "OPTIONAL", "available", "is_optional"]

BENCHMARKS = ("mixing", "altgdmin", "memory", "mpi", "admm", "fedem", "mocha")
OPTIONAL = ("mpi",)


def available() -> list[str]:
    """Benchmark names: the core ones, then every other ``bench_<name>.py`` found here (sorted)."""
    found = sorted(p.stem[len("bench_") :] for p in Path(__file__).resolve().parent.glob("bench_*.py"))
    return list(BENCHMARKS) + [name for name in found if name not in BENCHMARKS]


def is_optional(name: str) -> bool:
    """Optional benchmarks are skipped with a note (not an error) when they cannot run or fail."""
    return name in OPTIONAL or name not in BENCHMARKS
