"""The local backend: every node in one process, communication as sparse products and indexing.

Exact, deterministic and the reference for every other backend.
"""

from __future__ import annotations

import numpy as np

from dmtl.network.channel import Channel
from dmtl.network.comm import Communicator
from dmtl.network.ledger import ClockModel
from dmtl.network.topology import MixingMatrix, Topology

__all__ = ["LocalCommunicator"]


class LocalCommunicator(Communicator):
    """All ``n_nodes`` nodes in one block.

    Parameters
    ----------
    n_nodes : int
        Number of nodes.
    clock : ClockModel, optional
        Virtual clock parameters.
    topology, mixing : optional
        The communication graph and its default mixing weights.
    channel : Channel, optional
        A lossy channel for graph links (the run's ``faults:`` section).
    """

    backend = "local"

    def __init__(
        self,
        n_nodes: int,
        clock: ClockModel | None = None,
        topology: Topology | None = None,
        mixing: MixingMatrix | None = None,
        channel: Channel | None = None,
    ) -> None:
        super().__init__(n_nodes, 0, n_nodes, clock, topology, mixing, channel)

    def _mix(self, flat: np.ndarray, W: MixingMatrix, rounds: int) -> np.ndarray:
        M = W.matrix
        for _ in range(rounds):
            flat = M @ flat
        return np.asarray(flat)

    def _neighbor_rows(self, flat: np.ndarray, W: MixingMatrix, sources: np.ndarray) -> np.ndarray:
        return flat[sources]

    def _allgather(self, X: np.ndarray) -> np.ndarray:
        return X

    def _bcast_from(self, value: np.ndarray, root: int) -> np.ndarray:
        return value
