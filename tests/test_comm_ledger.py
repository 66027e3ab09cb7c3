"""The communicator's primitives and the ledger, checked against hand computations on a 4-node ring."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from dmtl.backends.local import LocalCommunicator
from dmtl.errors import TopologyError
from dmtl.network.ledger import ClockModel
from dmtl.network.topology import path, ring

RING4_W = (
    np.array([[1, 1, 0, 1], [1, 1, 1, 0], [0, 1, 1, 1], [1, 0, 1, 1]], dtype=float) / 3.0
)  # Metropolis on a ring: every degree is 2, so every weight is 1/(1+2)


@pytest.fixture
def ring4():
    top = ring(4)
    W = top.mixing("metropolis")
    comm = LocalCommunicator(
        4, ClockModel(latency=0.5, link_bandwidth=100.0, server_bandwidth=40.0, compute_rate=2.0), top, W
    )
    return top, W, comm


def test_mix_values_and_counts_match_hand_computation(ring4):
    _, W, comm = ring4
    np.testing.assert_allclose(W.matrix.toarray(), RING4_W, atol=1e-15)
    X = np.arange(20, dtype=float).reshape(4, 5)
    out = comm.mix(X, W, rounds=3)
    np.testing.assert_allclose(out, np.linalg.matrix_power(RING4_W, 3) @ X, rtol=1e-14)
    tot = comm.ledger_totals()
    # 4 nodes x 2 neighbours = 8 messages a round, 3 rounds, 5 floats each, 8 bytes a float
    assert tot["messages"] == 24
    assert tot["floats"] == 120
    assert tot["bytes"] == 960
    assert tot["comm_rounds"] == 3
    # a round: latency 0.5 + the busiest node's 2 messages x 5 floats x 8 bytes / 100 B/s
    assert tot["virtual_time"] == pytest.approx(3 * (0.5 + 80 / 100))
    nodes = comm.node_ledger()
    np.testing.assert_array_equal(nodes["sent"], np.tile([6, 30, 240], (4, 1)))
    np.testing.assert_array_equal(nodes["received"], np.tile([6, 30, 240], (4, 1)))
    assert not nodes["uploaded"].any() and not nodes["downloaded"].any()
    links = comm.ledger.link_messages().toarray()
    np.testing.assert_array_equal(links, 3 * (RING4_W > 0) * (1 - np.eye(4)))


def test_server_primitives_count_uploads_and_downloads(ring4):
    _, _, comm = ring4
    X = np.ones((4, 2))
    full = comm.gather(X)
    assert full.shape == (4, 2)
    y = comm.broadcast(np.arange(3.0))
    np.testing.assert_array_equal(y, [0, 1, 2])
    tot = comm.ledger_totals()
    assert (tot["messages"], tot["floats"], tot["bytes"], tot["comm_rounds"]) == (8, 20, 160, 2)
    # upload: max(busiest node 16 B / 100 B/s, server 64 B / 40 B/s); download: max(24/100, 96/40)
    assert tot["virtual_time"] == pytest.approx((0.5 + 64 / 40) + (0.5 + 96 / 40))
    nodes = comm.node_ledger()
    np.testing.assert_array_equal(nodes["uploaded"], np.tile([1, 2, 16], (4, 1)))
    np.testing.assert_array_equal(nodes["downloaded"], np.tile([1, 3, 24], (4, 1)))


def test_gather_with_counts_and_scatter(ring4):
    _, _, comm = ring4
    counts = np.array([2, 0, 1, 3])
    rows = np.arange(12, dtype=float).reshape(6, 2)
    full = comm.gather(rows, counts=counts)
    np.testing.assert_array_equal(full, rows)
    back = comm.scatter(full * 2, counts=counts)
    np.testing.assert_array_equal(back, rows * 2)
    nodes = comm.node_ledger()
    np.testing.assert_array_equal(nodes["uploaded"][:, 0], [1, 0, 1, 1])  # node 1 has nothing to send
    np.testing.assert_array_equal(nodes["uploaded"][:, 1], 2 * counts)
    with pytest.raises(ValueError, match="counts"):
        comm.gather(rows, counts=np.array([1, 1, 1, 1]))


def test_server_step_scatter_and_broadcast(ring4):
    _, _, comm = ring4
    X = np.arange(4.0)[:, None]
    total = comm.server_step(lambda a: a.sum(axis=0), X)
    assert total.tolist() == [6.0]
    doubled, neg = comm.server_step(lambda a: (2 * a, -a), X, out="scatter")
    np.testing.assert_array_equal(doubled, 2 * X)
    np.testing.assert_array_equal(neg, -X)
    # 3 uploads of one float per node, 3 downloads (1 broadcast, 2 scatters)
    assert comm.ledger_totals()["messages"] == 4 * 2 + 4 * 3


def test_neighbors_receive_in_neighbour_rows(ring4):
    _, W, comm = ring4
    X = np.arange(8.0).reshape(4, 2)
    nb = comm.neighbors(X, W)
    np.testing.assert_array_equal(nb.indptr, [0, 3, 6, 9, 12])
    np.testing.assert_array_equal(nb.sources, [0, 1, 3, 0, 1, 2, 1, 2, 3, 0, 2, 3])
    np.testing.assert_array_equal(nb.rows, X[nb.sources])
    np.testing.assert_allclose(nb.weighted_sum(), RING4_W @ X, rtol=1e-14)
    np.testing.assert_array_equal(nb.own_rows(X), X[nb.receivers])
    assert comm.ledger_totals()["messages"] == 8  # the diagonal entry is not a message


def test_flood_is_a_breadth_first_tree():
    top = path(5)
    comm = LocalCommunicator(5, topology=top)
    out = comm.flood(np.array([7.0, 8.0]), source=2, topology=top)
    np.testing.assert_array_equal(out, np.tile([7.0, 8.0], (5, 1)))
    tot = comm.ledger_totals()
    assert tot["messages"] == 4 and tot["comm_rounds"] == 2  # n - 1 messages, eccentricity rounds
    np.testing.assert_array_equal(comm.node_ledger()["received"][:, 0], [1, 1, 0, 1, 1])


def test_compute_advances_the_clock_by_the_slowest_node(ring4):
    _, _, comm = ring4
    comm.compute(np.array([1.0, 2.0, 3.0, 4.0]))
    assert comm.ledger_totals()["virtual_time"] == pytest.approx(2.0)  # 4 flops at 2 flops/s
    assert comm.ledger_totals()["messages"] == 0


def test_block_shape_errors_name_the_primitive(ring4):
    _, W, comm = ring4
    with pytest.raises(ValueError, match=r"comm.mix expects a block array with leading axis 4"):
        comm.mix(np.ones((3, 2)), W)
    with pytest.raises(ValueError, match="rounds must be >= 0"):
        comm.mix(np.ones((4, 2)), W, rounds=-1)


def test_custom_sparse_weights_count_only_their_support():
    top = ring(4)
    W = top.mixing("custom", weights=sparse.csr_array(np.eye(4) * 0.5 + np.diag([0.5] * 3, 1)))
    comm = LocalCommunicator(4, topology=top, mixing=W)
    comm.mix(np.ones((4, 1)), W)
    assert comm.ledger_totals()["messages"] == 3


def test_bad_server_and_graph_arguments_name_the_primitive(ring4):
    top, W, comm = ring4
    with pytest.raises(ValueError, match=r"comm.scatter expects 4 rows \(one per node\)"):
        comm.scatter(np.ones((3, 2)))
    with pytest.raises(ValueError, match="comm.scatter counts must be 4 non-negative row counts"):
        comm.scatter(np.ones((10, 2)), counts=np.array([1, 1, 1]))
    with pytest.raises(ValueError, match=r"comm.scatter counts must sum .* to Y.shape\[0\]=10"):
        comm.scatter(np.ones((10, 2)), counts=np.array([1, 1, 1, 1]))
    with pytest.raises(ValueError, match="comm.gather counts must be 4 non-negative"):
        comm.gather(np.ones((4, 2)), counts=np.array([3, -1, 1, 1]))
    with pytest.raises(ValueError, match=r"comm.mix needs 4 x 4 mixing weights"):
        comm.mix(np.ones((4, 2)), ring(5).mixing("metropolis"))
    with pytest.raises(TopologyError, match="flood source must be a node id in 0..3, got -1"):
        comm.flood(np.ones(2), source=-1, topology=top)
    assert comm.ledger_totals()["messages"] == 0  # nothing was recorded by the refused calls


def test_the_ledger_copies_the_counts_it_keeps(ring4):
    _, _, comm = ring4
    counts = np.array([1, 2, 0, 1], dtype=np.int64)
    comm.gather(np.ones((4, 3)), counts)
    counts[:] = [4, 0, 0, 0]  # the caller reuses its buffer
    comm.gather(np.ones((4, 3)), counts)
    np.testing.assert_array_equal(comm.node_ledger()["uploaded"][:, 1], [15, 6, 0, 3])


def test_a_single_node_gossips_with_nobody():
    top = ring(1)
    comm = LocalCommunicator(1, topology=top, mixing=top.mixing("metropolis"))
    out = comm.mix(np.arange(3.0)[None], comm.mixing, rounds=5)
    np.testing.assert_array_equal(out, [[0.0, 1.0, 2.0]])
    tot = comm.ledger_totals()
    assert (tot["messages"], tot["comm_rounds"], tot["virtual_time"]) == (0, 0, 0)
