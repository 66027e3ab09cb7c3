"""AltGDmin family: convergence to the truth, equivalence of diffusion on the complete graph with the
centralised algorithm, communication per iteration, and the consensus-error floor."""

from __future__ import annotations

import numpy as np
import pytest

from dmtl.algorithms.altgdmin import AltGDmin, DecAltGDmin, DifAltGDmin
from dmtl.backends.local import LocalCommunicator
from dmtl.data.synthetic import lowrank_regression
from dmtl.errors import ConfigError, TopologyError
from dmtl.network.topology import complete, erdos_renyi, path, ring
from dmtl.runner import run
from dmtl.seeding import RunStreams

# The noiseless setting: d = K = 200, r = 2, n = 40, L = 10.
BASE = ["problem.d=200", "problem.tasks=200", "problem.rank=2", "problem.samples=40", "topology.nodes=10"]


def _sd(result):
    return result.curve("sd_f_max")["value"].to_numpy()


def test_centralised_altgdmin_reaches_machine_precision():
    res = run(
        "lowrank",
        BASE
        + [
            "algorithm.name=altgdmin",
            "rounds=300",
            "eval_every=10",
            "target.metric=sd_f_max",
            "target.below=1e-10",
        ],
    )
    assert res.final("sd_f_max") < 1e-10
    assert res.summary["stopped_by"] == "target"
    assert res.final("rel_error") < 1e-9


@pytest.mark.parametrize("kind", ["ring", "erdos_renyi"])
def test_dif_altgdmin_converges_linearly_with_default_settings(kind):
    extra = ["topology.p=0.5"] if kind == "erdos_renyi" else []
    res = run(
        "lowrank",
        BASE
        + [f"topology.kind={kind}", "algorithm.name=dif-altgdmin", "rounds=200", "eval_every=25"]
        + extra,
    )
    sd = _sd(res)
    assert sd[-1] < 1e-6
    # linear: the error shrinks by a steady factor every 25 iterations until it nears machine precision
    active = sd[1:][sd[1:] > 1e-13]
    ratios = active[1:] / active[:-1]
    assert len(ratios) >= 3 and np.all(ratios < 0.2)


def _problem(L=10, seed=3):
    return lowrank_regression(60, 60, 2, 20, nodes=L, rng=np.random.default_rng(seed))


def test_dif_on_complete_graph_reproduces_centralised_iterates():
    L = 10
    problem = _problem(L)
    top = complete(L)
    W = top.mixing("complete_average")
    streams = RunStreams(0)
    cen, dif = AltGDmin(), DifAltGDmin(step_scale="nodes", init_method="centralized")
    c1 = LocalCommunicator(L, topology=top, mixing=W)
    c2 = LocalCommunicator(L, topology=top, mixing=W)
    s1, s2 = cen.init(problem, c1, streams), dif.init(problem, c2, streams)
    np.testing.assert_array_equal(s1.U, s2.U)
    worst = 0.0
    for _ in range(60):
        s1, s2 = cen.step(s1, c1), dif.step(s2, c2)
        worst = max(worst, float(np.abs(s1.U - s2.U).max()))
    assert worst < 1e-10
    assert cen.evaluate(s1, c1)["sd_f_max"] < 1e-3  # and they moved well towards the truth


def test_dec_spends_exactly_tcon_times_the_messages_of_dif():
    L, T = 8, 7
    problem = _problem(L)
    top = ring(L)
    W = top.mixing()
    per_iter = {}
    for algo in (DifAltGDmin(), DecAltGDmin(consensus_rounds=T)):
        comm = LocalCommunicator(L, topology=top, mixing=W)
        state = algo.init(problem, comm, RunStreams(0))
        before = comm.ledger_totals()
        state = algo.step(algo.step(state, comm), comm)
        after = comm.ledger_totals()
        per_iter[algo.name] = {k: (after[k] - before[k]) / 2 for k in ("messages", "floats", "comm_rounds")}
    dif, dec = per_iter["dif-altgdmin"], per_iter["dec-altgdmin"]
    d, r = 60, 2
    assert dif == {"messages": 2 * L, "floats": 2 * L * d * r, "comm_rounds": 1}
    assert dec == {k: T * v for k, v in dif.items()}


def test_dec_altgdmin_consensus_floor_is_visible():
    common = BASE + ["topology.kind=ring", "rounds=300", "eval_every=50"]
    dec = _sd(run("lowrank", common + ["algorithm.name=dec-altgdmin", "algorithm.consensus_rounds=10"]))
    dif = _sd(run("lowrank", common + ["algorithm.name=dif-altgdmin"]))
    assert dif[-1] < 1e-12
    # the consensus variant stalls: barely moves over the last 100 iterations, far above diffusion
    assert dec[-1] > 1e-5
    assert dec[-1] / dec[-3] > 0.5


def test_decentralised_init_with_flooding_gives_every_node_the_same_basis():
    L = 6
    problem = _problem(L)
    top = erdos_renyi(L, 0.6, seed=1)
    comm = LocalCommunicator(L, topology=top, mixing=top.mixing())
    state = DifAltGDmin().init(problem, comm, RunStreams(0))
    assert np.all(state.U == state.U[0])
    np.testing.assert_allclose(state.U[0].T @ state.U[0], np.eye(2), atol=1e-12)
    # the power method's basis is already a fair estimate of the truth
    assert DifAltGDmin().evaluate(state, comm)["sd_f_max"] < 0.9


def test_procrustes_alignment_repairs_sign_flipped_bases(monkeypatch):
    # With LAPACK's raw QR signs, neighbours' bases may point in opposite directions and plain
    # averaging stalls; aligning each received basis first (Procrustes) restores convergence.
    import dmtl.algorithms.altgdmin as altgdmin_module

    monkeypatch.setattr(altgdmin_module, "orthonormalize", lambda A: np.linalg.qr(A)[0])
    common = BASE + [
        "topology.kind=ring",
        "algorithm.name=dif-altgdmin",
        "algorithm.step_scale=nodes",
        "rounds=150",
        "eval_every=50",
    ]
    plain = _sd(run("lowrank", common))
    aligned = _sd(run("lowrank", common + ["algorithm.procrustes=true"]))
    assert plain[-1] > 0.5
    assert aligned[-1] < 1e-10


def test_graph_algorithms_refuse_bad_networks():
    problem = _problem(6)
    top = path(6)  # end nodes have one neighbour: uniform weights are not column-stochastic
    comm = LocalCommunicator(6, topology=top, mixing=top.mixing("uniform"))
    with pytest.raises(TopologyError, match="doubly stochastic"):
        DifAltGDmin().init(problem, comm, RunStreams(0))
    with pytest.raises(ValueError, match="needs a communication graph"):
        DifAltGDmin().init(problem, LocalCommunicator(6), RunStreams(0))


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"c": -1.0}, "c must be a finite number > 0"),
        ({"init_method": "magic"}, "init_method must be one of"),
        ({"consensus_rounds": 0}, "consensus_rounds must be an integer >= 1"),
        ({"step_scale": "lots"}, "step_scale must be a number"),
        ({"flood_init": "false"}, "flood_init must be true or false"),
    ],
)
def test_hyper_parameters_are_validated(params, match):
    with pytest.raises(ConfigError, match=match):
        DecAltGDmin(**params)


def test_the_server_variant_needs_one_initial_basis():
    with pytest.raises(ConfigError, match="server variant needs one"):
        AltGDmin(init_method="decentralized", flood_init=False)
    AltGDmin(init_method="decentralized")  # flooded: one basis
    DifAltGDmin(init_method="decentralized", flood_init=False)  # the graph variants may differ per node


def test_auto_step_scale_converges_where_l_eta_stalls():
    common = [
        "problem.d=200",
        "problem.tasks=200",
        "problem.samples=40",
        "topology.nodes=20",
        "topology.kind=erdos_renyi",
        "topology.p=0.3",
        "algorithm.name=dif-altgdmin",
        "rounds=200",
        "eval_every=50",
    ]
    auto = _sd(run("lowrank", common))
    l_eta = _sd(run("lowrank", common + ["algorithm.step_scale=nodes"]))
    assert auto[-1] < 1e-9
    assert l_eta[-1] > 1e-2 and l_eta[-1] / l_eta[-3] > 0.5  # stuck at a disagreement fixed point


def test_junk_in_the_padding_changes_nothing():
    """Rows past a task's n_samples are padding: Problem zeroes them (on a copy), since AltGDmin's
    products run over every row."""
    from dmtl.problem import Problem

    p = lowrank_regression(30, 12, 2, 20, nodes=4, rng=np.random.default_rng(0))
    n = np.array([20, 15, 12, 20] * 3)
    X, y = p.X.copy(), p.y.copy()
    pad = np.arange(20)[None, :] >= n[:, None]
    X[pad], y[pad] = 0.0, 0.0
    clean = Problem(X, y, p.placement, n, truth=p.truth)
    Xj, yj = X.copy(), y.copy()
    Xj[pad], yj[pad] = 5.0, -3.0
    junk = Problem(Xj, yj, p.placement, n, truth=p.truth)
    assert Xj[pad].min() == 5.0  # the caller's arrays are untouched
    np.testing.assert_array_equal(junk.X, clean.X)
    results = []
    for prob in (clean, junk):
        comm = LocalCommunicator(4)
        alg = AltGDmin()
        state = alg.init(prob, comm, RunStreams(0))
        for _ in range(5):
            state = alg.step(state, comm)
        results.append(alg.evaluate(state, comm))
    assert results[0] == results[1]


def test_degenerate_data_gets_a_clear_error():
    from dmtl.errors import DataError
    from dmtl.problem import Problem

    p = lowrank_regression(20, 8, 2, 15, nodes=4, rng=np.random.default_rng(0))
    top = ring(4)
    zero_y = Problem(p.X, np.zeros_like(p.y), p.placement)
    with pytest.raises(DataError, match="targets y are all zero"):
        AltGDmin(rank=2).init(zero_y, LocalCommunicator(4), RunStreams(0))
    comm = LocalCommunicator(4, topology=top, mixing=top.mixing("metropolis"))
    with pytest.raises(DataError, match=r"node\(s\) \[0, 1, 2, 3\] estimate sigma_max = 0"):
        DifAltGDmin(rank=2, init_method="decentralized").init(zero_y, comm, RunStreams(0))
    X = p.X.copy()
    X[3] = 0.0
    comm = LocalCommunicator(4)
    alg = AltGDmin(rank=2)
    state = alg.init(Problem(X, p.y, p.placement), comm, RunStreams(0))
    with pytest.raises(DataError, match=r"task\(s\) \[3\]: X_t U has rank < 2"):
        alg.step(state, comm)
