r"""One AltGDmin iteration: the centralised, Dec- and Dif- variants through their real ``step``.

Problem: ``dmtl.data.synthetic.lowrank_regression`` with d = K = 600, n = 50, r = 4 on L = 20 nodes (ring,
Metropolis weights for the graph variants); every variant is initialised by its own ``init`` and one
``step(state, comm)`` is timed (the state is not advanced between samples: ``step`` is pure).

The floor
---------
An iteration must read every task's ``X_t`` twice: once for ``A_t = X_t U`` and, after the
coefficients ``b_t`` (which need all of ``A_t``), once for the gradient ``X_t^T r_t``. The floor is
``2 K n d 8 bytes / copy bandwidth`` (bytes read + written per second by ``np.copyto``, measured in the
same run), or twice the measured read-only pass ``X u`` when that is faster (a read-only stream can beat
a copy). The *floor ratio* is ``time / floor`` (target: <= 2 for the centralised variant).

References, measured in the same run: the previous ``_fit`` (the local least squares and gradients in one
unblocked pass over all tasks, :func:`previous_fit`) against the current cache-blocked one, results checked
equal; and a naive per-task Python loop computing the same centralised iteration (``lstsq`` per task,
gradient accumulated task by task, same QR with fixed signs), its result checked against ``step``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from benchmarks.common import (
    copy_bandwidth,
    fmt_bytes,
    fmt_seconds,
    markdown_table,
    measure_interleaved,
)
from dmtl.algorithms.altgdmin import AltGDmin, DecAltGDmin, DifAltGDmin, _fit
from dmtl.backends.local import LocalCommunicator
from dmtl.data.synthetic import lowrank_regression
from dmtl.linalg import batched_lstsq, orthonormalize
from dmtl.network.topology import mixing_matrix, ring
from dmtl.problem import TaskBlock
from dmtl.seeding import RunStreams

__all__ = ["run", "markdown", "naive_iteration", "previous_fit"]

TARGET = 2.0
VARIANTS = (AltGDmin, DecAltGDmin, DifAltGDmin)


def naive_iteration(data: TaskBlock, U: np.ndarray, eta: float) -> np.ndarray:
    """The centralised AltGDmin iteration written as a loop over tasks; returns the new basis."""
    d, r = U.shape
    G = np.zeros((d, r))
    for t in range(len(data.tasks)):
        n_t = int(data.n_samples[t])
        Xt, yt = data.X[t, :n_t], data.y[t, :n_t]
        A = Xt @ U
        b = np.linalg.lstsq(A, yt, rcond=None)[0]
        resid = A @ b - yt
        G += np.outer(Xt.T @ resid, b)
    return orthonormalize(U - eta * G)


def previous_fit(data: TaskBlock, U: np.ndarray, shared: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``altgdmin._fit`` before cache blocking: every task in one batched pass (the before/after figures)."""
    k, n, d = data.X.shape
    r = U.shape[-1]
    if shared:
        A = (data.X.reshape(k * n, d) @ U[0]).reshape(k, n, r)
    else:
        A = np.matmul(data.X, U[data.node])
    B = batched_lstsq(A, data.y)
    resid = np.matmul(A, B[:, :, None])[:, :, 0] - data.y
    g = np.matmul(resid[:, None, :], data.X)[:, 0, :]
    G = data.sum_to_nodes(g[:, :, None] * B[:, None, :])
    flops_task = data.n_samples * (4.0 * d * r + 2.0 * d + 4.0 * r * r)
    flops = data.sum_to_nodes(flops_task) + 2.0 * d * r * r
    return B, G, flops


def run(quick: bool = False) -> dict[str, Any]:
    """Measure; returns ``{'size', 'bandwidth', 'x_bytes', 'floor_seconds', 'variants', 'fit', 'naive',
    'target', 'met'}``."""
    if quick:
        d, K, n, r, L = 60, 60, 10, 2, 5

        def bandwidth() -> dict[str, float]:
            return copy_bandwidth(32 * 2**20, repeat=3)

        budget = 0.3
    else:
        d, K, n, r, L = 600, 600, 50, 4, 20
        bandwidth = copy_bandwidth
        budget = 5.0
    problem = lowrank_regression(d, K, r, n, nodes=L, rng=np.random.default_rng(0))
    top = ring(L)
    W = mixing_matrix(top, "metropolis")
    x_bytes = float(problem.X.nbytes)
    variants: dict[str, dict[str, float]] = {}
    states = {}
    for cls in VARIANTS:
        alg = cls()
        comm = LocalCommunicator(L, topology=top, mixing=W)
        state = alg.init(problem, comm, RunStreams(0))
        states[cls.name] = (alg, state, comm)
    # every figure of the table below in one interleaved group: they share the machine's load
    _, state, comm = states["altgdmin"]
    data, U = state.data, state.U
    Xf = data.X.reshape(-1, d)
    u = np.ascontiguousarray(U[0][:, 0])
    fns: dict[str, Callable[[], Any]] = {
        name: lambda alg=alg, state=state, comm=comm: alg.step(state, comm)
        for name, (alg, state, comm) in states.items()
    }
    fns.update(
        {
            "fit": lambda: _fit(data, U, shared=True),
            "previous_fit": lambda: previous_fit(data, U, shared=True),
            "x_pass": lambda: Xf @ u,
            "xu": lambda: Xf @ U[0],
            "xu_per_task": lambda: np.matmul(data.X, U[0]),
        }
    )
    central_alg, central_state, central_comm = states["altgdmin"]

    def one_thread() -> Any:
        with threadpool_limits(limits=1):
            return central_alg.step(central_state, central_comm)

    fns["altgdmin_1thread"] = one_thread
    eta0 = float(state.eta[0])
    fns["naive"] = lambda: naive_iteration(data, U[0], eta0)
    bw_before = bandwidth()
    ft = measure_interleaved(fns, repeat=15, min_repeat=5, budget=budget)
    bw_after = bandwidth()
    bw = max(bw_before, bw_after, key=lambda b: b["bytes_per_s"])  # the machine's, least disturbed
    bw = {**bw, "samples_bytes_per_s": [bw_before["bytes_per_s"], bw_after["bytes_per_s"]]}
    # one pass over X at the copy bandwidth, or the measured read-only pass (`X u`) when that is faster:
    # a read-only stream can beat a copy, and a floor must not be beatable
    floor_pass = min(x_bytes / bw["bytes_per_s"], ft["x_pass"].best)
    floor = 2.0 * floor_pass
    for name in states:
        t = ft[name]
        variants[name] = {
            "seconds": t.best,
            "seconds_median": t.median,
            "cpu_seconds": t.cpu_best,
            "floor_ratio": t.best / floor,
            "cpu_floor_ratio": t.cpu_best / floor,
        }
    new, old = _fit(data, U, shared=True), previous_fit(data, U, shared=True)
    rel = max(
        float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)) for a, b in zip(new, old, strict=True)
    )
    if rel > 1e-12:
        raise AssertionError(f"_fit differs from the previous implementation by {rel:.3g} (relative)")
    fit = {
        "seconds": ft["fit"].best,
        "cpu_seconds": ft["fit"].cpu_best,
        "previous_seconds": ft["previous_fit"].best,
        "previous_cpu_seconds": ft["previous_fit"].cpu_best,
        "speedup_vs_previous": ft["previous_fit"].best / ft["fit"].best,
        "max_rel_difference": max(rel, np.finfo(float).tiny),
        "x_pass_seconds": ft["x_pass"].best,
        "x_pass_cpu_seconds": ft["x_pass"].cpu_best,
        "xu_seconds": ft["xu"].best,
        "xu_cpu_seconds": ft["xu"].cpu_best,
        "xu_per_task_seconds": ft["xu_per_task"].best,
        "xu_per_task_cpu_seconds": ft["xu_per_task"].cpu_best,
    }
    single = ft["altgdmin_1thread"]
    # the naive loop, checked against the real step
    alg, state, comm = states["altgdmin"]
    U_real = alg.step(state, comm).U[0]
    err = float(np.max(np.abs(naive_iteration(data, U[0], eta0) - U_real)))
    if err > 1e-8:
        raise AssertionError(f"naive AltGDmin iteration differs from step by {err:.3g}")
    central = variants["altgdmin"]
    return {
        "size": {"d": d, "tasks": K, "samples": n, "rank": r, "nodes": L},
        "bandwidth": bw,
        "x_bytes": x_bytes,
        "floor_seconds": floor,
        "variants": variants,
        "fit": fit,
        "naive": {
            "seconds": ft["naive"].best,
            "cpu_seconds": ft["naive"].cpu_best,
            "speedup": ft["naive"].best / central["seconds"],
            "cpu_speedup": ft["naive"].cpu_best / central["cpu_seconds"],
            "max_abs_difference": max(err, np.finfo(float).tiny),
        },
        "blas_threads": _blas_threads(),
        "one_thread": {"seconds": single.best, "floor_ratio": single.best / floor},
        "target": TARGET,
        "met": bool(central["floor_ratio"] <= TARGET),
    }


def _blas_threads() -> int:
    return max((int(i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"), default=1)


def markdown(results: dict[str, Any]) -> str:
    s = results["size"]
    bw = results["bandwidth"]
    c = results["variants"]["altgdmin"]
    nv = results["naive"]
    fit = results["fit"]
    floor = results["floor_seconds"]
    rows = [
        [
            name,
            fmt_seconds(v["seconds"]),
            fmt_seconds(v["seconds_median"]),
            f"{v['floor_ratio']:.2f}",
            fmt_seconds(v["cpu_seconds"]),
            f"{v['cpu_floor_ratio']:.2f}",
        ]
        for name, v in results["variants"].items()
    ]
    where = [
        [
            "`_fit` (local least squares and gradients)",
            fmt_seconds(fit["seconds"]),
            fmt_seconds(fit["cpu_seconds"]),
            f"{fit['cpu_seconds'] / c['cpu_seconds']:.0%} of the iteration's CPU time",
        ],
        [
            "previous `_fit` (unblocked: all tasks in one pass)",
            fmt_seconds(fit["previous_seconds"]),
            fmt_seconds(fit["previous_cpu_seconds"]),
            f"speed-up of the current one {fit['speedup_vs_previous']:.2f}x (wall), "
            f"{fit['previous_cpu_seconds'] / fit['cpu_seconds']:.2f}x (CPU); results "
            + (
                "bitwise equal"
                if fit["max_rel_difference"] <= np.finfo(float).tiny
                else f"equal to {fit['max_rel_difference']:.1g} relative"
            ),
        ],
        [
            "one read pass over all X_t (`X u`, a GEMV)",
            fmt_seconds(fit["x_pass_seconds"]),
            fmt_seconds(fit["x_pass_cpu_seconds"]),
            f"the floor counts {fmt_seconds(floor / 2)} per pass (the faster of this pass and the "
            "copy-bandwidth estimate)",
        ],
        [
            f"`X_t U` for all tasks (r = {s['rank']} columns), one GEMM over all rows",
            fmt_seconds(fit["xu_seconds"]),
            fmt_seconds(fit["xu_cpu_seconds"]),
            f"{fit['xu_seconds'] / fit['x_pass_seconds']:.1f} read passes' worth: the thin product is "
            "compute-bound in BLAS",
        ],
        [
            "the same with `np.matmul` over the (tasks, n, d) stack (one small GEMM per task)",
            fmt_seconds(fit["xu_per_task_seconds"]),
            fmt_seconds(fit["xu_per_task_cpu_seconds"]),
            "BLAS does not thread products this small",
        ],
    ]
    lines = [
        "## One AltGDmin iteration (`altgdmin`)",
        "",
        f"d = K = {s['d']}, n = {s['samples']}, r = {s['rank']}, L = {s['nodes']} nodes (ring, Metropolis; "
        "the graph variants with their defaults: Dec T_con = 10, Dif one combine step); one "
        "`step(state, comm)` of each variant. All figures of this section come from one group of "
        "interleaved samples (best of each after a warm-up); *CPU* is the process's CPU time over the "
        f"same samples, summed over the {results['blas_threads']} BLAS thread(s) the local backend uses "
        "by default (`backend.blas_threads`: all cores).",
        "",
        f"**Floor:** two passes over all X_t = 2 x {fmt_bytes(results['x_bytes'])} at the copy bandwidth "
        f"measured in this run ({bw['bytes_per_s'] / 1e9:.3g} GB/s, read + written; the better of "
        + " and ".join(f"{x / 1e9:.3g}" for x in bw["samples_bytes_per_s"])
        + " GB/s measured before and after the timings), or at the measured read-only pass `X u` when "
        f"that is faster = **{fmt_seconds(floor)}**. *Floor ratio* = time / floor.",
        "",
        markdown_table(["variant", "time/iteration", "median", "floor ratio", "CPU", "CPU / floor"], rows),
        "",
        f"**Headline:** centralised AltGDmin {fmt_seconds(c['seconds'])} per iteration = "
        f"{c['floor_ratio']:.2f}x the floor; target <= {results['target']:g}x: "
        f"{'met' if results['met'] else 'NOT met'}. With one BLAS thread: "
        f"{fmt_seconds(results['one_thread']['seconds'])} = {results['one_thread']['floor_ratio']:.2f}x.",
        "",
        "Where the time goes (centralised):",
        "",
        markdown_table(["measured", "time", "CPU", "note"], where),
        "",
        f"Naive per-task Python loop of the same centralised iteration (per-task `lstsq`, gradient "
        f"accumulated task by task; result equal to `step` within {nv['max_abs_difference']:.1g}; in "
        f"the same interleaved group): {fmt_seconds(nv['seconds'])} (CPU {fmt_seconds(nv['cpu_seconds'])})"
        f", i.e. `step` is **{nv['speedup']:.2f}x** faster by wall time, **{nv['cpu_speedup']:.2f}x** by "
        "CPU time."
        + (
            f" Each task's work is two {s['samples']} x {s['d']} matrix products, large enough that a "
            "loop of BLAS calls per task loses little to the batched code."
            if nv["cpu_speedup"] < 2
            else ""
        ),
    ]
    return "\n".join(lines) + "\n"
