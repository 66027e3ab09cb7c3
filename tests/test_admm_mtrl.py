"""Tests of the online ADMM family: C-ADMM (reference and exact), ADMM-Single, D-ADMM, baselines."""

from __future__ import annotations

import numpy as np
import pytest
from datasets_available import needs
from scipy.linalg import fractional_matrix_power

from dmtl import runner
from dmtl.algorithms import make_algorithm
from dmtl.algorithms.admm_mtrl import CADMM, DADMM, omega_factors, omega_from_v
from dmtl.algorithms.admm_reference import reference_cadmm
from dmtl.backends.local import LocalCommunicator
from dmtl.data import datasets as ds
from dmtl.data.streams import fourier_stream, from_arrays, live_problem
from dmtl.errors import ConfigError, DataError
from dmtl.network.topology import complete, mixing_matrix, ring
from dmtl.problem import Placement, Problem
from dmtl.seeding import RunStreams

needs_synthetic = needs("omtl_synthetic")

REF_ERROR = {100: 0.256, 1000: 0.1612, 5000: 0.1369, 10000: 0.1406}
REF_MISTAKES = np.array([1307, 1717, 1305, 1540, 1163])


def _run(alg, problem, comm, rounds, at=()):
    state = alg.init(problem, comm, RunStreams(0))
    seen = {}
    for t in range(1, rounds + 1):
        state = alg.step(state, comm)
        if t in at:
            seen[t] = alg.evaluate(state, comm)
    return state, seen


def _mistakes(state) -> np.ndarray:
    table = state.stats.table
    return table[..., 1] + table[..., 2]


def _stream(K=5, T=300, normalize=False, seed=0, n_nodes=None):
    s = fourier_stream(K, T, normalize=normalize, rng=seed)
    return from_arrays(s.xs, s.ys, n_nodes=n_nodes)


# --------------------------------------------------------------------------------------------------
# The reference C-ADMM (dmtl.algorithms.admm_reference), for equivalence
# --------------------------------------------------------------------------------------------------


def test_cadmm_equals_the_reference_loop_prediction_for_prediction():
    s = fourier_stream(5, 150, normalize=False, rng=7)
    with np.errstate(all="ignore"):
        ref_pred, ref_omega = reference_cadmm(s.xs, s.ys)
    problem = from_arrays(s.xs, s.ys)
    alg = make_algorithm("c-admm")
    comm = LocalCommunicator(5)
    state = alg.init(problem, comm, RunStreams(0))
    preds = []
    for _ in range(150):
        W = state.W.copy()
        preds.append(np.where(np.einsum("kd,kd->k", W, state.feed.X[state.t]) < 0, -1.0, 1.0))
        state = alg.step(state, comm)
    np.testing.assert_array_equal(np.array(preds).T, ref_pred)
    np.testing.assert_allclose(alg.omega(state, comm), ref_omega, atol=1e-10)
    np.testing.assert_array_equal(_mistakes(state), (ref_pred != s.ys).sum(axis=1))


@needs_synthetic
def test_cadmm_reproduces_the_reference_numbers():
    problem = from_arrays(*(lambda a: (a.xs, a.ys))(ds.load_stream()))
    alg = make_algorithm("c-admm")  # reference hyper-parameters are the defaults
    assert (alg.rho, alg.eta, alg.lambda1, alg.lambda2, alg.lambda3, alg.lambda4) == (
        0.5,
        240,
        0.1,
        20,
        0.1,
        0.1,
    )
    state, seen = _run(alg, problem, LocalCommunicator(5), 10000, at=tuple(REF_ERROR))
    for t, ref in REF_ERROR.items():
        assert abs(seen[t]["error_rate"] - ref) <= 0.002, (t, seen[t]["error_rate"])
    mistakes = _mistakes(state)
    assert np.all(np.abs(mistakes - REF_MISTAKES) <= 0.01 * REF_MISTAKES), mistakes
    np.testing.assert_array_equal(mistakes, REF_MISTAKES)  # in fact exactly
    # the per-task metrics agree with the counts
    assert seen[10000]["error_rate_task2"] == pytest.approx(1305 / 10000)
    assert seen[10000]["mistakes"] == REF_MISTAKES.sum()


@needs_synthetic
def test_admm_single_on_the_reference_stream():
    a = ds.load_stream()
    problem = from_arrays(a.xs, a.ys)
    alg = make_algorithm("admm-single")
    state, seen = _run(alg, problem, LocalCommunicator(5), 10000, at=(10000,))
    rates = [seen[10000][f"error_rate_task{k}"] for k in range(5)]
    assert all(0.19 <= r <= 0.235 for r in rates), rates


def naive_single(x, y, rho=0.5, eta=20.0, l1=0.5, l2=20.0, l3=0.5, l4=0.5):
    """The reference single_task.py, transliterated (K = 1)."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    T, d = x.shape
    u, v, w, z = (np.zeros(d) for _ in range(4))
    pred = np.zeros(T)
    lv = l1 + l3
    for t in range(T):
        raw = np.sign(w @ x[t])
        g = -y[t] * x[t] if y[t] * raw < 1.0 else np.zeros(d)
        pred[t] = 1.0 if raw == 0 else raw
        w = (eta / (rho + eta)) * w + (rho / (rho + eta)) * (u + v) - (1 / (rho + eta)) * (g + z)
        u = (1 / (lv * (l2 + rho) + l2 * rho)) * (lv * (z + rho * w))
        v = (l2 / (l2 * (lv + rho) + rho * lv)) * (z + rho * w) + l4 * v
        z = z + rho * (w - u - v)
    return pred


def test_admm_single_equals_the_reference_loop():
    s = fourier_stream(3, 400, normalize=False, rng=2)
    problem = from_arrays(s.xs, s.ys)
    alg = make_algorithm("admm-single")
    state, _ = _run(alg, problem, LocalCommunicator(3), 400)
    expected = [(naive_single(s.xs[k], s.ys[k]) != s.ys[k]).sum() for k in range(3)]
    np.testing.assert_array_equal(_mistakes(state), expected)


# --------------------------------------------------------------------------------------------------
# Omega and the exact (u, V) step
# --------------------------------------------------------------------------------------------------


def test_omega_factors_match_the_definition():
    rng = np.random.default_rng(0)
    V = rng.normal(size=(5, 9))
    Om, P = omega_from_v(V)
    root = fractional_matrix_power(V @ V.T, 0.5).real
    np.testing.assert_allclose(Om, root / np.trace(root), atol=1e-12)
    np.testing.assert_allclose(P, np.linalg.pinv(root / np.trace(root)), rtol=1e-9)
    # K > d: rank d, computed from the d x d Gram matrix
    V = rng.normal(size=(8, 3))
    Om, P = omega_from_v(V)
    lam, Q = np.linalg.eigh(V @ V.T)
    root = (Q * np.sqrt(np.clip(lam, 0, None))) @ Q.T
    np.testing.assert_allclose(Om, root / np.trace(root), atol=1e-7)
    np.testing.assert_allclose(Om @ P @ Om, Om, atol=1e-12)  # pseudo-inverse
    assert np.linalg.matrix_rank(P) == 3
    batch = rng.normal(size=(4, 6, 2))
    f = omega_factors(batch)
    np.testing.assert_allclose(f.omega()[2], omega_from_v(batch[2])[0], atol=1e-12)
    zero = omega_factors(np.zeros((2, 3, 4)))
    np.testing.assert_allclose(zero.omega(), np.broadcast_to(np.eye(3) / 3, (2, 3, 3)))
    np.testing.assert_allclose(zero.pinv(), np.broadcast_to(3 * np.eye(3), (2, 3, 3)))
    # a task whose v_k is exactly 0 gets a zero row/column in P, not rounding noise
    V = rng.normal(size=(4, 6))
    V[1] = 0
    _, P = omega_from_v(V)
    assert np.abs(P[1]).max() < 1e-12


def test_exact_step_minimises_the_joint_objective():
    rng = np.random.default_rng(1)
    K, d = 4, 3
    alg = CADMM(variant="exact", lambda4=0.7)
    problem = from_arrays(rng.normal(size=(K, 5, d)), np.ones((K, 5)))
    state = alg.init(problem, LocalCommunicator(K), RunStreams(0))
    srv = state.server
    Vprev = rng.normal(size=(K, d))
    from dmtl.algorithms.admm_mtrl import _omega_server

    srv.Omega, srv.P, srv.Q, srv.p, srv.om = _omega_server(Vprev, False)
    Omega_inv = srv.P.copy()
    W, Z = rng.normal(size=(K, d)), rng.normal(size=(K, d))
    out = alg._server_update(srv, np.concatenate([W, Z], axis=1))
    u, V = out[0, :d], out[:, d:]
    rho, lu, lv, l4 = alg.rho, alg.lam_u, alg.lam_v, alg.lambda4
    R = W - u - V  # residuals w_k - u - v_k (rows)
    grad_u = lu * u - Z.sum(0) - rho * R.sum(0)
    grad_V = lv * V + l4 * Omega_inv @ V - Z - rho * R  # rows: d/dv_k
    assert np.abs(grad_u).max() < 1e-10
    assert np.abs(grad_V).max() < 1e-10
    np.testing.assert_allclose(out[:, :d], np.broadcast_to(u, (K, d)))
    # with lambda4 = 0 the exact u equals the reference u
    a0, b0 = CADMM(variant="exact", lambda4=0.0), CADMM(lambda4=0.0)
    s0 = a0.init(problem, LocalCommunicator(K), RunStreams(0)).server
    s1 = b0.init(problem, LocalCommunicator(K), RunStreams(0)).server
    WZ = np.concatenate([W, Z], axis=1)
    np.testing.assert_allclose(a0._server_update(s0, WZ)[0, :d], b0._server_update(s1, WZ)[0, :d], rtol=1e-12)


# --------------------------------------------------------------------------------------------------
# C-ADMM on the framework: placement, ledger, options, live sources
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["reference", "exact"])
def test_cadmm_does_not_depend_on_the_placement_and_counts_2d_per_task(variant):
    """The server works in task order: any placement gives bitwise the same run (its numerics amplify
    rounding by ~1e5 a round early on, so anything less than bitwise would drift apart)."""
    T = 3000
    s = fourier_stream(6, T, normalize=False, rng=3)
    one = from_arrays(s.xs, s.ys)  # 6 nodes
    grouped = from_arrays(s.xs, s.ys, n_nodes=4)  # tasks [0,0,1,2,2,3]
    perm = Problem(s.xs, s.ys, Placement(np.array([3, 1, 0, 2, 1, 0]), 4))  # gathered in another order
    results = []
    for problem in (one, grouped, perm):
        comm = LocalCommunicator(problem.n_nodes)
        alg = make_algorithm("c-admm", variant=variant)
        state, _ = _run(alg, problem, comm, T)
        order = np.argsort(state.block.tasks)
        results.append((_mistakes(state)[order], state.W[order], alg.omega(state, comm)))
        d = problem.n_features
        assert comm.ledger_totals()["floats"] == T * 6 * (2 * d + 2 * d)
    for mistakes, W, omega in results[1:]:
        np.testing.assert_array_equal(mistakes, results[0][0])
        np.testing.assert_array_equal(W, results[0][1])
        np.testing.assert_array_equal(omega, results[0][2])


@pytest.mark.parametrize(
    "params",
    [
        {"variant": "exact"},
        {"subgradient": "margin"},
        {"loss": "logistic"},
        {"numerics": "eigh"},
        {"numerics": "reference"},
        {"normalize": True},
    ],
)
def test_cadmm_options_learn(params):
    problem = _stream(T=1500, normalize=True)
    state, seen = _run(
        make_algorithm("c-admm", **params, eta=20.0), problem, LocalCommunicator(5), 1500, at=(1500,)
    )
    assert seen[1500]["error_rate"] < 0.3
    assert np.all(np.isfinite(state.W))


def test_live_sources_give_the_same_run_as_arrays():
    s = fourier_stream(3, 80, normalize=False, rng=5)
    arrays = from_arrays(s.xs, s.ys)
    for name in ("c-admm", "admm-single", "omtl-gradient", "pooled-online"):
        alg = make_algorithm(name)
        a, _ = _run(alg, arrays, LocalCommunicator(3), 80)
        live = live_problem([zip(s.xs[k], s.ys[k], strict=True) for k in range(3)])
        b, _ = _run(alg, live, LocalCommunicator(3), 80)
        np.testing.assert_array_equal(a.stats.table, b.stats.table)
        with pytest.raises(DataError, match="ended after 80"):
            alg.step(b, LocalCommunicator(3))
    with pytest.raises(DataError, match="needs an array stream"):
        make_algorithm("d-admm").init(
            live_problem([iter([(np.ones(2), 1.0)])]), LocalCommunicator(1), RunStreams(0)
        )


def test_stream_too_short_and_unequal_lengths():
    problem = _stream(T=20)
    alg = make_algorithm("c-admm")
    comm = LocalCommunicator(5)
    state, _ = _run(alg, problem, comm, 20)
    with pytest.raises(DataError, match="set rounds <= 20"):
        alg.step(state, comm)
    X, y = problem.X.copy(), problem.y.copy()
    X[4, 15:], y[4, 15:] = 0.0, 0.0  # task 4's stream ends after 15 rounds (zero padding)
    padded = Problem(X, y, problem.placement, n_samples=np.array([20, 20, 20, 20, 15]))
    for name in ("c-admm", "d-admm"):
        with pytest.raises(DataError, match="unequal length"):
            make_algorithm(name).init(
                padded, LocalCommunicator(5, topology=ring(5), mixing=None), RunStreams(0)
            )


@pytest.mark.parametrize("name", ["c-admm", "d-admm", "admm-single", "omtl-gradient", "pooled-online"])
def test_streams_that_are_not_binary_or_padded_are_refused(name):
    problem = _stream(T=20)
    comm = LocalCommunicator(5, topology=ring(5), mixing=ring(5).mixing("metropolis"))
    real_valued = Problem(problem.X, problem.y * 0.5, problem.placement)
    with pytest.raises(DataError, match="labels must be -1 or \\+1, found \\[-0.5, 0.5\\]; real-valued"):
        make_algorithm(name).init(real_valued, comm, RunStreams(0))
    zero_one = Problem(problem.X, (problem.y + 1) / 2, problem.placement)
    with pytest.raises(DataError, match="0/1 labels: recode them"):
        make_algorithm(name).init(zero_one, comm, RunStreams(0))
    X = np.concatenate([problem.X, np.zeros_like(problem.X)], axis=1)  # 20 rounds padded to 40
    y = np.concatenate([problem.y, np.zeros_like(problem.y)], axis=1)
    padded = Problem(X, y, problem.placement, n_samples=np.full(5, 20))
    with pytest.raises(DataError, match="the streams have 20 rounds but X holds 40"):
        make_algorithm(name).init(padded, comm, RunStreams(0))


def test_cli_refuses_an_online_algorithm_on_regression_targets():
    with pytest.raises(DataError, match="real-valued targets .*problem.kind=lowrank"):
        runner.run(
            None, ["algorithm.name=c-admm", "problem.d=9", "problem.tasks=5", "topology.nodes=5", "rounds=5"]
        )


@pytest.mark.parametrize(
    "name,params,match",
    [
        ("c-admm", {"variant": "fast"}, "variant"),
        ("c-admm", {"rho": 0}, "rho"),
        ("c-admm", {"lambda4": -1}, "lambda4"),
        ("c-admm", {"lambda1": 0, "lambda2": 0, "lambda3": 0}, "lambda2 > 0"),
        ("c-admm", {"subgradient": "always"}, "subgradient"),
        ("c-admm", {"loss": "square"}, "loss"),
        ("d-admm", {"mixing": "gossip"}, "mixing"),
        ("d-admm", {"omega_from": "server"}, "omega_from"),
        ("d-admm", {"reference_u": "yes"}, "reference_u"),
        ("omtl-gradient", {"interaction": "random"}, "interaction"),
        ("omtl-gradient", {"b": -1}, "b"),
        ("pooled-online", {"eta": 0}, "eta"),
        ("admm-single", {"normalize": 1}, "normalize"),
    ],
)
def test_bad_parameters(name, params, match):
    with pytest.raises(ConfigError, match=match):
        make_algorithm(name, **params)


# --------------------------------------------------------------------------------------------------
# D-ADMM
# --------------------------------------------------------------------------------------------------


def _graph_comm(n: int, kind: str = "ring") -> LocalCommunicator:
    top = ring(n) if kind == "ring" else complete(n)
    return LocalCommunicator(n, topology=top, mixing=mixing_matrix(top, "metropolis"))


def test_dadmm_counts_3dk_floats_per_neighbour_message():
    problem = _stream(K=5, T=400, normalize=True)
    d, K = problem.n_features, problem.n_tasks
    for n, kind, edges in ((5, "ring", 10), (5, "complete", 20), (7, "ring", 14)):
        comm = _graph_comm(n, kind)
        _run(make_algorithm("d-admm"), problem, comm, 30)
        totals = comm.ledger_totals()
        assert totals["messages"] == 30 * edges
        assert totals["floats"] == 30 * edges * 3 * d * K
        sent = comm.node_ledger()["sent"]
        np.testing.assert_array_equal(sent[:, 1], 30 * (edges // n) * 3 * d * K)


@pytest.mark.parametrize("n,kind", [(5, "ring"), (5, "complete"), (100, "ring")])
def test_dadmm_learns(n, kind):
    problem = _stream(K=5, T=4000, normalize=True, seed=1)
    alg = make_algorithm("d-admm")
    rounds = 1500 if n == 5 else 300
    state, seen = _run(alg, problem, _graph_comm(n, kind), rounds, at=(rounds,))
    m = seen[rounds]
    assert m["predictions"] == n * rounds
    assert m["error_rate"] < 0.26, m
    assert np.isfinite(m["consensus_error"])
    om = alg.omega(state, _graph_comm(n, kind))
    assert om.shape == (5, 5) and abs(np.trace(om) - 1) < 1e-9


def test_dadmm_node_streams_and_task_draws():
    problem = _stream(K=3, T=60)
    comm = _graph_comm(4)
    alg = make_algorithm("d-admm")
    state, _ = _run(alg, problem, comm, 25)
    # node i used examples i, i + 4, ... of each task: count[i, k] of them
    assert state.count.sum() == 4 * 25
    draws = RunStreams(0).generator("nodes")
    expected = np.zeros((4, 3), dtype=int)
    for _ in range(25):
        ks = draws.integers(3, size=4)
        expected[np.arange(4), ks] += 1
    np.testing.assert_array_equal(state.count, expected)
    # one node: no neighbours, no messages
    single = LocalCommunicator(1)
    state1, _ = _run(alg, problem, single, 10)
    assert single.ledger_totals()["floats"] == 0 and state1.t == 10


def test_dadmm_options_run():
    problem = _stream(K=4, T=300, normalize=True)
    for params in (
        {"mixing": "reference"},
        {"omega_from": "own"},
        {"reference_u": True},
        {"mixing": "topology"},
    ):
        _, seen = _run(make_algorithm("d-admm", **params), problem, _graph_comm(5), 200, at=(200,))
        assert seen[200]["error_rate"] < 0.35, params


def test_dadmm_reference_weights_exclude_the_own_state():
    comm = _graph_comm(5)
    W = DADMM()._mixing(comm)
    assert W.kind == "uniform_neighbors"
    np.testing.assert_allclose(W.matrix.diagonal(), 0.0)
    assert DADMM(mixing="metropolis")._mixing(comm).kind == "metropolis"


# --------------------------------------------------------------------------------------------------
# Baselines
# --------------------------------------------------------------------------------------------------


def test_gradient_baseline_and_pooled_model():
    problem = _stream(K=5, T=1500, normalize=True)
    for name, params in (
        ("omtl-gradient", {}),
        ("omtl-gradient", {"interaction": "learned", "burn_in": 200}),
        ("omtl-gradient", {"b": 0.0}),
        ("pooled-online", {}),
        ("pooled-online", {"subgradient": "margin", "eta": 0.05}),
    ):
        comm = LocalCommunicator(5)
        state, seen = _run(make_algorithm(name, **params), problem, comm, 1500, at=(1500,))
        assert seen[1500]["error_rate"] < 0.35, (name, params, seen[1500]["error_rate"])
        # omtl-gradient: g_k up, the coupled step down (d floats each per task); pooled: the same per node
        assert comm.ledger_totals()["floats"] == 1500 * 2 * 5 * problem.n_features
    # b = 0: independent perceptrons, whatever the step size
    a, _ = _run(make_algorithm("omtl-gradient", b=0.0, eta=1.0), problem, LocalCommunicator(5), 300)
    b, _ = _run(make_algorithm("omtl-gradient", b=0.0, eta=0.01), problem, LocalCommunicator(5), 300)
    np.testing.assert_array_equal(a.stats.table, b.stats.table)


# --------------------------------------------------------------------------------------------------
# Runner, configurations and the backend-equivalence overrides
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["c-admm", "admm-single", "d-admm", "omtl-gradient", "pooled-online"])
def test_test_overrides_run_through_the_runner(name):
    cls = make_algorithm(name).__class__
    result = runner.run(None, [f"algorithm.name={name}", *cls.test_overrides], progress=False)
    assert 0.0 < result.final("error_rate") < 0.5
    assert result.final("rounds_seen") == result.summary["rounds"]


def test_builtin_experiments_load():
    from dmtl.config import builtin_experiments, load_config

    names = [n for n in builtin_experiments() if n.startswith("omtl_")]
    assert {"omtl_cadmm", "omtl_dadmm", "omtl_landmine"} <= set(names)
    for n in names:
        cfg = load_config(n)
        make_algorithm(cfg["algorithm"]["name"], **{k: v for k, v in cfg["algorithm"].items() if k != "name"})


def test_runner_records_per_task_error_rates():
    result = runner.run(
        None,
        [
            "algorithm.name=c-admm",
            "problem.kind=fourier_stream",
            "problem.tasks=3",
            "problem.rounds=100",
            "problem.normalize=false",
            "topology.nodes=3",
            "rounds=100",
            "eval_every=20",
        ],
        progress=False,
    )
    curve = result.curve("error_rate_task1")
    assert list(curve["round"]) == [0, 20, 40, 60, 80, 100]
    assert result.summary["ledger"]["floats"] == 100 * 3 * 4 * 9


def test_omega_heat_map(tmp_path):
    from dmtl.plotting import plot_omega

    problem = _stream(K=4, T=200)
    alg = make_algorithm("c-admm")
    comm = LocalCommunicator(4)
    state, _ = _run(alg, problem, comm, 200)
    om = alg.omega(state, comm)
    np.testing.assert_allclose(om, om.T, atol=1e-12)
    assert abs(np.trace(om) - 1.0) < 1e-9
    out = plot_omega({"C-ADMM Omega": om, "similarity": -om}, tmp_path / "omega.png", title="t")
    assert out.exists() and out.stat().st_size > 1000
    with pytest.raises(ValueError, match="square"):
        plot_omega({"bad": np.ones((2, 3))}, tmp_path / "bad.png")
