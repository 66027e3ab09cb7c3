"""The authors' C-ADMM loop, transliterated: per-task Python loops, no vectorisation.

Not for use: it is the yardstick that :class:`dmtl.algorithms.admm_mtrl.CADMM` must reproduce
prediction for prediction (``tests/test_admm_mtrl.py``) and beat in speed (``benchmarks/bench_admm.py``).
It follows the reference code of the online ADMM paper (repository ``Alberta-Lee/NC-24``,
``multi_task.py``) line by line, including its numerics (``pinv`` of Omega, ``fractional_matrix_power``).
"""

from __future__ import annotations

import time

import numpy as np
from scipy.linalg import fractional_matrix_power

__all__ = ["reference_cadmm"]


def reference_cadmm(
    xs: np.ndarray,
    ys: np.ndarray,
    rounds: int | None = None,
    *,
    rho: float = 0.5,
    eta: float = 240.0,
    l1: float = 0.1,
    l2: float = 20.0,
    l3: float = 0.1,
    l4: float = 0.1,
    clock: list[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the reference C-ADMM on streams ``xs`` (K, T, d), ``ys`` (K, T) for ``rounds`` rounds.

    Returns the predictions (K, rounds) and the final Omega (K, K). ``clock``, if given, receives
    ``time.perf_counter()`` after every round.
    """
    K, T, d = xs.shape
    rounds = T if rounds is None else rounds
    omega = np.eye(K) / K
    u = np.zeros(d)
    v, w, z = np.zeros((d, K)), np.zeros((d, K)), np.zeros((d, K))
    pred = np.zeros((K, rounds))
    for t in range(rounds):
        for k in range(K):
            x, y = xs[k, t], ys[k, t]
            p = np.sign((w[:, k].T @ x).item())
            pred[k, t] = 1.0 if p == 0 else p
            g = -y * x if y * pred[k, t] < 1.0 else np.zeros(d)
            w[:, k] = (
                (eta / (rho + eta)) * w[:, k]
                + (rho / (rho + eta)) * (u + v[:, k])
                - (1 / (rho + eta)) * (g + z[:, k])
            )
        s = np.zeros(d)
        for k in range(K):
            s += (l1 + l3) * (z[:, k] + rho * w[:, k])
        u = (1 / ((l1 + l3) * (l2 + rho * K) + l2 * rho)) * s
        inv = np.linalg.pinv(omega)
        tmp = v @ inv + v @ np.transpose(inv)
        for k in range(K):
            v[:, k] = (l2 / (l2 * (l1 + l3 + rho) + rho * K * (l1 + l3))) * (rho * w[:, k] + z[:, k]) + (
                l4 / 2
            ) * tmp[:, k]
            z[:, k] += rho * (w[:, k] - u - v[:, k])
        mul = fractional_matrix_power(np.transpose(v) @ v, 0.5)
        omega = np.real(mul / np.trace(mul))
        if clock is not None:
            clock.append(time.perf_counter())
    return pred, omega
