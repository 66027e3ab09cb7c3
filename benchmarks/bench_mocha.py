r"""MOCHA inner rounds per second, on Landmine and on a synthetic 1,000-task problem, against a naive loop.

Problems: Landmine (29 tasks, 9 features, 334..518 training samples per task after the 75/25 split)
and :func:`dmtl.data.real.related_tasks` with K = 1,000 tasks (one per node), d = 20, 100 samples per
task; MOCHA with frac = 0.5 (hinge loss, lambda = 1e-3). One ``step(state, comm)`` is one inner round:
local SDCA on every task (vectorised over tasks: the Python loop runs over the local step index only),
the upload of ``db``, the server's ``W <- W + dB Sigma / lambda`` and the download of ``w_t``.

Reference: the same round written task by task in Python (one scalar SDCA step at a time, then the same
server update), with the same visiting orders; its models are checked against ``step``'s before timing.
The ratio naive / vectorised is the figure of merit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.common import fmt_seconds, markdown_table, measure
from dmtl.algorithms.mocha import Mocha, MochaState, _order
from dmtl.backends.local import LocalCommunicator
from dmtl.data.real import real_problem, related_tasks
from dmtl.problem import Problem
from dmtl.seeding import RunStreams

__all__ = ["run", "markdown", "naive_round"]

LAM = 1e-3


def naive_round(state: MochaState, alg: Mocha, keys: np.ndarray, frac: float) -> np.ndarray:
    """One MOCHA inner round task by task (scalar SDCA steps); returns the server's new W (node order)."""
    data = state.data
    k, _, d = data.X.shape
    dB = np.zeros_like(state.W)
    for t in range(k):
        n = int(data.n_samples[t])
        steps = int(np.floor(n * frac))
        order = _order(keys[t : t + 1], state.mask[t : t + 1], data.n_samples[t : t + 1], steps)[0]
        alpha = state.alpha[t].copy()
        v = state.w[t].copy()
        scale = float(state.rho[t] * state.sig[t])
        db = np.zeros(d)
        for s in range(steps):
            i = order[s]
            x = data.X[t, i]
            yi = data.y[t, i]
            a = alpha[i]
            q2 = float(x @ x) * scale
            m = float(x @ v)
            ratio = LAM * n * (1.0 - yi * m) / q2 if q2 > 0 else np.inf
            da = yi * min(1.0, max(0.0, ratio + a * yi)) - a
            alpha[i] = a + da
            db += (da / n) * x
            v += (da * scale / (LAM * n)) * x
        dB[state.block_pos[t]] = db
    return state.W + (state.Sigma @ dB) / LAM


def _case(problem: Problem, budget: float) -> dict[str, Any]:
    K = problem.n_tasks
    alg = Mocha(lam=LAM, frac=0.5, update_omega=False)
    comm = LocalCommunicator(K)
    state = alg.init(problem, comm, RunStreams(0))
    state = alg.step(state, comm)  # a round in: non-zero duals and models
    # the keys the next step draws (the stream is replayed from a copy of the generator)
    rng_copy = np.random.default_rng()
    rng_copy.bit_generator.state = state.rng.bit_generator.state
    keys = rng_copy.random((K, state.n_max))[state.data.tasks]
    saved = state.rng.bit_generator.state
    real = alg.step(state, comm)
    W_naive = naive_round(state, alg, keys, alg.frac)
    err = float(np.max(np.abs(W_naive - real.W)))
    if err > 1e-9 * max(1.0, float(np.max(np.abs(real.W)))):
        raise AssertionError(f"naive MOCHA round differs from step by {err:.3g}")

    def vectorised() -> None:
        state.rng.bit_generator.state = saved
        alg.step(state, comm)

    t = measure(vectorised, repeat=5, budget=budget)
    t_naive = measure(lambda: naive_round(state, alg, keys, alg.frac), repeat=3, min_repeat=1, budget=budget)
    return {
        "tasks": K,
        "d": problem.n_features,
        "samples": int(problem.n_samples.sum()),
        "steps_per_round": int(np.floor(problem.n_samples * 0.5).max()),
        "seconds": t.best,
        "median": t.median,
        "rounds_per_s": 1.0 / t.best,
        "naive_seconds": t_naive.best,
        "naive_rounds_per_s": 1.0 / t_naive.best,
        "speedup": t_naive.best / t.best,
        "max_abs_difference": err,
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Measure; returns ``{'landmine': {...}, 'synthetic': {...}}``."""
    budget = 0.3 if quick else 3.0
    out: dict[str, Any] = {}
    try:
        landmine = real_problem("landmine_small" if quick else "landmine", split_seed=0, standardize=False)
        out["landmine"] = _case(landmine, budget)
    except Exception as exc:  # data files absent: report, do not fail the suite
        out["landmine_skipped"] = str(exc)
    K = 100 if quick else 1000
    synthetic = related_tasks(tasks=K, d=20, samples=100, test_samples=0, rng=np.random.default_rng(0))
    out["synthetic"] = _case(synthetic, budget)
    return out


def markdown(results: dict[str, Any]) -> str:
    rows = []
    for key, label in (("landmine", "Landmine"), ("synthetic", "synthetic related tasks")):
        if key not in results:
            continue
        r = results[key]
        rows.append(
            [
                f"{label} (K = {r['tasks']}, d = {r['d']}, {r['samples']} samples, {r['steps_per_round']} "
                "steps/round)",
                fmt_seconds(r["seconds"]),
                f"{r['rounds_per_s']:.1f}",
                fmt_seconds(r["naive_seconds"]),
                f"{r['naive_rounds_per_s']:.2f}",
                f"{r['speedup']:.1f}x",
            ]
        )
    lines = [
        "## `mocha`: MOCHA inner rounds per second",
        "",
        "One inner round = local SDCA with frac = 0.5 on every task (one task per node) + upload of db + "
        "server update W <- W + dB Sigma / lambda + download of w_t (`Mocha.step` on the local backend). "
        "Naive: the same round task by task with scalar SDCA steps in Python, same visiting orders "
        "(models checked equal before timing).",
        "",
        markdown_table(
            ["problem", "round (best)", "rounds / s", "naive round", "naive rounds / s", "speed-up"], rows
        ),
    ]
    if "landmine_skipped" in results:
        lines += ["", f"Landmine skipped: {results['landmine_skipped']}"]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    res = run("--quick" in sys.argv)
    print(markdown(res))
