"""Communication topologies and mixing matrices.

A :class:`Topology` is a graph over the nodes ``0..n-1`` stored as a sparse adjacency matrix ``A``
(a :class:`scipy.sparse.csr_array`). ``A[i, j] != 0`` means there is an edge ``j -> i``: node ``i``
*receives* from node ``j``, so row ``i`` lists the in-neighbours of ``i``. Undirected graphs have a
symmetric ``A``. The matrix is float64 with entries ``1.0``, no diagonal, and sorted indices.

Mixing weights on a topology live in :mod:`dmtl.network.mixing` (re-exported here).

Generators (:func:`ring`, :func:`grid_2d`, :func:`erdos_renyi`, ...) mirror the NetworkX generators but
return a :class:`Topology`; :func:`make_topology` dispatches on a kind name through :data:`TOPOLOGIES`.
All constructions are vectorised with numpy / scipy.sparse; none loops over nodes in Python.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import numbers
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import networkx as nx
import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

from dmtl.errors import TopologyError

if TYPE_CHECKING:
    from dmtl.network.mixing import MixingMatrix

__all__ = [
    "MIXING_KINDS",
    "TOPOLOGIES",
    "MixingMatrix",
    "Topology",
    "complete",
    "directed_ring",
    "erdos_renyi",
    "from_adjacency",
    "from_edges",
    "from_networkx",
    "grid_2d",
    "hypercube",
    "make_topology",
    "mixing_matrix",
    "path",
    "random_geometric",
    "ring",
    "star",
    "torus",
    "with_groups",
]

#: Largest number of nodes for which eigenvalues are computed with dense LAPACK by default.
DENSE_EIG_MAX_NODES = 2000

#: Number of BFS sources processed at once by :meth:`Topology.diameter` is about this / n.
_BFS_BLOCK_ENTRIES = 1 << 22


# ---------------------------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------------------------


def _check_int(value: Any, name: str, where: str, minimum: int = 1) -> int:
    """Return ``value`` as an ``int`` >= ``minimum`` or raise :class:`TopologyError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TopologyError(
            f"{where}: {name} must be an integer >= {minimum}, got {value!r}; "
            f"pass an integer {name} >= {minimum}"
        )
    value = int(value)
    if value < minimum:
        raise TopologyError(
            f"{where}: {name} must be >= {minimum}, got {name}={value}; pass {name} >= {minimum}"
        )
    return value


def _check_bool(value: Any, name: str, where: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TopologyError(f"{where}: {name} must be True or False, got {value!r}")
    return bool(value)


def _check_real(value: Any, name: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise TopologyError(f"{where}: {name} must be a finite real number, got {value!r}")
    return float(value)


def _make_rng(seed: Any, where: str) -> np.random.Generator:
    if seed is not None and (
        isinstance(seed, bool)
        or not isinstance(seed, (numbers.Integral, np.random.Generator, np.random.SeedSequence))
    ):
        raise TopologyError(
            f"{where}: seed must be None, an int or a numpy Generator, got {type(seed).__name__}"
        )
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError) as exc:
        raise TopologyError(f"{where}: invalid seed {seed!r} ({exc}); pass a non-negative int") from None


def _pattern_from_pairs(rows: np.ndarray, cols: np.ndarray, n: int) -> sparse.csr_array:
    """Canonical 0/1 adjacency with ``A[rows[k], cols[k]] = 1``; drops self loops and duplicates."""
    rows = np.asarray(rows, dtype=np.int64).ravel()
    cols = np.asarray(cols, dtype=np.int64).ravel()
    keep = rows != cols
    rows, cols = rows[keep], cols[keep]
    A = sparse.csr_array((np.ones(rows.size, dtype=np.float64), (rows, cols)), shape=(n, n), dtype=np.float64)
    A.sum_duplicates()
    A.data[:] = 1.0
    A.sort_indices()
    return A


def _as_csr(M: Any, what: str) -> sparse.csr_array:
    """Validate a dense or sparse 2-D square finite numeric matrix.

    Returns a float64 ``csr_array`` copy in canonical format (sorted indices, no duplicates).
    """
    if sparse.issparse(M):
        if M.ndim != 2:
            raise TopologyError(f"{what} must be 2-D, got ndim={M.ndim}")
        A = sparse.csr_array(M, dtype=np.float64, copy=True)
    else:
        try:
            dense = np.asarray(M, dtype=np.float64)
        except (TypeError, ValueError):
            raise TopologyError(
                f"{what} must be a numeric matrix, got {type(M).__name__}; pass a 2-D numpy array "
                "or scipy sparse matrix"
            ) from None
        if dense.ndim != 2:
            raise TopologyError(f"{what} must be 2-D, got shape {dense.shape}; pass an n x n matrix")
        if dense.shape[0] != dense.shape[1] or dense.shape[0] < 1:
            raise TopologyError(f"{what} must be square and non-empty, got shape {dense.shape}")
        bad = ~np.isfinite(dense)
        if bad.any():
            i, j = (int(v) for v in np.argwhere(bad)[0])
            raise TopologyError(
                f"{what} has a non-finite entry at ({i}, {j}); replace NaN/inf with finite values"
            )
        return sparse.csr_array(dense)
    if A.shape[0] != A.shape[1] or A.shape[0] < 1:
        raise TopologyError(f"{what} must be square and non-empty, got shape {A.shape}")
    A.sum_duplicates()  # also sorts indices; a no-op when already canonical
    bad = ~np.isfinite(A.data)
    if bad.any():
        i, j = _entry_at(A, int(np.flatnonzero(bad)[0]))
        raise TopologyError(
            f"{what} has a non-finite entry at ({i}, {j}); replace NaN/inf with finite values"
        )
    return A


def _entry_at(A: sparse.csr_array, k: int) -> tuple[int, int]:
    """Row and column of the ``k``-th stored entry of a csr matrix."""
    return int(np.searchsorted(A.indptr, k, side="right") - 1), int(A.indices[k])


def _row_ids(A: sparse.csr_array) -> np.ndarray:
    """Row index of every stored entry of a csr matrix (int64, aligned with ``A.indices``)."""
    return np.repeat(np.arange(A.shape[0], dtype=np.int64), np.diff(A.indptr))


def _filter_csr(A: sparse.csr_array, keep: np.ndarray) -> sparse.csr_array:
    """Keep the stored entries of ``A`` where ``keep`` is true, preserving canonical order."""
    if keep.all():
        return A
    counts = np.bincount(_row_ids(A)[keep], minlength=A.shape[0])
    indptr = np.concatenate([[0], np.cumsum(counts)])
    return sparse.csr_array((A.data[keep], A.indices[keep], indptr), shape=A.shape)


def _canonical_pattern(M: Any, what: str) -> sparse.csr_array:
    """Validate an adjacency (dense or sparse) and return its canonical 0/1 csr pattern."""
    A = _as_csr(M, what)
    neg = A.data < 0
    if neg.any():
        k = int(np.flatnonzero(neg)[0])
        i, j = _entry_at(A, k)
        raise TopologyError(
            f"{what} has a negative entry {A.data[k]:g} at ({i}, {j}); "
            "adjacency entries must be >= 0 (nonzero means an edge)"
        )
    A = _filter_csr(A, (A.data != 0) & (A.indices != _row_ids(A)))
    A.data = np.ones(A.nnz, dtype=np.float64)
    return A


def _asymmetric_entry(A: sparse.csr_array) -> tuple[int, int] | None:
    """Return an ``(i, j)`` with ``A[i, j] != 0`` but ``A[j, i] == 0``, or ``None`` if symmetric."""
    D = (A - A.T).tocoo()
    D.eliminate_zeros()
    if D.nnz == 0:
        return None
    pos = np.flatnonzero(D.data > 0)
    k = int(pos[0])
    return int(D.row[k]), int(D.col[k])


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


# ---------------------------------------------------------------------------------------------
# Topology
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class Topology:
    """A communication graph over nodes ``0..n-1``.

    Parameters
    ----------
    adjacency : scipy.sparse.csr_array or array_like, shape (n, n)
        ``adjacency[i, j] != 0`` means an edge ``j -> i`` (node ``i`` receives from ``j``). Any
        dense or sparse non-negative finite matrix is accepted; it is canonicalised to a float64
        ``csr_array`` with entries 1.0, sorted indices and no diagonal (self loops are stripped).
    directed : bool, default=False
        Whether the graph is directed. Undirected graphs must have a symmetric adjacency.
    name : str, default="custom"
        Human-readable name, e.g. ``"ring(10)"``; used in error messages.
    groups : ndarray of shape (n,), optional
        Integer group id per node. Ids must be ``0..k-1`` with every group non-empty.
    messengers : ndarray of shape (k,), optional
        Node id of each group's messenger; ``messengers[g]`` must belong to group ``g``. Requires
        ``groups``.
    positions : ndarray of shape (n, 2), optional
        Node coordinates used for drawing.

    Notes
    -----
    The object is immutable: the arrays it holds are read-only copies. Derived quantities
    (degrees, connectivity) are cached on first use.
    """

    adjacency: sparse.csr_array
    directed: bool = False
    name: str = "custom"
    groups: np.ndarray | None = None
    messengers: np.ndarray | None = None
    positions: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TopologyError(f"Topology name must be a string, got {type(self.name).__name__}")
        where = f"topology {self.name!r}"
        directed = _check_bool(self.directed, "directed", where)
        A = _canonical_pattern(self.adjacency, f"adjacency of {where}")
        n = A.shape[0]
        if not directed:
            bad = _asymmetric_entry(A)
            if bad is not None:
                i, j = bad
                raise TopologyError(
                    f"{where} is undirected but its adjacency is not symmetric (edge {j} -> {i} "
                    "has no reverse); pass directed=True or symmetrise the adjacency"
                )
        object.__setattr__(self, "adjacency", A)
        object.__setattr__(self, "directed", directed)

        if self.positions is not None:
            pos = np.array(self.positions, dtype=np.float64)
            if pos.shape != (n, 2) or not np.isfinite(pos).all():
                raise TopologyError(
                    f"{where}: positions must be a finite array of shape ({n}, 2), got shape "
                    f"{pos.shape}; pass one (x, y) row per node or positions=None"
                )
            object.__setattr__(self, "positions", _readonly(pos))

        if self.groups is None:
            if self.messengers is not None:
                raise TopologyError(f"{where}: messengers given without groups; pass groups too")
            return
        groups = np.asarray(self.groups)
        if groups.shape != (n,):
            raise TopologyError(
                f"{where}: groups must have shape ({n},), got {groups.shape}; pass one group id per node"
            )
        if not (np.issubdtype(groups.dtype, np.integer) or np.issubdtype(groups.dtype, np.bool_)):
            if not (
                np.issubdtype(groups.dtype, np.floating)
                and np.isfinite(groups).all()
                and np.array_equal(groups, np.round(groups))
            ):
                raise TopologyError(f"{where}: groups must be integer group ids, got dtype {groups.dtype}")
        groups = groups.astype(np.int64)
        if groups.min() < 0:
            raise TopologyError(
                f"{where}: groups must be >= 0, got {int(groups.min())}; relabel groups to 0..k-1"
            )
        counts = np.bincount(groups)
        if (counts == 0).any():
            missing = int(np.flatnonzero(counts == 0)[0])
            raise TopologyError(
                f"{where}: group ids must be 0..k-1 with no gaps, but group {missing} is empty; "
                "relabel with np.unique(groups, return_inverse=True)[1]"
            )
        k = counts.size
        object.__setattr__(self, "groups", _readonly(groups))
        if self.messengers is None:
            return
        msg = np.asarray(self.messengers)
        if msg.shape != (k,) or not np.issubdtype(msg.dtype, np.integer):
            raise TopologyError(
                f"{where}: messengers must be an integer array of shape ({k},) (one node per "
                f"group), got shape {msg.shape} and dtype {msg.dtype}"
            )
        msg = msg.astype(np.int64)
        out = (msg < 0) | (msg >= n)
        if out.any():
            g = int(np.flatnonzero(out)[0])
            raise TopologyError(
                f"{where}: messenger of group {g} is node {int(msg[g])}, which is not a node id in "
                f"0..{n - 1}; pass valid node ids"
            )
        wrong = groups[msg] != np.arange(k)
        if wrong.any():
            g = int(np.flatnonzero(wrong)[0])
            raise TopologyError(
                f"{where}: messenger of group {g} is node {int(msg[g])}, which belongs to group "
                f"{int(groups[msg[g]])}; pick a node of group {g} as its messenger"
            )
        object.__setattr__(self, "messengers", _readonly(msg))

    def __repr__(self) -> str:
        groups = "None" if self.groups is None else str(self.n_groups)
        return (
            f"Topology(name={self.name!r}, n_nodes={self.n_nodes}, n_edges={self.n_edges}, "
            f"directed={self.directed}, n_groups={groups})"
        )

    # -- sizes and degrees --------------------------------------------------------------------

    @property
    def n_nodes(self) -> int:
        """Number of nodes ``n``."""
        return int(self.adjacency.shape[0])

    @property
    def n_edges(self) -> int:
        """Number of directed messages per round (``nnz`` of ``A``).

        For an undirected graph this is twice the number of undirected edges.
        """
        return int(self.adjacency.nnz)

    @property
    def n_groups(self) -> int:
        """Number of groups, or 0 when the topology has no groups."""
        return 0 if self.groups is None else int(self.groups.max()) + 1

    @cached_property
    def in_degree(self) -> np.ndarray:
        """Array of shape (n,): number of in-neighbours of each node (row counts of ``A``)."""
        return _readonly(np.diff(self.adjacency.indptr).astype(np.int64))

    @cached_property
    def out_degree(self) -> np.ndarray:
        """Array of shape (n,): number of out-neighbours of each node (column counts of ``A``)."""
        counts = np.bincount(self.adjacency.indices, minlength=self.n_nodes)
        return _readonly(counts.astype(np.int64))

    def _check_node(self, i: Any, name: str = "node") -> int:
        if isinstance(i, bool) or not isinstance(i, numbers.Integral) or not 0 <= i < self.n_nodes:
            raise TopologyError(
                f"topology {self.name!r}: {name} must be a node id in 0..{self.n_nodes - 1}, got {i!r}"
            )
        return int(i)

    def in_neighbors(self, i: int) -> np.ndarray:
        """Return the sorted in-neighbours of node ``i`` (the nodes ``i`` receives from).

        Parameters
        ----------
        i : int
            Node id.

        Returns
        -------
        ndarray of int64
            Sorted node ids ``j`` with an edge ``j -> i``.
        """
        i = self._check_node(i)
        A = self.adjacency
        return A.indices[A.indptr[i] : A.indptr[i + 1]].astype(np.int64)

    # -- connectivity ------------------------------------------------------------------------

    @cached_property
    def _components(self) -> tuple[int, np.ndarray]:
        connection = "strong" if self.directed else "weak"
        k, labels = csgraph.connected_components(
            self.adjacency, directed=self.directed, connection=connection
        )
        return int(k), labels

    def n_components(self) -> int:
        """Number of connected components (strongly connected components if directed)."""
        return self._components[0]

    def is_connected(self) -> bool:
        """Whether the graph is connected.

        Returns
        -------
        bool
            For undirected graphs, whether it is connected; for directed graphs, whether it is
            *strongly* connected (every node reaches every other along edge directions).
        """
        return self._components[0] == 1

    def require_connected(self, what: str) -> None:
        """Raise :class:`TopologyError` unless the graph is (strongly) connected.

        Parameters
        ----------
        what : str
            What needs connectivity, e.g. ``"algorithm 'dgd'"``; starts the error message.
        """
        k = self.n_components()
        if k == 1:
            return
        if self.directed:
            raise TopologyError(
                f"{what} needs a connected graph, but topology {self.name!r} has {k} strongly "
                "connected components; add edges so every node reaches every other, or use a "
                "strongly connected generator such as directed_ring"
            )
        raise TopologyError(
            f"{what} needs a connected graph, but topology {self.name!r} has {k} components; "
            "add edges between the components or generate it with connected=True"
        )

    def _bfs_distances(self, sources: np.ndarray) -> np.ndarray:
        # csgraph follows G[u, v] as u -> v; our edge j -> i is A[i, j], so G = A.T.
        G = self.adjacency.T.tocsr() if self.directed else self.adjacency
        return csgraph.shortest_path(G, method="D", directed=self.directed, unweighted=True, indices=sources)

    def eccentricity(self, source: int) -> int:
        """Number of BFS hops needed to reach every node from ``source``.

        Parameters
        ----------
        source : int
            Starting node. Edges are followed in their direction ``j -> i``.

        Returns
        -------
        int
            ``max_i dist(source, i)``.

        Raises
        ------
        TopologyError
            If some node is unreachable from ``source``.
        """
        source = self._check_node(source, "source")
        dist = self._bfs_distances(np.array([source]))[0]
        if not np.isfinite(dist).all():
            far = int(np.flatnonzero(~np.isfinite(dist))[0])
            raise TopologyError(
                f"topology {self.name!r}: node {far} is unreachable from node {source}, so the "
                "eccentricity is infinite; use a connected graph"
            )
        return int(dist.max())

    def diameter(self) -> int:
        """Longest shortest-path length (in hops) over all ordered pairs of nodes.

        Returns
        -------
        int
            The diameter.

        Raises
        ------
        TopologyError
            If the graph is not (strongly) connected.

        Notes
        -----
        Runs a BFS from every node in blocks of sources, so it costs ``O(n * (n + nnz))`` time
        and ``O(n * block)`` memory; it is meant for analysis, not hot paths.
        """
        self.require_connected("diameter()")
        n = self.n_nodes
        block = max(1, _BFS_BLOCK_ENTRIES // n)
        best = 0
        for start in range(0, n, block):
            dist = self._bfs_distances(np.arange(start, min(n, start + block)))
            best = max(best, int(dist.max()))
        return best

    # -- conversion ---------------------------------------------------------------------------

    def to_networkx(self) -> nx.Graph | nx.DiGraph:
        """Return the graph as a NetworkX ``Graph`` (undirected) or ``DiGraph`` (directed).

        Returns
        -------
        networkx.Graph or networkx.DiGraph
            Nodes ``0..n-1``; a ``DiGraph`` has edge ``(j, i)`` for every ``A[i, j] != 0``. Node
            attributes ``"group"`` and ``"pos"`` are set when groups / positions are present.
        """
        A = self.adjacency.tocoo()
        G: nx.Graph = nx.DiGraph() if self.directed else nx.Graph()
        G.add_nodes_from(range(self.n_nodes))
        rows, cols = A.row.astype(np.int64), A.col.astype(np.int64)
        if not self.directed:
            keep = cols < rows
            rows, cols = rows[keep], cols[keep]
        G.add_edges_from(zip(cols.tolist(), rows.tolist(), strict=True))
        if self.groups is not None:
            nx.set_node_attributes(G, dict(enumerate(self.groups.tolist())), "group")
        if self.positions is not None:
            nx.set_node_attributes(G, dict(enumerate(map(tuple, self.positions.tolist()))), "pos")
        G.graph["name"] = self.name
        return G

    # -- groups -------------------------------------------------------------------------------

    def _check_group(self, g: Any) -> int:
        if self.groups is None:
            raise TopologyError(
                f"topology {self.name!r} has no groups; attach them with with_groups(top, groups)"
            )
        k = self.n_groups
        if isinstance(g, bool) or not isinstance(g, numbers.Integral) or not 0 <= g < k:
            raise TopologyError(f"topology {self.name!r}: group must be an id in 0..{k - 1}, got {g!r}")
        return int(g)

    def group_nodes(self, g: int) -> np.ndarray:
        """Return the sorted node ids of group ``g``.

        Parameters
        ----------
        g : int
            Group id in ``0..n_groups-1``.

        Returns
        -------
        ndarray of int64
        """
        g = self._check_group(g)
        return np.flatnonzero(self.groups == g).astype(np.int64)

    def group_subgraph(self, g: int) -> Topology:
        """Induced subgraph on group ``g``'s nodes, relabelled ``0..m-1`` in increasing id order.

        Parameters
        ----------
        g : int
            Group id.

        Returns
        -------
        Topology
            Without groups; positions are carried over when present.
        """
        nodes = self.group_nodes(g)
        sub = self.adjacency[nodes][:, nodes]
        pos = None if self.positions is None else self.positions[nodes]
        return Topology(sub, directed=self.directed, name=f"{self.name}[group {g}]", positions=pos)

    def messenger_topology(self, kind: str = "complete", **params: Any) -> Topology:
        """Topology among the groups' messengers; node ``g`` stands for group ``g``'s messenger.

        Parameters
        ----------
        kind : str, default="complete"
            ``"induced"`` for the subgraph of this topology induced on the messengers, or any
            kind accepted by :func:`make_topology` (built over ``n_groups`` nodes).
        **params
            Extra parameters passed to :func:`make_topology`.

        Returns
        -------
        Topology
        """
        if self.groups is None or self.messengers is None:
            raise TopologyError(
                f"topology {self.name!r} has no messengers; attach them with "
                "with_groups(top, groups, messengers)"
            )
        msg = self.messengers
        pos = None if self.positions is None else self.positions[msg]
        if kind == "induced":
            sub = self.adjacency[msg][:, msg]
            return Topology(sub, directed=self.directed, name=f"{self.name}.messengers", positions=pos)
        top = make_topology(kind, int(msg.size), **params)
        return dataclasses.replace(top, name=f"{self.name}.messengers:{top.name}", positions=pos)

    # -- mixing -------------------------------------------------------------------------------

    def mixing(self, kind: str = "metropolis", **kw: Any) -> MixingMatrix:
        """Shortcut for :func:`dmtl.network.mixing.mixing_matrix(self, kind, **kw)`."""
        from dmtl.network.mixing import mixing_matrix

        return mixing_matrix(self, kind, **kw)


# ---------------------------------------------------------------------------------------------
# generators
# ---------------------------------------------------------------------------------------------


def _undirected(rows: np.ndarray, cols: np.ndarray, n: int) -> sparse.csr_array:
    return _pattern_from_pairs(np.concatenate([rows, cols]), np.concatenate([cols, rows]), n)


def _circle_positions(n: int) -> np.ndarray:
    theta = 2.0 * np.pi * np.arange(n) / n
    return np.column_stack([np.cos(theta), np.sin(theta)])


def ring(n: int) -> Topology:
    """Undirected cycle ``0 - 1 - ... - (n-1) - 0``.

    Parameters
    ----------
    n : int
        Number of nodes, >= 1. ``ring(1)`` has no edges and ``ring(2)`` a single edge.

    Returns
    -------
    Topology
        Named ``"ring(n)"``, with positions on the unit circle.
    """
    n = _check_int(n, "n", "ring")
    i = np.arange(n)
    return Topology(_undirected(i, (i + 1) % n, n), name=f"ring({n})", positions=_circle_positions(n))


def directed_ring(n: int) -> Topology:
    """Directed cycle with edges ``i -> (i + 1) mod n``.

    Parameters
    ----------
    n : int
        Number of nodes, >= 1.

    Returns
    -------
    Topology
        Named ``"directed_ring(n)"``; node ``i`` receives from ``i - 1``.
    """
    n = _check_int(n, "n", "directed_ring")
    i = np.arange(n)
    A = _pattern_from_pairs((i + 1) % n, i, n)
    return Topology(A, directed=True, name=f"directed_ring({n})", positions=_circle_positions(n))


def path(n: int) -> Topology:
    """Undirected path ``0 - 1 - ... - (n-1)``.

    Parameters
    ----------
    n : int
        Number of nodes, >= 1.

    Returns
    -------
    Topology
    """
    n = _check_int(n, "n", "path")
    i = np.arange(n - 1)
    return Topology(_undirected(i, i + 1, n), name=f"path({n})")


def star(n: int) -> Topology:
    """Undirected star: node 0 is the hub, connected to nodes ``1..n-1``.

    Parameters
    ----------
    n : int
        Number of nodes including the hub, >= 1.

    Returns
    -------
    Topology
    """
    n = _check_int(n, "n", "star")
    leaves = np.arange(1, n)
    return Topology(_undirected(np.zeros_like(leaves), leaves, n), name=f"star({n})")


def complete(n: int) -> Topology:
    """Complete graph on ``n`` nodes.

    Parameters
    ----------
    n : int
        Number of nodes, >= 1.

    Returns
    -------
    Topology

    Notes
    -----
    Stores ``n (n - 1)`` entries, so it is only sensible for moderate ``n``.
    """
    n = _check_int(n, "n", "complete")
    rows = np.repeat(np.arange(n), n)
    cols = np.tile(np.arange(n), n)
    return Topology(_pattern_from_pairs(rows, cols, n), name=f"complete({n})")


def grid_2d(rows: int, cols: int, periodic: bool = False) -> Topology:
    """Undirected 2-D lattice with 4-neighbourhoods.

    Parameters
    ----------
    rows, cols : int
        Lattice size, each >= 1. Node ``r * cols + c`` sits at row ``r``, column ``c``.
    periodic : bool, default=False
        Wrap around both dimensions (a torus).

    Returns
    -------
    Topology
        Named ``"grid_2d(rows, cols)"`` (``periodic=True`` appended when set), with positions
        ``(c, r)``.

    Notes
    -----
    With ``periodic=True`` a dimension of size 2 gets a single edge per pair (duplicates merge) and
    a dimension of size 1 gets no wrap edge (it would be a self loop).
    """
    rows = _check_int(rows, "rows", "grid_2d")
    cols = _check_int(cols, "cols", "grid_2d")
    periodic = _check_bool(periodic, "periodic", "grid_2d")
    n = rows * cols
    r, c = np.divmod(np.arange(n), cols)
    if periodic:
        right = r * cols + (c + 1) % cols
        down = ((r + 1) % rows) * cols + c
        src = np.concatenate([np.arange(n), np.arange(n)])
        dst = np.concatenate([right, down])
    else:
        has_right = c < cols - 1
        has_down = r < rows - 1
        idx = np.arange(n)
        src = np.concatenate([idx[has_right], idx[has_down]])
        dst = np.concatenate([idx[has_right] + 1, idx[has_down] + cols])
    name = f"grid_2d({rows}, {cols}, periodic=True)" if periodic else f"grid_2d({rows}, {cols})"
    positions = np.column_stack([c, r]).astype(np.float64)
    return Topology(_undirected(src, dst, n), name=name, positions=positions)


def torus(rows: int, cols: int) -> Topology:
    """Periodic 2-D lattice; same as ``grid_2d(rows, cols, periodic=True)``.

    Parameters
    ----------
    rows, cols : int
        Lattice size, each >= 1.

    Returns
    -------
    Topology
        Named ``"torus(rows, cols)"``.
    """
    rows = _check_int(rows, "rows", "torus")
    cols = _check_int(cols, "cols", "torus")
    return dataclasses.replace(grid_2d(rows, cols, periodic=True), name=f"torus({rows}, {cols})")


def hypercube(dim: int) -> Topology:
    """Hypercube graph on ``2**dim`` nodes; ``i`` and ``j`` are adjacent iff they differ in one bit.

    Parameters
    ----------
    dim : int
        Dimension, >= 0.

    Returns
    -------
    Topology
        Named ``"hypercube(dim)"``; every node has degree ``dim``.
    """
    dim = _check_int(dim, "dim", "hypercube", minimum=0)
    if dim > 30:
        raise TopologyError(f"hypercube: dim={dim} gives more than 2**30 nodes; pass dim <= 30")
    n = 1 << dim
    i = np.arange(n, dtype=np.int64)
    bits = np.left_shift(1, np.arange(dim, dtype=np.int64))
    rows = np.repeat(i, dim)
    cols = np.bitwise_xor(rows, np.tile(bits, n))
    return Topology(_pattern_from_pairs(rows, cols, n), name=f"hypercube({dim})")


def _has_isolated(i: np.ndarray, j: np.ndarray, n: int) -> bool:
    """Cheap disconnection test: some node of an n > 1 node graph has no incident pair."""
    if n == 1:
        return False
    touched = np.zeros(n, dtype=bool)
    touched[i] = True
    touched[j] = True
    return not touched.all()


def _triu_pairs(k: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Map linear indices ``k`` of the strict upper triangle (row-major) to pairs ``(i, j)``."""
    k = np.asarray(k, dtype=np.int64)
    b = 2 * n - 1
    i = np.floor((b - np.sqrt(float(b) * b - 8.0 * k.astype(np.float64))) / 2.0).astype(np.int64)
    i = np.clip(i, 0, n - 2)

    def start(r: np.ndarray) -> np.ndarray:
        return r * (2 * n - r - 1) // 2

    # floating point may be off by one in either direction; fix exactly with integer arithmetic
    i = np.where(start(i) > k, i - 1, i)
    i = np.where(start(i + 1) <= k, i + 1, i)
    j = k - start(i) + i + 1
    return i, j


def erdos_renyi(
    n: int,
    p: float,
    seed: int | np.random.Generator | None = None,
    connected: bool = True,
    max_tries: int = 100,
) -> Topology:
    """Undirected Erdos-Renyi graph G(n, p).

    Parameters
    ----------
    n : int
        Number of nodes, >= 1.
    p : float
        Edge probability in (0, 1].
    seed : int, numpy.random.Generator or None, default=None
        Randomness source; the same int seed gives the same graph.
    connected : bool, default=True
        Resample until the graph is connected.
    max_tries : int, default=100
        Maximum number of samples when ``connected=True``.

    Returns
    -------
    Topology
        Named ``"erdos_renyi(n, p=..., seed=...)"``.

    Raises
    ------
    TopologyError
        If ``connected=True`` and no connected sample was found in ``max_tries`` tries.

    Notes
    -----
    Each sample draws the edge count ``m ~ Binomial(n(n-1)/2, p)`` and then ``m`` distinct pairs
    uniformly (``Generator.choice`` without replacement), which is exactly G(n, p) and costs
    ``O(m)`` rather than ``O(n^2)`` for sparse graphs.
    """
    where = "erdos_renyi"
    n = _check_int(n, "n", where)
    p = _check_real(p, "p", where)
    if not 0.0 < p <= 1.0:
        raise TopologyError(
            f"erdos_renyi: p must be in (0, 1], got p={p:g}; pass an edge probability such as p=0.1"
        )
    connected = _check_bool(connected, "connected", where)
    max_tries = _check_int(max_tries, "max_tries", where)
    rng = _make_rng(seed, where)
    n_pairs = n * (n - 1) // 2
    name = (
        f"erdos_renyi({n}, p={p:g}"
        + ("" if seed is None or not isinstance(seed, numbers.Integral) else f", seed={int(seed)}")
        + ")"
    )
    tries = max_tries if connected else 1
    for _ in range(tries):
        m = int(rng.binomial(n_pairs, p)) if n_pairs else 0
        k = rng.choice(n_pairs, size=m, replace=False) if m else np.empty(0, dtype=np.int64)
        i, j = _triu_pairs(k, n)
        if connected and _has_isolated(i, j, n):
            continue
        A = _undirected(i, j, n)
        if not connected or csgraph.connected_components(A, directed=False)[0] == 1:
            return Topology(A, name=name)
    raise TopologyError(
        f"topology 'erdos_renyi' with n={n}, p={p:g} is disconnected after {max_tries} tries; "
        "increase p or pass connected=False"
    )


def random_geometric(
    n: int,
    radius: float,
    seed: int | np.random.Generator | None = None,
    connected: bool = True,
    max_tries: int = 100,
) -> Topology:
    """Random geometric graph: uniform points in the unit square, edges between points within
    ``radius`` (Euclidean distance ``<= radius``).

    Parameters
    ----------
    n : int
        Number of nodes, >= 1.
    radius : float
        Connection radius, > 0.
    seed : int, numpy.random.Generator or None, default=None
        Randomness source.
    connected : bool, default=True
        Resample positions until the graph is connected.
    max_tries : int, default=100
        Maximum number of samples when ``connected=True``.

    Returns
    -------
    Topology
        With ``positions`` set to the sampled points.

    Notes
    -----
    Neighbour pairs are found with :class:`scipy.spatial.cKDTree`, in ``O(n log n + m)``.
    """
    from scipy.spatial import cKDTree

    where = "random_geometric"
    n = _check_int(n, "n", where)
    radius = _check_real(radius, "radius", where)
    if radius <= 0:
        raise TopologyError(
            f"random_geometric: radius must be > 0, got radius={radius:g}; pass e.g. radius=0.2"
        )
    connected = _check_bool(connected, "connected", where)
    max_tries = _check_int(max_tries, "max_tries", where)
    rng = _make_rng(seed, where)
    name = (
        f"random_geometric({n}, radius={radius:g}"
        + ("" if seed is None or not isinstance(seed, numbers.Integral) else f", seed={int(seed)}")
        + ")"
    )
    for _ in range(max_tries if connected else 1):
        pos = rng.random((n, 2))
        pairs = cKDTree(pos).query_pairs(radius, output_type="ndarray")
        if connected and _has_isolated(pairs[:, 0], pairs[:, 1], n):
            continue
        A = _undirected(pairs[:, 0], pairs[:, 1], n)
        if not connected or csgraph.connected_components(A, directed=False)[0] == 1:
            return Topology(A, name=name, positions=pos)
    raise TopologyError(
        f"topology 'random_geometric' with n={n}, radius={radius:g} is disconnected after "
        f"{max_tries} tries; increase radius or pass connected=False"
    )


# ---------------------------------------------------------------------------------------------
# constructors from other representations
# ---------------------------------------------------------------------------------------------


def from_adjacency(A: Any, directed: bool | None = None, name: str = "custom") -> Topology:
    """Build a topology from a dense or sparse adjacency matrix.

    Parameters
    ----------
    A : array_like or scipy sparse matrix, shape (n, n)
        ``A[i, j] != 0`` means an edge ``j -> i``. Must be square, finite and non-negative; only
        the nonzero pattern is kept (weights are discarded) and the diagonal is dropped.
    directed : bool or None, default=None
        ``None`` infers it: directed iff the pattern is not symmetric.
    name : str, default="custom"

    Returns
    -------
    Topology
    """
    P = _canonical_pattern(A, f"adjacency of topology {name!r}")
    if directed is None:
        directed = _asymmetric_entry(P) is not None
    return Topology(P, directed=directed, name=name)


def from_edges(
    edges: Iterable[tuple[int, int]] | np.ndarray,
    n: int | None = None,
    directed: bool = False,
    name: str = "custom",
) -> Topology:
    """Build a topology from an edge list.

    Parameters
    ----------
    edges : iterable of (u, v) or ndarray of shape (m, 2)
        ``(u, v)`` means ``u -> v`` (``v`` receives from ``u``); for undirected graphs also
        ``v -> u``. Self loops are dropped; duplicates merge.
    n : int or None, default=None
        Number of nodes; defaults to ``max node id + 1``.
    directed : bool, default=False
    name : str, default="custom"

    Returns
    -------
    Topology
    """
    where = f"from_edges({name!r})"
    E = np.asarray(list(edges) if not isinstance(edges, np.ndarray) else edges)
    if E.size == 0:
        E = np.empty((0, 2), dtype=np.int64)
    if E.ndim != 2 or E.shape[1] != 2:
        raise TopologyError(f"{where}: edges must be (u, v) pairs, got array of shape {E.shape}")
    if not np.issubdtype(E.dtype, np.integer):
        raise TopologyError(f"{where}: edge endpoints must be integer node ids, got dtype {E.dtype}")
    E = E.astype(np.int64)
    if (E < 0).any():
        raise TopologyError(f"{where}: node ids must be >= 0, got {int(E.min())}")
    if n is None:
        if E.shape[0] == 0:
            raise TopologyError(f"{where}: cannot infer n from an empty edge list; pass n")
        n = int(E.max()) + 1
    n = _check_int(n, "n", where)
    if E.shape[0] and E.max() >= n:
        raise TopologyError(f"{where}: edge uses node {int(E.max())} but n={n}; pass n > {int(E.max())}")
    directed = _check_bool(directed, "directed", where)
    u, v = E[:, 0], E[:, 1]
    A = _pattern_from_pairs(v, u, n) if directed else _undirected(v, u, n)
    return Topology(A, directed=directed, name=name)


def from_networkx(G: nx.Graph, name: str | None = None) -> Topology:
    """Build a topology from a NetworkX graph.

    Parameters
    ----------
    G : networkx.Graph or networkx.DiGraph
        Nodes are relabelled ``0..n-1`` in sorted order when they are sortable, otherwise in
        ``G.nodes`` order. An edge ``(u, v)`` of a ``DiGraph`` means ``u -> v``.
    name : str or None, default=None
        Defaults to ``G.name`` or ``"networkx"``.

    Returns
    -------
    Topology
        Only the graph structure is kept (no node or edge attributes).
    """
    if not isinstance(G, nx.Graph):
        raise TopologyError(f"from_networkx: expected a networkx graph, got {type(G).__name__}")
    if G.number_of_nodes() == 0:
        raise TopologyError("from_networkx: the graph has no nodes; pass a non-empty graph")
    try:
        nodes = sorted(G.nodes)
    except TypeError:
        nodes = list(G.nodes)
    M = nx.to_scipy_sparse_array(G, nodelist=nodes, weight=None, format="csr")
    if name is None:
        name = G.name or "networkx"
    directed = G.is_directed()
    return Topology(sparse.csr_array(M.T) if directed else M, directed=directed, name=name)


def with_groups(top: Topology, groups: Any, messengers: Any | None = None) -> Topology:
    """Return a copy of ``top`` with node groups (and messengers) attached.

    Parameters
    ----------
    top : Topology
    groups : array_like of shape (n,)
        Integer group id per node, ids ``0..k-1``.
    messengers : array_like of shape (k,), optional
        Messenger node of each group; defaults to the lowest node id of each group.

    Returns
    -------
    Topology
    """
    g = np.asarray(groups)
    if messengers is None and g.shape == (top.n_nodes,) and g.size:
        # validate via a throwaway Topology first so errors name the groups, not the messengers
        checked = dataclasses.replace(top, groups=g, messengers=None)
        _, first = np.unique(checked.groups, return_index=True)
        messengers = first.astype(np.int64)
    return dataclasses.replace(top, groups=g, messengers=messengers)


# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------

#: Registry of topology generators by kind name, used by :func:`make_topology` and ``dmtl list``.
TOPOLOGIES: dict[str, Callable[..., Topology]] = {
    "ring": ring,
    "path": path,
    "star": star,
    "complete": complete,
    "grid": grid_2d,
    "torus": torus,
    "erdos_renyi": erdos_renyi,
    "random_geometric": random_geometric,
    "hypercube": hypercube,
    "directed_ring": directed_ring,
}


def _grid_shape(n: int) -> tuple[int, int]:
    d = np.arange(1, math.isqrt(n) + 1)
    rows = int(d[n % d == 0].max())
    return rows, n // rows


def make_topology(kind: str, n: int, **params: Any) -> Topology:
    """Build a topology by kind name with ``n`` nodes.

    Parameters
    ----------
    kind : str
        One of the keys of :data:`TOPOLOGIES`.
    n : int
        Number of nodes, >= 1. For ``"grid"``/``"torus"`` without ``rows``/``cols``, the shape is
        ``rows x cols`` with ``rows`` the largest divisor of ``n`` not above ``sqrt(n)``. For
        ``"hypercube"``, ``n`` must be a power of 2.
    **params
        Further generator parameters (e.g. ``p`` and ``seed`` for ``"erdos_renyi"``).

    Returns
    -------
    Topology

    Raises
    ------
    TopologyError
        On an unknown kind, an unknown or missing parameter, or an invalid value.
    """
    if kind not in TOPOLOGIES:
        raise TopologyError(f"unknown topology kind {kind!r}; known kinds: {', '.join(sorted(TOPOLOGIES))}")
    where = f"make_topology({kind!r})"
    n = _check_int(n, "n", where)
    gen = TOPOLOGIES[kind]
    params = dict(params)
    args: dict[str, Any]
    if kind in ("grid", "torus"):
        rows, cols = params.pop("rows", None), params.pop("cols", None)
        if rows is None and cols is None:
            rows, cols = _grid_shape(n)
        elif rows is None or cols is None:
            given, gname = (rows, "rows") if cols is None else (cols, "cols")
            given = _check_int(given, gname, where)
            if n % given:
                raise TopologyError(f"{where}: {gname}={given} does not divide n={n}; pass a divisor of n")
            rows, cols = (given, n // given) if gname == "rows" else (n // given, given)
        if rows * cols != n:
            raise TopologyError(f"{where}: rows={rows} x cols={cols} != n={n}; pass rows * cols == n")
        args = {"rows": rows, "cols": cols}
    elif kind == "hypercube":
        if n & (n - 1):
            raise TopologyError(
                f"{where}: n={n} is not a power of 2; pass n = 2**dim, e.g. n={1 << n.bit_length()}"
            )
        dim = n.bit_length() - 1
        if "dim" in params and params.pop("dim") != dim:
            raise TopologyError(f"{where}: dim does not match n={n}; pass only n (dim={dim})")
        args = {"dim": dim}
    else:
        args = {"n": n}
    sig = inspect.signature(gen).parameters
    accepted = [p for p in sig if p not in args]
    for key in params:
        if key not in accepted:
            raise TopologyError(
                f"{where}: unknown parameter {key!r}; accepted parameters: "
                f"{', '.join(accepted) if accepted else 'none besides n'}"
            )
    for pname, par in sig.items():
        if pname not in args and pname not in params and par.default is inspect.Parameter.empty:
            raise TopologyError(f"{where}: missing required parameter {pname!r}; pass {pname}=...")
    return gen(**args, **params)


# Mixing weights are defined in their own module; importing them here keeps
# ``from dmtl.network.topology import MixingMatrix, mixing_matrix`` working.
from dmtl.network.mixing import MIXING_KINDS, MixingMatrix, mixing_matrix  # noqa: E402, F811
