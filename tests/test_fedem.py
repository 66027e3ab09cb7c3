"""FedEM and D-EM (ALGORITHMS.md section 5) and the FedEM synthetic mixture generator."""

from __future__ import annotations

import numpy as np
import pytest

from dmtl.algorithms import make_algorithm
from dmtl.algorithms.fedem import DEM, FedEM, adapt_weights, matched_correlation
from dmtl.algorithms.federated import round_rng
from dmtl.backends.local import LocalCommunicator
from dmtl.data.mixture import fedem_mixture, sample_sizes
from dmtl.errors import ConfigError, DataError
from dmtl.network.topology import erdos_renyi, mixing_matrix
from dmtl.problem import Placement, Problem
from dmtl.runner import run
from dmtl.seeding import RunStreams

SMALL = [
    "problem.kind=fedem_synthetic",
    "problem.unseen_frac=0.2",
    "topology.nodes=50",
    "output.progress=off",
    "output.plots=false",
]


def _run(alg: str, *extra: str, rounds: int = 80, seed: int = 0):
    return run(
        None,
        [*SMALL, f"algorithm.name={alg}", f"rounds={rounds}", f"eval_every={rounds}", f"seed={seed}", *extra],
    )


def _problem(K: int = 12, d: int = 6, seed: int = 0, **kw) -> Problem:
    kw.setdefault("min_samples", 10)
    kw.setdefault("max_samples", 40)
    kw.setdefault("test_samples", 20)
    return fedem_mixture(K, d=d, rng=np.random.default_rng(seed), **kw)


# --------------------------------------------------------------------------------------------------
# exactness
# --------------------------------------------------------------------------------------------------
def test_fedem_with_one_component_is_fedavg_exactly():
    common = [
        "algorithm.fraction=0.5",
        "algorithm.local_epochs=2",
        "algorithm.batch_size=16",
        "algorithm.lr=0.3",
    ]
    a = _run("fedem", "algorithm.components=1", *common, rounds=12)
    b = _run("fedavg", *common, rounds=12)
    assert a.state.W.shape == b.state.W.shape == (1, 51, 1)
    assert np.max(np.abs(a.state.W - b.state.W)) <= 1e-12
    assert np.array_equal(a.state.W, b.state.W)  # in fact bit for bit
    assert np.all(a.state.pi == 1.0)
    for key in ("test_accuracy", "train_loss", "unseen_test_accuracy"):
        assert a.final(key) == b.final(key)
    assert a.summary["ledger"]["bytes"] == b.summary["ledger"]["bytes"]


def _naive_fedem_round(
    problem: Problem, W: np.ndarray, pi: np.ndarray, seed, r: int, lr: float, B: int, E: int
):
    """One FedEM round with full participation, client by client (reference implementation)."""
    K, n_max, d = problem.X.shape
    M = W.shape[0]
    rng = round_rng(seed, 1, r)
    keys = [rng.random((K, n_max)) for _ in range(E)]
    n_all = problem.n_samples.sum()
    delta = np.zeros_like(W)
    new_pi = pi.copy()
    for t in range(K):
        n = problem.n_samples[t]
        X = np.hstack([problem.X[t, :n], np.ones((n, 1))])
        y = problem.y[t, :n]
        s = np.stack([X @ W[m, :, 0] for m in range(M)])  # (M, n)
        loss = np.log1p(np.exp(-y * s))
        logit = np.log(pi[t])[:, None] - loss
        q = np.exp(logit - logit.max(0))
        q /= q.sum(0)
        new_pi[t] = q.mean(1)
        Wt = W.copy()
        for e in range(E):
            order = np.argsort(keys[e][t, :n], kind="stable")
            for start in range(0, n, B):
                batch = order[start : start + B]
                for m in range(M):
                    sb = X[batch] @ Wt[m, :, 0]
                    g = -y[batch] / (1.0 + np.exp(y[batch] * sb))
                    Wt[m, :, 0] -= lr * (X[batch].T @ (q[m, batch] * g)) / len(batch)
        delta += n * (Wt - W)
    return W + delta / n_all, new_pi


def test_vectorised_round_matches_a_naive_per_client_loop():
    problem = _problem(K=9, d=5, min_samples=7, max_samples=45)
    alg = FedEM(components=3, lr=0.4, batch_size=8, local_epochs=2)
    comm = LocalCommunicator(problem.n_nodes)
    streams = RunStreams(3)
    state = alg.init(problem, comm, streams)
    W, pi = state.W.copy(), state.pi.copy()
    for r in (1, 2):
        W, pi = _naive_fedem_round(problem, W, pi, state.seed, r, 0.4, 8, 2)
        state = alg.step(state, comm)
        np.testing.assert_allclose(state.W, W, rtol=0, atol=1e-12)
        np.testing.assert_allclose(state.pi, pi, rtol=0, atol=1e-12)
    # the ledger: M models down and up per client per round
    floats = 3 * 6 * 1
    led = comm.ledger_totals()
    assert led["floats"] == 2 * 2 * 9 * floats + 9  # + the one-off upload of the sample counts
    assert led["messages"] == 2 * 2 * 9 + 9


def test_padded_rows_never_count():
    p = _problem(K=6, d=4)
    junk_X = p.X.copy()
    junk_y = p.y.copy()
    pad = ~p.mask
    junk_X[pad] = 7.0
    junk_y[pad] = 1.0
    q = Problem(junk_X, junk_y, p.placement, p.n_samples, p.X_test, p.y_test, p.n_test, p.truth)
    outs = []
    for prob in (p, q):
        alg = FedEM(components=2, lr=0.5, batch_size=8)
        comm = LocalCommunicator(prob.n_nodes)
        st = alg.init(prob, comm, RunStreams(1))
        for _ in range(3):
            st = alg.step(st, comm)
        outs.append((st.W, st.pi, alg.evaluate(st, comm)))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
    assert outs[0][2] == outs[1][2]


# --------------------------------------------------------------------------------------------------
# statistics on the synthetic mixture
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs():
    lr = "algorithm.lr=1.0"
    return {
        "fedem": _run("fedem", lr),
        "fedavg": _run("fedavg", "algorithm.lr=0.3"),
        "local": _run("local", "algorithm.lr=0.3"),
        "d-em": _run("d-em", lr, "topology.kind=erdos_renyi", "topology.p=0.15"),
    }


def test_fedem_beats_fedavg_and_local(runs):
    acc = {k: r.final("test_accuracy") for k, r in runs.items()}
    assert acc["fedem"] > acc["fedavg"] + 0.05, acc
    assert acc["fedem"] > acc["local"] + 0.05, acc
    assert acc["fedem"] > 0.8, acc


def test_estimated_weights_correlate_with_the_truth(runs):
    assert runs["fedem"].final("pi_corr") > 0.9
    assert runs["d-em"].final("pi_corr") > 0.8


def test_unseen_clients_are_served(runs):
    fedem = runs["fedem"]
    # unseen clients adapt their weights with the frozen models: about as good as training clients
    assert fedem.final("unseen_test_accuracy") > runs["fedavg"].final("unseen_test_accuracy") + 0.05
    assert fedem.final("unseen_test_accuracy") > fedem.final("test_accuracy") - 0.06
    assert fedem.final("unseen_pi_corr") > 0.9
    # they never trained: their pi in the state is still uniform
    unseen = ~fedem.state.data.train
    assert unseen.sum() == 10
    assert np.all(fedem.state.pi[unseen] == 1.0 / 3)


def test_dem_on_erdos_renyi_is_close_to_fedem(runs):
    assert abs(runs["d-em"].final("test_accuracy") - runs["fedem"].final("test_accuracy")) < 0.05
    assert runs["d-em"].final("consensus") < 0.05
    assert runs["d-em"].final("test_accuracy") > runs["fedavg"].final("test_accuracy") + 0.05


def test_adapt_weights_recovers_the_truth_with_the_true_models():
    p = _problem(K=20, d=8, min_samples=150, max_samples=300)
    theta = p.truth["theta"]  # (M, d): the true components as logistic models with a steep slope
    alg = FedEM(components=3)
    comm = LocalCommunicator(p.n_nodes)
    st = alg.init(p, comm, RunStreams(0))
    W = np.concatenate([20 * theta, np.zeros((3, 1))], axis=1)[:, :, None]
    pi = adapt_weights(st.data, np.arange(20), W, 3, 30)
    z = p.truth["latent"]
    empirical = np.stack([(z == m).sum(1) for m in range(3)], 1) / p.n_samples[:, None]
    assert np.abs(pi - empirical).mean() < 0.05 and np.abs(pi - empirical).max() < 0.2
    assert matched_correlation(pi, p.truth["pi"])[0] > 0.98


def test_matched_correlation_undoes_label_switching():
    rng = np.random.default_rng(0)
    true = rng.dirichlet(np.ones(4) * 0.4, size=50)
    perm = np.array([2, 0, 3, 1])
    corr, found = matched_correlation(true[:, np.argsort(perm)], true)
    assert corr == pytest.approx(1.0)
    est = true[:, np.argsort(perm)]
    assert np.allclose(est[:, found], true)
    big = rng.dirichlet(np.ones(9), size=40)
    assert matched_correlation(big[:, ::-1], big)[0] == pytest.approx(1.0)


def test_multiclass_fedem_runs_with_softmax():
    r = _run("fedem", "problem.classes=3", "algorithm.lr=1.0", rounds=30)
    assert r.state.W.shape == (3, 51, 3)
    assert r.final("test_accuracy") > 0.6


def test_dem_needs_a_doubly_stochastic_connected_graph():
    p = _problem(K=6)
    top = erdos_renyi(6, 0.9, seed=np.random.default_rng(0))
    comm = LocalCommunicator(6, None, top, mixing_matrix(top, "metropolis"))
    DEM(components=2).init(p, comm, RunStreams(0))
    with pytest.raises(ValueError, match="graph"):
        DEM(components=2).init(p, LocalCommunicator(6), RunStreams(0))


def test_node_without_clients_is_fine():
    p = _problem(K=6)
    place = Placement(np.array([0, 0, 1, 1, 3, 3]), 4)  # node 2 holds nothing
    q = Problem(p.X, p.y, place, p.n_samples, p.X_test, p.y_test, p.n_test, p.truth)
    alg = FedEM(components=2, fraction=0.5)
    comm = LocalCommunicator(4)
    st = alg.init(q, comm, RunStreams(0))
    for _ in range(4):
        st = alg.step(st, comm)
    out = alg.evaluate(st, comm)
    assert np.isfinite(out["test_accuracy"])
    assert comm.node_ledger()["uploaded"][2, 0] == 1  # only the sample count, never a model


# --------------------------------------------------------------------------------------------------
# the generator
# --------------------------------------------------------------------------------------------------
def test_generator_labels_follow_the_latent_component():
    p = fedem_mixture(
        30, d=15, noise=0.0, min_samples=20, max_samples=200, test_samples=0, rng=np.random.default_rng(4)
    )
    z, theta, mask = p.truth["latent"], p.truth["theta"], p.mask
    assert np.all(z[mask] >= 0) and np.all(z[~mask] == -1)
    s = np.einsum("knd,knd->kn", p.X, theta[np.maximum(z, 0)])
    assert np.all(np.where(s > 0, 1.0, -1.0)[mask] == p.y[mask])
    assert set(np.unique(p.y[mask])) == {-1.0, 1.0}
    # latent frequencies follow pi (pooled over clients, weighted by their sizes)
    counts = np.stack([(z == m).sum(1) for m in range(3)], 1)
    expected = p.truth["pi"] * p.n_samples[:, None]
    assert np.abs(counts.sum(0) - expected.sum(0)).max() < 4 * np.sqrt(expected.sum(0)).max()


def test_reference_labelling_bug_is_reproduced_only_on_request():
    kw = dict(d=10, noise=0.0, min_samples=100, max_samples=100, test_samples=0)
    bug = fedem_mixture(200, reference_labels=True, rng=np.random.default_rng(0), **kw)
    fixed = fedem_mixture(200, rng=np.random.default_rng(0), **kw)
    # with the bug, rows past the largest component block keep label 0 (-1 here) whatever x is
    unlabelled = bug.truth["latent"] == -1
    assert unlabelled.mean() > 0.15
    assert np.all(bug.y[unlabelled] == -1.0)
    assert (bug.y == -1).mean() > 0.6 and abs((fixed.y == -1).mean() - 0.5) < 0.05
    # the rows it does label carry the last component whose block covers them
    theta = bug.truth["theta"]
    rows = ~unlabelled
    s = np.einsum("knd,knd->kn", bug.X, theta[np.maximum(bug.truth["latent"], 0)])
    assert np.all(np.where(s > 0, 1.0, -1.0)[rows] == bug.y[rows])


def test_sample_sizes_formula():
    rng = np.random.default_rng(0)
    n = sample_sizes(10_000, rng)
    raw = np.floor(np.random.default_rng(0).lognormal(4, 2, 10_000))
    assert np.array_equal(n, np.minimum(np.minimum(raw, 1000).astype(int) + 50, 1000))
    assert n.min() == 50 and n.max() == 1000


def test_problem_kind_defaults_and_truth():
    r = run(None, ["problem.kind=fedem_synthetic", "algorithm.name=local", "rounds=1", "output.progress=off"])
    data = r.state.data
    assert len(data.tasks) == 10 and data.d == 50
    p = fedem_mixture(10, d=3, unseen_frac=0.3, rng=np.random.default_rng(0))
    assert p.truth["pi"].shape == (10, 3) and np.allclose(p.truth["pi"].sum(1), 1)
    assert p.truth["unseen"].tolist() == [False] * 7 + [True] * 3
    again = fedem_mixture(10, d=3, unseen_frac=0.3, rng=np.random.default_rng(0))
    assert np.array_equal(p.X, again.X) and np.array_equal(p.y_test, again.y_test)


# --------------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "params, match",
    [
        ({"lr": 0.0}, "lr"),
        ({"lr": -1.0}, "lr"),
        ({"components": 0}, "components"),
        ({"unseen_iters": 0}, "unseen_iters"),
        ({"fraction": 0.0}, "fraction"),
        ({"fraction": 1.5}, "fraction"),
        ({"batch_size": 0}, "batch_size"),
        ({"local_epochs": 0}, "local_epochs"),
        ({"loss": "cubic"}, "loss"),
    ],
)
def test_bad_hyper_parameters(params, match):
    with pytest.raises(ConfigError, match=match):
        make_algorithm("fedem", **params)


def test_bad_dem_parameters():
    with pytest.raises(ConfigError, match="mixing_rounds"):
        make_algorithm("d-em", mixing_rounds=0)


def test_wrong_labels_for_the_loss():
    p = _problem(K=4)
    zero_one = Problem(p.X, (p.y + 1) / 2 * p.mask, p.placement, p.n_samples)
    with pytest.raises(DataError, match=r"training labels.*\{-1, \+1\}"):
        FedEM(loss="logistic").init(zero_one, LocalCommunicator(4), RunStreams(0))
    real = Problem(p.X, p.y * 0.5, p.placement, p.n_samples)
    with pytest.raises(DataError, match="softmax"):
        FedEM(loss="softmax").init(real, LocalCommunicator(4), RunStreams(0))


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"alpha": 0.0}, "alpha"),
        ({"d": 0}, "problem.d"),
        ({"min_samples": 0}, "min_samples"),
        ({"min_samples": 50, "max_samples": 10}, "max_samples"),
        ({"unseen_frac": 1.0}, "unseen_frac"),
        ({"components": 0}, "components"),
        ({"classes": 1}, "classes"),
        ({"noise": -0.1}, "noise"),
    ],
)
def test_bad_generator_parameters(kw, match):
    with pytest.raises(ConfigError, match=match):
        fedem_mixture(5, rng=np.random.default_rng(0), **kw)


def test_empty_task_is_rejected():
    p = _problem(K=3)
    with pytest.raises(DataError, match="n_samples"):
        Problem(p.X, p.y, p.placement, np.array([5, 0, 3]))
