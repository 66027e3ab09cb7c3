"""Tests of the centralised MTRL oracle (dmtl.oracle)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize

from dmtl.data.real import related_tasks
from dmtl.errors import ConfigError, DataError
from dmtl.oracle import dual_objective, mtrl_objective, omega_step, solve_mtrl, w_step

LAM = 0.05


@pytest.fixture(scope="module")
def binary():
    return related_tasks(tasks=5, d=4, samples=20, rng=np.random.default_rng(1))


@pytest.fixture(scope="module")
def regression():
    return related_tasks(tasks=5, d=4, samples=20, kind="regression", rng=np.random.default_rng(2))


def _coupled_omega(K: int, seed: int = 0) -> np.ndarray:
    A = np.random.default_rng(seed).standard_normal((K, K))
    Sigma = A @ A.T + 0.5 * np.eye(K)
    Sigma /= np.trace(Sigma)
    return np.linalg.inv(Sigma)


def test_squared_w_step_is_stationary(regression):
    p = regression
    K = p.n_tasks
    Omega = _coupled_omega(K)
    res = w_step(p.X, p.y, p.n_samples, Omega, LAM, "squared")
    W = res.W
    m = p.mask
    resid = np.where(m, np.einsum("knd,dk->kn", p.X, W) - p.y, 0.0)
    grad = np.einsum("knd,kn->dk", p.X, resid) / p.n_samples + LAM * W @ Omega
    assert np.abs(grad).max() < 1e-10
    assert abs(res.gap) < 1e-10
    # the CG path gives the same answer as the dense solve
    res_cg = w_step(p.X, p.y, p.n_samples, Omega, LAM, "squared", dense_limit=1)
    np.testing.assert_allclose(res_cg.W, W, atol=1e-8)


def test_hinge_w_step_certified_and_optimal(binary):
    p = binary
    K, _, d = p.X.shape
    Omega = _coupled_omega(K, 1)
    res = w_step(p.X, p.y, p.n_samples, Omega, LAM, "hinge")
    assert 0 <= res.gap < 1e-9
    assert res.primal == pytest.approx(mtrl_objective(p.X, p.y, p.n_samples, res.W, Omega, LAM, "hinge"))
    Sigma = np.linalg.inv(Omega)
    assert res.dual == pytest.approx(dual_objective(p.X, p.y, p.n_samples, res.alpha, Sigma, LAM, "hinge"))
    beta = res.alpha * p.y
    assert beta[p.mask].min() >= 0 and beta[p.mask].max() <= 1
    # no random perturbation improves the primal
    rng = np.random.default_rng(0)
    for _ in range(50):
        Wp = res.W + 1e-3 * rng.standard_normal(res.W.shape)
        assert mtrl_objective(p.X, p.y, p.n_samples, Wp, Omega, LAM, "hinge") >= res.primal - 1e-12
    # an independent derivative-free minimisation of the primal does not beat it
    f = lambda v: mtrl_objective(p.X, p.y, p.n_samples, v.reshape(d, K), Omega, LAM, "hinge")  # noqa: E731
    alt = scipy.optimize.minimize(f, np.zeros(d * K), method="Powell", options={"maxiter": 20000})
    assert alt.fun >= res.primal - 1e-9


def test_omega_step_closed_form():
    rng = np.random.default_rng(3)
    W = rng.standard_normal((6, 4))
    Sigma, Omega, rho = omega_step(W)
    assert np.trace(Sigma) == pytest.approx(1.0)
    np.testing.assert_allclose(Sigma @ Omega, np.eye(4), atol=1e-10)
    assert rho == pytest.approx(np.max(np.abs(Sigma).sum(1) / np.diag(Sigma)))
    best = np.trace(W @ Omega @ W.T)
    for _ in range(200):  # tr(W Omega W^T) is minimal over unit-trace Sigma
        A = rng.standard_normal((4, 4))
        S = A @ A.T + 1e-3 * np.eye(4)
        S /= np.trace(S)
        assert np.trace(W @ np.linalg.inv(S) @ W.T) >= best - 1e-9
    # batched and rank-deficient inputs (d < K, W = 0) are handled by the floor
    S0, O0, r0 = omega_step(np.zeros((2, 3, 5)))
    np.testing.assert_allclose(S0, np.broadcast_to(np.eye(5) / 5, (2, 5, 5)), atol=1e-12)
    assert np.all(np.isfinite(O0)) and np.allclose(r0, 1.0)


def test_alternating_oracle_decreases(binary):
    p = binary
    res = solve_mtrl(p.X, p.y, p.n_samples, LAM, "hinge", outer=8)
    h = np.array(res.history)
    assert np.all(np.diff(h) <= 1e-9)
    assert h[-1] < h[0]
    assert res.gap < 1e-8
    assert np.trace(res.Sigma) == pytest.approx(1.0)


def test_oracle_bad_input(binary, regression):
    p = binary
    K = p.n_tasks
    with pytest.raises(ConfigError, match="lambda"):
        w_step(p.X, p.y, p.n_samples, np.eye(K), 0.0)
    with pytest.raises(DataError, match=r"\{-1, \+1\}"):
        w_step(regression.X, regression.y, regression.n_samples, np.eye(K), LAM, "hinge")
    with pytest.raises(DataError, match="1..20 samples"):
        w_step(p.X, p.y, np.zeros(K, dtype=int), np.eye(K), LAM)
    with pytest.raises(ConfigError, match="loss"):
        w_step(p.X, p.y, p.n_samples, np.eye(K), LAM, "logistic")


def test_hinge_dual_is_nan_outside_the_box(binary):
    """The hinge dual is defined on alpha y in [0, 1]; outside it the formula is no lower bound."""
    p = binary
    K = p.n_tasks
    Omega = K * np.eye(K)
    res = w_step(p.X, p.y, p.n_samples, Omega, LAM, "hinge")
    Sigma = np.linalg.inv(Omega)
    assert np.isfinite(dual_objective(p.X, p.y, p.n_samples, res.alpha, Sigma, LAM, "hinge"))
    # push the dual variables at the upper bound (margin violators) past 1: the formula then exceeds
    # the optimum, so it is no lower bound and must not be reported
    beta = res.alpha * p.y
    over = np.where(p.mask & (beta > 1 - 1e-6), beta + 0.05, beta) * p.y
    raw = dual_objective(p.X, p.y, p.n_samples, over, Sigma, LAM, "hinge", box_tol=np.inf)
    assert raw > res.primal
    assert np.isnan(dual_objective(p.X, p.y, p.n_samples, over, Sigma, LAM, "hinge"))
    assert np.isnan(dual_objective(p.X, p.y, p.n_samples, -res.alpha, Sigma, LAM, "hinge"))
    big = 2.0 * np.where(p.mask, p.y, 0.0)
    # the squared loss has no box
    assert np.isfinite(dual_objective(p.X, p.y, p.n_samples, big, Sigma, LAM, "squared"))
