r"""Online MTRL by ADMM: C-ADMM over a whole stream, D-ADMM rounds per second on rings of 5 to 1,000 nodes.

C-ADMM
------
10,000 rounds x 5 tasks (the reference synthetic stream's size; the stream itself when
``omtl_synthetic.npz`` is available, else the Fourier generator with the same shape), the reference
hyper-parameters, one task per node, through the real ``init`` / ``step(state, comm)`` on the local
backend (ledger included), metrics once at the end. Reference: the authors' algorithm as they wrote it,
a Python loop over tasks per round with ``numpy.linalg.pinv`` and ``scipy.linalg.fractional_matrix_power``
(:func:`dmtl.algorithms.admm_reference.reference_cadmm`),
run in the same process on the whole stream (a prefix with ``--quick``, extrapolated linearly); its
predictions are checked to equal the vectorised ones. Both run with one BLAS thread: with two, on a busy
2-core machine, the reference's 5 x 5 LAPACK calls spend most of their time in thread hand-offs (up to
4x slower), which says nothing about either implementation. Target (issue 4): well under one second,
at least 200x faster than the naive loop, whose time the issue puts at 2 to 3 minutes.

The share of the communicator (``gather`` + ``scatter`` with their ledger bookkeeping) is measured
separately: the same number of calls on arrays of the same size.

D-ADMM
------
Rounds per second of ``step`` for N = 5, 100 and 1,000 nodes on a ring (reference neighbour averaging),
K = 29 tasks, d = 9 (Fourier generator, L2-normalised): per round every node mixes 3 d K floats with each
neighbour, updates one task and recomputes its Omega (one eigendecomposition of a d x d Gram matrix per
node, batched).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from benchmarks.common import fmt_rate, fmt_seconds, markdown_table
from dmtl.algorithms.admm_mtrl import CADMM, DADMM
from dmtl.algorithms.admm_reference import reference_cadmm
from dmtl.backends.local import LocalCommunicator
from dmtl.data import datasets
from dmtl.data.streams import fourier_stream, from_arrays
from dmtl.errors import DataError
from dmtl.network.topology import mixing_matrix, ring
from dmtl.seeding import RunStreams

__all__ = ["run", "markdown"]

TARGET_SECONDS = 1.0
TARGET_SPEEDUP = 200.0


def _stream() -> tuple[np.ndarray, np.ndarray, str]:
    try:
        s = datasets.load_stream()
        return s.xs, s.ys, "omtl_synthetic.npz"
    except DataError:
        s = fourier_stream(5, 10000, normalize=False, rng=0)
        return s.xs, s.ys, "Fourier generator (5 x 10,000, not normalised)"


def _cadmm_run(problem: Any, rounds: int) -> tuple[float, float, Any, Any]:
    """Wall and CPU seconds for init + ``rounds`` steps, the final state and the communicator."""
    alg = CADMM()
    comm = LocalCommunicator(problem.n_tasks)
    t0, c0 = time.perf_counter(), time.process_time()
    state = alg.init(problem, comm, RunStreams(0))
    for _ in range(rounds):
        state = alg.step(state, comm)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    alg.evaluate(state, comm)
    return seconds, cpu, state, comm


def _cadmm_predictions(problem: Any, rounds: int) -> np.ndarray:
    alg = CADMM()
    comm = LocalCommunicator(problem.n_tasks)
    state = alg.init(problem, comm, RunStreams(0))
    out = np.empty((problem.n_tasks, rounds))
    for t in range(rounds):
        out[:, t] = np.where(np.einsum("kd,kd->k", state.W, state.feed.X[t]) < 0, -1.0, 1.0)
        state = alg.step(state, comm)
    return out


def _comm_share(rounds: int, K: int, d: int) -> float:
    """Seconds of ``rounds`` gather + scatter calls of C-ADMM's sizes on a fresh communicator."""
    comm = LocalCommunicator(K)
    up = np.zeros((K, 2 * d))
    t0 = time.perf_counter()
    for _ in range(rounds):
        comm.scatter(comm.gather(up))
    return time.perf_counter() - t0


def _dadmm_rate(n: int, K: int, rounds: int) -> dict[str, float]:
    s = fourier_stream(K, 2000, normalize=True, rng=0)
    problem = from_arrays(s.xs, s.ys, n_nodes=n)
    top = ring(n)
    comm = LocalCommunicator(n, topology=top, mixing=mixing_matrix(top, "metropolis"))
    alg = DADMM()
    state = alg.init(problem, comm, RunStreams(0))
    state = alg.step(state, comm)  # warm-up
    best = np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(rounds):
            state = alg.step(state, comm)
        best = min(best, (time.perf_counter() - t0) / rounds)
    m = alg.evaluate(state, comm)
    d = problem.n_features
    seen = 1 + 3 * rounds  # the warm-up round and three timed blocks
    return {
        "nodes": n,
        "tasks": K,
        "rounds_timed": rounds,
        "seconds_per_round": best,
        "rounds_per_s": 1.0 / best,
        "node_updates_per_s": n / best,
        "floats_per_message": 3 * d * K,
        "error_rate": m["error_rate"],
        "rounds_seen": seen,
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Measure; returns ``{'cadmm': {...}, 'dadmm': [...], 'target': {...}}``."""
    xs, ys, source = _stream()
    rounds = 2000 if quick else xs.shape[1]
    naive_rounds = 60 if quick else rounds  # the whole run: measured, not extrapolated
    problem = from_arrays(xs[:, :rounds], ys[:, :rounds])
    K, d = problem.n_tasks, problem.n_features
    repeats = 1 if quick else 3
    # One BLAS thread for both: with two, the reference's tiny LAPACK calls slow down up to 4x on a
    # busy 2-core machine (thread hand-offs), which once inflated this ratio tenfold.
    with threadpool_limits(limits=1):
        _cadmm_run(from_arrays(xs[:, :200], ys[:, :200]), 200)  # warm-up: lazy imports, first calls
        times, cpus = [], []
        state = comm = None
        for _ in range(repeats):
            seconds, cpu, state, comm = _cadmm_run(problem, rounds)
            times.append(seconds)
            cpus.append(cpu)
        seconds = min(times)
        clock: list[float] = []
        with np.errstate(all="ignore"):
            t0 = time.perf_counter()
            ref_pred, _ = reference_cadmm(xs, ys, naive_rounds, clock=clock)
            naive_seconds = time.perf_counter() - t0
    same = bool(np.array_equal(_cadmm_predictions(problem, naive_rounds), ref_pred))
    naive_full = naive_seconds / naive_rounds * rounds
    comm_seconds = min(_comm_share(rounds, K, d) for _ in range(repeats))
    table = state.stats.table
    cadmm = {
        "source": source,
        "rounds": rounds,
        "tasks": K,
        "seconds": seconds,
        "seconds_all": times,
        "cpu_seconds": min(cpus),
        "us_per_round": seconds / rounds * 1e6,
        "comm_seconds": comm_seconds,
        "naive_rounds": naive_rounds,
        "naive_seconds": naive_seconds,
        "naive_seconds_extrapolated": naive_full,
        "speedup": naive_full / seconds,
        "same_predictions": same,
        "mistakes": (table[:, 1] + table[:, 2]).tolist(),
        "ledger_floats": comm.ledger_totals()["floats"],
    }
    sizes = ((5, 40), (100, 20)) if quick else ((5, 400), (100, 100), (1000, 20))
    dadmm = [_dadmm_rate(n, 29, r) for n, r in sizes]
    met = {
        "seconds": seconds < TARGET_SECONDS,
        "speedup": cadmm["speedup"] >= TARGET_SPEEDUP,
    }
    return {
        "cadmm": cadmm,
        "dadmm": dadmm,
        "target": {"seconds": TARGET_SECONDS, "speedup": TARGET_SPEEDUP},
        "met": met,
    }


def markdown(results: dict[str, Any]) -> str:
    c = results["cadmm"]
    share = c["comm_seconds"] / c["seconds"]
    rows = [
        [
            str(r["nodes"]),
            str(r["tasks"]),
            fmt_seconds(r["seconds_per_round"]),
            f"{r['rounds_per_s']:.3g}",
            fmt_rate(r["node_updates_per_s"]),
            str(r["floats_per_message"]),
            f"{r['error_rate']:.3f} after {r['rounds_seen']:,} rounds",
        ]
        for r in results["dadmm"]
    ]
    return "\n".join(
        [
            "## Online MTRL by ADMM (`admm`)",
            "",
            f"**C-ADMM**, {c['rounds']:,} rounds x {c['tasks']} tasks ({c['source']}), reference "
            "hyper-parameters, `init` + `step(state, comm)` on the local backend, ledger included: "
            f"**{fmt_seconds(c['seconds'])}** (best of {len(c['seconds_all'])}; "
            f"{c['us_per_round']:.0f} us per round; CPU time {fmt_seconds(c['cpu_seconds'])}), of which the "
            "communicator's `gather` + `scatter` bookkeeping alone takes "
            f"{fmt_seconds(c['comm_seconds'])} ({share:.0%}).",
            "",
            f"Naive per-task loop of the same rules (the authors' rules transliterated, "
            "`dmtl.algorithms.admm_reference`: `pinv`, `fractional_matrix_power`), "
            f"same process, one BLAS thread for both: {fmt_seconds(c['naive_seconds'])} for "
            f"{c['naive_rounds']:,} rounds"
            + (
                f", i.e. {fmt_seconds(c['naive_seconds_extrapolated'])} for {c['rounds']:,} rounds"
                if c["naive_rounds"] != c["rounds"]
                else ""
            )
            + f"; predictions on those rounds identical: {c['same_predictions']}. "
            f"**Speed-up: {c['speedup']:.0f}x** (target >= {results['target']['speedup']:.0f}x: "
            f"{'met' if results['met']['speedup'] else 'NOT met'}; under "
            f"{results['target']['seconds']:.0f} s: {'met' if results['met']['seconds'] else 'NOT met'}; "
            "the issue asks for well under one second). The issue puts the authors' run at 2 to 3 "
            "minutes on these machines: against that figure the ratio would be "
            f"{120 / c['seconds']:.0f}x to {180 / c['seconds']:.0f}x. The naive loop is timed once, "
            "the vectorised run best of 3.",
            "",
            "**D-ADMM** on a ring (reference neighbour averaging), K = 29 tasks, d = 9; one round = every "
            "node mixes, updates one task, recomputes its Omega:",
            "",
            markdown_table(
                [
                    "nodes",
                    "tasks",
                    "time/round",
                    "rounds/s",
                    "node updates/s",
                    "floats/message",
                    "cumulative error rate (a sanity check; runs of different lengths)",
                ],
                rows,
            ),
        ]
    )
