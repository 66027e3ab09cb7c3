"""The communication ledger and the virtual clock.

Every primitive of a communicator reports what it sent here. The ledger keeps

* scalar totals per *phase* (one synchronous exchange: a gossip round, an upload, a download): messages,
  floats, bytes, communication rounds and the simulated duration of the phase;
* per-node counters: messages/floats/bytes sent and received over graph links, uploaded to and
  downloaded from the server;
* per-link message counts, materialised lazily from how often each mixing pattern was used, so that a
  gossip round costs O(1) bookkeeping and not O(edges).

A backend fills in only the rows of the nodes it owns; :meth:`Ledger.totals` asks the backend to reduce
over shards, so the node-level ledger is the same on every backend and shard count.

Virtual time
------------
A phase over graph links takes ``latency + max_i max(bytes_out_i, bytes_in_i) / link_bandwidth``: each
node's network interface serialises its own traffic, nodes work in parallel. An upload to the server
takes ``latency + max(max_i bytes_i / link_bandwidth, sum_i bytes_i / server_bandwidth)``: the server's
link is shared by all nodes. Downloads are the same with the server sending (a broadcast is sent once
per node, as unicast, which is what a star network does). Local computation takes
``max_i flops_i / compute_rate_i``. Phases happen one after another.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

from dmtl.errors import ConfigError

__all__ = ["ClockModel", "Ledger", "FLOAT_BYTES", "PHASE_REDUCE"]

FLOAT_BYTES = 8  # float64 on the wire: backends send raw contiguous buffers


@dataclass(frozen=True)
class ClockModel:
    """Parameters of the virtual clock.

    Parameters
    ----------
    latency : float
        Seconds added to every communication phase (per-link latency).
    link_bandwidth : float
        Bytes per second of each node's own link.
    server_bandwidth : float
        Bytes per second of the server's link, shared by all nodes.
    compute_rate : float or array of shape (n_nodes,)
        Floating-point operations per second of each node.
    """

    latency: float = 1e-3
    link_bandwidth: float = 1.25e7  # 100 Mbit/s
    server_bandwidth: float = 1.25e8  # 1 Gbit/s
    compute_rate: float | np.ndarray = 1e9

    def __post_init__(self) -> None:
        for name in ("latency", "link_bandwidth", "server_bandwidth"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0 or (name != "latency" and value == 0):
                raise ConfigError(
                    f"clock.{name} must be a finite number {'>= 0' if name == 'latency' else '> 0'}, "
                    f"got {value!r}"
                )
        rate = np.asarray(self.compute_rate, dtype=float)
        if not np.all(np.isfinite(rate)) or np.any(rate <= 0):
            raise ConfigError("clock.compute_rate must be finite and > 0 for every node")


# How the columns of a phase record combine across shards: messages, floats, max node bytes,
# server bytes, seconds, bytes, messages lost.
PHASE_REDUCE = ("sum", "sum", "max", "sum", "max", "sum", "sum")


_KINDS = ("link", "up", "down", "compute")
_SERVER_KINDS = (1, 2)


@dataclass
class Ledger:
    """Record of everything a communicator sent.

    Recording is O(1) per call: phases go into a growing array, and per-node counts are accumulated per
    (pattern, row size) and spread over the node tables only when the tables are read. That keeps the
    bookkeeping of a round small next to the round's arithmetic even for tiny messages.

    Parameters
    ----------
    n_nodes : int
        Number of nodes in the whole network (not only the local block).
    clock : ClockModel
        The virtual clock model.
    rows : slice, optional
        The nodes this shard owns (all nodes when None).
    """

    n_nodes: int
    clock: ClockModel = field(default_factory=ClockModel)
    rows: slice | None = None

    def __post_init__(self) -> None:
        n = self.n_nodes
        if self.rows is None:
            self.rows = slice(0, n)
        self._tables = {name: np.zeros((n, 3)) for name in ("sent", "received", "uploaded", "downloaded")}
        # kind code, messages, floats, max node bytes, server bytes, seconds, bytes, messages lost
        self._buf = np.zeros((64, 8))
        self._len = 0
        # id(matrix) -> [matrix, rounds]; holding the matrix keeps its id unique
        self._patterns: dict[int, list] = {}
        # (id(matrix), floats per message, bytes per message) -> [rounds, in_counts, out_counts]
        self._link_pending: dict[tuple[int, int, float], list] = {}
        self._lost = np.zeros((n, 3))  # messages, floats, bytes lost on the way to each node
        # id(matrix) -> (local messages per round, busiest node's messages per round)
        self._link_stats: dict[int, tuple[float, float]] = {}
        # (table, floats per row, counts key) -> [calls, counts or None]
        self._server_pending: dict[tuple[str, int, bytes | None], list] = {}
        self._count_stats: dict[bytes, tuple[float, float, float]] = {}  # counts -> (senders, rows, max)
        self.comm_rounds = 0

    # -- recording -------------------------------------------------------------------------------
    def record_links(
        self,
        pattern_key: int,
        pattern: sparse.csr_array,
        out_counts: np.ndarray,
        in_counts: np.ndarray,
        floats_per_message: int,
        rounds: int,
        bytes_per_message: float | None = None,
    ) -> None:
        """Record ``rounds`` gossip rounds over ``pattern`` (messages counted at the receiver).

        ``out_counts``/``in_counts`` are the global per-node message counts of one round; only the
        receiving rows this shard owns are credited so that summing over shards counts each message
        once. Senders are credited by the shard that owns the sender. ``bytes_per_message`` defaults
        to ``floats_per_message`` float64 values (less under compression).
        """
        if rounds <= 0:
            return
        use = self._patterns.setdefault(pattern_key, [pattern, 0])
        use[1] += rounds
        f = int(floats_per_message)
        b = float(f * FLOAT_BYTES if bytes_per_message is None else bytes_per_message)
        pending = self._link_pending.get((pattern_key, f, b))
        if pending is None:
            self._link_pending[(pattern_key, f, b)] = [rounds, in_counts, out_counts]
        else:
            pending[0] += rounds
        stats = self._link_stats.get(pattern_key)
        if stats is None:
            busiest = float(np.max(np.maximum(in_counts, out_counts), initial=0))
            stats = self._link_stats[pattern_key] = (float(np.sum(in_counts[self.rows])), busiest)
        msgs, busiest = stats
        if busiest == 0:  # nobody sends (e.g. a single node): no communication round, no latency
            self._phases(0, 0.0, 0.0, 0.0, 0.0, 0.0, rounds, 0.0)
            return
        node_bytes = busiest * b
        seconds = self.clock.latency + node_bytes / self.clock.link_bandwidth
        self._phases(0, msgs, msgs * f, node_bytes, 0.0, seconds, rounds, msgs * b)
        self.comm_rounds += rounds

    def record_lost(self, per_node: np.ndarray, floats_per_message: int, bytes_per_message: float) -> None:
        """Messages of the last recorded gossip round that never arrived, per receiving local node.

        They were sent (and stay in ``sent`` and in the byte totals); ``received`` no longer counts
        them, and the totals count them as ``lost``.
        """
        c = np.asarray(per_node, dtype=float)
        self._lost[self.rows] += np.stack([c, c * floats_per_message, c * bytes_per_message], 1)
        self._buf[self._len - 1, 7] += float(c.sum())

    def record_server(self, direction: str, counts: np.ndarray | None, floats_per_row: int) -> None:
        """Record one upload (``direction='up'``) or download (``'down'``) phase.

        ``counts`` holds, for the local nodes, the number of rows of ``floats_per_row`` floats each
        node sends (up) or receives (down); None means one row each.
        """
        f = int(floats_per_row)
        table = "uploaded" if direction == "up" else "downloaded"
        n_local = self.rows.stop - self.rows.start
        if counts is None:
            key: bytes | None = None
            msgs = float(n_local)
            floats = float(n_local * f)
            node_bytes = float(f * FLOAT_BYTES) if n_local else 0.0
        else:
            counts = np.array(counts, dtype=np.int64)  # a copy: read again when the tables are built
            key = counts.tobytes()
            stats = self._count_stats.get(key)
            if stats is None:
                stats = (float(np.count_nonzero(counts)), float(counts.sum()), float(counts.max(initial=0)))
                self._count_stats[key] = stats
            msgs = stats[0]
            floats = stats[1] * f
            node_bytes = stats[2] * f * FLOAT_BYTES
        pending = self._server_pending.get((table, f, key))
        if pending is None:
            self._server_pending[(table, f, key)] = [1, counts]
        else:
            pending[0] += 1
        server_bytes = floats * FLOAT_BYTES
        self._phases(
            1 if direction == "up" else 2, msgs, floats, node_bytes, server_bytes, 0.0, 1, server_bytes
        )
        self.comm_rounds += 1

    def record_compute(self, seconds_per_node: np.ndarray) -> None:
        """Record one local computation phase (``max`` over nodes of the given durations)."""
        self._phases(3, 0.0, 0.0, 0.0, 0.0, float(np.max(seconds_per_node, initial=0.0)), 1, 0.0)

    def _phases(
        self,
        kind: int,
        msgs: float,
        floats: float,
        node_bytes: float,
        server_bytes: float,
        seconds: float,
        count: int,
        nbytes: float,
    ) -> None:
        end = self._len + count
        if end > len(self._buf):
            grown = np.zeros((max(2 * len(self._buf), end), self._buf.shape[1]))
            grown[: self._len] = self._buf[: self._len]
            self._buf = grown
        self._buf[self._len : end] = (kind, msgs, floats, node_bytes, server_bytes, seconds, nbytes, 0.0)
        self._len = end

    # -- reading ---------------------------------------------------------------------------------
    def _flush(self) -> None:
        """Spread the pending per-pattern counts over the per-node tables."""
        rows = self.rows
        for (_, f, b), (rounds, in_counts, out_counts) in self._link_pending.items():
            for name, counts in (("received", in_counts), ("sent", out_counts)):
                c = counts[rows].astype(float) * rounds
                self._tables[name][rows] += np.stack([c, c * f, c * b], 1)
        self._link_pending.clear()
        n_local = rows.stop - rows.start
        for (name, f, _), (calls, counts) in self._server_pending.items():
            c = np.ones(n_local) if counts is None else counts.astype(float)
            msgs = (c > 0).astype(float) * calls
            self._tables[name][rows] += np.stack([msgs, c * f * calls, c * f * calls * FLOAT_BYTES], 1)
        self._server_pending.clear()

    def _table(self, name: str) -> np.ndarray:
        self._flush()
        return self._tables[name]

    @property
    def sent(self) -> np.ndarray:
        """(n_nodes, 3): messages, floats, bytes each node sent over graph links (own rows only)."""
        return self._table("sent")

    @property
    def received(self) -> np.ndarray:
        """(n_nodes, 3): messages, floats, bytes each node received over graph links (lost ones not)."""
        return self._table("received") - self._lost

    @property
    def lost(self) -> np.ndarray:
        """(n_nodes, 3): messages, floats, bytes sent to each node that the channel dropped."""
        return self._lost.copy()

    @property
    def uploaded(self) -> np.ndarray:
        """(n_nodes, 3): messages, floats, bytes each node uploaded to the server."""
        return self._table("uploaded")

    @property
    def downloaded(self) -> np.ndarray:
        """(n_nodes, 3): messages, floats, bytes each node downloaded from the server."""
        return self._table("downloaded")

    def phase_table(self) -> np.ndarray:
        """Phases as an array with columns messages, floats, max node bytes, server bytes, seconds,
        bytes, messages lost.

        The local part only; see :meth:`Communicator.ledger_totals` for the reduced view.
        """
        return self._buf[: self._len, 1:]

    def phase_kinds(self) -> np.ndarray:
        """Kind code of each phase: 0 link, 1 upload, 2 download, 3 compute (names in ``_KINDS``)."""
        return self._buf[: self._len, 0]

    def phase_seconds(self, table: np.ndarray, kinds: np.ndarray) -> np.ndarray:
        """Durations of reduced phases (server phases need the reduced byte counts)."""
        c = self.clock
        server = np.isin(kinds, _SERVER_KINDS)
        transfer = c.latency + np.maximum(table[:, 2] / c.link_bandwidth, table[:, 3] / c.server_bandwidth)
        return np.where(server, transfer, table[:, 4])

    def link_messages(self) -> sparse.csr_array:
        """Messages sent over each directed link, as an n x n sparse matrix (row = receiver)."""
        total = sparse.csr_array((self.n_nodes, self.n_nodes))
        for pattern, rounds in self._patterns.values():
            off = sparse.csr_array(pattern, copy=True)
            off.setdiag(0)
            off.eliminate_zeros()
            off.data[:] = 1.0
            total = total + rounds * off
        mask = np.zeros(self.n_nodes)
        mask[self.rows] = 1.0
        total = sparse.diags_array(mask) @ total
        return sparse.csr_array(total)
