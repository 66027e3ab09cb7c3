r"""Low-rank multi-task representation learning: AltGDmin, Dec-AltGDmin and Dif-AltGDmin.

Problem
-------
Task ``t`` observes ``y_t = X_t theta*_t`` with ``Theta* = U* B*`` of rank ``r``. All three algorithms
minimise ``sum_t ||y_t - X_t U b_t||^2`` over an orthonormal basis ``U`` (d x r) and coefficients
``B``, alternating an exact minimisation over each ``b_t`` with a projected gradient step on ``U``:

1. ``b_t = argmin_b ||y_t - X_t U b||`` (r-dimensional least squares, batched over tasks);
2. ``G = sum_t X_t^T (X_t U b_t - y_t) b_t^T`` (each node sums over its own tasks: ``G_g``);
3. ``U <- QR(U - eta G).Q`` with ``eta = c / (n sigma_max^2)``.

Variants
--------
``altgdmin`` (server)
    nodes upload ``G_g`` (d r floats), the server sums, steps, orthonormalises and broadcasts ``U``.
``dec-altgdmin`` (graph, consensus)
    ``T_con`` rounds of average consensus on the gradients, then ``U_g <- QR(U_g - eta s Z_g)`` where
    ``s = step_scale`` (default the number of nodes L, so that ``L Z_g`` approximates the sum).
    With finite ``T_con`` the gradients never fully agree: a consensus-error floor that grows as the
    graph mixes more slowly. It is reported, not hidden.
``dif-altgdmin`` (graph, diffusion, adapt-then-combine)
    ``U~_g = U_g - eta s G_g`` (adapt), ``U^_g = sum_j W[g, j] U~_j`` (combine, ``combine_steps``
    rounds, optionally after aligning each received basis to one's own by orthogonal Procrustes),
    ``U_g = QR(U^_g).Q``. One round of d r floats per edge per iteration.

Initialisation (truncated spectral)
-----------------------------------
``alpha = C sum_t ||y_t||^2 / sum_t n_t``; ``y_trunc = y 1{|y| <= sqrt(alpha)}``;
``Theta0[:, t] = X_t^T y_trunc_t / n_t``; ``U0`` = top-r left singular vectors of ``Theta0`` and
``sigma_max`` its largest singular value. ``init_method='centralized'`` computes it at the server from the
uploaded columns of ``Theta0``. ``init_method='decentralized'`` gets ``alpha`` by average consensus and
``U0`` by a power method on ``sum_g Theta0_g Theta0_g^T`` whose products are averaged by
``init_consensus_rounds`` rounds of consensus, ``power_iters`` times, started from a basis every node
draws from the shared ``init`` stream (common randomness, no communication). With ``flood_init`` the
basis and ``sigma_max^2`` estimate of node 0 are then flooded to all nodes, so that every node starts
from the same ``U0`` (per-node bases rotated differently break the average). All of it is counted.

Our choices (reconstruction, see ALGORITHMS.md section 1)
---------------------------------------------------------
* QR factors have their signs fixed (``diag(R) > 0``) so that equal inputs give equal bases and
  nearby inputs nearby bases; it does not change the subspace.
* ``step_scale`` multiplies ``eta`` in the decentralised variants; ``"nodes"`` means L, the rule of
  ALGORITHMS.md (Dec-AltGDmin's default). With L eta, Dif-AltGDmin's local adapt step is the centralised
  step applied to one node's share of the gradient, and it breaks down as that share gets noisier:
  measured SD_F max after 300 iterations (noiseless, d = 200, r = 2, n = 40, Erdos-Renyi(0.3)):

  =====  =====  ==========  ==========  ==========  ==========
  L      K      s = 5       s = 10      s = 20      s = 40
  =====  =====  ==========  ==========  ==========  ==========
  20     200    1.8e-9      1.1e-15     0.22 stall  -
  50     200    6.6e-5      7.0e-8      4.8e-13     0.20 stall
  100    200    3.3e-3      7.1e-5      0.064 stall 0.26 stall
  50     500    1.8e-5      4.2e-9      1.4e-15     0.16 stall
  =====  =====  ==========  ==========  ==========  ==========

  The limit follows ``c s`` (the local step in units of ``1 / (n sigma_max^2)``), not L: ``c s <= 4``
  converged everywhere, ``c s = 8`` stalled at a disagreement fixed point for L = 20 and 100. So
  Dif-AltGDmin's default ``step_scale = "auto"`` is ``min(L, 4 / c)`` (10 with c = 0.4): L itself,
  the fastest setting, up to 10 nodes. At d = K = 200, r = 2, n = 40, L = 10 it reaches SD_F max
  8e-16 (ring) and 7e-16 (Erdos-Renyi(0.5)) in 300 iterations; with s = 2 and 4 only 2.6e-7 / 3.7e-8
  and 4.2e-12 / 4.2e-14. ``experiments/altgdmin_report.py`` regenerates these tables.
* The sign fix matters. With LAPACK's raw QR signs, nodes' bases flip column signs independently and
  the combine step averages +u with -u: on the ring with step_scale L the same run sat at SD_F = 1.0
  for 200 iterations (the "disagreement fixed point" of the reference trials). Procrustes alignment
  repairs it too (to 9e-16), at the cost of r x r SVDs per edge; with fixed signs it changes nothing
  measurable here, so it is off by default.
* With ``W = 11^T / L`` on the complete graph and equal starting bases, Dif-AltGDmin with
  ``step_scale = L`` computes exactly the centralised iterates.

References
----------
S. Nayer and N. Vaswani, "Fast and sample-efficient federated low rank matrix recovery from column-wise
linear and quadratic projections", IEEE Trans. Inf. Theory 69(2), 2023.
S. Moothedath and N. Vaswani, "Fast, communication-efficient, and provable decentralized low rank matrix
recovery", 2023; "Dec-AltGDmin: decentralized and differentially private low-rank matrix recovery", 2024.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import sparse

from dmtl.algorithms.base import Algorithm, check_int, check_positive, register
from dmtl.errors import ConfigError, DataError
from dmtl.linalg import batched_lstsq, orthonormalize, procrustes_rotation, subspace_distance
from dmtl.network.comm import Communicator
from dmtl.network.topology import MixingMatrix
from dmtl.problem import Problem, TaskBlock
from dmtl.seeding import RunStreams

__all__ = ["AltGDmin", "DecAltGDmin", "DifAltGDmin", "AltGDminState"]


@dataclass
class AltGDminState:
    """State of a block of nodes.

    Attributes
    ----------
    data : the block's tasks (static).
    U : (n_local, d, r) each node's basis (for the server variant: the copy each node received).
    eta : (n_local,) each node's step size ``c / (n sigma_max^2)``.
    iteration : completed iterations.
    truth_U : (d, r) true basis, or None (observer data for metrics only).
    truth_theta : (k, d) true models of the block's tasks, or None.
    """

    data: TaskBlock
    U: np.ndarray
    eta: np.ndarray
    iteration: int = 0
    truth_U: np.ndarray | None = None
    truth_theta: np.ndarray | None = None


_MIN_RUN = 4  # tasks per run of a shared basis (on average) below which A_t = X_t U is one batched call


def _fit(data: TaskBlock, U: np.ndarray, shared: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares coefficients, residuals and node gradients for bases ``U``.

    For each task ``t`` (held by node ``i``): ``A_t = X_t U_i``, ``b_t = argmin ||A_t b - y_t||``,
    ``r_t = A_t b_t - y_t``, and ``G_i = sum_t (X_t^T r_t) b_t^T``.

    ``shared``: every node holds the same basis ``U[0]``. Returns ``B`` (k, r), the per-node gradients
    ``G`` (n_local, d, r) and per-node flop counts.

    The tasks are processed in blocks of about 4 MB of ``X``, so that the gradient's pass over ``X_t``
    reads it from cache right after ``A_t = X_t U``: one pass over ``X`` from memory instead of two
    (measured in ``benchmarks/RESULTS.md``, section ``altgdmin``). Within a block,
    ``A_t = X_t U`` is one GEMM per run of consecutive tasks that share a basis (all of them when
    ``shared``): a thin product over many rows that BLAS threads, where per-task products do not.
    For large blocks the node sums are one sparse product with the coefficients rather than a
    (k, d, r) temporary; both add the same products in the same task order.
    """
    k, n, d = data.X.shape
    r = U.shape[-1]
    if k == 0:
        return np.zeros((0, r)), np.zeros((data.n_local, d, r)), np.zeros(data.n_local)
    B = np.empty((k, r))
    g = np.empty((k, d))  # X_t^T r_t
    A_all = np.empty((k, n, r))
    block = max(1, (4 << 20) // max(1, n * d * 8))
    # runs of consecutive tasks with the same basis: one GEMM each over all their samples, which BLAS
    # can thread, instead of one small GEMM per task (benchmarks/RESULTS.md, section altgdmin)
    if shared:
        starts = np.array([0])
    else:
        starts = np.concatenate([[0], np.flatnonzero(np.diff(data.node)) + 1])
    for a in range(0, k, block):  # a loop over cache-sized blocks of tasks, not over tasks
        b = min(k, a + block)
        Xb, yb = data.X[a:b], data.y[a:b]
        A = A_all[a:b]
        cuts = np.concatenate([[a], starts[(starts > a) & (starts < b)], [b]])
        if (b - a) >= _MIN_RUN * (len(cuts) - 1):
            for s, e in zip(cuts[:-1], cuts[1:], strict=True):
                basis = U[0] if shared else U[data.node[s]]
                np.matmul(data.X[s:e].reshape(-1, d), basis, out=A[s - a : e - a].reshape(-1, r))
        else:  # few tasks per node: one batched call beats a Python loop over the runs
            np.matmul(Xb, U[data.node[a:b]], out=A)
        try:
            Bb = batched_lstsq(A, yb)
        except np.linalg.LinAlgError:
            deficient = data.tasks[a:b][np.linalg.matrix_rank(A) < r]
            raise DataError(
                f"task(s) {deficient[:5].tolist()}: X_t U has rank < {r} (all-zero or linearly dependent "
                "features), so b_t is not determined; drop those tasks or lower the rank"
            ) from None
        B[a:b] = Bb
        resid = np.matmul(A, Bb[:, :, None])[:, :, 0] - yb
        np.matmul(resid[:, None, :], Xb, out=g[a:b, None, :])
    if k * d * r < 1 << 17:
        G = data.sum_to_nodes(g[:, :, None] * B[:, None, :])
    else:
        # G[i] = sum over node i's tasks of g_t b_t^T = (S^T g) with S[t, (node(t), j)] = b_t[j]
        cols = (data.node[:, None] * r + np.arange(r)).ravel()
        S = sparse.csr_array((B.ravel(), cols, np.arange(k + 1) * r), shape=(k, data.n_local * r))
        G = np.asarray(S.T @ g).reshape(data.n_local, r, d).transpose(0, 2, 1).copy()
    flops_task = data.n_samples * (4.0 * d * r + 2.0 * d + 4.0 * r * r)
    flops = data.sum_to_nodes(flops_task) + 2.0 * d * r * r
    return B, G, flops


_ZERO_TARGETS = (
    "the targets y are all zero (the truncated spectral estimate is 0), so there is nothing to learn and the "
    "step size c / (n sigma_max^2) is undefined; check the data"
)

AUTO_LOCAL_STEP = 4.0  # largest c * step_scale that converged in every measured setting (docstring)


def _resolve_scale(step_scale: float | str, n_nodes: int, c: float) -> float:
    if step_scale == "nodes":
        return float(n_nodes)
    if step_scale == "auto":
        return min(float(n_nodes), AUTO_LOCAL_STEP / c)
    return float(step_scale)


@dataclass(frozen=True)
class _AltGDminBase(Algorithm):
    """Shared hyper-parameters, initialisation and metrics of the AltGDmin family."""

    rank: int | None = None
    c: float = 0.4
    trunc_const: float = 9.0
    init_method: str = "auto"
    power_iters: int = 30
    init_consensus_rounds: int = 10
    flood_init: bool = True

    family = "low-rank representation"
    _default_init = "centralized"

    def __post_init__(self) -> None:
        owner = f"algorithm({self.name})"
        check_positive(owner, c=self.c, trunc_const=self.trunc_const)
        check_int(owner, 1, power_iters=self.power_iters, init_consensus_rounds=self.init_consensus_rounds)
        if self.rank is not None:
            check_int(owner, 1, rank=self.rank)
        if self.init_method not in ("auto", "centralized", "decentralized"):
            raise ConfigError(
                f"{owner}.init_method must be one of 'auto', 'centralized', 'decentralized', "
                f"got {self.init_method!r}"
            )
        if not isinstance(self.flood_init, bool):
            raise ConfigError(f"{owner}.flood_init must be true or false, got {self.flood_init!r}")
        if self.network == "server" and not self.flood_init and self.init_method == "decentralized":
            # without the flood each node keeps its own approximate U0, but the server's iteration
            # needs one basis (the shards would otherwise start from different ones)
            raise ConfigError(
                f"{owner}: flood_init=false leaves the nodes with different initial bases, and the "
                "server variant needs one; keep flood_init=true or use init_method=centralized"
            )

    # -- initialisation ---------------------------------------------------------------------------
    def init(self, problem: Problem, comm: Communicator, rng: RunStreams) -> AltGDminState:
        r = self._rank(problem)
        if self.network == "graph":
            comm.require_graph(f"algorithm {self.name}")
        data = problem.block(comm.start, comm.stop)
        mode = self._default_init if self.init_method == "auto" else self.init_method
        if mode == "centralized":
            U0, eta = self._init_centralized(data, comm, r)
        else:
            U0, eta = self._init_decentralized(data, comm, r, rng)
        truth_U = problem.truth.get("U")
        theta = problem.truth.get("Theta")
        return AltGDminState(
            data=data,
            U=U0,
            eta=eta,
            truth_U=truth_U,
            truth_theta=None if theta is None else theta[:, data.tasks].T.copy(),
        )

    def _rank(self, problem: Problem) -> int:
        if self.rank is not None:
            r = self.rank
        elif "U" in problem.truth:
            r = problem.truth["U"].shape[1]
        else:
            raise ConfigError(f"algorithm({self.name}).rank is required when the problem has no known rank")
        if r > min(problem.n_features, problem.n_tasks):
            raise ConfigError(
                f"algorithm({self.name}).rank={r} must be <= min(d, tasks)="
                f"{min(problem.n_features, problem.n_tasks)}"
            )
        if np.any(problem.n_samples < r):
            raise ConfigError(
                f"algorithm({self.name}) needs at least rank={r} samples in every task; the smallest "
                f"task has {int(problem.n_samples.min())}"
            )
        return r

    def _truncated_columns(self, data: TaskBlock, alpha: np.ndarray) -> np.ndarray:
        """Columns ``Theta0[:, t] = X_t^T y_trunc_t / n_t`` of the block's tasks, (k, d)."""
        thr = np.sqrt(alpha[data.node])[:, None]
        y_trunc = np.where(np.abs(data.y) <= thr, data.y, 0.0)
        cols = np.matmul(y_trunc[:, None, :], data.X)[:, 0, :]
        return cols / data.n_samples[:, None]

    def _local_sums(self, data: TaskBlock) -> np.ndarray:
        """Per node: [sum_t ||y_t||^2, sum_t n_t, number of tasks]."""
        per_task = np.stack(
            [np.einsum("kn,kn->k", data.y, data.y), data.n_samples, np.ones(len(data.tasks))], 1
        )
        return data.sum_to_nodes(per_task)

    def _init_centralized(self, data: TaskBlock, comm: Communicator, r: int) -> tuple[np.ndarray, np.ndarray]:
        C = self.trunc_const
        sums = comm.gather(self._local_sums(data))
        if not sums[:, 0].sum() > 0.0:
            raise DataError(_ZERO_TARGETS)
        alpha_val = C * sums[:, 0].sum() / sums[:, 1].sum()
        n_mean = sums[:, 1].sum() / sums[:, 2].sum()
        alpha = np.full(comm.n_local, comm.broadcast(alpha_val).item())
        cols = self._truncated_columns(data, alpha)

        def spectral(theta_cols: np.ndarray) -> np.ndarray:
            Uf, s, _ = np.linalg.svd(theta_cols.T, full_matrices=False)
            return np.concatenate([orthonormalize(Uf[:, :r]).ravel(), [s[0]]])

        packed = comm.server_step(spectral, cols, counts=data.tasks_per_node)
        d = data.X.shape[2]
        U0 = packed[:-1].reshape(d, r)
        eta = self.c / (n_mean * packed[-1] ** 2)
        return np.broadcast_to(U0, (comm.n_local, d, r)).copy(), np.full(comm.n_local, eta)

    def _init_decentralized(
        self, data: TaskBlock, comm: Communicator, r: int, rng: RunStreams
    ) -> tuple[np.ndarray, np.ndarray]:
        W = comm.require_graph(f"algorithm {self.name} (decentralized init)")
        T = self.init_consensus_rounds
        L = comm.n_nodes
        sums = comm.mix(self._local_sums(data), W, T)  # averages; ratios are ratios of sums
        alpha = self.trunc_const * sums[:, 0] / np.maximum(sums[:, 1], 1e-300)
        n_mean = sums[:, 1] / np.maximum(sums[:, 2], 1e-300)
        cols = self._truncated_columns(data, alpha)  # (k, d)
        d = data.X.shape[2]
        shared = rng.generator("init").standard_normal((d, r))
        U = np.broadcast_to(orthonormalize(shared), (comm.n_local, d, r)).copy()

        def averaged_product(U: np.ndarray) -> np.ndarray:
            # node g: Theta0_g Theta0_g^T U_g, averaged over the graph
            coef = np.einsum("kd,kdr->kr", cols, U[data.node])
            V = data.sum_to_nodes(cols[:, :, None] * coef[:, None, :])
            comm.compute(2.0 * data.tasks_per_node * d * r * 2)
            return comm.mix(V, W, T)

        for _ in range(self.power_iters):
            U = orthonormalize(averaged_product(U))
        Z = averaged_product(U)
        rayleigh = np.swapaxes(U, 1, 2) @ Z
        sigma2 = L * np.linalg.eigvalsh(0.5 * (rayleigh + np.swapaxes(rayleigh, 1, 2)))[:, -1]
        if not np.all(sigma2 > 0.0):
            zero = (np.flatnonzero(~(sigma2 > 0.0)) + comm.start)[:5].tolist()
            raise DataError(
                f"node(s) {zero} estimate sigma_max = 0: every target within init_consensus_rounds="
                f"{T} hops is zero, so the step size c / (n sigma_max^2) is undefined; raise "
                "init_consensus_rounds, use init_method=centralized, or check the data"
            )
        if self.flood_init:
            assert comm.topology is not None
            source_row = np.zeros(d * r + 2)
            if comm.start == 0:
                source_row = np.concatenate([U[0].ravel(), [sigma2[0], n_mean[0]]])
            packed = comm.flood(source_row, 0, comm.topology)
            U = packed[:, : d * r].reshape(comm.n_local, d, r)
            sigma2, n_mean = packed[:, -2], packed[:, -1]
        return U, self.c / (n_mean * sigma2)

    # -- metrics ----------------------------------------------------------------------------------
    def evaluate(self, state: AltGDminState, comm: Communicator) -> dict[str, float]:
        data = state.data
        k = len(data.tasks)
        per_node = np.zeros((comm.n_local, 6))
        d, r = state.U.shape[1:]
        if k:
            A = np.matmul(data.X, state.U[data.node])
            B = batched_lstsq(A, data.y)
            theta_hat = np.matmul(state.U[data.node], B[:, :, None])[:, :, 0]  # (k, d)
            resid = np.matmul(A, B[:, :, None])[:, :, 0] - data.y
            per_task = np.zeros((k, 6))
            per_task[:, 0] = np.einsum("kn,kn->k", resid, resid)
            per_task[:, 1] = data.n_samples
            if state.truth_theta is not None:
                diff = theta_hat - state.truth_theta
                per_task[:, 2] = np.einsum("kd,kd->k", diff, diff)
                per_task[:, 3] = np.einsum("kd,kd->k", state.truth_theta, state.truth_theta)
            if data.X_test is not None:
                pred = np.matmul(data.X_test, theta_hat[:, :, None])[:, :, 0]
                err = pred - data.y_test
                mask = np.arange(err.shape[1])[None, :] < data.n_test[:, None]
                per_task[:, 4] = np.einsum("kn,kn->k", err * mask, err)
                per_task[:, 5] = data.n_test
            per_node += data.sum_to_nodes(per_task)
        sums = comm.observe(per_node).sum(axis=0)
        out = {"train_rmse": float(np.sqrt(sums[0] / sums[1]))}
        if state.truth_U is not None:
            sd = np.stack(
                [subspace_distance(state.U, state.truth_U), subspace_distance(state.U, state.truth_U, 2)], 1
            )
            sd = comm.observe(sd)
            out["sd_f_max"] = float(sd[:, 0].max())
            out["sd_f_mean"] = float(sd[:, 0].mean())
            out["sd_2_max"] = float(sd[:, 1].max())
        if state.truth_theta is not None:
            out["rel_error"] = float(np.sqrt(sums[2] / sums[3]))
        if data.X_test is not None:
            out["test_rmse"] = float(np.sqrt(sums[4] / max(sums[5], 1.0)))
        return out


@register
@dataclass(frozen=True)
class AltGDmin(_AltGDminBase):
    """Centralised AltGDmin: nodes upload their gradients, the server updates and broadcasts ``U``.

    Parameters
    ----------
    rank : int, optional
        Rank r (default: the problem's true rank, when known).
    c : float
        Step constant: ``eta = c / (n sigma_max^2)``.
    trunc_const : float
        C of the truncation threshold ``alpha``.
    init_method : {'auto', 'centralized', 'decentralized'}
        Spectral initialisation at the server (auto) or by consensus.
    """

    name = "altgdmin"
    network = "server"
    summary = "centralised AltGDmin (server sums gradients, broadcasts the basis)"

    def step(self, state: AltGDminState, comm: Communicator) -> AltGDminState:
        _, G, flops = _fit(state.data, state.U, shared=True)
        comm.compute(flops)
        U_server, eta = state.U[0], state.eta[0]  # the server's basis: every node got the same copy

        def update(G_all: np.ndarray) -> np.ndarray:
            return orthonormalize(U_server - eta * G_all.sum(axis=0))

        U = comm.server_step(update, G)
        return replace(state, U=np.broadcast_to(U, state.U.shape).copy(), iteration=state.iteration + 1)


@register
@dataclass(frozen=True)
class DecAltGDmin(_AltGDminBase):
    """Dec-AltGDmin: ``consensus_rounds`` rounds of gradient consensus per iteration.

    Parameters
    ----------
    consensus_rounds : int
        T_con, gossip rounds on the gradients per iteration.
    step_scale : float, "nodes" or "auto"
        Multiplier s of ``eta`` in ``U_g - eta s Z_g`` (default "nodes": the number of nodes L, so that
        ``L Z_g`` approximates the summed gradient; "auto" as in Dif-AltGDmin).
    """

    consensus_rounds: int = 10
    step_scale: float | str = "nodes"

    name = "dec-altgdmin"
    network = "graph"
    summary = "consensus Dec-AltGDmin (T_con gossip rounds on the gradients per iteration)"
    _default_init = "decentralized"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(f"algorithm({self.name})", 1, consensus_rounds=self.consensus_rounds)
        _check_scale(self.name, self.step_scale)

    def step(self, state: AltGDminState, comm: Communicator) -> AltGDminState:
        W = _mixing(comm, self.name)
        _, G, flops = _fit(state.data, state.U, shared=False)
        comm.compute(flops)
        Z = comm.mix(G, W, self.consensus_rounds)
        s = _resolve_scale(self.step_scale, comm.n_nodes, self.c)
        U = orthonormalize(state.U - (s * state.eta)[:, None, None] * Z)
        return replace(state, U=U, iteration=state.iteration + 1)


@register
@dataclass(frozen=True)
class DifAltGDmin(_AltGDminBase):
    """Dif-AltGDmin: adapt with the local gradient, combine once with the neighbours, project.

    Parameters
    ----------
    step_scale : float, "auto" or "nodes"
        Multiplier s of ``eta`` in the adapt step ``U_g - eta s G_g``. "nodes" is L, the rule of
        ALGORITHMS.md; "auto" (default) is ``min(L, 4 / c)``, L capped where it stops converging.
    combine_steps : int
        Combine (gossip) rounds per iteration.
    procrustes : bool
        Align each received basis to one's own (orthogonal Procrustes) before combining.
    """

    step_scale: float | str = "auto"
    combine_steps: int = 1
    procrustes: bool = False

    name = "dif-altgdmin"
    network = "graph"
    summary = "diffusion Dif-AltGDmin (adapt, combine once with neighbours, project)"
    _default_init = "decentralized"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(f"algorithm({self.name})", 1, combine_steps=self.combine_steps)
        _check_scale(self.name, self.step_scale)
        if not isinstance(self.procrustes, bool):
            raise ConfigError(
                f"algorithm({self.name}).procrustes must be true or false, got {self.procrustes!r}"
            )

    def step(self, state: AltGDminState, comm: Communicator) -> AltGDminState:
        W = _mixing(comm, self.name)
        _, G, flops = _fit(state.data, state.U, shared=False)
        s = _resolve_scale(self.step_scale, comm.n_nodes, self.c)
        U = state.U - (s * state.eta)[:, None, None] * G
        for _ in range(self.combine_steps):
            if self.procrustes:
                nb = comm.neighbors(U, W)
                R = procrustes_rotation(nb.rows, nb.own_rows(U))
                U = nb.weighted_sum(nb.rows @ R)
                r = U.shape[-1]
                flops = flops + np.diff(nb.indptr) * (4.0 * U.shape[1] * r * r)
            else:
                U = comm.mix(U, W)
        comm.compute(flops)
        return replace(state, U=orthonormalize(U), iteration=state.iteration + 1)


def _mixing(comm: Communicator, name: str) -> MixingMatrix:
    if comm.mixing is None:
        raise ConfigError(f"algorithm {name} needs a communication graph; set topology.kind (e.g. ring)")
    return comm.mixing


def _check_scale(name: str, value: Any) -> None:
    if value in ("nodes", "auto"):
        return
    check_positive(f"algorithm({name})", step_scale=value)
