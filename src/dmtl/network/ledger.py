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
# server bytes, seconds.
PHASE_REDUCE = ("sum", "sum", "max", "sum", "max")


@dataclass
class Ledger:
    """Record of everything a communicator sent.

    Parameters
    ----------
    n_nodes : int
        Number of nodes in the whole network (not only the local block).
    clock : ClockModel
        The virtual clock model.
    """

    n_nodes: int
    clock: ClockModel = field(default_factory=ClockModel)
    rows: slice | None = None  # the nodes this shard owns; all nodes when None

    def __post_init__(self) -> None:
        n = self.n_nodes
        if self.rows is None:
            self.rows = slice(0, n)
        self.sent = np.zeros((n, 3))  # messages, floats, bytes over graph links
        self.received = np.zeros((n, 3))
        self.uploaded = np.zeros((n, 3))
        self.downloaded = np.zeros((n, 3))
        self.phases: list[tuple[str, float, float, float, float, float]] = []
        # id(matrix) -> [matrix, rounds]; holding the matrix keeps its id unique
        self._patterns: dict[int, list] = {}
        self.comm_rounds = 0
        self.iteration = 0

    # -- recording -------------------------------------------------------------------------------
    def record_links(
        self,
        pattern_key: int,
        pattern: sparse.csr_array,
        out_counts: np.ndarray,
        in_counts: np.ndarray,
        floats_per_message: int,
        rounds: int,
    ) -> None:
        """Record ``rounds`` gossip rounds over ``pattern`` (messages counted at the receiver).

        ``out_counts``/``in_counts`` are the global per-node message counts of one round; only the
        receiving rows this shard owns are credited so that summing over shards counts each message
        once. Senders are credited by the shard that owns the sender.
        """
        use = self._patterns.setdefault(pattern_key, [pattern, 0])
        use[1] += rounds
        f = floats_per_message
        local_rows = self.rows
        loc_in = in_counts[local_rows].astype(float) * rounds
        loc_out = out_counts[local_rows].astype(float) * rounds
        self.received[local_rows] += np.stack([loc_in, loc_in * f, loc_in * f * FLOAT_BYTES], 1)
        self.sent[local_rows] += np.stack([loc_out, loc_out * f, loc_out * f * FLOAT_BYTES], 1)
        msgs = float(loc_in.sum())
        per_round_node_bytes = float(np.max(np.maximum(in_counts, out_counts), initial=0)) * f * FLOAT_BYTES
        seconds = self.clock.latency + per_round_node_bytes / self.clock.link_bandwidth
        for _ in range(rounds):
            self._phase("link", msgs / rounds, msgs * f / rounds, per_round_node_bytes, 0.0, seconds)
        self.comm_rounds += rounds

    def record_server(self, direction: str, counts: np.ndarray, floats_per_row: int) -> None:
        """Record one upload (``direction='up'``) or download (``'down'``) phase.

        ``counts`` holds, for the local nodes, the number of rows of ``floats_per_row`` floats each
        node sends (up) or receives (down).
        """
        counts = np.asarray(counts, dtype=float)
        msgs = (counts > 0).astype(float)
        floats = counts * floats_per_row
        table = self.uploaded if direction == "up" else self.downloaded
        table[self.rows] += np.stack([msgs, floats, floats * FLOAT_BYTES], 1)
        node_bytes = float(floats.max(initial=0.0)) * FLOAT_BYTES
        total_bytes = float(floats.sum()) * FLOAT_BYTES
        self._phase(
            "up" if direction == "up" else "down",
            float(msgs.sum()),
            float(floats.sum()),
            node_bytes,
            total_bytes,
            0.0,
        )
        self.comm_rounds += 1

    def record_compute(self, seconds_per_node: np.ndarray) -> None:
        """Record one local computation phase (``max`` over nodes of the given durations)."""
        sec = float(np.max(seconds_per_node, initial=0.0))
        self._phase("compute", 0.0, 0.0, 0.0, 0.0, sec)

    def _phase(
        self, kind: str, msgs: float, floats: float, node_bytes: float, server_bytes: float, seconds: float
    ) -> None:
        self.phases.append((kind, msgs, floats, node_bytes, server_bytes, seconds))

    # -- reading ---------------------------------------------------------------------------------
    def phase_table(self) -> np.ndarray:
        """Phases as an array with columns messages, floats, max node bytes, server bytes, seconds.

        The local part only; see :meth:`Communicator.ledger_totals` for the reduced view.
        """
        if not self.phases:
            return np.zeros((0, 5))
        return np.array([p[1:] for p in self.phases], dtype=float)

    def phase_kinds(self) -> list[str]:
        return [p[0] for p in self.phases]

    def phase_seconds(self, table: np.ndarray, kinds: list[str]) -> np.ndarray:
        """Durations of reduced phases (server phases need the reduced byte counts)."""
        c = self.clock
        sec = table[:, 4].copy()
        for idx, kind in enumerate(kinds):
            if kind in ("up", "down"):
                sec[idx] = c.latency + max(
                    table[idx, 2] / c.link_bandwidth, table[idx, 3] / c.server_bandwidth
                )
        return sec

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
