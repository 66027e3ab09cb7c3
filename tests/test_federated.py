"""Federated baselines: Local, FedAvg, FedAvg + fine-tuning, FedProx, Ditto (linear models)."""

from __future__ import annotations

import numpy as np
import pytest

from dmtl.algorithms import ALGORITHMS, make_algorithm
from dmtl.algorithms.federated import Ditto, FedAvg, FedProx, Local, sample_nodes
from dmtl.backends.local import LocalCommunicator
from dmtl.data.mixture import fedem_mixture
from dmtl.errors import ConfigError, DataError
from dmtl.problem import Problem
from dmtl.runner import run
from dmtl.seeding import RunStreams

FEDERATED = ("local", "fedavg", "fedavg-ft", "fedprox", "ditto", "fedem", "d-em")


def _problem(K: int = 6, d: int = 4, seed: int = 0, **kw) -> Problem:
    kw.setdefault("min_samples", 5)
    kw.setdefault("max_samples", 30)
    kw.setdefault("test_samples", 10)
    return fedem_mixture(K, d=d, rng=np.random.default_rng(seed), **kw)


def _grad(p: Problem, t: int, w: np.ndarray) -> np.ndarray:
    """Gradient of client t's mean logistic loss at w = [weights; bias]."""
    n = p.n_samples[t]
    X = np.hstack([p.X[t, :n], np.ones((n, 1))])
    y = p.y[t, :n]
    return X.T @ (-y / (1.0 + np.exp(y * (X @ w)))) / n


def _start(alg, p: Problem):
    comm = LocalCommunicator(p.n_nodes)
    state = alg.init(p, comm, RunStreams(0))
    return comm, state


# --------------------------------------------------------------------------------------------------
# update rules against hand computations (full-batch SGD = gradient descent)
# --------------------------------------------------------------------------------------------------
def test_fedavg_full_batch_round_is_a_weighted_average_of_local_gd():
    p = _problem()
    alg = FedAvg(lr=0.5, batch_size=1000, local_epochs=2)
    comm, st = _start(alg, p)
    w = st.W[0, :, 0].copy()
    locals_ = []
    for t in range(p.n_tasks):
        wt = w - 0.5 * _grad(p, t, w)
        locals_.append(wt - 0.5 * _grad(p, t, wt))
    expected = np.einsum("t,td->d", p.n_samples / p.n_samples.sum(), np.array(locals_))
    st = alg.step(st, comm)
    np.testing.assert_allclose(st.W[0, :, 0], expected, rtol=0, atol=1e-13)


def test_fedavg_one_local_step_is_pooled_gradient_descent():
    p = _problem(K=5)
    alg = FedAvg(lr=0.3, batch_size=1000)
    comm, st = _start(alg, p)
    w = st.W[0, :, 0].copy()
    pooled = sum(p.n_samples[t] * _grad(p, t, w) for t in range(5)) / p.n_samples.sum()
    st = alg.step(st, comm)
    np.testing.assert_allclose(st.W[0, :, 0], w - 0.3 * pooled, rtol=0, atol=1e-13)


def test_fedprox_adds_the_proximal_gradient():
    p = _problem()
    mu, lr = 2.0, 0.2
    alg = FedProx(lr=lr, mu=mu, batch_size=1000, local_epochs=3)
    comm, st = _start(alg, p)
    w = st.W[0, :, 0].copy()
    outs = []
    for t in range(p.n_tasks):
        v = w.copy()
        for _ in range(3):
            v = v - lr * (_grad(p, t, v) + mu * (v - w))
        outs.append(v)
    expected = np.einsum("t,td->d", p.n_samples / p.n_samples.sum(), np.array(outs))
    st = alg.step(st, comm)
    np.testing.assert_allclose(st.W[0, :, 0], expected, rtol=0, atol=1e-13)


def test_ditto_personal_models_are_pulled_to_the_received_global_model():
    p = _problem()
    lam, lr = 0.7, 0.4
    alg = Ditto(lr=lr, lam=lam, batch_size=1000)
    comm, st = _start(alg, p)
    w0 = st.W[0, :, 0].copy()
    v = np.tile(w0, (p.n_tasks, 1))
    w = w0
    for _ in range(3):
        new_v = np.array([v[t] - lr * (_grad(p, t, v[t]) + lam * (v[t] - w)) for t in range(p.n_tasks)])
        w_locals = np.array([w - lr * _grad(p, t, w) for t in range(p.n_tasks)])
        w = np.einsum("t,td->d", p.n_samples / p.n_samples.sum(), w_locals)
        v = new_v
        st = alg.step(st, comm)
    np.testing.assert_allclose(st.personal[:, 0, :, 0], v, rtol=0, atol=1e-12)
    np.testing.assert_allclose(st.W[0, :, 0], w, rtol=0, atol=1e-12)


def test_local_is_independent_gradient_descent():
    p = _problem()
    alg = Local(lr=0.5, batch_size=1000, local_epochs=2)
    comm, st = _start(alg, p)
    w0 = st.W[0, :, 0].copy()
    for _ in range(2):
        st = alg.step(st, comm)
    for t in range(p.n_tasks):
        w = w0.copy()
        for _ in range(4):
            w = w - 0.5 * _grad(p, t, w)
        np.testing.assert_allclose(st.personal[t, 0, :, 0], w, rtol=0, atol=1e-13)
    assert comm.ledger_totals()["messages"] == 0


def test_minibatches_cover_each_client_once_per_epoch():
    # lr so small that the model barely moves: an epoch of 4 batch-mean steps over 20 samples moves
    # 4 times as far as one full-batch step iff every sample is used exactly once
    p = _problem(K=4, min_samples=20, max_samples=20)
    a, b = Local(lr=1e-7, batch_size=5), Local(lr=1e-7, batch_size=1000)
    ca, sa = _start(a, p)
    cb, sb = _start(b, p)
    sa, sb = a.step(sa, ca), b.step(sb, cb)
    da, db = sa.personal - sa.W, sb.personal - sb.W
    np.testing.assert_allclose(da, 4 * db, rtol=1e-5, atol=0)


# --------------------------------------------------------------------------------------------------
# sampling, unseen clients, accounting
# --------------------------------------------------------------------------------------------------
def test_sample_nodes_draws_from_eligible_nodes_only():
    eligible = np.array([True, True, False, True, True, True, False, True])
    rng = np.random.default_rng(0)
    for _ in range(20):
        sel = sample_nodes(eligible, 0.5, rng)
        assert sel.sum() == 3 and not np.any(sel & ~eligible)
    assert sample_nodes(eligible, 0.01, rng).sum() == 1
    assert np.array_equal(sample_nodes(eligible, 1.0, rng), eligible)


def test_client_sampling_and_unseen_clients_in_the_ledger():
    r = run(
        None,
        [
            "problem.kind=fedem_synthetic",
            "problem.d=5",
            "problem.unseen_frac=0.25",
            "topology.nodes=8",
            "algorithm.name=fedavg",
            "algorithm.fraction=0.5",
            "rounds=5",
            "output.progress=off",
        ],
    )
    led = r.summary["ledger"]
    floats = 6  # d + 1
    # 6 training nodes, int(0.5 * 6) = 3 sampled per round: 3 downloads and 3 uploads of 6 floats
    assert led["messages"] == 5 * (3 + 3) + 8
    assert led["floats"] == 5 * (3 + 3) * floats + 8
    assert r.final("unseen_test_accuracy") > 0


def test_unseen_nodes_never_exchange_models():
    p = _problem(K=8, unseen_frac=0.25)
    alg = FedAvg(fraction=1.0)
    comm, st = _start(alg, p)
    for _ in range(3):
        st = alg.step(st, comm)
    up = comm.node_ledger()["uploaded"][:, 0]
    down = comm.node_ledger()["downloaded"][:, 0]
    assert up.tolist() == [4] * 6 + [1] * 2 and down.tolist() == [3] * 6 + [0] * 2


def test_finetuning_reports_global_and_tuned_metrics():
    r = run(
        None,
        [
            "problem.kind=fedem_synthetic",
            "topology.nodes=20",
            "algorithm.name=fedavg-ft",
            "algorithm.lr=0.5",
            "algorithm.finetune_epochs=3",
            "rounds=20",
            "output.progress=off",
        ],
    )
    assert r.final("test_accuracy") > r.final("global_test_accuracy") + 0.01
    assert np.isfinite(r.final("global_test_loss"))


def test_regression_with_the_squared_loss():
    over = [
        "problem.kind=lowrank",
        "problem.d=8",
        "problem.tasks=10",
        "problem.samples=30",
        "problem.test_samples=10",
        "problem.noise=0.1",
        "topology.nodes=10",
        "rounds=30",
        "eval_every=10",
        "algorithm.lr=0.05",
        "output.progress=off",
    ]
    r = run(None, [*over, "algorithm.name=local"])
    assert r.state.data.loss.name == "squared"
    curve = r.curve("test_rmse")["value"].to_numpy()
    assert curve[-1] < 0.5 * curve[0]
    g = run(None, [*over, "algorithm.name=fedavg"])
    assert g.final("test_rmse") > r.final("test_rmse")  # different tasks: one model cannot fit all


def test_multiclass_softmax_and_explicit_hinge():
    base = [
        "problem.kind=fedem_synthetic",
        "problem.d=10",
        "topology.nodes=10",
        "rounds=20",
        "output.progress=off",
        "algorithm.lr=0.5",
    ]
    r = run(None, [*base, "problem.classes=4", "problem.alpha=100.0", "algorithm.name=fedavg"])
    assert r.state.W.shape == (1, 11, 4)
    assert r.final("test_accuracy") > 0.45  # 4 classes, three nearly equal components
    h = run(None, [*base, "algorithm.name=local", "algorithm.loss=hinge"])
    assert h.state.data.loss.name == "hinge" and h.final("train_accuracy") > 0.7


@pytest.mark.parametrize("name", FEDERATED)
def test_test_overrides_run_fast(name):
    cls = ALGORITHMS[name]
    r = run(None, [*cls.test_overrides, f"algorithm.name={name}", "output.progress=off"])
    assert r.summary["rounds"] == 3
    assert all(np.isfinite(v) for v in r.summary["final_metrics"].values())


# --------------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, params, match",
    [
        ("fedavg", {"lr": 0.0}, "lr"),
        ("local", {"lr": float("nan")}, "lr"),
        ("fedprox", {"mu": 0.0}, "mu"),
        ("fedprox", {"mu": -1.0}, "mu"),
        ("ditto", {"lam": 0.0}, "lam"),
        ("ditto", {"personal_epochs": 0}, "personal_epochs"),
        ("fedavg-ft", {"finetune_epochs": 0}, "finetune_epochs"),
        ("fedavg-ft", {"finetune_lr": -0.1}, "finetune_lr"),
        ("fedavg", {"bias": "yes"}, "bias"),
        ("fedavg", {"loss": "cubic"}, "loss"),
        ("fedavg", {"fraction": 2.0}, "fraction"),
        ("fedavg", {"step": 1.0}, "no parameter 'step'"),
    ],
)
def test_bad_hyper_parameters(name, params, match):
    with pytest.raises(ConfigError, match=match):
        make_algorithm(name, **params)


@pytest.mark.parametrize("loss", ["hinge", "logistic"])
def test_binary_losses_reject_zero_one_labels(loss):
    p = _problem(K=3)
    bad = Problem(p.X, (p.y + 1) / 2 * p.mask, p.placement, p.n_samples)
    with pytest.raises(DataError, match="training labels"):
        FedAvg(loss=loss).init(bad, LocalCommunicator(3), RunStreams(0))


def test_test_labels_are_checked_too():
    p = _problem(K=3)
    bad = Problem(p.X, p.y, p.placement, p.n_samples, p.X_test, p.y_test * 3, p.n_test)
    with pytest.raises(DataError, match="test labels"):
        Local(loss="logistic").init(bad, LocalCommunicator(3), RunStreams(0))


def test_every_client_unseen_is_an_error():
    p = _problem(K=3)
    q = Problem(p.X, p.y, p.placement, p.n_samples, truth={"unseen": np.ones(3, bool)})
    with pytest.raises(DataError, match="unseen"):
        FedAvg().init(q, LocalCommunicator(3), RunStreams(0))


def test_auto_loss_reads_the_labels():
    p = _problem(K=3)
    assert FedAvg().init(p, LocalCommunicator(3), RunStreams(0)).data.loss.name == "logistic"
    scores = Problem(p.X, np.round(10 * np.abs(p.X[:, :, 0])) * p.mask, p.placement, p.n_samples)
    assert FedAvg().init(scores, LocalCommunicator(3), RunStreams(0)).data.loss.name == "squared"
    declared = Problem(p.X, (p.y > 0) * p.mask, p.placement, p.n_samples, truth={"n_classes": np.array(2)})
    st = FedAvg().init(declared, LocalCommunicator(3), RunStreams(0))
    assert st.data.loss.name == "softmax" and st.W.shape[-1] == 2


# --------------------------------------------------------------------------------------------------
# optional neural components (PyTorch)
# --------------------------------------------------------------------------------------------------
def test_mlp_without_torch_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(ConfigError, match=r"pip install torch==2\.13\.0"):
        make_algorithm("fedavg", model="mlp")


@pytest.mark.parametrize("params, match", [({"model": "cnn"}, "model"), ({"hidden": 0}, "hidden")])
def test_bad_model_parameters(params, match):
    with pytest.raises(ConfigError, match=match):
        make_algorithm("fedem", **params)


def test_torch_mlp_gradient_matches_finite_differences():
    pytest.importorskip("torch")
    from dmtl.models.torch_models import TorchMLP

    rng = np.random.default_rng(0)
    model = TorchMLP(d=3, n_out=2, hidden=4)
    X = rng.standard_normal((2, 5, 3))
    W = model.init(rng, 2)[None].repeat(2, axis=0) + 0.1 * rng.standard_normal((2, 2, model.shape[0]))
    S, backward = model.vjp(X, W)
    assert S.shape == (2, 2, 5, 2)
    np.testing.assert_array_equal(S, model.scores(X, W))
    np.testing.assert_allclose(model.scores(X, W[0]), model.scores(X, np.stack([W[0], W[0]])), atol=1e-15)
    G = rng.standard_normal(S.shape)
    V = rng.standard_normal(W.shape)
    eps = 1e-6
    numeric = np.sum(G * (model.scores(X, W + eps * V) - model.scores(X, W - eps * V))) / (2 * eps)
    assert np.sum(backward(G) * V) == pytest.approx(numeric, rel=1e-7)


def test_fedem_with_mlp_components():
    pytest.importorskip("torch")
    base = [
        "problem.kind=fedem_synthetic",
        "problem.d=8",
        "topology.nodes=12",
        "rounds=6",
        "output.progress=off",
        "algorithm.model=mlp",
        "algorithm.hidden=5",
        "algorithm.lr=0.3",
        "algorithm.batch_size=32",
    ]
    a = run(None, [*base, "algorithm.name=fedem", "algorithm.components=1"])
    b = run(None, [*base, "algorithm.name=fedavg"])
    assert a.state.W.shape == (1, 5 * 8 + 5 + 5 + 1)
    np.testing.assert_array_equal(a.state.W, b.state.W)  # M = 1 is FedAvg, for neural models too
    m = run(None, [*base, "algorithm.name=fedem", "rounds=3"])
    assert m.state.W.shape == (3, 51) and np.isfinite(m.final("test_accuracy"))
    loc = run(None, [*base, "algorithm.name=local", "rounds=20", "algorithm.lr=1.0", "eval_every=20"])
    acc = loc.curve("train_accuracy")["value"].to_numpy()
    assert acc[0] < 0.65 and acc[-1] > 0.8  # it learns (the local data are mixtures: not separable)
