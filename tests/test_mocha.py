"""Tests of MOCHA and its baselines (dmtl.algorithms.mocha) against the centralised MTRL oracle."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from dmtl.algorithms import make_algorithm
from dmtl.algorithms.mocha import mocha_fit, mtrl_objectives, svm_newton, svm_sdca
from dmtl.config import load_config
from dmtl.errors import ConfigError, DataError
from dmtl.oracle import w_step
from dmtl.runner import build_problem, run
from dmtl.seeding import RunStreams

LAM = 0.05
BASE = [
    "problem.kind=related_tasks",
    "problem.tasks=8",
    "problem.d=5",
    "problem.samples=40",
    "topology.nodes=8",
    f"algorithm.lam={LAM}",
    "output.progress=off",
]


CLOCK = [
    "clock.latency=0",
    "clock.compute_rate=1",
    "clock.link_bandwidth=1e30",
    "clock.server_bandwidth=1e30",
]


def _run(extra: list[str]):
    return run(None, [*BASE, *extra])


def _problem(extra: list[str] | None = None):
    cfg = load_config(None, [*BASE, *(extra or []), "algorithm.name=mocha"])
    return build_problem(cfg, RunStreams(cfg["seed"]))


def _curve(result, metric: str) -> np.ndarray:
    return result.curve(metric)["value"].to_numpy()


@pytest.fixture(scope="module")
def problem():
    return _problem()


@pytest.fixture(scope="module")
def oracle_fixed(problem):
    K = problem.n_tasks
    return w_step(problem.X, problem.y, problem.n_samples, K * np.eye(K), LAM, "hinge")


def test_fixed_omega_reaches_oracle_and_gap_shrinks(oracle_fixed):
    r = _run(["algorithm.name=mocha", "algorithm.update_omega=false", "rounds=300", "eval_every=20"])
    primal, gap = _curve(r, "primal"), _curve(r, "duality_gap")
    assert oracle_fixed.gap < 1e-9
    assert abs(primal[-1] - oracle_fixed.primal) / oracle_fixed.primal < 1e-4
    assert np.all(gap >= -1e-12)
    assert gap[-1] < 1e-4 * gap[1] and gap[-1] < 1e-4
    # the dual is a lower bound on the oracle's optimum, the primal an upper bound
    assert np.all(_curve(r, "dual") <= oracle_fixed.primal + 1e-10)
    assert np.all(primal >= oracle_fixed.primal - 1e-10)


def test_learned_omega_w_step_reaches_oracle(problem):
    """After an Omega-step (non-diagonal Omega), the next W-step converges to the oracle's W-step."""
    X, y, m = problem.X[None], problem.y[None], problem.mask[None]
    seen = {}

    def grab(r, fit, steps):
        if r == 200:
            seen["Omega"] = fit.Omega[0].copy()
        if r == 399:  # the last round before the second Omega-step
            seen["fit"] = replace(fit, W=fit.W.copy(), B=fit.B.copy(), alpha=fit.alpha.copy())

    mocha_fit(X, y, m, LAM, outer=2, inner=200, callback=grab, rng=np.random.default_rng(3))
    fit = seen["fit"]
    Omega = seen["Omega"]
    assert np.abs(Omega - np.diag(np.diag(Omega))).max() > 1e-3  # genuinely coupled tasks
    assert np.trace(np.linalg.inv(Omega)) == pytest.approx(1.0)
    ref = w_step(problem.X, problem.y, problem.n_samples, Omega, LAM, "hinge")
    primal, dual = mtrl_objectives(X, y, m, np.array([0]), fit, LAM)
    assert abs(primal[0] - ref.primal) / ref.primal < 1e-4
    assert dual[0] <= ref.primal + 1e-10 <= primal[0] + 2e-10


def test_squared_loss_reaches_oracle():
    extra = ["problem.labels=regression"]
    p = _problem(extra)
    K = p.n_tasks
    ref = w_step(p.X, p.y, p.n_samples, K * np.eye(K), LAM, "squared")
    r = _run(
        [*extra, "algorithm.name=mocha", "algorithm.loss=squared", "algorithm.update_omega=false"]
        + [
            "rounds=200",
            "eval_every=50",
        ]
    )
    assert abs(r.final("primal") - ref.primal) / ref.primal < 1e-6
    assert -1e-12 <= r.final("duality_gap") < 1e-6
    assert r.final("test_rmse") < 1.5 and r.final("test_task_rmse") < 1.5


def test_algorithm_equals_batched_implementation():
    extra = ["algorithm.stragglers=true", "algorithm.drop_prob=0.2", "algorithm.inner_iters=4"]
    r = _run(["algorithm.name=mocha", "rounds=12", "eval_every=12", *extra])
    p = _problem(extra)
    fit = mocha_fit(
        p.X[None],
        p.y[None],
        p.mask[None],
        LAM,
        outer=3,
        inner=4,
        stragglers=(0.1, 1.0),
        drop_prob=0.2,
        rng=RunStreams(0).generator("nodes"),
    )
    W = np.empty_like(r.state.W)
    W[r.state.order] = r.state.W
    np.testing.assert_array_equal(fit.W[0], W)
    primal, dual = mtrl_objectives(p.X[None], p.y[None], p.mask[None], np.array([0]), fit, LAM)
    assert primal[0] == pytest.approx(r.final("primal"), rel=1e-12)
    assert dual[0] == pytest.approx(r.final("dual"), rel=1e-12)


def test_outer_iterations_gap_nonnegative_and_reference_mode_stalls():
    common = ["algorithm.name=mocha", "algorithm.inner_iters=60", "rounds=230", "eval_every=10"]
    paper = _run(common)
    ref = _run([*common, "algorithm.recompute_w=false"])
    g_paper, g_ref = _curve(paper, "duality_gap"), _curve(ref, "duality_gap")
    p_paper = _curve(paper, "primal")
    assert np.all(g_paper >= -1e-12) and np.all(g_ref >= -1e-12)
    for o in (1, 2, 3):  # within each outer iteration (after the Omega-step) the gap shrinks
        assert g_paper[6 * o + 5] < 0.5 * g_paper[6 * o]
    # the objective at the end of each outer iteration decreases
    assert p_paper[5] > p_paper[11] > p_paper[17] > p_paper[23]
    # the reference code's warm start keeps an offset W - B Sigma / lambda after the Omega-step: the
    # gap to the true dual stalls and W barely moves
    assert g_ref[-1] > 100 * g_paper[-1]
    assert np.ptp(_curve(ref, "primal")[7:]) < 1e-3


def test_stragglers_dropouts_and_communication_cost():
    common = ["algorithm.name=mocha", "rounds=10", "eval_every=10", "algorithm.step_flops=8", *CLOCK]
    wifi = _run([*common, "algorithm.comm_cost=wifi"])
    g3 = _run([*common, "algorithm.comm_cost=3g"])
    assert g3.final("primal") == wifi.final("primal")
    dt = g3.summary["virtual_time"] - wifi.summary["virtual_time"]
    assert dt == pytest.approx(10 * (1000 - 10))
    # reference time model: per round, 8 units per step of the busiest node + the communication cost
    p = _problem()
    steps = np.floor(p.n_samples * 0.5).max()
    assert wifi.summary["virtual_time"] == pytest.approx(10 * (8 * steps + 10))
    # drop-outs: dropped nodes upload nothing
    full = _run(["algorithm.name=mocha", "rounds=20", "eval_every=20"])
    drop = _run(["algorithm.name=mocha", "rounds=20", "eval_every=20", "algorithm.drop_prob=0.5"])
    up_full = full.summary["ledger"]["bytes_uploaded"]
    up_drop = drop.summary["ledger"]["bytes_uploaded"]
    assert 0.3 * up_full < up_drop < 0.7 * up_full
    assert drop.final("duality_gap") >= 0
    strag = _run(["algorithm.name=mocha", "rounds=20", "eval_every=20", "algorithm.stragglers=true"])
    assert strag.final("primal") < _curve(strag, "primal")[0]


def test_stragglers_are_slow_nodes():
    """A straggler's draw f is its speed: MOCHA's flexible work keeps a round at about one full pass,
    a fixed-accuracy method (CoCoA-style) waits for its slowest node."""
    common = ["rounds=5", "eval_every=5", "algorithm.step_flops=8", "algorithm.frac=1.0", *CLOCK]
    p = _problem()
    full_pass = 8 * p.n_samples.max()
    mocha = _run(["algorithm.name=mocha", "algorithm.stragglers=true", *common])
    per_round = mocha.summary["virtual_time"] / 5
    assert 0.7 * full_pass < per_round <= full_pass
    cocoa = _run(["algorithm.name=mocha-cocoa", *common])
    cocoa_slow = _run(["algorithm.name=mocha-cocoa", "algorithm.stragglers=true", *common])
    assert cocoa_slow.final("primal") == cocoa.final("primal")  # same work, done slower
    assert cocoa_slow.summary["virtual_time"] > 2 * cocoa.summary["virtual_time"]


def test_baselines_reach_their_oracles(problem, oracle_fixed):
    K = problem.n_tasks
    m = problem.mask
    pooled = w_step(problem.X[m][None], problem.y[m][None], None, np.eye(1), LAM, "hinge")
    local = w_step(problem.X, problem.y, problem.n_samples, np.eye(K), LAM, "hinge")
    fixed = ["algorithm.update_omega=false", "eval_every=100"]
    cases = {
        "mocha-global": (pooled.primal, 300, 1e-4),
        "mocha-local": (local.primal, 300, 1e-4),
        "mocha-cocoa": (oracle_fixed.primal, 100, 1e-5),
        "mocha-mbsdca": (oracle_fixed.primal, 300, 1e-3),
        "mocha-mbsgd": (oracle_fixed.primal, 300, 3e-3),
    }
    for name, (target, rounds, rel) in cases.items():
        r = _run([f"algorithm.name={name}", f"rounds={rounds}", *fixed])
        assert abs(r.final("primal") - target) / target < rel, name
        if "duality_gap" in set(r.history["metric"]):
            assert np.all(_curve(r, "duality_gap") >= -1e-12), name


def test_svm_newton_matches_oracle(problem):
    m = problem.mask
    lam = np.array([1e-3, 1e-2, 0.1, 1e-3])
    group = np.array([0, 0, 1, 2])
    w = svm_newton(problem.X, problem.y, m[group], lam, group=group)
    for r in range(4):
        t = group[r]
        ref = w_step(
            problem.X[t : t + 1], problem.y[t : t + 1], problem.n_samples[t : t + 1], np.eye(1), lam[r]
        )
        np.testing.assert_allclose(w[r], ref.W[:, 0], atol=1e-5)


def test_svm_sdca_matches_oracle(problem):
    m = problem.mask
    w, epochs = svm_sdca(problem.X, problem.y, m, LAM, max_epochs=2000, tol=1e-12)
    for t in (0, 3):
        ref = w_step(problem.X[t : t + 1], problem.y[t : t + 1], problem.n_samples[t : t + 1], np.eye(1), LAM)
        np.testing.assert_allclose(w[t], ref.W[:, 0], atol=2e-3)
    assert np.all(epochs >= 1)


@pytest.mark.parametrize(
    "extra, error, pattern",
    [
        (["algorithm.lam=0"], ConfigError, "lam"),
        (["algorithm.lam=-1"], ConfigError, "lam"),
        (["algorithm.loss=logistic"], ConfigError, "loss must be one of hinge, squared"),
        (["algorithm.bottom=0.9", "algorithm.top=0.5"], ConfigError, "bottom"),
        (["algorithm.drop_prob=1.0"], ConfigError, "drop_prob"),
        (["algorithm.comm_cost=5g"], ConfigError, "wifi, lte, 3g"),
        (["problem.labels=regression"], DataError, r"\{-1, \+1\}"),
    ],
)
def test_bad_input(extra, error, pattern):
    with pytest.raises(error, match=pattern):
        _run(["algorithm.name=mocha", "rounds=1", *extra])


def test_empty_task_and_bad_batch_input(problem):
    mask = problem.mask.copy()
    mask[2] = False
    with pytest.raises(DataError, match="no training sample"):
        mocha_fit(problem.X[None], problem.y[None], mask[None], LAM, outer=1, inner=1)
    with pytest.raises(ConfigError, match="lambda"):
        mocha_fit(problem.X[None], problem.y[None], problem.mask[None], 0.0, outer=1, inner=1)


def test_registry_and_test_overrides():
    for name in ("mocha", "mocha-cocoa", "mocha-mbsdca", "mocha-mbsgd", "mocha-global", "mocha-local"):
        alg = make_algorithm(name, lam=0.1)
        assert alg.test_overrides and any(o.startswith("problem.kind=") for o in alg.test_overrides)
        r = run(None, [*alg.test_overrides, f"algorithm.name={name}", "output.progress=off"])
        assert np.isfinite(r.final("primal"))
