r"""Centralised multi-task relationship learning (MTRL) oracle.

Solves, on one machine,

.. math::

    \min_{W, \Omega} \; P(W, \Omega) = \sum_t \frac{1}{n_t} \sum_{i=1}^{n_t} \ell(x_{ti}^\top w_t, y_{ti})
        + \frac{\lambda}{2} \operatorname{tr}(W \Omega W^\top),
    \qquad \Omega = \Sigma^{-1},\; \Sigma \succ 0,\; \operatorname{tr}\Sigma = 1,

by alternating an *exact* W-step for fixed Omega with the closed-form Omega-step
``Sigma = (W^T W)^{1/2} / tr((W^T W)^{1/2})`` (Zhang and Yeung). ``W`` is d x K (column t is task t's
model); task data come padded: ``X`` (K, n_max, d), ``y`` (K, n_max) with ``n`` (K,) real samples.

W-step (Omega fixed)
--------------------
``squared`` loss (``0.5 (x^T w - y)^2``): the optimality conditions
``(1/n_t) X_t^T (X_t w_t - y_t) + lambda sum_s Omega_ts w_s = 0`` form one symmetric positive definite
linear system of size dK, solved densely (dK <= ``dense_limit``) or by conjugate gradients to 1e-13.

``hinge`` loss: the Fenchel dual over ``beta_ti = alpha_ti y_ti in [0, 1]``,

.. math::

    D(\beta) = \sum_t \frac{1}{n_t} \sum_i \beta_{ti}
        - \frac{1}{2\lambda} \operatorname{tr}(B \Sigma B^\top), \quad
    B_{:,t} = \frac{1}{n_t} X_t^\top (\beta_t \odot y_t), \quad W = \frac{1}{\lambda} B \Sigma,

is a box-constrained concave quadratic program, solved by a primal-dual interior point method
(Mehrotra predictor-corrector, dense Cholesky of the N x N system) while ``N = sum n_t <= ipm_limit``
(1,098 training samples of landmine_small: about a second single-threaded), and by L-BFGS-B (scipy)
beyond. The duality gap ``P(W(beta)) - D(beta) >= 0`` is returned as the
certificate; on test-size problems it reaches 1e-12.

The dual of the squared loss, ``sum_t (1/n_t) sum_i (alpha y - alpha^2 / 2) - tr(B Sigma B^T)/(2 lambda)``,
is reported with ``alpha = y - X w`` (the optimal dual at the exact W).

Omega-step
----------
``A = W^T W`` with eigenvalues floored at ``floor`` (1e-7, as MOCHA), ``Sigma = A^{1/2}/tr(A^{1/2})``,
``Omega = Sigma^{-1}`` (from the same eigendecomposition), and MOCHA's ``rho = max_t sum_s |Sigma_ts| /
Sigma_tt``. Vectorised over leading batch axes.

References
----------
Y. Zhang and D.-Y. Yeung, "A convex formulation for learning task relationships in multi-task
learning", UAI 2010.
V. Smith, C.-K. Chiang, M. Sanjabi and A. Talwalkar, "Federated multi-task learning", NeurIPS 2017.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import scipy.optimize
from scipy.sparse import linalg as splinalg

from dmtl.errors import ConfigError, DataError
from dmtl.losses import get_loss

__all__ = [
    "OracleResult",
    "WStepResult",
    "dual_objective",
    "mtrl_objective",
    "omega_step",
    "solve_mtrl",
    "w_step",
]


def _mask(X: np.ndarray, n: np.ndarray) -> np.ndarray:
    return np.arange(X.shape[-2])[None, :] < np.asarray(n)[:, None]


def _check(X: np.ndarray, y: np.ndarray, n: np.ndarray | None, lam: float, loss: str):
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    if X.ndim != 3 or y.shape != X.shape[:2]:
        raise DataError(f"oracle needs X (K, n_max, d) and y (K, n_max), got {X.shape} and {y.shape}")
    n = np.full(X.shape[0], X.shape[1]) if n is None else np.asarray(n, dtype=np.int64)
    if n.shape != (X.shape[0],) or np.any(n < 1) or np.any(n > X.shape[1]):
        raise DataError(f"oracle: every task needs 1..{X.shape[1]} samples, got n={n.tolist()}")
    if not np.isfinite(lam) or lam <= 0:
        raise ConfigError(f"oracle lambda must be a finite number > 0, got {lam!r}")
    if loss not in ("squared", "hinge"):
        raise ConfigError(f"oracle loss must be 'squared' or 'hinge', got {loss!r}")
    mask = _mask(X, n)
    get_loss(loss).check_labels(y[mask], "oracle labels")
    X = np.where(mask[:, :, None], X, 0.0)
    y = np.where(mask, y, 0.0)
    return X, y, n, mask


def omega_step(W: np.ndarray, floor: float = 1e-7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closed-form Omega-step for task models ``W`` (..., d, K).

    Returns ``Sigma`` (..., K, K) with unit trace, ``Omega = Sigma^{-1}`` and ``rho`` (...,).
    Eigenvalues of ``A = W^T W`` below ``floor`` are raised to ``floor`` (the reference floors them only
    when one is negative; a rank-deficient ``A`` has zero eigenvalues that round to either sign, so we
    floor always: identical whenever an eigenvalue rounds negative, and well defined at ``W = 0``).
    """
    W = np.asarray(W, dtype=float)
    A = np.swapaxes(W, -1, -2) @ W
    A = 0.5 * (A + np.swapaxes(A, -1, -2))
    ev, V = np.linalg.eigh(A)
    root = np.sqrt(np.maximum(ev, floor))
    tr = root.sum(axis=-1, keepdims=True)
    Sigma = (V * (root / tr)[..., None, :]) @ np.swapaxes(V, -1, -2)
    Omega = (V * (tr / root)[..., None, :]) @ np.swapaxes(V, -1, -2)
    Sigma = 0.5 * (Sigma + np.swapaxes(Sigma, -1, -2))
    Omega = 0.5 * (Omega + np.swapaxes(Omega, -1, -2))
    diag = np.diagonal(Sigma, axis1=-2, axis2=-1)
    rho = (np.abs(Sigma).sum(axis=-1) / diag).max(axis=-1)
    return Sigma, Omega, rho


def mtrl_objective(
    X: np.ndarray,
    y: np.ndarray,
    n: np.ndarray | None,
    W: np.ndarray,
    Omega: np.ndarray,
    lam: float,
    loss: str = "hinge",
) -> float:
    """Primal ``sum_t mean_i loss(x_ti^T w_t, y_ti) + (lam/2) tr(W Omega W^T)``; ``W`` is (d, K)."""
    X, y, n, mask = _check(X, y, n, lam, loss)
    s = np.einsum("knd,dk->kn", X, W)
    per = np.where(mask, get_loss(loss).value(s, y), 0.0).sum(axis=1) / n
    return float(per.sum() + 0.5 * lam * np.sum(Omega * (W.T @ W)))


def dual_objective(
    X: np.ndarray,
    y: np.ndarray,
    n: np.ndarray | None,
    alpha: np.ndarray,
    Sigma: np.ndarray,
    lam: float,
    loss: str = "hinge",
    box_tol: float = 1e-9,
) -> float:
    """Dual ``sum_t (1/n_t) sum_i c(alpha_ti, y_ti) - tr(B Sigma B^T) / (2 lam)``.

    ``c = alpha y`` (hinge) or ``alpha y - alpha^2/2`` (squared); ``B_{:,t} = X_t^T alpha_t / n_t``.
    The hinge dual is defined only on the box ``alpha y in [0, 1]``: outside it (beyond ``box_tol``) the
    formula is no lower bound on the primal, and NaN is returned.
    """
    X, y, n, mask = _check(X, y, n, lam, loss)
    alpha = np.asarray(alpha, dtype=float)
    if alpha.shape != y.shape:
        raise DataError(f"oracle alpha must be {y.shape} like y, got {alpha.shape}")
    alpha = np.where(mask, alpha, 0.0)
    if loss == "hinge":
        beta = (alpha * y)[mask]
        if np.any(beta < -box_tol) or np.any(beta > 1.0 + box_tol):
            return float("nan")
    c = alpha * y if loss == "hinge" else alpha * y - 0.5 * alpha**2
    B = np.einsum("knd,kn->dk", X, alpha) / n
    return float((c.sum(axis=1) / n).sum() - np.sum(Sigma * (B.T @ B)) / (2 * lam))


@dataclass
class WStepResult:
    """Exact W-step: models ``W`` (d, K), dual variables ``alpha`` (K, n_max), objectives and gap."""

    W: np.ndarray
    alpha: np.ndarray
    primal: float
    dual: float
    gap: float
    iterations: int = 0


def w_step(
    X: np.ndarray,
    y: np.ndarray,
    n: np.ndarray | None,
    Omega: np.ndarray,
    lam: float,
    loss: str = "hinge",
    *,
    tol: float = 1e-12,
    dense_limit: int = 6000,
    ipm_limit: int = 4000,
    max_ipm: int = 100,
) -> WStepResult:
    """Minimise the MTRL objective over W for a fixed ``Omega`` (K, K), exactly (see module notes)."""
    X, y, n, mask = _check(X, y, n, lam, loss)
    Omega = np.asarray(Omega, dtype=float)
    K, _, d = X.shape
    if Omega.shape != (K, K):
        raise DataError(f"oracle Omega must be ({K}, {K}), got {Omega.shape}")
    Sigma = np.linalg.inv(Omega)
    Sigma = 0.5 * (Sigma + Sigma.T)
    if loss == "squared":
        W = _w_squared(X, y, n, Omega, lam, dense_limit)
        alpha = np.where(mask, y - np.einsum("knd,dk->kn", X, W), 0.0)
        iters = 1
    else:
        W, alpha, iters = _w_hinge(X, y, n, mask, Sigma, lam, tol, ipm_limit, max_ipm)
    primal = mtrl_objective(X, y, n, W, Omega, lam, loss)
    dual = dual_objective(X, y, n, alpha, Sigma, lam, loss)
    return WStepResult(W=W, alpha=alpha, primal=primal, dual=dual, gap=primal - dual, iterations=iters)


def _w_squared(
    X: np.ndarray, y: np.ndarray, n: np.ndarray, Omega: np.ndarray, lam: float, dense_limit: int
) -> np.ndarray:
    K, _, d = X.shape
    G = np.einsum("kni,knj->kij", X, X) / n[:, None, None]  # (K, d, d)
    rhs = (np.einsum("knd,kn->kd", X, y) / n[:, None]).ravel()  # task-major: index t*d + j
    if K * d <= dense_limit:
        M = lam * np.kron(Omega, np.eye(d))
        for t in range(K):  # assembly only (K blocks), not a hot path
            M[t * d : (t + 1) * d, t * d : (t + 1) * d] += G[t]
        w = scipy.linalg.solve(M, rhs, assume_a="pos")
    else:

        def matvec(v: np.ndarray) -> np.ndarray:
            Wr = v.reshape(K, d)
            return (np.einsum("kij,kj->ki", G, Wr) + lam * Omega @ Wr).ravel()

        op = splinalg.LinearOperator((K * d, K * d), matvec=matvec, dtype=float)
        w, info = splinalg.cg(op, rhs, rtol=1e-13, atol=0.0, maxiter=50 * K * d)
        if info != 0:  # pragma: no cover - CG on an SPD system
            raise RuntimeError(f"oracle: conjugate gradients did not converge (info={info})")
    return w.reshape(K, d).T.copy()


def _w_hinge(
    X: np.ndarray,
    y: np.ndarray,
    n: np.ndarray,
    mask: np.ndarray,
    Sigma: np.ndarray,
    lam: float,
    tol: float,
    ipm_limit: int,
    max_ipm: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    K, n_max, d = X.shape
    Z = y[:, :, None] * X / n[:, None, None]  # (K, n_max, d); padded rows are zero
    idx = np.flatnonzero(mask.ravel())
    task_of = np.repeat(np.arange(K), n)
    inv_n = (1.0 / n)[task_of]
    Zf = Z.reshape(K * n_max, d)[idx]  # (N, d)

    def models(beta: np.ndarray) -> np.ndarray:
        B = np.zeros((K, d))
        np.add.at(B, task_of, beta[:, None] * Zf)
        return Sigma @ B / lam  # rows: w_t

    def fg(beta: np.ndarray) -> tuple[float, np.ndarray]:
        B = np.zeros((K, d))
        np.add.at(B, task_of, beta[:, None] * Zf)
        SB = Sigma @ B
        f = -np.dot(beta, inv_n) + np.sum(B * SB) / (2 * lam)
        g = -inv_n + np.einsum("nd,nd->n", Zf, SB[task_of]) / lam
        return f, g

    N = idx.size
    if N <= ipm_limit:
        H = (Zf @ Zf.T) * Sigma[np.ix_(task_of, task_of)] / lam
        beta = _box_qp_ipm(H, -inv_n, tol=tol, max_iter=max_ipm)
        iters = 1
    else:
        res = scipy.optimize.minimize(
            fg,
            np.full(N, 0.5),
            jac=True,
            method="L-BFGS-B",
            bounds=[(0.0, 1.0)] * N,
            options={"maxiter": 20000, "maxfun": 40000, "ftol": 1e-16, "gtol": 1e-13, "maxcor": 30},
        )
        beta = np.clip(res.x, 0.0, 1.0)
        iters = int(res.nit)
    Wr = models(beta)
    alpha = np.zeros(K * n_max)
    alpha[idx] = beta * y.ravel()[idx]
    return Wr.T.copy(), alpha.reshape(K, n_max), iters


def _box_qp_ipm(H: np.ndarray, c: np.ndarray, tol: float = 1e-12, max_iter: int = 100) -> np.ndarray:
    """``argmin 0.5 b^T H b + c^T b`` over ``0 <= b <= 1`` (H PSD) by Mehrotra's predictor-corrector.

    Primal-dual interior point with multipliers ``z`` (``b >= 0``) and ``w`` (``b <= 1``); each
    iteration solves ``(H + diag(z/b + w/(1-b))) db = r`` by one Cholesky factorisation shared by the
    predictor and the corrector. Stops when the mean complementarity and the dual residual fall below
    ``tol`` relative to the problem scale.
    """
    N = c.size
    b = np.full(N, 0.5)
    z = np.maximum(np.abs(c), 1e-3 * np.abs(c).max() + 1e-300)
    w = z.copy()
    scale = max(1.0, float(np.abs(c).sum()))
    diag = np.diag_indices(N)

    def factorize(D: np.ndarray):
        M = H.copy()
        M[diag] += D
        return scipy.linalg.cho_factor(M, check_finite=False)

    def solve(fac, D: np.ndarray, rd: np.ndarray, r1: np.ndarray, r2: np.ndarray, s: np.ndarray):
        rhs = -rd + r1 / b - r2 / s
        db = scipy.linalg.cho_solve(fac, rhs, check_finite=False)
        return db, (r1 - z * db) / b, (r2 + w * db) / s

    def max_step(v: np.ndarray, dv: np.ndarray) -> float:
        neg = dv < 0
        return float(np.min(-v[neg] / dv[neg], initial=np.inf))

    for _ in range(max_iter):
        s = 1.0 - b
        rd = H @ b + c - z + w
        mu = (b @ z + s @ w) / (2 * N)
        if mu * 2 * N <= tol * scale and np.abs(rd).max() <= tol * scale / N:
            break
        D = z / b + w / s
        fac = factorize(D)
        # predictor
        db, dz, dw = solve(fac, D, rd, -b * z, -s * w, s)
        ds = -db
        a = min(1.0, max_step(b, db), max_step(s, ds), max_step(z, dz), max_step(w, dw))
        mu_aff = ((b + a * db) @ (z + a * dz) + (s + a * ds) @ (w + a * dw)) / (2 * N)
        sigma = (mu_aff / mu) ** 3
        # corrector
        db, dz, dw = solve(fac, D, rd, sigma * mu - b * z - db * dz, sigma * mu - s * w - ds * dw, s)
        ds = -db
        a = min(1.0, 0.995 * min(max_step(b, db), max_step(s, ds), max_step(z, dz), max_step(w, dw)))
        b, z, w = b + a * db, z + a * dz, w + a * dw
        b = np.clip(b, 1e-300, 1.0 - 1e-16)
    return np.clip(b, 0.0, 1.0)


@dataclass
class OracleResult:
    """Result of the alternating MTRL oracle.

    ``W`` (d, K), ``Sigma``/``Omega`` (K, K) of the last Omega-step (``W`` is exact for them),
    ``objective`` P(W, Omega), ``gap`` the last W-step's duality gap, ``history`` the objective after
    each W-step.
    """

    W: np.ndarray
    Sigma: np.ndarray
    Omega: np.ndarray
    objective: float
    gap: float
    history: list[float] = field(default_factory=list)


def solve_mtrl(
    X: np.ndarray,
    y: np.ndarray,
    n: np.ndarray | None,
    lam: float,
    loss: str = "hinge",
    *,
    outer: int = 50,
    tol: float = 1e-10,
    floor: float = 1e-7,
    Omega0: np.ndarray | None = None,
) -> OracleResult:
    """Alternate exact W-steps and closed-form Omega-steps from ``Omega0`` (default ``K I``).

    Stops when the objective after a W-step changes by less than ``tol`` (relative) or after ``outer``
    W-steps. The objective is non-increasing up to the eigenvalue floor.
    """
    X = np.asarray(X, dtype=float)
    K = X.shape[0]
    Omega = K * np.eye(K) if Omega0 is None else np.asarray(Omega0, dtype=float)
    Sigma = np.linalg.inv(Omega)
    history: list[float] = []
    res: WStepResult | None = None
    for it in range(outer):
        if res is not None:
            Sigma, Omega, _ = omega_step(res.W, floor)
        res = w_step(X, y, n, Omega, lam, loss)
        history.append(res.primal)
        if it and abs(history[-2] - history[-1]) <= tol * max(1.0, abs(history[-1])):
            break
    assert res is not None
    return OracleResult(W=res.W, Sigma=Sigma, Omega=Omega, objective=res.primal, gap=res.gap, history=history)
