r"""Online multi-task relationship learning by ADMM: C-ADMM, D-ADMM, ADMM-Single and baselines.

Model and protocol (ALGORITHMS.md section 2)
--------------------------------------------
Task k's model is ``w_k = u + v_k`` with a shared part ``u`` and a task part ``v_k``; ``V = [v_1..v_K]``
and the task covariance ``Omega = (V^T V)^{1/2} / tr((V^T V)^{1/2})`` (``I/K`` initially). At round t
every task receives ``x_{k,t}``, predicts ``p = sign(w_k^T x)`` (0 -> +1), sees ``y_{k,t}`` in {-1, +1},
and updates. ``lam_v = lambda1 + lambda3``, ``lam_u = lambda2``. Arrays are task-major: ``W`` has one
row per task (``W[k] = w_k``); a round is a handful of vectorised operations over all tasks (and, for
D-ADMM, all nodes): no Python loop over tasks or nodes.

C-ADMM (``c-admm``, network "server"), one round
    1. every task (on its node): sub-gradient ``g = -y x`` if ``y p < 1`` else 0 (the *prediction* test
       of the reference code: an update on mistakes only; ``subgradient="margin"`` tests
       ``y w_k^T x < 1``; ``loss="logistic"`` uses ``g = -y x / (1 + exp(y w_k^T x))``), then
       ``w_k <- eta/(rho+eta) w_k + rho/(rho+eta) (u + v_k) - 1/(rho+eta) (g + z_k)``;
    2. the nodes upload ``(w_k, z_k)`` (2d floats per task); the server computes
       ``u = lam_v sum_k (z_k + rho w_k) / (lam_v (lam_u + rho K) + lam_u rho)`` and, with
       ``P = pinv(Omega)`` and the previous ``V``,
       ``v_k = lam_u (rho w_k + z_k) / (lam_u (lam_v + rho) + rho K lam_v) + (lambda4/2) [V (P + P^T)]_k``;
       then ``Omega <- (V^T V)^{1/2} / tr`` by one symmetric eigendecomposition of the K x K matrix
       ``V^T V`` (eigenvalues at rounding level, ``<= K eps max``, are set to 0; a zero trace gives
       ``I/K``), which also gives ``P`` for the next round (``P = Q diag(1/omega) Q^T`` with numpy's
       ``pinv`` cutoff ``omega_i <= 1e-15 max omega``);
    3. the server sends every task ``(u, v_k)`` (2d floats); the node sets
       ``z_k <- z_k + rho (w_k - u - v_k)``.

    Reproducing the reference exactly. In the first rounds ``V^T V`` is singular (tasks whose
    ``v_k`` are still equal); the reference's Schur-based square root (``fractional_matrix_power``)
    then has eigenvalues of rounding size (~1e-9) where ours are 0, its SVD-based ``pinv`` turns them
    into entries of size ~1e9 that nearly cancel in ``V (P + P^T)``, and the predictions that follow
    depend on those rounding values. ``numerics="auto"`` (default) therefore computes Omega and P with
    the reference's own functions whenever ``V^T V`` has a condition number above 1e8 and K <= d (3
    rounds of 10,000 on the reference stream), and evaluates the (u, V) step in the reference's
    operation order: the 50,000 predictions on ``omtl_synthetic.npz`` are then identical to the
    reference code's. When K > d, ``V^T V`` (rank <= d) is singular in every round and the reference's
    P would be rounding noise in every round; there (and with ``numerics="eigh"``) the clean
    pseudo-inverse is used.

    ``variant="exact"`` replaces step 2's (u, V) by the exact minimiser of the ADMM sub-problem
    with the MTRL penalty included::

        min_{u,V} lam_u/2 |u|^2 + lam_v/2 |V|_F^2 + lambda4/2 tr(V Omega^{-1} V^T)
                  + sum_k [ z_k^T (w_k - u - v_k) + rho/2 |w_k - u - v_k|^2 ]

    (``V`` as d x K; ``Omega^{-1}`` is the pseudo-inverse ``P``, as in the reference). With
    ``s_k = z_k + rho w_k`` (rows of ``S``), stationarity in ``v_k`` and ``u`` gives
    ``V (lam_v + rho) + lambda4 V P = S - rho u 1^T`` and ``(lam_u + rho K) u = S 1 - rho V 1``. In the
    eigenbasis of ``Omega = Q diag(omega) Q^T`` (``P = Q diag(p) Q^T``), ``D = diag(lam_v + rho +
    lambda4 p)`` is diagonal, so ``V = (S - rho u 1^T) Q D^{-1} Q^T``. Writing
    ``b = Q D^{-1} Q^T 1`` and ``beta = 1^T b``, ``V 1 = S b - rho beta u`` and
    ``u = S (1 - rho b) / (lam_u + rho K - rho^2 beta)``; the denominator is at least
    ``lam_u + rho K lam_v / (lam_v + rho) > 0`` because ``beta <= K / (lam_v + rho)``. Cost: one K x K
    eigendecomposition per round (the one that gives Omega anyway) and O(K^2 d).

    Why "exact": the reference's ``v_k`` is the coupled solution ``(s_k - rho u)/(lam_v + rho)`` only
    when all ``s_k`` are equal (it drops the coupling through ``u``), and it *adds*
    ``(lambda4/2) V_old (P + P^T)``, the gradient of the penalty at the previous V, instead of
    solving with it (with a plus sign: a step *up* the penalty). With ``lambda4 = 0`` the exact u
    equals the reference u.

ADMM-Single (``admm-single``, network "any", no communication)
    Every task alone (K = 1 in every formula, no Omega): ``w`` as above,
    ``u = lam_v (z + rho w) / (lam_v (lam_u + rho) + lam_u rho)``,
    ``v <- lam_u (z + rho w) / (lam_u (lam_v + rho) + rho lam_v) + lambda4 v``,
    ``z <- z + rho (w - u - v)``; inputs L2-normalised (``normalize=True``). As in the reference
    ``single_task.py``, the prediction test uses the raw sign, so a zero score (e.g. at w = 0) counts
    as an update even though it is scored as a +1 prediction.

D-ADMM (``d-admm``, network "graph")
    N worker nodes, each with a full copy of ``(W, Z, V)`` (state arrays (n_local, 3, K, d)) and its
    own ``Omega``. Each round every node (1) replaces its copy by the mix of its neighbours' latest
    copies, ``comm.mix`` with ``uniform_neighbors`` weights (``1/deg`` over the neighbours, own state
    *not* included, as the reference; ``mixing="metropolis"`` is the doubly stochastic option and
    ``mixing="topology"`` uses the run's configured weights); this is the "send (W, Z, V) to every
    neighbour" step, 3dK floats per neighbour message; (2) draws a uniformly random task k (the
    whole (N,) draw comes from the ``nodes`` random stream, each block takes its rows, so the run
    does not depend on the sharding) and its next example; (3) predicts with ``w_k``, updates ``w_k``
    with ``u = lam_v sum_j (z_j + rho w_j) / (lam_v (lam_u + rho K) + lam_u rho)`` computed from its
    copy, then ``v_k`` by the C-ADMM rule, then ``z_k`` with the u recomputed after the w step;
    Omega and P are computed per node (batched) from the smaller of the Gram matrices ``V V^T`` /
    ``V^T V`` (d x d when K > d: the eigendecomposition of 1,000 nodes' 9 x 9 matrices instead of
    29 x 29). ``omega_from="mixed"`` (default) computes them from the mixed V, before the update;
    ``omega_from="own"`` is the reference's order: recomputed after the update (4) and used next round
    on the *mixed* V, a mismatch that diverges on a 100-node ring with the reference weights (see
    :class:`DADMM`). ``reference_u=True`` reproduces the reference code's w step, which uses u = 0
    (its ``u_t`` is a global that is never updated).

    Node streams: node i (global id) uses the examples ``t = i, i + N, i + 2N, ...`` of every task's
    stream, in that order; ``count[i, k]`` examples of task k consumed so far give the index
    ``(count[i, k] N + i) mod T``. Nodes therefore see disjoint examples as long as no node consumes
    more than ``T / N`` examples of a task; beyond that a node's share is reused cyclically (with
    5000 rounds, 5 tasks and T = 10,000 this happens from N = 10 nodes on).

Baselines (network "server")
    ``omtl-gradient``: online multi-task learning with a task-interaction matrix (Cavallanti et al.
    2010; Saha et al. 2011): ``w_k <- w_k - eta sum_j M_kj g_j``. ``interaction="fixed"`` uses
    ``M = (I + (b/K) 11^T) / (1 + b)`` (the inverse of Cavallanti et al.'s interaction matrix;
    ``b = K`` by default gives ``(I + 11^T)/(K + 1)``; b = 0: independent learners);
    ``interaction="learned"`` uses, after ``burn_in`` rounds, ``M = K (W^T W)^{1/2} / tr(.)`` of the
    current weights, recomputed every ``update_every`` rounds (the covariance update of Saha et al.,
    scaled to trace K like the identity). Nodes upload ``g_k`` (d floats), the server returns
    ``sum_j M_kj g_j`` (d floats).
    ``pooled-online``: one model for all tasks, ``w <- w - eta sum_k g_k``: nodes upload the sum of
    their tasks' sub-gradients (d floats), the server broadcasts w (d floats).

Metrics (every algorithm; see :mod:`dmtl.metrics_online`)
    cumulative error rate per task (``error_rate_task{k}``, K <= 30) and averaged over tasks
    (``error_rate``), pooled error rate, cumulative precision, recall, F1 (macro over tasks) and
    mistakes. D-ADMM adds per-node error rates (mean, max), the disagreement of the nodes' W
    (``consensus_error``) and of their Omegas (``omega_spread``). :meth:`omega` returns the learned
    Omega (K x K, task order) for plots.

Virtual clock: local work is O(K d) per round here (O(K^3) eigendecompositions at the server) and is
not charged to the virtual clock of the server-based algorithms; D-ADMM charges its per-node work.

References
----------
K. Li et al., "Online multi-task relationship learning via ADMM" (reference code: GitHub
Alberta-Lee/NC-24: ``multi_task.py``, ``single_task.py``, ``admm.py``).
Y. Zhang and D.-Y. Yeung, "A convex formulation for learning task relationships in multi-task
learning", UAI 2010.
G. Cavallanti, N. Cesa-Bianchi and C. Gentile, "Linear algorithms for online multitask
classification", JMLR 11, 2010.
A. Saha, P. Rai, H. Daume III and S. Venkatasubramanian, "Online learning of multiple tasks and their
relationships", AISTATS 2011.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from scipy.linalg.lapack import dsyevd as _dsyevd

from dmtl.algorithms.base import Algorithm, check_int, check_positive, register
from dmtl.data.streams import ArrayFeed, IteratorFeed, LiveProblem, check_stream, l2_normalize, stream_feed
from dmtl.errors import ConfigError, DataError
from dmtl.metrics_online import OnlineCounts, ScoreLog, online_metrics, summary_table
from dmtl.network.comm import Communicator
from dmtl.network.topology import MixingMatrix, mixing_matrix
from dmtl.problem import Problem, TaskBlock
from dmtl.seeding import RunStreams

__all__ = [
    "CADMM",
    "ADMMSingle",
    "DADMM",
    "OMTLGradient",
    "PooledOnline",
    "omega_from_v",
    "omega_factors",
    "OmegaFactors",
    "OnlineState",
    "ServerState",
    "DADMMState",
]

_PINV_RCOND = 1e-15  # numpy.linalg.pinv's default cutoff, as the reference
_REFERENCE_COND = 1e8  # condition number of V V^T above which the reference numerics are used
_EPS = float(np.finfo(float).eps)


# --------------------------------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------------------------------


@dataclass
class OmegaFactors:
    """``Omega = U diag(om) U^T`` and ``P = pinv(Omega) = U diag(p) U^T``, batched over nodes.

    ``U`` (..., K, r) has orthonormal columns, r = min(K, d). Where V = 0 (``zero``), Omega is
    ``I/K`` and P is ``K I`` (the initial values).
    """

    U: np.ndarray
    om: np.ndarray
    p: np.ndarray
    zero: np.ndarray

    def omega(self) -> np.ndarray:
        K = self.U.shape[-2]
        out = (self.U * self.om[..., None, :]) @ np.swapaxes(self.U, -1, -2)
        return np.where(self.zero[..., None, None], np.eye(K) / K, out)

    def pinv(self) -> np.ndarray:
        K = self.U.shape[-2]
        out = (self.U * self.p[..., None, :]) @ np.swapaxes(self.U, -1, -2)
        return np.where(self.zero[..., None, None], np.eye(K) * K, out)


def omega_factors(V: np.ndarray) -> OmegaFactors:
    """Factors of ``Omega = (V V^T)^{1/2} / tr(.)`` for task-major ``V`` (..., K, d), batched.

    One symmetric eigendecomposition of the smaller Gram matrix: ``V V^T`` (K x K) when K <= d,
    else ``V^T V = W diag(lam) W^T`` (d x d) with ``U = V W diag(lam)^{-1/2}``: the nonzero part of
    ``(V V^T)^{1/2}`` is ``U diag(lam^{1/2}) U^T``. Eigenvalues ``<= r eps lam_max`` are rounding-level
    zeros (e.g. a task whose v_k is still exactly 0) and are set to 0: their square roots (~1e-8
    relative) would otherwise become huge entries of pinv(Omega). ``P`` keeps numpy's ``pinv`` cutoff
    (``om <= 1e-15 max om`` dropped).
    """
    K, d = V.shape[-2:]
    Vt = np.swapaxes(V, -1, -2)
    if K <= d:
        lam, U = np.linalg.eigh(V @ Vt)
    else:
        lam, Wd = np.linalg.eigh(Vt @ V)
    r = lam.shape[-1]
    keep = lam > r * _EPS * lam[..., -1:]
    root = np.sqrt(np.where(keep, lam, 0.0))
    if K > d:
        U = np.divide(V @ Wd, root[..., None, :], out=np.zeros(V.shape[:-1] + (r,)), where=keep[..., None, :])
    trace = root.sum(axis=-1, keepdims=True)
    zero = trace[..., 0] <= 0.0
    om = np.divide(root, trace, out=np.zeros_like(root), where=trace > 0)
    p = np.divide(1.0, om, out=np.zeros_like(om), where=om > _PINV_RCOND * om.max(axis=-1, keepdims=True))
    return OmegaFactors(U, om, p, zero)


def omega_from_v(V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Task covariance ``Omega = (V V^T)^{1/2}/tr(.)`` of task-major ``V`` (..., K, d) and ``pinv(Omega)``.

    Batched over leading axes; ``I/K`` (and ``K I``) where V = 0. See :func:`omega_factors`.
    """
    f = omega_factors(V)
    return f.omega(), f.pinv()


def _omega_server(
    V: np.ndarray, reference_numerics: bool
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Omega's eigendecomposition and ``P = pinv(Omega)`` for one (K, d) V.

    The server's version of :func:`omega_from_v`: one K x K ``dsyevd`` call (less per-call overhead
    than ``numpy.linalg.eigh``), the full eigenbasis (which the exact variant needs), and as few
    array operations as possible when ``V V^T`` is regular (the common case).
    ``reference_numerics``: when ``V V^T`` is numerically singular (condition number above 1e8, or
    zero), compute Omega and P with the reference code's numerics (:func:`_omega_reference`).

    Returns
    -------
    Omega, P, Q, p, om
        ``Omega`` is None when it equals ``Q diag(om) Q^T`` (computed on demand); ``p`` are P's
        eigenvalues.
    """
    K = V.shape[0]
    lam, Q, info = _dsyevd(V @ V.T)
    if info != 0:  # pragma: no cover - LAPACK failure
        raise FloatingPointError(
            f"the eigendecomposition of V V^T failed (LAPACK info {info}); V may hold NaN"
        )
    lo, top = float(lam[0]), float(lam[-1])
    if reference_numerics and not lo * _REFERENCE_COND > top:
        Omega, P = _omega_reference(V)
        return Omega, P, Q, np.zeros(K), np.zeros(K)
    if lo > K * _EPS * top:  # regular: every eigenvalue kept, far above pinv's cutoff
        root = np.sqrt(lam)
        trace = float(root.sum())
        p = trace / root
        return None, (Q * p) @ Q.T, Q, p, root / trace
    root = np.sqrt(np.where(lam > K * _EPS * top, lam, 0.0))
    trace = float(root.sum())
    if not trace > 0.0:
        eye = np.eye(K)
        return eye / K, eye * K, eye, np.full(K, float(K)), np.full(K, 1.0 / K)
    om = root / trace
    p = np.divide(1.0, om, out=np.zeros(K), where=om > _PINV_RCOND * om[-1])
    return None, (Q * p) @ Q.T, Q, p, om


def _omega_reference(V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Omega and pinv(Omega) of task-major V (K, d) with the reference code's numerics.

    On a singular ``V V^T`` (in the first rounds, tasks whose ``v_k`` are still equal) the reference's
    Schur-based square root has eigenvalues of rounding size (~1e-9) instead of 0, and its
    ``pinv(Omega)`` keeps them: entries of size ~1e9 that nearly cancel in ``V (P + P^T)``. The
    predictions that follow depend on these rounding values, so we compute them the same way, which
    reproduces the reference's predictions exactly. Complex parts (the reference assigns complex
    results into real arrays, which keeps the real part) are dropped the same way.
    """
    from scipy.linalg import fractional_matrix_power

    Vc = np.ascontiguousarray(V.T)  # the reference's d x K array
    M = np.transpose(Vc) @ Vc
    K = M.shape[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        F = fractional_matrix_power(M, 0.5)
        trace = np.trace(F)
        if trace == 0 or not np.isfinite(trace):
            return np.eye(K) / K, np.eye(K) * K
        Omega = F / trace
        P = np.linalg.pinv(Omega)
    return np.ascontiguousarray(np.real(Omega)), np.ascontiguousarray(np.real(P))


def _check_choice(owner: str, key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{owner}.{key} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _check_nonneg(owner: str, **values: float) -> None:
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ConfigError(f"{owner}.{key} must be a number >= 0, got {value!r}")
        if not np.isfinite(value) or value < 0:
            raise ConfigError(f"{owner}.{key} must be a finite number >= 0, got {value!r}")


def _check_bool(owner: str, **values: Any) -> None:
    for key, value in values.items():
        if not isinstance(value, bool):
            raise ConfigError(f"{owner}.{key} must be true or false, got {value!r}")


def _predict(scores: np.ndarray) -> np.ndarray:
    """sign(score) with 0 -> +1."""
    return np.where(scores < 0.0, -1.0, 1.0)


def _gradient_coef(
    loss: str,
    subgradient: str,
    scores: np.ndarray,
    pred: np.ndarray,
    y: np.ndarray,
    zero_updates: bool = False,
) -> np.ndarray:
    """Coefficient c with sub-gradient ``g = c x`` of the loss at the current scores.

    ``zero_updates``: the prediction test uses the raw sign (0 at a zero score), as ADMM-Single's
    reference does.
    """
    if loss == "logistic":
        return -y / (1.0 + np.exp(np.clip(y * scores, -700.0, 700.0)))
    if subgradient == "margin":
        active = y * scores < 1.0
    else:
        active = pred != y
        if zero_updates:
            active |= scores == 0.0
    return np.where(active, -y, 0.0)


def _task_metrics(stats: np.ndarray, tasks: np.ndarray, block: TaskBlock, n_tasks: int, comm: Communicator):
    """Global per-task confusion counts (K, 4) from the block's per-task counts (k, 4); collective."""
    k = len(tasks)
    spread = np.zeros((k, n_tasks, stats.shape[-1]))
    spread[np.arange(k), tasks] = stats
    per_node = (
        block.sum_to_nodes(spread.reshape(k, -1))
        if k
        else np.zeros((comm.n_local, n_tasks * stats.shape[-1]))
    )
    return comm.observe(per_node).sum(axis=0).reshape(n_tasks, -1)


@dataclass
class ServerState:
    """The server's state (replicated on every shard; rows in gather order = ``order``).

    Attributes
    ----------
    order : (K,) task ids of the gathered rows.
    V : (K, d) the task parts sent last round.
    Omega, P : (K, K) task covariance (None: it is ``Q diag(om) Q^T``) and its pseudo-inverse;
        ``Q``, ``p``, ``om`` their eigenvectors and the eigenvalues of P and of Omega.
    W : (K, d) server copy of the weights (``omtl-gradient`` with a learned interaction), else None.
    M : (K, K) interaction matrix (``omtl-gradient``), else None.
    out, spare : (K, 2d) buffer of the rows sent back; (d, K) buffer for the next V.T (C-ADMM).
    gather : (K,) C-ADMM only: the task ids of the gathered rows when they are not in task order (its
        server then works in task order, ``order`` is the identity), else None.
    """

    order: np.ndarray
    V: np.ndarray
    Omega: np.ndarray | None
    P: np.ndarray
    Q: np.ndarray
    p: np.ndarray
    om: np.ndarray = field(default_factory=lambda: np.zeros(0))
    W: np.ndarray | None = None
    M: np.ndarray | None = None
    out: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    spare: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    gather: np.ndarray | None = None
    gather_inv: np.ndarray | None = None


@dataclass
class OnlineState:
    """State of a block of nodes for the task-per-round online algorithms (all but D-ADMM).

    Attributes
    ----------
    block : the block's tasks (ids, nodes) — the data are read through ``feed``.
    feed : where round t's examples come from.
    W, Z : (k, d) the block's tasks' models and dual variables (views of ``WZ`` (k, 2d)).
    U, Vb : (k, d) the shared and task parts each task last received (ADMM-Single: its own);
        ``bUV = rho/(rho+eta) (U + Vb)`` (C-ADMM's w step).
    stats : the block's scores and labels, folded into (k, 4) confusion counts (``stats.table``).
    counts : tasks per local node for gather/scatter; None when every node holds one task.
    server : the replicated server state, or None.
    t : rounds done.
    """

    block: TaskBlock
    feed: ArrayFeed | IteratorFeed
    n_tasks: int
    W: np.ndarray
    Z: np.ndarray
    WZ: np.ndarray
    U: np.ndarray
    Vb: np.ndarray
    bUV: np.ndarray
    stats: ScoreLog
    counts: np.ndarray | None = None
    server: ServerState | None = None
    t: int = 0
    w_pooled: np.ndarray | None = None


@dataclass(frozen=True)
class _OnlineBase(Algorithm):
    """Shared validation, initialisation and metrics of the task-per-round online algorithms."""

    family = "online relationship learning"
    test_overrides: ClassVar[list[str]] = [
        "problem.kind=fourier_stream",
        "problem.tasks=6",
        "problem.rounds=200",
        "rounds=200",
        "eval_every=50",
        "topology.nodes=4",
        "topology.kind=ring",
    ]

    def _init_block(self, problem: Problem, comm: Communicator, normalize: bool) -> tuple[TaskBlock, Any]:
        block = problem.block(comm.start, comm.stop)
        feed = stream_feed(problem, block.tasks, normalize)
        return block, feed

    def _new_state(self, problem: Problem, comm: Communicator, normalize: bool) -> OnlineState:
        block, feed = self._init_block(problem, comm, normalize)
        k, d = len(block.tasks), problem.n_features
        WZ = np.zeros((k, 2 * d))  # [w_k | z_k]: the row each task uploads in C-ADMM
        return OnlineState(
            block=block,
            feed=feed,
            n_tasks=problem.n_tasks,
            W=WZ[:, :d],
            Z=WZ[:, d:],
            WZ=WZ,
            U=np.zeros((k, d)),
            Vb=np.zeros((k, d)),
            bUV=np.zeros((k, d)),
            stats=ScoreLog(k),
            # None = one row per node everywhere: the communicator's cheaper path (same ledger)
            counts=None if bool(np.all(problem.placement.tasks_per_node == 1)) else block.tasks_per_node,
        )

    def evaluate(self, state: OnlineState, comm: Communicator) -> dict[str, float]:
        per_task = _task_metrics(state.stats.table, state.block.tasks, state.block, state.n_tasks, comm)
        out = online_metrics(per_task)
        out["rounds_seen"] = float(state.t)
        return out

    def omega(self, state: Any, comm: Communicator) -> np.ndarray | None:
        """The learned task covariance (K x K, rows/columns in task order), or None."""
        return None


def _server_omega(server: ServerState) -> np.ndarray:
    Omega = server.Omega if server.Omega is not None else (server.Q * server.om) @ server.Q.T
    inv = np.argsort(server.order)
    return Omega[np.ix_(inv, inv)]


@dataclass(frozen=True)
class _ADMMParams(_OnlineBase):
    rho: float = 0.5
    eta: float = 240.0
    lambda1: float = 0.1
    lambda2: float = 20.0
    lambda3: float = 0.1
    lambda4: float = 0.1
    subgradient: str = "prediction"
    loss: str = "hinge"
    normalize: bool = False

    def __post_init__(self) -> None:
        owner = f"algorithm({self.name})"
        check_positive(owner, rho=self.rho, eta=self.eta)
        _check_nonneg(
            owner, lambda1=self.lambda1, lambda2=self.lambda2, lambda3=self.lambda3, lambda4=self.lambda4
        )
        if self.lambda1 + self.lambda2 + self.lambda3 <= 0:
            raise ConfigError(
                f"{owner} needs lambda2 > 0 or lambda1 + lambda3 > 0 (u and V are undetermined)"
            )
        _check_choice(owner, "subgradient", self.subgradient, ("prediction", "margin"))
        _check_choice(owner, "loss", self.loss, ("hinge", "logistic"))
        _check_bool(owner, normalize=self.normalize)
        r, e = float(self.rho), float(self.eta)
        # computed once: a C-ADMM round costs tens of microseconds
        object.__setattr__(self, "_coefs", (e / (r + e), r / (r + e), 1.0 / (r + e)))
        object.__setattr__(
            self, "_lams", (r, float(self.lambda2), float(self.lambda1 + self.lambda3), float(self.lambda4))
        )

    @property
    def lam_v(self) -> float:
        return self._lams[2]  # type: ignore[attr-defined]

    @property
    def lam_u(self) -> float:
        return self._lams[1]  # type: ignore[attr-defined]

    def _penalties(self) -> tuple[float, float, float, float]:
        """``(rho, lam_u, lam_v, lambda4)`` as floats."""
        return self._lams  # type: ignore[attr-defined]

    def _w_coefs(self) -> tuple[float, float, float]:
        """``(eta, rho, 1) / (rho + eta)``: the weights of the proximal w step."""
        return self._coefs  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------------
# C-ADMM
# --------------------------------------------------------------------------------------------------


@register
@dataclass(frozen=True)
class CADMM(_ADMMParams):
    """Centralised online MTRL by ADMM (C-ADMM): nodes update their tasks, the server couples them.

    Parameters
    ----------
    rho, eta : float
        ADMM penalty and proximal weight (reference 0.5, 240).
    lambda1, lambda2, lambda3, lambda4 : float
        Regularisation (reference 0.1, 20, 0.1, 0.1); ``lam_v = lambda1 + lambda3``, ``lam_u = lambda2``.
    subgradient : {"prediction", "margin"}
        Hinge sub-gradient on mistakes (reference) or whenever the margin is below 1.
    loss : {"hinge", "logistic"}
    variant : {"reference", "exact"}
        The reference's (u, V) step or the exact joint minimiser (module docstring).
    numerics : {"auto", "reference", "eigh"}
        How the reference variant computes Omega and P when ``V V^T`` is numerically singular:
        "reference" as the reference code (scipy's Schur-based square root, numpy's SVD pinv, whose
        rounding noise the predictions then depend on: needed to reproduce the reference exactly);
        "eigh" our eigendecomposition with rounding-level eigenvalues set to 0 (a clean
        pseudo-inverse); "auto" (default) is "reference" when K <= d, where singular ``V V^T`` only
        occurs in the first rounds (tasks whose v_k are still equal), and "eigh" when K > d, where
        ``V V^T`` has rank <= d < K in every round and the reference's P would be rounding noise in
        every round (at ~50 ms per round for K = 29).
    normalize : bool
        L2-normalise every example before use.
    """

    variant: str = "reference"
    numerics: str = "auto"

    name = "c-admm"
    network = "server"
    summary = "online MTRL by ADMM, server computes u, V and Omega (C-ADMM; reference rules)"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choice(f"algorithm({self.name})", "variant", self.variant, ("reference", "exact"))
        _check_choice(f"algorithm({self.name})", "numerics", self.numerics, ("auto", "reference", "eigh"))

    def init(self, problem: Problem, comm: Communicator, rng: RunStreams) -> OnlineState:
        state = self._new_state(problem, comm, self.normalize)
        K, d = problem.n_tasks, problem.n_features
        eye = np.eye(K)
        # The server works in task order whatever the placement: its numerics amplify rounding
        # differences by ~1e5 a round early on, so another row order would give other results.
        gather = problem.placement.tasks_of(0, problem.n_nodes)
        in_order = bool(np.array_equal(gather, np.arange(K)))
        state.server = ServerState(
            order=np.arange(K),
            gather=None if in_order else gather,
            gather_inv=None if in_order else np.argsort(gather),
            V=np.zeros((d, K)).T,  # V.T (the reference's d x K array) contiguous, as every later V
            Omega=eye / K,
            P=eye * K,
            Q=eye.copy(),
            p=np.full(K, float(K)),
            om=np.full(K, 1.0 / K),
            out=np.zeros((K, 2 * d)),
            spare=np.zeros((d, K)),
        )
        return state

    def _server_update(self, srv: ServerState, WZ: np.ndarray) -> np.ndarray:
        """(u, V) from the gathered rows ``[w_k | z_k]`` (K, 2d); returns rows ``[u | v_k]``."""
        if srv.gather_inv is not None:
            WZ = WZ[srv.gather_inv]  # gathered rows -> task order
        K, d2 = WZ.shape
        d = d2 // 2
        rho, lam_u, lam_v, lam4 = self._penalties()
        S = WZ[:, :d] * rho
        S += WZ[:, d:]  # s_k = z_k + rho w_k
        out = srv.out
        if self.variant == "reference":
            # operation order as the reference code (its P can hold ~1e9 entries that cancel)
            u = (1.0 / (lam_v * (lam_u + rho * K) + lam_u * rho)) * np.add.reduce(lam_v * S, axis=0)
            c_v = lam_u / (lam_u * (lam_v + rho) + rho * K * lam_v)
            Vc = srv.V.T  # the reference's d x K array (contiguous)
            coupling = Vc @ srv.P
            coupling += Vc @ srv.P.T
            coupling *= 0.5 * lam4
            Vc_new = np.multiply(S.T, c_v, out=srv.spare)
            Vc_new += coupling
            V = Vc_new.T
            srv.spare = Vc  # last round's V.T: free from here on
        else:
            Dinv = 1.0 / (lam_v + rho + lam4 * srv.p)
            Qt1 = srv.Q.sum(axis=0)  # Q^T 1
            b = srv.Q @ (Dinv * Qt1)
            beta = float(b.sum())
            u = ((1.0 - rho * b) @ S) / (lam_u + rho * K - rho * rho * beta)
            V = (srv.Q * Dinv) @ (srv.Q.T @ (S - rho * u))
        srv.V = V if self.variant == "reference" else np.ascontiguousarray(V.T).T  # V.T contiguous
        reference_numerics = self.variant == "reference" and (
            self.numerics == "reference" or (self.numerics == "auto" and K <= d)
        )
        srv.Omega, srv.P, srv.Q, srv.p, srv.om = _omega_server(V, reference_numerics)
        out[:, :d] = u
        out[:, d:] = V
        return out if srv.gather is None else out[srv.gather]  # back in gather order

    def step(self, state: OnlineState, comm: Communicator) -> OnlineState:
        # Few, in-place operations: a round costs tens of microseconds, so every call counts. The
        # operation order reproduces the reference's rounding (see the module docstring).
        x, y = state.feed.get(state.t)
        W, Z = state.W, state.Z
        d = W.shape[1]
        scores = np.vecdot(W, x)
        state.stats.add(scores, y)
        a, b, c = self._w_coefs()
        if self.loss == "hinge" and self.subgradient == "prediction":
            step = Z - (y * ((scores >= 0.0) != (y > 0.0)))[:, None] * x  # z_k + g_k, g_k = -y x on mistakes
        else:
            step = _gradient_coef(self.loss, self.subgradient, scores, _predict(scores), y)[:, None] * x
            step += Z
        step *= c
        W *= a
        W += state.bUV  # b (u + v_k), received last round
        W -= step
        counts = state.counts
        full = comm.gather(state.WZ, counts)  # (w_k, z_k): 2d floats per task
        assert state.server is not None
        back = comm.scatter(self._server_update(state.server, full), counts)  # (u, v_k): 2d floats
        U, Vb = back[:, :d], back[:, d:]
        state.U, state.Vb = U, Vb
        resid = W - U
        resid -= Vb
        resid *= float(self.rho)
        Z += resid
        state.bUV = U + Vb
        state.bUV *= b
        state.t += 1
        return state

    def omega(self, state: OnlineState, comm: Communicator) -> np.ndarray:
        assert state.server is not None
        return _server_omega(state.server)


# --------------------------------------------------------------------------------------------------
# ADMM-Single
# --------------------------------------------------------------------------------------------------


@register
@dataclass(frozen=True)
class ADMMSingle(_ADMMParams):
    """Independent online ADMM learners, one per task (K = 1 each, no Omega, no communication).

    Parameters as :class:`CADMM`; defaults are the reference's single-task hyper-parameters
    (rho 0.5, eta 20, lambda1..4 = 0.5, 20, 0.5, 0.5) with L2-normalised inputs.
    """

    eta: float = 20.0
    lambda1: float = 0.5
    lambda3: float = 0.5
    lambda4: float = 0.5
    normalize: bool = True

    name = "admm-single"
    network = "any"
    summary = "independent online ADMM learner per task (ADMM-Single, no coupling)"

    def init(self, problem: Problem, comm: Communicator, rng: RunStreams) -> OnlineState:
        return self._new_state(problem, comm, self.normalize)

    def step(self, state: OnlineState, comm: Communicator) -> OnlineState:
        x, y = state.feed.get(state.t)
        W, Z, U, V = state.W, state.Z, state.U, state.Vb
        scores = np.vecdot(W, x)
        pred = _predict(scores)
        state.stats.add(scores, y)
        coef = _gradient_coef(self.loss, self.subgradient, scores, pred, y, zero_updates=True)
        a, b, c = self._w_coefs()
        rho, lam_u, lam_v, lam4 = self._penalties()
        W *= a
        W += b * (U + V)
        W -= c * (coef[:, None] * x + Z)
        S = Z + rho * W
        U[:] = (lam_v / (lam_v * (lam_u + rho) + lam_u * rho)) * S
        V *= lam4
        V += (lam_u / (lam_u * (lam_v + rho) + rho * lam_v)) * S
        Z += rho * (W - U - V)
        state.t += 1
        return state


# --------------------------------------------------------------------------------------------------
# Gradient baseline and pooled model
# --------------------------------------------------------------------------------------------------


@register
@dataclass(frozen=True)
class OMTLGradient(_OnlineBase):
    """Online MTL with a task-interaction matrix: ``w_k <- w_k - eta sum_j M_kj g_j``.

    Parameters
    ----------
    eta : float
        Step size (with ``subgradient="prediction"`` and a fixed M the predictions do not depend on it).
    interaction : {"fixed", "learned"}
        ``M = (I + (b/K) 11^T)/(1 + b)`` (Cavallanti et al. 2010) or, after ``burn_in`` rounds,
        ``K (W^T W)^{1/2}/tr(.)`` of the current weights every ``update_every`` rounds (Saha et al. 2011).
    b : float, optional
        Coupling of the fixed matrix (default K; 0 gives independent learners).
    subgradient, loss, normalize : as :class:`CADMM`.
    """

    eta: float = 0.1
    interaction: str = "fixed"
    b: float | None = None
    burn_in: int = 100
    update_every: int = 1
    subgradient: str = "prediction"
    loss: str = "hinge"
    normalize: bool = False

    name = "omtl-gradient"
    network = "server"
    summary = "online MTL with a task-interaction matrix (Cavallanti et al. / Saha et al. baseline)"

    def __post_init__(self) -> None:
        owner = f"algorithm({self.name})"
        check_positive(owner, eta=self.eta)
        _check_choice(owner, "interaction", self.interaction, ("fixed", "learned"))
        if self.b is not None:
            _check_nonneg(owner, b=self.b)
        check_int(owner, 0, burn_in=self.burn_in)
        check_int(owner, 1, update_every=self.update_every)
        _check_choice(owner, "subgradient", self.subgradient, ("prediction", "margin"))
        _check_choice(owner, "loss", self.loss, ("hinge", "logistic"))
        _check_bool(owner, normalize=self.normalize)

    def init(self, problem: Problem, comm: Communicator, rng: RunStreams) -> OnlineState:
        state = self._new_state(problem, comm, self.normalize)
        K, d = problem.n_tasks, problem.n_features
        b = float(K if self.b is None else self.b)
        M = (np.eye(K) + (b / K) * np.ones((K, K))) / (1.0 + b)
        eye = np.eye(K)
        state.server = ServerState(
            order=problem.placement.tasks_of(0, problem.n_nodes),
            V=np.zeros((0, d)),
            Omega=eye / K,
            P=eye * K,
            Q=eye.copy(),
            p=np.full(K, float(K)),
            om=np.full(K, 1.0 / K),
            W=np.zeros((K, d)) if self.interaction == "learned" else None,
            M=M,
        )
        return state

    def step(self, state: OnlineState, comm: Communicator) -> OnlineState:
        x, y = state.feed.get(state.t)
        scores = np.vecdot(state.W, x)
        pred = _predict(scores)
        state.stats.add(scores, y)
        coef = _gradient_coef(self.loss, self.subgradient, scores, pred, y)
        srv = state.server
        assert srv is not None and srv.M is not None
        counts = state.counts
        G = comm.gather(coef[:, None] * x, counts)
        t = state.t + 1
        if srv.W is not None and t > self.burn_in and (t - self.burn_in - 1) % self.update_every == 0:
            srv.Omega = omega_from_v(srv.W)[0]
            srv.M = len(srv.order) * srv.Omega
        step = float(self.eta) * (srv.M @ G)
        if srv.W is not None:
            srv.W -= step
        state.W -= comm.scatter(step, counts)
        state.t = t
        return state

    def omega(self, state: OnlineState, comm: Communicator) -> np.ndarray | None:
        assert state.server is not None
        return _server_omega(state.server) if self.interaction == "learned" else None


@register
@dataclass(frozen=True)
class PooledOnline(_OnlineBase):
    """One online linear model for all tasks: ``w <- w - eta sum_k g_k`` (perceptron / online hinge).

    Parameters
    ----------
    eta : float
        Step size.
    subgradient, loss, normalize : as :class:`CADMM`.
    """

    eta: float = 0.1
    subgradient: str = "prediction"
    loss: str = "hinge"
    normalize: bool = False

    name = "pooled-online"
    network = "server"
    summary = "a single online model shared by all tasks (pooled perceptron / online hinge)"

    def __post_init__(self) -> None:
        owner = f"algorithm({self.name})"
        check_positive(owner, eta=self.eta)
        _check_choice(owner, "subgradient", self.subgradient, ("prediction", "margin"))
        _check_choice(owner, "loss", self.loss, ("hinge", "logistic"))
        _check_bool(owner, normalize=self.normalize)

    def init(self, problem: Problem, comm: Communicator, rng: RunStreams) -> OnlineState:
        state = self._new_state(problem, comm, self.normalize)
        state.w_pooled = np.zeros(problem.n_features)
        return state

    def step(self, state: OnlineState, comm: Communicator) -> OnlineState:
        x, y = state.feed.get(state.t)
        w = state.w_pooled
        assert w is not None
        scores = x @ w
        pred = _predict(scores)
        state.stats.add(scores, y)
        coef = _gradient_coef(self.loss, self.subgradient, scores, pred, y)
        g_nodes = state.block.sum_to_nodes(coef[:, None] * x)
        eta = float(self.eta)

        def update(G: np.ndarray) -> np.ndarray:
            return w - eta * G.sum(axis=0)

        state.w_pooled = np.asarray(comm.server_step(update, g_nodes)).reshape(w.shape)
        state.t += 1
        return state


# --------------------------------------------------------------------------------------------------
# D-ADMM
# --------------------------------------------------------------------------------------------------


@dataclass
class DADMMState:
    """State of a block of D-ADMM nodes.

    Attributes
    ----------
    S : (n_local, 3, K, d) every node's copy of W, Z, V (task-major rows).
    factors : every node's Omega and ``P = pinv(Omega)`` in factored form (:class:`OmegaFactors`).
    count : (n_local, K) examples of each task every node has consumed.
    stats : (n_local, K, 4) confusion counts of every node's predictions per task.
    X, y : (K, T, d), (K, T) the stream (every node reads only its own share).
    node_ids : (n_local,) global node ids; ``rng`` the ``nodes`` random stream (task draws).
    """

    S: np.ndarray
    factors: OmegaFactors
    count: np.ndarray
    stats: OnlineCounts
    X: np.ndarray
    y: np.ndarray
    node_ids: np.ndarray
    rng: np.random.Generator
    mixing: MixingMatrix | None
    t: int = 0
    flops: float = field(default=0.0)


@register
@dataclass(frozen=True)
class DADMM(_ADMMParams):
    """Decentralised online MTRL by ADMM (D-ADMM) on any graph and any number of nodes.

    Parameters
    ----------
    rho, eta, lambda1..lambda4 : float
        As C-ADMM; defaults are the reference D-ADMM setting (rho 5, eta 70, lambda 0.01 each).
    mixing : {"reference", "metropolis", "topology"}
        Neighbour averaging without the own state (reference, ``uniform_neighbors`` weights), Metropolis
        weights, or the run's configured ``topology.weights``.
    omega_from : {"mixed", "own"}
        Which V a node's ``P = pinv(Omega)`` comes from: the V it just received (mixed, before its
        update; default) or its own V after its previous update (the reference order: Omega is
        recomputed after the update and used, after the next mix, on the neighbours' V). With "own",
        P and the V it multiplies disagree: on a 100-node ring with the reference weights a node's own
        Omega becomes near-singular in directions where the mixed V is not, ``lambda4 P V`` blows up
        and the run diverges (measured: LinAlgError after a few hundred rounds); "mixed" keeps them
        consistent, as in C-ADMM, at the same cost (one K x K eigendecomposition per node and round).
    reference_u : bool
        Use u = 0 in the w step, as the reference code does.
    subgradient, loss, normalize : as :class:`CADMM`.
    """

    rho: float = 5.0
    eta: float = 70.0
    lambda1: float = 0.01
    lambda2: float = 0.01
    lambda3: float = 0.01
    lambda4: float = 0.01
    mixing: str = "reference"
    omega_from: str = "mixed"
    reference_u: bool = False

    name = "d-admm"
    network = "graph"
    summary = "decentralised online MTRL by ADMM: every node mixes (W, Z, V) with its neighbours (D-ADMM)"
    test_overrides: ClassVar[list[str]] = [
        "problem.kind=fourier_stream",
        "problem.tasks=5",
        "problem.rounds=200",
        "rounds=100",
        "eval_every=25",
        "topology.nodes=6",
        "topology.kind=ring",
    ]

    def __post_init__(self) -> None:
        super().__post_init__()
        owner = f"algorithm({self.name})"
        _check_choice(owner, "mixing", self.mixing, ("reference", "metropolis", "topology"))
        _check_choice(owner, "omega_from", self.omega_from, ("mixed", "own"))
        _check_bool(owner, reference_u=self.reference_u)

    def _mixing(self, comm: Communicator) -> MixingMatrix | None:
        if comm.n_nodes == 1:
            return None  # a single node has no one to mix with
        what = f"algorithm {self.name}"
        if self.mixing == "topology":
            return comm.require_graph(what, doubly_stochastic=False)
        comm.require_graph(what, doubly_stochastic=False)
        assert comm.topology is not None
        kind = "uniform_neighbors" if self.mixing == "reference" else "metropolis"
        return mixing_matrix(comm.topology, kind)

    def init(self, problem: Problem, comm: Communicator, rng: RunStreams) -> DADMMState:
        if isinstance(problem, LiveProblem):
            raise DataError(
                "d-admm draws examples of random tasks from every node's share of the stream and needs an "
                "array stream; materialise live sources with IteratorStream(...).take(rounds) and from_arrays"
            )
        check_stream(problem)
        n, K, d = comm.n_local, problem.n_tasks, problem.n_features
        X = l2_normalize(problem.X) if self.normalize else problem.X
        return DADMMState(
            S=np.zeros((n, 3, K, d)),
            factors=omega_factors(np.zeros((n, K, d))),
            count=np.zeros((n, K), dtype=np.int64),
            stats=OnlineCounts.zeros(n, K),
            X=X,
            y=problem.y,
            node_ids=np.arange(comm.start, comm.stop),
            rng=rng.generator("nodes"),
            mixing=self._mixing(comm),
        )

    def step(self, state: DADMMState, comm: Communicator) -> DADMMState:
        n, _, K, d = state.S.shape
        N, T = comm.n_nodes, state.X.shape[1]
        # (1) mix: every node receives its neighbours' (W, Z, V), 3 d K floats per message
        if state.mixing is not None:
            state.S = comm.mix(state.S, state.mixing)
        Wm, Zm, Vm = state.S[:, 0], state.S[:, 1], state.S[:, 2]
        if self.omega_from == "mixed":
            state.factors = omega_factors(Vm)
        # (2) every node draws a task (full draw, block rows) and its next example of that task
        ks = comm.local(state.rng.integers(K, size=N))
        rows = np.arange(n)
        used = state.count[rows, ks]
        state.count[rows, ks] = used + 1
        idx = (used * N + state.node_ids) % T
        x, y = state.X[ks, idx], state.y[ks, idx]
        # (3) predict, then the C-ADMM rules for that task on the node's copy
        w = Wm[rows, ks]
        scores = np.einsum("nd,nd->n", w, x)
        state.stats.add(scores, y, (rows, ks))
        coef = _gradient_coef(self.loss, self.subgradient, scores, _predict(scores), y)
        rho, lam_u, lam_v, lam4 = self._penalties()
        coef_u = lam_v / (lam_v * (lam_u + rho * K) + lam_u * rho)
        a, b, c = self._w_coefs()
        zk = Zm[rows, ks]
        u_sum = coef_u * (Zm + rho * Wm).sum(axis=1)  # u of the node's copy, (n, d)
        u = np.zeros((n, d)) if self.reference_u else u_sum
        w_new = a * w + b * (u + Vm[rows, ks]) - c * (coef[:, None] * x + zk)
        Wm[rows, ks] = w_new
        u_plus = u_sum + (coef_u * rho) * (w_new - w)
        c_v = lam_u / (lam_u * (lam_v + rho) + rho * K * lam_v)
        f = state.factors  # [V (P + P^T)]_k = 2 (U_k * p) U^T V for a symmetric P
        coupling = 2.0 * np.einsum("nr,nrd->nd", f.U[rows, ks] * f.p, np.swapaxes(f.U, 1, 2) @ Vm)
        coupling[f.zero] = (2.0 * K) * Vm[rows, ks][f.zero]
        v_new = c_v * (zk + rho * w_new) + (0.5 * lam4) * coupling
        Vm[rows, ks] = v_new
        Zm[rows, ks] = zk + rho * (w_new - u_plus - v_new)
        # (4) Omega of the updated copy (reference order)
        if self.omega_from == "own":
            state.factors = omega_factors(Vm)
        comm.compute(float(2 * K * K * d + 10 * K**3 + 4 * K * d + 12 * d))
        state.t += 1
        return state

    def evaluate(self, state: DADMMState, comm: Communicator) -> dict[str, float]:
        n, K = state.stats.table.shape[:2]
        per_node_task = comm.observe(state.stats.table.reshape(n, -1)).reshape(-1, K, 4)
        out = online_metrics(per_node_task.sum(axis=0))
        node = summary_table(per_node_task.sum(axis=1))
        rates = np.divide(node[:, 1], node[:, 0], out=np.zeros(len(node)), where=node[:, 0] > 0)
        out["error_rate_node_mean"] = float(rates.mean())
        out["error_rate_node_max"] = float(rates.max())
        Wall = comm.observe(state.S[:, 0].reshape(n, -1))
        mean = Wall.mean(axis=0)
        spread = np.sqrt(((Wall - mean) ** 2).sum(axis=1).mean())
        out["consensus_error"] = float(spread / max(np.linalg.norm(mean), 1e-300))
        Om = comm.observe(state.factors.omega().reshape(n, -1))
        out["omega_spread"] = float(np.linalg.norm(Om - Om.mean(axis=0), axis=1).max())
        out["rounds_seen"] = float(state.t)
        return out

    def omega(self, state: DADMMState, comm: Communicator) -> np.ndarray:
        """The nodes' average Omega (K x K)."""
        Om = state.factors.omega()
        n, K = Om.shape[:2]
        return comm.observe(Om.reshape(n, -1)).mean(axis=0).reshape(K, K)

    def node_omegas(self, state: DADMMState, comm: Communicator) -> np.ndarray:
        """Every node's Omega, (n_nodes, K, K) (collective)."""
        Om = state.factors.omega()
        n, K = Om.shape[:2]
        return comm.observe(Om.reshape(n, -1)).reshape(-1, K, K)
