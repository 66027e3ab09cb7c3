r"""FedEM rounds per second with 1,000 clients and M = 3 components, against a naive per-client loop.

Problems: :func:`dmtl.data.mixture.fedem_mixture` with K = 1,000 clients (one per node), 2 classes,
M = 3, in two regimes: "reference-like" (d = 50, ``min(floor(LogNormal(4, 2)) + 30, 300)`` samples per
client) and "small clients" (d = 20, ``min(floor(LogNormal(3, 1)) + 10, 60)``). FedEM with full
participation, one local epoch, minibatches of 64, linear logistic components. One ``step(state,
comm)`` is timed (``step`` is pure: the state is not advanced between samples). Also timed: FedAvg (the
same round with one model and no E-step) and D-EM on an Erdos-Renyi graph (p = 0.01).

Reference: the same FedEM round written client by client in Python (E-step, weights, minibatch SGD per
component, weighted aggregation), with the same minibatch orders; its models are checked against
``step``'s before timing. The ratio naive / vectorised is the figure of merit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.common import fmt_seconds, markdown_table, measure
from dmtl.algorithms.fedem import DEM, FedEM
from dmtl.algorithms.federated import FedAvg, FedState, round_rng
from dmtl.backends.local import LocalCommunicator
from dmtl.data.mixture import fedem_mixture
from dmtl.network.topology import erdos_renyi, mixing_matrix
from dmtl.seeding import RunStreams

__all__ = ["run", "markdown", "naive_round"]


def naive_round(state: FedState, alg: FedEM) -> tuple[np.ndarray, np.ndarray]:
    """One full-participation FedEM round, client by client; returns (models, weights)."""
    data = state.data
    loss = data.loss
    W = state.W
    M, P, _ = W.shape
    d = data.d
    lr, B, E = alg.lr, alg.batch_size, alg.local_epochs
    rng = round_rng(state.seed, 1, state.round + 1)
    keys = [rng.random((data.n_tasks, data.n_max)) for _ in range(E)]
    delta = np.zeros_like(W)
    pi = state.pi.copy()
    for t in range(len(data.tasks)):
        n = int(data.block.n_samples[t])
        X = data.X[t, :n]
        y = data.y[t, :n]
        losses = np.stack([loss.value(X @ W[m, :d, 0] + W[m, d, 0], y) for m in range(M)])
        logit = np.log(pi[t])[:, None] - losses
        q = np.exp(logit - logit.max(axis=0))
        q /= q.sum(axis=0)
        pi[t] = q.mean(axis=1)
        Wt = W.copy()
        for e in range(E):
            order = np.argsort(keys[e][data.tasks[t], :n], kind="stable")
            for start in range(0, n, B):
                b = order[start : start + B]
                for m in range(M):
                    g = loss.grad(X[b] @ Wt[m, :d, 0] + Wt[m, d, 0], y[b]) * q[m, b] / len(b)
                    Wt[m, :d, 0] -= lr * (X[b].T @ g)
                    Wt[m, d, 0] -= lr * g.sum()
        delta += data.n[t] * (Wt - W)
    return W + delta / state.n_total, pi


CASES = {
    # name: (clients, d, min_samples, max_samples, log_mean, log_sigma)
    "reference-like": (1000, 50, 30, 300, 4.0, 2.0),
    "small clients": (1000, 20, 10, 60, 3.0, 1.0),
}
QUICK = {"reference-like": (100, 10, 30, 60, 4.0, 2.0), "small clients": (100, 5, 10, 30, 3.0, 1.0)}


def _case(K: int, d: int, n_min: int, n_max: int, mu: float, sigma: float, budget: float) -> dict[str, Any]:
    problem = fedem_mixture(
        K,
        d=d,
        min_samples=n_min,
        max_samples=n_max,
        log_mean=mu,
        log_sigma=sigma,
        test_samples=0,
        rng=np.random.default_rng(0),
    )
    top = erdos_renyi(K, max(0.01, 8.0 / K), seed=np.random.default_rng(1))
    mix = mixing_matrix(top, "metropolis")
    out: dict[str, Any] = {
        "size": {
            "clients": K,
            "d": d,
            "components": 3,
            "samples": int(problem.n_samples.sum()),
            "median_samples": float(np.median(problem.n_samples)),
            "max_samples": int(problem.n_samples.max()),
        },
    }
    fedem = FedEM(components=3, lr=0.5, batch_size=64)
    for key, alg in (("fedem", fedem), ("fedavg", FedAvg(lr=0.5, batch_size=64)), ("d-em", DEM(lr=0.5))):
        comm = LocalCommunicator(K, None, top, mix)
        state = alg.init(problem, comm, RunStreams(0))
        state = alg.step(state, comm)  # a round in: responsibilities no longer uniform
        t = measure(lambda alg=alg, state=state, comm=comm: alg.step(state, comm), repeat=5, budget=budget)
        out[key] = {"seconds": t.best, "median": t.median, "rounds_per_s": 1.0 / t.best}
        if key == "fedem":
            real = alg.step(state, comm)
            W_naive, pi_naive = naive_round(state, alg)
            err = max(float(np.max(np.abs(W_naive - real.W))), float(np.max(np.abs(pi_naive - real.pi))))
            if err > 1e-9:
                raise AssertionError(f"naive FedEM round differs from step by {err:.3g}")
            t_naive = measure(
                lambda state=state: naive_round(state, fedem), repeat=3, min_repeat=1, budget=budget
            )
            out["naive"] = {
                "seconds": t_naive.best,
                "rounds_per_s": 1.0 / t_naive.best,
                "max_abs_difference": err,
            }
    out["speedup"] = out["naive"]["seconds"] / out["fedem"]["seconds"]
    return out


def run(quick: bool = False) -> dict[str, Any]:
    """Measure; returns ``{'cases': {name: {'size', 'fedem', 'fedavg', 'd-em', 'naive', 'speedup'}},
    'speedup'}`` (the headline ``speedup`` is the reference-like case's)."""
    cases = QUICK if quick else CASES
    budget = 0.3 if quick else 3.0
    out = {"cases": {name: _case(*spec, budget=budget) for name, spec in cases.items()}}
    out["speedup"] = out["cases"]["reference-like"]["speedup"]
    return out


def markdown(results: dict[str, Any]) -> str:
    rows = []
    for case, res in results["cases"].items():
        s = res["size"]
        label = (
            f"{case}: {s['clients']} clients, d = {s['d']}, {s['samples']} samples (median "
            f"{s['median_samples']:.0f}, max {s['max_samples']})"
        )
        rows.append(
            [
                label,
                f"{fmt_seconds(res['fedem']['seconds'])} ({res['fedem']['rounds_per_s']:.1f}/s)",
                f"{fmt_seconds(res['naive']['seconds'])} ({res['naive']['rounds_per_s']:.1f}/s)",
                f"**{res['speedup']:.1f}x**",
                f"{fmt_seconds(res['fedavg']['seconds'])}",
                f"{fmt_seconds(res['d-em']['seconds'])}",
                f"{res['naive']['max_abs_difference']:.0e}",
            ]
        )
    return "\n".join(
        [
            "## `fedem`: FedEM rounds per second",
            "",
            "M = 3 linear logistic components, one client per node, full participation, one local epoch "
            "of minibatches of 64; one `step` timed (best of several). The naive loop computes the same "
            "round client by client with the same minibatch orders (its models are checked against "
            "`step`'s).",
            "",
            markdown_table(
                [
                    "problem",
                    "FedEM `step`",
                    "naive per-client loop",
                    "ratio",
                    "FedAvg `step`",
                    "D-EM `step`",
                    "max abs diff",
                ],
                rows,
            ),
            "",
            "The ratio is larger for the small-client problem, where the naive loop's fixed cost per "
            "client weighs more. Neither version is bound by reading the data: one pass over the samples "
            "takes a few milliseconds. The vectorised step also works on padded arrays (every client "
            "padded to the largest one's samples), so a wider spread of client sizes costs it more.",
        ]
    )


if __name__ == "__main__":
    import sys

    res = run("--quick" in sys.argv)
    print(markdown(res))
