"""Tests of MOCHA and its baselines (dmtl.algorithms.mocha) against the centralised MTRL oracle."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from dmtl.algorithms import make_algorithm
from dmtl.algorithms.mocha import (
    Mocha,
    MochaFit,
    MochaLocal,
    MochaMbSDCA,
    mocha_fit,
    mtrl_objectives,
    svm_newton,
    svm_sdca,
    task_errors,
)
from dmtl.backends.local import LocalCommunicator
from dmtl.config import load_config
from dmtl.errors import ConfigError, DataError
from dmtl.oracle import w_step
from dmtl.problem import Placement, Problem
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


def _drive(alg, problem: Problem, rounds: int, seed: int = 0):
    """Run ``alg`` on ``problem`` (one task per node, local backend); returns (state, comm, metrics)."""
    comm = LocalCommunicator(problem.n_nodes)
    state = alg.init(problem, comm, RunStreams(seed))
    for _ in range(rounds):
        state = alg.step(state, comm)
    return state, comm, alg.evaluate(state, comm)


def _tiny(K: int, n: int, d: int = 3, seed: int = 0, **kw) -> Problem:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((K, n, d))
    y = np.where(rng.standard_normal((K, n)) > 0, 1.0, -1.0)
    return Problem(X=X, y=y, placement=Placement.one_per_node(K), **kw)


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
    # parallel time model: per round, 8 units per step of the busiest node + the communication cost
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


def test_time_model_reference_charges_total_work():
    """time_model=reference charges every round the total work of all tasks (the reference's estimated
    time), CoCoA-style the number of tasks times its largest task's work; the iterates do not change."""
    common = ["rounds=3", "eval_every=3", "algorithm.comm_cost=lte", "algorithm.update_omega=false", *CLOCK]
    p = _problem()
    K = p.n_tasks
    for name, unit in (("mocha", 8), ("mocha-mbsdca", 6), ("mocha-mbsgd", 4)):
        opts = [f"algorithm.name={name}", f"algorithm.step_flops={unit}", *common]
        par = _run(opts)
        ref = _run([*opts, "algorithm.time_model=reference"])
        steps = np.floor(p.n_samples * 0.5)
        assert par.summary["virtual_time"] == pytest.approx(3 * (unit * steps.max() + 100)), name
        assert ref.summary["virtual_time"] == pytest.approx(3 * (unit * steps.sum() + 100)), name
        assert ref.final("primal") == par.final("primal"), name
        assert ref.summary["ledger"]["floats"] == par.summary["ledger"]["floats"], name
    # CoCoA-style: one round, K x the largest task's steps (its work depends on its local gaps)
    one = ["algorithm.name=mocha-cocoa", "algorithm.step_flops=8", "rounds=1", "eval_every=1", *common[2:]]
    cocoa = _run([*one, "algorithm.time_model=reference"])
    steps = cocoa.state.extra["steps"]
    assert np.ptp(steps) > 0  # tasks of different work: K x max differs from the sum
    assert cocoa.summary["virtual_time"] == pytest.approx(K * 8 * steps.max() + 100)
    assert _run(one).summary["virtual_time"] == pytest.approx(8 * steps.max() + 100)
    with pytest.raises(ConfigError, match="time_model must be one of parallel, reference"):
        _run(["algorithm.name=mocha", "rounds=1", "algorithm.time_model=sequential"])


def test_small_task_trains():
    """A task with n_t frac < 1 takes one step per round (the reference's floor(n_t frac) takes none)."""
    K, n = 4, 20
    base = _tiny(K, n)
    X, y = base.X.copy(), base.y.copy()
    X[3, 1:], y[3, 1:] = 0.0, 0.0
    ns = np.array([n, n, n, 1])
    p = Problem(X=X, y=y, n_samples=ns, placement=Placement.one_per_node(K))
    ref = w_step(X, y, ns, K * np.eye(K), LAM, "hinge")
    state, _, ev = _drive(Mocha(lam=LAM, update_omega=False), p, 400)
    assert ev["duality_gap"] < 1e-8
    assert ev["primal"] == pytest.approx(ref.primal, rel=1e-9)
    np.testing.assert_allclose(state.W[3], ref.W[:, 3], atol=1e-6)
    # the batched implementation does the same
    mask = p.mask[None]
    fit = mocha_fit(X[None], y[None], mask, LAM, outer=1, inner=400, update_omega=False)
    np.testing.assert_allclose(fit.W[0, 3], ref.W[:, 3], atol=1e-6)
    # the Local baseline trains the 1-sample task with frac 0.5 too
    local = w_step(X[3:], y[3:], ns[3:], np.eye(1), LAM, "hinge")
    state, _, _ = _drive(MochaLocal(lam=LAM, frac=0.5), p, 5)
    np.testing.assert_allclose(state.w[3], local.W[:, 0], atol=1e-9)


def test_mbsdca_gamma_capped_keeps_dual_feasible():
    """With fewer than ``scaling`` steps per round the reference's gamma exceeds 1 and alpha y leaves
    [0, 1]; capped at 1, the dual stays a lower bound on the optimum."""
    for seed in (14, 16):
        p = _tiny(2, 6, seed=seed)
        ref = w_step(p.X, p.y, None, 2 * np.eye(2), LAM, "hinge")
        alg = MochaMbSDCA(lam=LAM, update_omega=False)
        comm = LocalCommunicator(2)
        state = alg.init(p, comm, RunStreams(0))
        for _ in range(20):
            state = alg.step(state, comm)
            ev = alg.evaluate(state, comm)
            assert state.extra["gamma"].max() == 1.0  # 6 steps < scaling 10
            beta = state.alpha * p.y
            assert beta.min() >= 0.0 and beta.max() <= 1.0
            assert ev["dual"] <= ref.primal + 1e-10 and ev["duality_gap"] >= -1e-12


def test_dual_is_nan_outside_the_hinge_box(problem):
    X, y, m = problem.X[None], problem.y[None], problem.mask[None]
    fit = mocha_fit(X, y, m, LAM, outer=1, inner=3)
    primal, dual = mtrl_objectives(X, y, m, np.array([0]), fit, LAM)
    assert np.isfinite(dual[0]) and dual[0] <= primal[0]
    bad = MochaFit(**{**fit.__dict__, "alpha": fit.alpha * 1.5 + 0.1 * y})
    assert np.isnan(mtrl_objectives(X, y, m, np.array([0]), bad, LAM)[1][0])
    alg = Mocha(lam=LAM, update_omega=False)
    state, comm, ev = _drive(alg, problem, 2)
    assert np.isfinite(ev["dual"])
    state = replace(state, alpha=np.where(state.mask, 2.0 * state.data.y, 0.0))
    ev = alg.evaluate(state, comm)
    assert np.isnan(ev["dual"]) and np.isnan(ev["duality_gap"]) and np.isfinite(ev["primal"])


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        ({"loss": "logistic"}, ConfigError, "mocha_fit.loss must be one of hinge, squared"),
        ({"loss": "Hinge"}, ConfigError, "mocha_fit.loss must be one of hinge, squared"),
        ({"frac": 0.0}, ConfigError, "mocha_fit.frac"),
        ({"frac": -1.0}, ConfigError, "mocha_fit.frac"),
        ({"frac": float("nan")}, ConfigError, "mocha_fit.frac"),
        ({"drop_prob": 1.0}, ConfigError, "mocha_fit.drop_prob"),
        ({"stragglers": (0.9, 0.5)}, ConfigError, "mocha_fit.bottom"),
        ({"outer": 0}, ConfigError, "mocha_fit.outer"),
        ({"recompute_w": "yes"}, ConfigError, "mocha_fit.recompute_w"),
        ({"group": np.array([1])}, DataError, "group must index"),
    ],
)
def test_mocha_fit_bad_input(problem, kwargs, error, pattern):
    X, y, m = problem.X[None], problem.y[None], problem.mask[None]
    with pytest.raises(error, match=pattern):
        mocha_fit(X, y, m, LAM, **{"outer": 1, "inner": 2, **kwargs})


def test_batched_functions_check_labels_and_loss(problem):
    X, m = problem.X[None], problem.mask[None]
    y01 = (problem.y[None] > 0).astype(float)
    with pytest.raises(DataError, match=r"mocha_fit: training labels.*\{-1, \+1\}"):
        mocha_fit(X, y01, m, LAM, outer=1, inner=2)
    fit = mocha_fit(X, problem.y[None], m, LAM, outer=1, inner=2)
    with pytest.raises(DataError, match=r"\{-1, \+1\}"):
        mtrl_objectives(X, y01, m, np.array([0]), fit, LAM)
    with pytest.raises(ConfigError, match="loss must be one of hinge, squared"):
        mtrl_objectives(X, problem.y[None], m, np.array([0]), fit, LAM, loss="logistic")
    with pytest.raises(ConfigError, match="loss must be one of hinge, squared"):
        task_errors(X, problem.y[None], m, np.array([0]), fit.W, loss="softmax")
    # squared loss on regression labels is accepted
    mocha_fit(X, np.asarray(y01 + 0.5), m, LAM, loss="squared", outer=1, inner=2)


def test_test_error_averages_tasks_with_test_samples():
    K = 4
    rng = np.random.default_rng(1)
    Xt = rng.standard_normal((K, 10, 3))
    yt = np.where(rng.standard_normal((K, 10)) > 0, 1.0, -1.0)
    kw = {"X_test": Xt, "y_test": yt}
    _, _, full = _drive(Mocha(lam=LAM), _tiny(K, 20, n_test=np.array([10, 10, 10, 10]), **kw), 30)
    state, _, ev = _drive(Mocha(lam=LAM), _tiny(K, 20, n_test=np.array([10, 10, 10, 0]), **kw), 30)
    s = np.einsum("knd,kd->kn", Xt, state.w)
    err = (np.where(s >= 0, 1.0, -1.0) != yt).mean(1)
    assert ev["test_error"] == pytest.approx(err[:3].mean())
    assert ev["test_accuracy"] == pytest.approx(1.0 - err[:3].mean())
    assert full["test_error"] == pytest.approx(err.mean())


def test_unseen_clients_are_rejected():
    over = [
        "problem.kind=fedem_synthetic",
        "problem.d=5",
        "problem.min_samples=3",
        "problem.max_samples=20",
        "problem.test_samples=10",
        "problem.unseen_frac=0.25",
        "topology.nodes=8",
        "rounds=1",
        "output.progress=off",
        "algorithm.loss=squared",
    ]
    for name in ("mocha", "mocha-local"):
        with pytest.raises(ConfigError, match="unseen_frac=0"):
            run(None, [*over, f"algorithm.name={name}"])


def test_upload_floats_per_task():
    """Each working task uploads d + 1 floats (its row and a position tag) and receives d."""
    p = _problem()
    K, d = p.n_tasks, p.n_features
    runs = [_run(["algorithm.name=mocha", f"rounds={r}", "eval_every=1"]) for r in (1, 2)]
    floats = [r.summary["ledger"]["floats"] for r in runs]
    assert floats[1] - floats[0] == K * (d + 1) + K * d
