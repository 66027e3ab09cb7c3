"""Mixing matrices: the weights of gossip, consensus and diffusion on a :class:`Topology`.

A :class:`MixingMatrix` wraps a sparse ``W`` with ``X_new = W @ X``: node ``i`` takes
``sum_j W[i, j] X[j]``. The off-diagonal support of ``W`` is a subset of the support of the topology's
adjacency and the diagonal is always stored explicitly (possibly as explicit zeros).
:func:`mixing_matrix` builds the standard weights (Metropolis, max-degree, Laplacian, uniform, ...);
:class:`MixingMatrix` reports stochasticity, symmetry and the second-largest eigenvalue modulus.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from scipy import sparse
from scipy.sparse import linalg as splinalg

from dmtl.errors import TopologyError
from dmtl.network.topology import (
    DENSE_EIG_MAX_NODES,
    Topology,
    _as_csr,
    _check_real,
    _filter_csr,
    _readonly,
    _row_ids,
)

__all__ = ["MIXING_KINDS", "MixingMatrix", "mixing_matrix"]


# ---------------------------------------------------------------------------------------------
# mixing matrices
# ---------------------------------------------------------------------------------------------

#: Mixing-matrix kinds accepted by :func:`mixing_matrix`.
MIXING_KINDS: tuple[str, ...] = (
    "metropolis",
    "max_degree",
    "laplacian",
    "uniform",
    "uniform_neighbors",
    "complete_average",
    "custom",
)


def _with_diagonal(off: sparse.csr_array, data: np.ndarray, diag: np.ndarray) -> sparse.csr_array:
    """Canonical csr with the sparsity pattern of ``off`` (sorted, no diagonal), values ``data`` and
    an explicitly stored full diagonal ``diag``. Runs in O(nnz + n) without sorting."""
    n = off.shape[0]
    rows = _row_ids(off)
    cols = off.indices.astype(np.int64)
    # entry k of row r moves right by r (one diagonal per earlier row), +1 if it lies right of r's
    new_pos = np.arange(off.nnz, dtype=np.int64) + rows + (cols > rows)
    before = np.bincount(rows[cols < rows], minlength=n)
    diag_pos = off.indptr[:-1].astype(np.int64) + np.arange(n) + before
    total = off.nnz + n
    new_data = np.empty(total, dtype=np.float64)
    new_idx = np.empty(total, dtype=np.int64)
    new_data[new_pos] = data
    new_idx[new_pos] = cols
    new_data[diag_pos] = diag
    new_idx[diag_pos] = np.arange(n)
    indptr = off.indptr.astype(np.int64) + np.arange(n + 1)
    idx_dtype = np.int32 if total < np.iinfo(np.int32).max and n < np.iinfo(np.int32).max else None
    if idx_dtype is not None:
        new_idx, indptr = new_idx.astype(idx_dtype), indptr.astype(idx_dtype)
    W = sparse.csr_array((new_data, new_idx, indptr), shape=(n, n))
    W.has_sorted_indices = True
    W.has_canonical_format = True
    return W


def _canonical_weights(M: Any, what: str) -> sparse.csr_array:
    A = _as_csr(M, what)
    diag = A.diagonal()
    off = _filter_csr(A, (A.data != 0) & (A.indices != _row_ids(A)))
    return _with_diagonal(off, off.data, diag)


def _range(x: np.ndarray) -> str:
    return f"[{x.min():.6g}, {x.max():.6g}]"


@dataclass(frozen=True, eq=False, repr=False)
class MixingMatrix:
    """A mixing (gossip) matrix ``W`` with ``X_new = W @ X``.

    Parameters
    ----------
    matrix : scipy.sparse.csr_array or array_like, shape (n, n)
        The weights; canonicalised to float64 csr with sorted indices, off-diagonal zeros removed
        and the full diagonal stored explicitly.
    kind : str
        How the weights were made (one of :data:`MIXING_KINDS`); used in messages.
    topology : Topology, optional
        If given, the off-diagonal support of ``W`` must be within the topology's edges.

    Notes
    -----
    The matrix is validated for shape, finiteness and support, but not for stochasticity; use
    :meth:`require_doubly_stochastic` or :meth:`diagnostics`.
    """

    matrix: sparse.csr_array
    kind: str
    topology: Topology | None = None

    def __post_init__(self) -> None:
        what = f"mixing weights (kind {self.kind!r})"
        W = _canonical_weights(self.matrix, what)
        n = W.shape[0]
        top = self.topology
        if top is not None:
            if not isinstance(top, Topology):
                raise TopologyError(f"{what}: topology must be a Topology, got {type(top).__name__}")
            if top.n_nodes != n:
                raise TopologyError(
                    f"{what} have shape {W.shape} but topology {top.name!r} has {top.n_nodes} "
                    f"nodes; pass a {top.n_nodes} x {top.n_nodes} matrix"
                )
            rw = _row_ids(W)
            off = W.indices != rw
            r, c = rw[off], W.indices[off].astype(np.int64)
            A = top.adjacency
            a_keys = _row_ids(A) * n + A.indices
            keys = r * n + c
            pos = np.searchsorted(a_keys, keys)
            pos = np.minimum(pos, max(a_keys.size - 1, 0))
            found = a_keys[pos] == keys if a_keys.size else np.zeros(keys.size, dtype=bool)
            if not found.all():
                k = int(np.flatnonzero(~found)[0])
                i, j = int(r[k]), int(c[k])
                raise TopologyError(
                    f"{what} have W[{i}, {j}] = {W.data[off][k]:.6g} but topology {top.name!r} has "
                    f"no edge {j} -> {i}; set that entry to zero or add the edge"
                )
        object.__setattr__(self, "matrix", W)

    def __repr__(self) -> str:
        top = None if self.topology is None else self.topology.name
        return (
            f"MixingMatrix(kind={self.kind!r}, n_nodes={self.n_nodes}, "
            f"n_messages={self.n_messages}, topology={top!r})"
        )

    @property
    def n_nodes(self) -> int:
        """Number of nodes ``n``."""
        return int(self.matrix.shape[0])

    @cached_property
    def _offdiag(self) -> tuple[np.ndarray, np.ndarray]:
        W = self.matrix
        rows = _row_ids(W)
        off = (W.indices != rows) & (W.data != 0)
        return rows[off], W.indices[off].astype(np.int64)

    @cached_property
    def offdiag_count_in(self) -> np.ndarray:
        """Array of shape (n,): nonzero off-diagonal entries of row ``i`` (messages ``i`` receives
        per round)."""
        return _readonly(np.bincount(self._offdiag[0], minlength=self.n_nodes).astype(np.int64))

    @cached_property
    def offdiag_count_out(self) -> np.ndarray:
        """Array of shape (n,): nonzero off-diagonal entries of column ``j`` (messages ``j`` sends
        per round)."""
        return _readonly(np.bincount(self._offdiag[1], minlength=self.n_nodes).astype(np.int64))

    @cached_property
    def n_messages(self) -> int:
        """Total number of nonzero off-diagonal entries (messages per round)."""
        return int(self._offdiag[0].size)

    @cached_property
    def row_sums(self) -> np.ndarray:
        """Array of shape (n,): ``W @ 1``."""
        return _readonly(np.asarray(self.matrix.sum(axis=1)).ravel())

    @cached_property
    def column_sums(self) -> np.ndarray:
        """Array of shape (n,): ``1^T W``."""
        return _readonly(np.asarray(self.matrix.sum(axis=0)).ravel())

    def is_row_stochastic(self, tol: float = 1e-10) -> bool:
        """Whether every row sums to 1 within ``tol`` (signs are not checked)."""
        return bool(np.all(np.abs(self.row_sums - 1.0) <= tol))

    def is_column_stochastic(self, tol: float = 1e-10) -> bool:
        """Whether every column sums to 1 within ``tol`` (signs are not checked)."""
        return bool(np.all(np.abs(self.column_sums - 1.0) <= tol))

    def is_doubly_stochastic(self, tol: float = 1e-10) -> bool:
        """Whether rows and columns all sum to 1 within ``tol``."""
        return self.is_row_stochastic(tol) and self.is_column_stochastic(tol)

    def is_symmetric(self, tol: float = 1e-10) -> bool:
        """Whether ``|W - W^T| <= tol`` entrywise."""
        D = self.matrix - self.matrix.T
        return bool(D.nnz == 0 or np.abs(D.data).max() <= tol)

    def is_nonnegative(self, tol: float = 0.0) -> bool:
        """Whether every entry is ``>= -tol``."""
        return bool(self.matrix.nnz == 0 or self.matrix.data.min() >= -tol)

    def slem(self, method: str = "auto") -> float:
        """Second-largest eigenvalue modulus of ``W``.

        Parameters
        ----------
        method : {"auto", "dense", "sparse"}, default="auto"
            ``"auto"`` uses ``"dense"`` for ``n <= 2000`` and ``"sparse"`` otherwise.

        Returns
        -------
        float
            The second entry of the eigenvalue moduli sorted in decreasing order (0.0 for n = 1).
            For a connected doubly stochastic ``W`` this is the consensus contraction factor.

        Notes
        -----
        ``"dense"`` computes all eigenvalues with LAPACK (``eigvalsh`` if ``W`` is symmetric).
        ``"sparse"`` uses ARPACK: for a symmetric row-stochastic ``W`` (hence doubly stochastic)
        it finds the largest-magnitude eigenvalue of ``W - 11^T/n`` with ``eigsh`` on an implicit
        :class:`~scipy.sparse.linalg.LinearOperator` (deflating the eigenvalue 1 of the consensus
        vector); otherwise it takes the two largest-magnitude eigenvalues of ``W`` with ``eigsh``
        (symmetric) or ``eigs`` (general). ARPACK may need many iterations when the spectral gap is
        tiny (long rings); results are accurate to about ``1e-8``.
        """
        if method not in ("auto", "dense", "sparse"):
            raise TopologyError(f"slem: method must be 'auto', 'dense' or 'sparse', got {method!r}")
        n = self.n_nodes
        if n == 1:
            return 0.0
        if method == "auto":
            method = "dense" if n <= DENSE_EIG_MAX_NODES else "sparse"
        symmetric = self.is_symmetric(1e-12)
        if method == "dense" or n < 4:
            M = self.matrix.toarray()
            ev = np.linalg.eigvalsh(M) if symmetric else np.linalg.eigvals(M)
            return float(np.sort(np.abs(ev))[-2])
        W = self.matrix
        v0 = np.random.default_rng(0).standard_normal(n)
        opts = {"tol": 1e-12, "maxiter": max(10_000, 10 * n), "ncv": min(n - 1, 64), "v0": v0}
        try:
            if symmetric and self.is_row_stochastic():

                def matvec(x: np.ndarray) -> np.ndarray:
                    x = np.asarray(x).ravel()
                    return W @ x - x.mean()

                op = splinalg.LinearOperator((n, n), matvec=matvec, dtype=np.float64)
                ev = splinalg.eigsh(op, k=1, which="LM", return_eigenvectors=False, **opts)
                return float(np.abs(ev).max())
            if symmetric:
                ev = splinalg.eigsh(W, k=2, which="LM", return_eigenvectors=False, **opts)
            else:
                ev = splinalg.eigs(W, k=2, which="LM", return_eigenvectors=False, **opts)
        except splinalg.ArpackNoConvergence:
            raise TopologyError(
                f"slem: ARPACK did not converge for the {self.kind!r} weights with n={n}; "
                "use slem(method='dense') if memory allows"
            ) from None
        return float(np.sort(np.abs(ev))[-2])

    def spectral_gap(self, method: str = "auto") -> float:
        """``1 - slem()``; see :meth:`slem`."""
        return 1.0 - self.slem(method)

    def diagnostics(self) -> dict[str, Any]:
        """Summary of the matrix's properties.

        Returns
        -------
        dict
            Keys ``n_nodes``, ``n_messages``, ``row_stochastic``, ``column_stochastic``,
            ``doubly_stochastic``, ``symmetric``, ``nonnegative``, ``slem``, ``spectral_gap``.
        """
        s = self.slem()
        return {
            "n_nodes": self.n_nodes,
            "n_messages": self.n_messages,
            "row_stochastic": self.is_row_stochastic(),
            "column_stochastic": self.is_column_stochastic(),
            "doubly_stochastic": self.is_doubly_stochastic(),
            "symmetric": self.is_symmetric(),
            "nonnegative": self.is_nonnegative(),
            "slem": s,
            "spectral_gap": 1.0 - s,
        }

    def require_doubly_stochastic(self, what: str, tol: float = 1e-10) -> None:
        """Raise :class:`TopologyError` unless ``W`` is doubly stochastic within ``tol``.

        Parameters
        ----------
        what : str
            What needs it, e.g. ``"algorithm 'dgd'"``; starts the error message.
        tol : float, default=1e-10
        """
        if self.is_doubly_stochastic(tol):
            return
        if self.topology is not None and self.topology.directed:
            fix = (
                "on a directed graph 'uniform' weights are doubly stochastic only when the graph is "
                "regular (every node with the same number of in- and out-neighbours, e.g. directed_ring); "
                "otherwise pass custom doubly stochastic weights or use an undirected topology with "
                "kind='metropolis'"
            )
        else:
            fix = "use kind='metropolis' or normalise them"
        raise TopologyError(
            f"{what} needs doubly stochastic mixing weights, but the {self.kind!r} weights have "
            f"row sums in {_range(self.row_sums)} and column sums in {_range(self.column_sums)}; {fix}"
        )


def _laplacian_lambda_max(top: Topology) -> float:
    A = top.adjacency
    deg = top.in_degree.astype(np.float64)
    n = top.n_nodes
    L = sparse.diags_array(deg, format="csr") - A
    if n <= DENSE_EIG_MAX_NODES:
        return float(np.linalg.eigvalsh(L.toarray()).max())
    v0 = np.random.default_rng(0).standard_normal(n)
    ev = splinalg.eigsh(L, k=1, which="LA", return_eigenvectors=False, v0=v0, tol=1e-10)
    return float(ev.max())


def mixing_matrix(
    top: Topology,
    kind: str = "metropolis",
    *,
    alpha: float | None = None,
    weights: Any | None = None,
) -> MixingMatrix:
    """Build a mixing matrix ``W`` on a topology.

    Parameters
    ----------
    top : Topology
    kind : str, default="metropolis"
        One of :data:`MIXING_KINDS`:

        - ``"metropolis"``: ``W_ij = 1 / (1 + max(d_i, d_j))`` on edges, ``W_ii = 1 - sum_j W_ij``.
          Symmetric and doubly stochastic; undirected graphs only.
        - ``"max_degree"``: ``W_ij = 1 / (1 + d_max)`` on edges, ``W_ii = 1 - d_i / (1 + d_max)``
          (in-degrees for directed graphs, where it is only row-stochastic).
        - ``"laplacian"``: ``W = I - alpha L`` with ``L = D_in - A``; ``alpha`` defaults to
          ``1 / (1 + d_max)``. Undirected graphs need ``0 < alpha < 2 / lambda_max(L)``; directed
          graphs need ``0 < alpha <= 1 / d_max`` (non-negative, row-stochastic ``W``).
        - ``"uniform"``: ``W_ij = 1 / (d_in_i + 1)`` over in-neighbours and self; row-stochastic,
          works for directed graphs, not doubly stochastic in general.
        - ``"uniform_neighbors"``: ``W_ij = 1 / d_in_i`` over in-neighbours, ``W_ii = 0`` (the
          average of received states, own state excluded); row-stochastic; every node needs an
          in-neighbour.
        - ``"complete_average"``: ``W = 11^T / n``; complete graphs only.
        - ``"custom"``: ``weights`` as given (dense or sparse ``n x n``, finite, off-diagonal
          support within the edges); stochasticity is not checked.
    alpha : float, optional
        Step size for ``"laplacian"`` only.
    weights : array_like or sparse matrix, optional
        The matrix for ``"custom"`` only.

    Returns
    -------
    MixingMatrix
    """
    if not isinstance(top, Topology):
        raise TopologyError(f"mixing_matrix: top must be a Topology, got {type(top).__name__}")
    if kind not in MIXING_KINDS:
        raise TopologyError(f"unknown mixing kind {kind!r}; known kinds: {', '.join(MIXING_KINDS)}")
    if alpha is not None and kind != "laplacian":
        raise TopologyError(f"mixing kind {kind!r} does not use alpha; pass alpha only with kind='laplacian'")
    if weights is not None and kind != "custom":
        raise TopologyError(
            f"mixing kind {kind!r} does not use weights; pass weights only with kind='custom'"
        )
    n = top.n_nodes
    A = top.adjacency
    rows, cols = _row_ids(A), A.indices.astype(np.int64)
    deg = top.in_degree.astype(np.float64)
    d_max = float(deg.max()) if n else 0.0

    if kind == "metropolis":
        if top.directed:
            raise TopologyError(
                f"mixing kind 'metropolis' needs an undirected graph, but topology {top.name!r} "
                "is directed; use kind='uniform' for directed graphs"
            )
        w = 1.0 / (1.0 + np.maximum(deg[rows], deg[cols]))
        diag = 1.0 - np.bincount(rows, weights=w, minlength=n)
        W = _with_diagonal(A, w, diag)
    elif kind == "max_degree":
        w = np.full(rows.size, 1.0 / (1.0 + d_max))
        W = _with_diagonal(A, w, 1.0 - deg / (1.0 + d_max))
    elif kind == "laplacian":
        if alpha is None:
            alpha = 1.0 / (1.0 + d_max)
        alpha = _check_real(alpha, "alpha", "mixing kind 'laplacian'")
        if top.directed:
            bound = 1.0 / d_max if d_max else math.inf
            if not 0.0 < alpha <= bound:
                raise TopologyError(
                    f"mixing kind 'laplacian' on directed topology {top.name!r} needs "
                    f"0 < alpha <= 1/d_max = {bound:.6g}, got alpha={alpha:.6g}; pass a smaller "
                    "alpha or omit it"
                )
        elif alpha <= 0.0:
            raise TopologyError(
                f"mixing kind 'laplacian' needs alpha > 0, got alpha={alpha:.6g}; pass a positive "
                f"alpha or omit it (default 1/(1+d_max) = {1.0 / (1.0 + d_max):.6g})"
            )
        elif d_max and alpha >= 1.0 / d_max:
            # alpha < 1/d_max <= 2/lambda_max(L) is always safe; otherwise check the spectrum
            lam = _laplacian_lambda_max(top)
            if alpha * lam >= 2.0 - 1e-12:
                raise TopologyError(
                    f"mixing kind 'laplacian' on topology {top.name!r} needs 0 < alpha < "
                    f"2/lambda_max(L) = {2.0 / lam:.6g}, got alpha={alpha:.6g}; pass a smaller "
                    f"alpha or omit it (default 1/(1+d_max) = {1.0 / (1.0 + d_max):.6g})"
                )
        w = np.full(rows.size, alpha)
        W = _with_diagonal(A, w, 1.0 - alpha * deg)
    elif kind == "uniform":
        w = 1.0 / (deg[rows] + 1.0)
        W = _with_diagonal(A, w, 1.0 / (deg + 1.0))
    elif kind == "uniform_neighbors":
        if (deg == 0).any():
            i = int(np.flatnonzero(deg == 0)[0])
            raise TopologyError(
                f"mixing kind 'uniform_neighbors' needs every node to have an in-neighbour, but "
                f"node {i} of topology {top.name!r} has none; use kind='uniform' or add edges"
            )
        W = _with_diagonal(A, 1.0 / deg[rows], np.zeros(n))
    elif kind == "complete_average":
        if top.n_edges != n * (n - 1):
            raise TopologyError(
                f"mixing kind 'complete_average' needs a complete graph, but topology {top.name!r}"
                f" has {top.n_edges} of {n * (n - 1)} directed edges; use kind='metropolis'"
            )
        W = sparse.csr_array(np.full((n, n), 1.0 / n))
    else:  # custom
        if weights is None:
            raise TopologyError("mixing kind 'custom' needs weights; pass weights=<n x n matrix>")
        W = weights
    return MixingMatrix(W, kind, top)
