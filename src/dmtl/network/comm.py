"""The communicator: the only way an algorithm's data cross from one node to another.

An algorithm holds the state of a *block* of nodes: arrays whose leading axis runs over the nodes
``comm.start .. comm.stop - 1``. Everything that crosses the network goes through one of the primitives
below, which move the data (how depends on the backend) and record what was sent in ``comm.ledger``.

Primitives
----------
``mix(X, W, rounds)``
    ``X <- W X`` over the graph, ``rounds`` times: one message of ``X[j]`` per edge ``j -> i`` per round.
``neighbors(X, W)``
    every node receives its in-neighbours' rows (for updates that are not a weighted sum).
``flood(X, source, topology)``
    the source node's row reaches every node along a breadth-first tree (n - 1 messages).
``gather(X, counts)``
    the server receives every node's rows (one upload per node).
``broadcast(Y)`` / ``scatter(Y, counts)``
    the server sends one value to all nodes / each node its own rows (one download per node).
``server_step(fn, *X, out)``
    gather, run ``fn`` on the server, broadcast or scatter its result.
``compute(flops)``
    advance the virtual clock by local work (no data move).
``observe(X)``
    the full array for metrics and logging: *not* communication, not counted.

The server's computation is deterministic and, on sharded backends, may be replicated on every shard;
the ledger counts it once, as the algorithm's messages.

With a lossy :class:`~dmtl.network.channel.Channel` (``comm.channel``, the run's ``faults:`` section)
``mix`` and ``neighbors`` deliver what the channel lets through: one round at a time, as a weighted sum
of the received rows, identically on every backend.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

from dmtl.network.channel import Channel
from dmtl.network.ledger import ClockModel, Ledger
from dmtl.network.topology import MixingMatrix, Topology

__all__ = ["Communicator", "Neighborhood"]


@dataclass(frozen=True)
class Neighborhood:
    """What each node of a block received from its in-neighbours (and itself).

    Entries are in CSR order over the block's rows of the mixing matrix: node ``i`` (local index) owns
    entries ``indptr[i]:indptr[i+1]``; ``sources`` are global node ids, ``weights`` the mixing weights
    ``W[i, j]`` and ``rows[e]`` the value received over entry ``e`` (own row for the diagonal entry).
    """

    indptr: np.ndarray
    sources: np.ndarray
    weights: np.ndarray
    rows: np.ndarray
    receivers: np.ndarray  # local index of the receiving node of each entry

    def weighted_sum(self, rows: np.ndarray | None = None) -> np.ndarray:
        """``sum_j W[i, j] rows[e(i, j)]`` for every node of the block (``rows`` default: received)."""
        rows = self.rows if rows is None else rows
        n_local = len(self.indptr) - 1
        seg = sparse.csr_array(
            (self.weights, np.arange(len(self.weights)), self.indptr), shape=(n_local, len(self.weights))
        )
        flat = rows.reshape(len(self.weights), -1)
        return np.asarray(seg @ flat).reshape((n_local,) + rows.shape[1:])

    def own_rows(self, X: np.ndarray) -> np.ndarray:
        """Each entry's receiver's own row of ``X`` (block array), aligned with ``rows``."""
        return X[self.receivers]


class Communicator(ABC):
    """Base class of all backends' communicators.

    Subclasses move data (``_mix``, ``_neighbor_rows``, ``_allgather``, ``_bcast_from``,
    ``_reduce_phases``, ``_reduce_nodes``); this class does the accounting, so that every backend counts
    the same node-level messages.

    Parameters
    ----------
    n_nodes : int
        Number of nodes in the whole network.
    start, stop : int
        The block of nodes this communicator owns is ``start .. stop - 1``.
    clock : ClockModel
        Virtual clock parameters.
    topology : Topology, optional
        The communication graph (``None`` for server-only networks).
    mixing : MixingMatrix, optional
        The default mixing weights on ``topology``.
    channel : Channel, optional
        A lossy channel for graph links (None: every message arrives as sent).
    """

    backend: str = "abstract"

    def __init__(
        self,
        n_nodes: int,
        start: int,
        stop: int,
        clock: ClockModel | None = None,
        topology: Topology | None = None,
        mixing: MixingMatrix | None = None,
        channel: Channel | None = None,
    ) -> None:
        self.topology = topology
        self.mixing = mixing
        self.n_nodes = int(n_nodes)
        self.start = int(start)
        self.stop = int(stop)
        self.ledger = Ledger(self.n_nodes, clock or ClockModel(), rows=slice(self.start, self.stop))
        self._flood_cache: dict[tuple[int, int], list[sparse.csr_array]] = {}
        self.channel = channel if channel is not None and channel.active else None
        self._channel_calls = 0  # gossip rounds through the channel so far (the draws' counter)
        self._entries_cache: dict[int, tuple[Any, tuple[sparse.csr_array, np.ndarray, np.ndarray]]] = {}

    def require_graph(self, what: str, doubly_stochastic: bool = True) -> MixingMatrix:
        """The mixing weights, after checking that ``what`` can run on this network."""
        if self.topology is None or self.mixing is None:
            raise ValueError(f"{what} needs a communication graph; set topology.kind (e.g. ring)")
        self.topology.require_connected(what)
        if doubly_stochastic:
            self.mixing.require_doubly_stochastic(what)
        return self.mixing

    # -- block ------------------------------------------------------------------------------------
    @property
    def n_local(self) -> int:
        return self.stop - self.start

    @property
    def local_slice(self) -> slice:
        return slice(self.start, self.stop)

    @property
    def rank(self) -> int:
        return 0

    @property
    def size(self) -> int:
        return 1

    def local(self, X: np.ndarray) -> np.ndarray:
        """This block's rows of a global per-node array (for data every node knows from the start)."""
        return X[self.start : self.stop]

    def _check_block(self, X: np.ndarray, what: str) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim == 0 or X.shape[0] != self.n_local:
            raise ValueError(
                f"comm.{what} expects a block array with leading axis {self.n_local} (the nodes "
                f"{self.start}..{self.stop - 1}), got shape {X.shape}"
            )
        return X

    # -- graph primitives -------------------------------------------------------------------------
    def mix(self, X: np.ndarray, W: MixingMatrix, rounds: int = 1) -> np.ndarray:
        """Return ``W^rounds X`` for the block: ``rounds`` gossip rounds over ``W``'s graph."""
        X = self._check_block(X, "mix")
        self._check_weights(W, "mix")
        if rounds < 0:
            raise ValueError(f"comm.mix rounds must be >= 0, got {rounds}")
        if rounds == 0:
            return X.copy()
        shape = X.shape
        flat = np.ascontiguousarray(X.reshape(self.n_local, -1), dtype=np.float64)
        if self.channel is not None:
            for _ in range(rounds):
                hood = self._lossy_neighbors(flat, W)
                flat = hood.weighted_sum()
            return flat.reshape(shape)
        out = self._mix(flat, W, rounds)
        self.ledger.record_links(
            id(W.matrix), W.matrix, W.offdiag_count_out, W.offdiag_count_in, flat.shape[1], rounds
        )
        return out.reshape(shape)

    def neighbors(self, X: np.ndarray, W: MixingMatrix) -> Neighborhood:
        """Every node of the block receives the rows of its in-neighbours under ``W``'s pattern."""
        X = self._check_block(X, "neighbors")
        self._check_weights(W, "neighbors")
        flat = np.ascontiguousarray(X.reshape(self.n_local, -1), dtype=np.float64)
        if self.channel is not None:
            hood = self._lossy_neighbors(flat, W)
            return Neighborhood(
                hood.indptr,
                hood.sources,
                hood.weights,
                hood.rows.reshape((-1,) + X.shape[1:]),
                hood.receivers,
            )
        Wl, sources, receivers = self._local_entries(W)
        rows = self._neighbor_rows(flat, W, sources)
        self.ledger.record_links(
            id(W.matrix), W.matrix, W.offdiag_count_out, W.offdiag_count_in, flat.shape[1], 1
        )
        return Neighborhood(
            indptr=Wl.indptr.astype(np.int64),
            sources=sources,
            weights=Wl.data.astype(np.float64),
            rows=rows.reshape((len(sources),) + X.shape[1:]),
            receivers=receivers,
        )

    def _check_weights(self, W: MixingMatrix, what: str) -> None:
        if W.matrix.shape != (self.n_nodes, self.n_nodes):
            raise ValueError(
                f"comm.{what} needs {self.n_nodes} x {self.n_nodes} mixing weights (one row per node), "
                f"got {W.matrix.shape[0]} x {W.matrix.shape[1]}"
            )

    def _local_entries(self, W: MixingMatrix) -> tuple[sparse.csr_array, np.ndarray, np.ndarray]:
        """The block's rows of ``W`` (sorted CSR), each entry's source (global) and receiver (local)."""
        cached = self._entries_cache.get(id(W.matrix))
        if cached is not None and cached[0] is W.matrix:
            return cached[1]
        Wl = sparse.csr_array(W.matrix[self.start : self.stop])
        Wl.sort_indices()
        sources = Wl.indices.astype(np.int64)
        receivers = np.repeat(np.arange(self.n_local), np.diff(Wl.indptr))
        if len(self._entries_cache) >= 16:
            self._entries_cache.pop(next(iter(self._entries_cache)))
        self._entries_cache[id(W.matrix)] = (W.matrix, (Wl, sources, receivers))
        return Wl, sources, receivers

    def _lossy_neighbors(self, flat: np.ndarray, W: MixingMatrix) -> Neighborhood:
        """One gossip round through ``self.channel``: what each node received (flat rows).

        Senders compress their rows; a lost message is replaced by the receiver's own row; the
        diagonal entry is the node's own, uncompressed row. Recorded like a perfect round, plus the
        lost messages.
        """
        channel = self.channel
        assert channel is not None
        call = self._channel_calls
        self._channel_calls += 1
        Wl, sources, receivers = self._local_entries(W)
        own_ids = np.arange(self.start, self.stop, dtype=np.int64)
        sent = channel.compress(flat, call, own_ids)
        rows = np.asarray(self._neighbor_rows(sent, W, sources), dtype=np.float64)  # a fresh array
        gids = receivers + self.start
        arrived = channel.delivered(call, gids, sources)
        own = (sources == gids) | ~arrived
        rows[own] = flat[receivers[own]]
        f = flat.shape[1]
        nbytes = channel.message_bytes(f)
        self.ledger.record_links(
            id(W.matrix), W.matrix, W.offdiag_count_out, W.offdiag_count_in, channel.kept_values(f), 1, nbytes
        )
        lost = np.bincount(receivers[~arrived], minlength=self.n_local)
        self.ledger.record_lost(lost, channel.kept_values(f), nbytes)
        return Neighborhood(
            indptr=Wl.indptr.astype(np.int64),
            sources=sources,
            weights=Wl.data.astype(np.float64),
            rows=rows,
            receivers=receivers,
        )

    def flood(self, value: np.ndarray, source: int, topology: Topology) -> np.ndarray:
        """Spread the source node's ``value`` to every node; return it stacked for the block.

        The value travels down a breadth-first tree of the graph (each node receives it once, from its
        lowest-numbered in-neighbour one hop closer to the source): ``n_nodes - 1`` messages in
        ``eccentricity(source)`` rounds, the least any broadcast over the graph can do. ``value`` is
        given on every shard but only the source's copy is used.
        """
        topology.require_connected("flooding")
        source = topology._check_node(source, "flood source")
        if topology.n_nodes != self.n_nodes:
            raise ValueError(f"comm.flood needs a {self.n_nodes}-node topology, got {topology.n_nodes} nodes")
        value = np.ascontiguousarray(value, dtype=np.float64)
        levels = self._flood_levels(topology, source)
        value = self._bcast_from(value, self.owner_of(source))
        for pattern in levels:
            out = np.asarray(pattern.sum(axis=0)).ravel()
            inn = np.asarray(pattern.sum(axis=1)).ravel()
            self.ledger.record_links(id(pattern), pattern, out, inn, value.size, 1)
        return np.broadcast_to(value, (self.n_local,) + value.shape).copy()

    def _flood_levels(self, topology: Topology, source: int) -> list[sparse.csr_array]:
        """Per round of the flood, the 0/1 pattern of tree edges used (row = receiver)."""
        key = (id(topology), int(source))
        if key not in self._flood_cache:
            A = sparse.csr_array(topology.adjacency)
            A.sort_indices()
            n = A.shape[0]
            # hop distance along edge direction j -> i: BFS on A^T (row = sender)
            dist = csgraph.shortest_path(A.T.tocsr(), method="D", unweighted=True, indices=int(source))
            rows = np.repeat(np.arange(n), np.diff(A.indptr))
            cols = A.indices
            parent_edge = dist[cols] == dist[rows] - 1  # in-neighbours one hop closer
            first = np.full(n, -1)
            cand = np.flatnonzero(parent_edge)[::-1]  # reversed: the lowest column wins
            first[rows[cand]] = cols[cand]
            self._flood_cache[key] = [
                sparse.csr_array(
                    (np.ones(int((dist == k).sum())), (np.flatnonzero(dist == k), first[dist == k])),
                    shape=(n, n),
                )
                for k in range(1, int(np.max(dist)) + 1)
            ]
        return self._flood_cache[key]

    # -- server primitives ------------------------------------------------------------------------
    def gather(self, X: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray:
        """The server receives all nodes' rows; returns the global array (rows in node order).

        ``counts[i]`` is the number of rows local node ``i`` owns in ``X`` (default: one row each, so
        ``X`` is a block array). Each node uploads its rows in one message.
        """
        X = np.asarray(X, dtype=np.float64)
        counts = self._counts(counts, X)
        row = math.prod(X.shape[1:])
        self.ledger.record_server("up", counts, row)
        return self._allgather(X)

    def broadcast(self, Y: Any) -> Any:
        """The server sends the same value to every node (one download per node)."""
        Y = np.asarray(Y, dtype=np.float64)
        self.ledger.record_server("down", None, Y.size)
        return self._bcast_from(np.ascontiguousarray(Y), 0)

    def scatter(self, Y: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray:
        """The server sends each node its own rows of the global array ``Y``; returns the block's rows."""
        Y = np.asarray(Y, dtype=np.float64)
        if Y.ndim == 0:
            raise ValueError("comm.scatter expects a global array with one row per node (or per task)")
        row = math.prod(Y.shape[1:])
        if counts is None:  # one row per node: the block's rows are its nodes'
            if Y.shape[0] != self.n_nodes:
                raise ValueError(
                    f"comm.scatter expects {self.n_nodes} rows (one per node) without counts, got shape "
                    f"{Y.shape}; pass counts=rows per local node otherwise"
                )
            self.ledger.record_server("down", None, row)
            return Y[self.start : self.stop].copy()
        counts = self._check_counts(counts, "scatter")
        offset = self._global_offset(counts)
        end = offset + int(counts.sum())
        if end > Y.shape[0] or (self.stop == self.n_nodes and end != Y.shape[0]):
            raise ValueError(
                f"comm.scatter counts must sum (over all nodes) to Y.shape[0]={Y.shape[0]}; this block's "
                f"rows end at {end}"
            )
        self.ledger.record_server("down", counts, row)
        return Y[offset:end].copy()

    def server_step(
        self,
        fn: Callable[..., Any],
        *X: np.ndarray,
        out: str = "broadcast",
        counts: np.ndarray | None = None,
    ) -> Any:
        """Gather every ``X``, run ``fn`` on the server, send back its result.

        With ``out='broadcast'`` every node receives all of ``fn``'s result; with ``out='scatter'``
        ``fn`` returns global per-node arrays (or a tuple of them) and each node receives its rows.
        """
        if out not in ("broadcast", "scatter"):
            raise ValueError(f"server_step out must be 'broadcast' or 'scatter', got {out!r}")
        full = [self.gather(x, counts) for x in X]
        result = fn(*full)
        single = not isinstance(result, tuple)
        parts = (result,) if single else result
        if out == "broadcast":
            sent = tuple(self.broadcast(p) for p in parts)
        else:
            sent = tuple(self.scatter(p, counts) for p in parts)
        return sent[0] if single else sent

    def _counts(self, counts: np.ndarray | None, X: np.ndarray) -> np.ndarray | None:
        if counts is None:
            self._check_block(X, "gather")
            return None
        counts = self._check_counts(counts, "gather")
        if counts.sum() != X.shape[0]:
            raise ValueError(
                f"comm.gather counts must sum to X.shape[0]={X.shape[0]} (rows per local node), got "
                f"{counts.sum()}"
            )
        return counts

    def _check_counts(self, counts: Any, what: str) -> np.ndarray:
        counts = np.array(counts, dtype=np.int64)  # a copy: the ledger keeps it
        if counts.shape != (self.n_local,) or (counts < 0).any():
            raise ValueError(
                f"comm.{what} counts must be {self.n_local} non-negative row counts (one per local node), "
                f"got {counts!r}"
            )
        return counts

    # -- clock and observation --------------------------------------------------------------------
    def compute(self, flops: np.ndarray | float) -> None:
        """Advance the virtual clock by local work of ``flops`` floating-point operations per node."""
        flops = np.broadcast_to(np.asarray(flops, dtype=float), (self.n_local,))
        rate = np.broadcast_to(np.asarray(self.ledger.clock.compute_rate, dtype=float), (self.n_nodes,))
        self.ledger.record_compute(flops / rate[self.start : self.stop])

    def observe(self, X: np.ndarray) -> np.ndarray:
        """The global array of a per-node quantity, for metrics only: not communication, not counted."""
        return self._allgather(np.asarray(X))

    def owner_of(self, node: int) -> int:
        """Rank (shard) that owns ``node``."""
        return 0

    def ledger_totals(self) -> dict[str, float]:
        """Cumulative totals over all nodes and shards (a collective call on sharded backends)."""
        led = self.ledger
        table = self._reduce_phases(led.phase_table())
        kinds = led.phase_kinds()
        seconds = led.phase_seconds(table, kinds)
        total = table.sum(axis=0) if len(table) else np.zeros(table.shape[1])
        return {
            "messages": float(total[0]),
            "floats": float(total[1]),
            "bytes": float(total[5]),
            "lost": float(total[6]),
            "comm_rounds": float(led.comm_rounds),
            "virtual_time": float(seconds.sum()),
        }

    def node_ledger(self) -> dict[str, np.ndarray]:
        """Per-node (messages, floats, bytes) sent, received, lost (sent to the node, dropped by the
        channel), uploaded and downloaded: (n_nodes, 3) each."""
        led = self.ledger
        return {
            name: self._reduce_nodes(getattr(led, name))
            for name in ("sent", "received", "lost", "uploaded", "downloaded")
        }

    def _global_offset(self, counts: np.ndarray) -> int:
        """Row offset of this block in a global array with ``counts`` rows per node."""
        return 0

    def transport_totals(self) -> dict[str, Any] | None:
        """What actually crossed between processes (a collective call), or None when all nodes share one
        process. The node-level view is :meth:`ledger_totals`."""
        return None

    # -- backend hooks ----------------------------------------------------------------------------
    @abstractmethod
    def _mix(self, flat: np.ndarray, W: MixingMatrix, rounds: int) -> np.ndarray: ...

    @abstractmethod
    def _neighbor_rows(self, flat: np.ndarray, W: MixingMatrix, sources: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _allgather(self, X: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _bcast_from(self, value: np.ndarray, root: int) -> np.ndarray: ...

    def _reduce_phases(self, table: np.ndarray) -> np.ndarray:
        """Combine phase tables over shards (columns combine as ``ledger.PHASE_REDUCE`` says)."""
        return table

    def _reduce_nodes(self, table: np.ndarray) -> np.ndarray:
        return table
