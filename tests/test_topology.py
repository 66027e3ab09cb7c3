"""Tests for dmtl.network.topology."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from scipy import sparse

from dmtl.errors import TopologyError
from dmtl.network.topology import (
    MIXING_KINDS,
    TOPOLOGIES,
    MixingMatrix,
    Topology,
    complete,
    directed_ring,
    erdos_renyi,
    from_adjacency,
    from_edges,
    from_networkx,
    grid_2d,
    hypercube,
    make_topology,
    mixing_matrix,
    path,
    random_geometric,
    ring,
    star,
    torus,
    with_groups,
)

# ---------------------------------------------------------------------------------------------
# generators: degrees and edge counts
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("top", "n_nodes", "n_edges", "degrees"),
    [
        (ring(6), 6, 12, [2] * 6),
        (path(5), 5, 8, [1, 2, 2, 2, 1]),
        (star(5), 5, 8, [4, 1, 1, 1, 1]),
        (complete(5), 5, 20, [4] * 5),
        # 3x4 grid: corners 2, border 3, interior 4; 3*3 + 2*4 = 17 undirected edges
        (grid_2d(3, 4), 12, 34, [2, 3, 3, 2, 3, 4, 4, 3, 2, 3, 3, 2]),
        (torus(3, 4), 12, 48, [4] * 12),
        (hypercube(3), 8, 24, [3] * 8),
    ],
    ids=lambda v: getattr(v, "name", None),
)
def test_generator_counts(top, n_nodes, n_edges, degrees):
    assert top.n_nodes == n_nodes
    assert top.n_edges == n_edges
    np.testing.assert_array_equal(top.in_degree, degrees)
    np.testing.assert_array_equal(top.out_degree, degrees)
    assert not top.directed
    assert top.is_connected()
    A = top.adjacency
    assert isinstance(A, sparse.csr_array)
    assert A.dtype == np.float64
    assert A.has_canonical_format
    assert np.all(A.data == 1.0)
    assert np.all(A.diagonal() == 0)
    assert (A != A.T).nnz == 0


def test_generator_structure_details():
    np.testing.assert_array_equal(ring(6).in_neighbors(0), [1, 5])
    np.testing.assert_array_equal(star(5).in_neighbors(0), [1, 2, 3, 4])
    np.testing.assert_array_equal(hypercube(3).in_neighbors(5), [1, 4, 7])
    g = grid_2d(3, 4)
    np.testing.assert_array_equal(g.in_neighbors(5), [1, 4, 6, 9])
    assert g.positions.shape == (12, 2)
    assert g.name == "grid_2d(3, 4)"
    assert torus(3, 4).name == "torus(3, 4)"
    assert ring(10).name == "ring(10)"
    assert ring(1).n_edges == 0 and ring(2).n_edges == 2
    assert path(5).diameter() == 4
    assert ring(6).diameter() == 3
    assert hypercube(4).diameter() == 4
    assert star(5).eccentricity(0) == 1 and star(5).eccentricity(1) == 2


def test_directed_ring():
    top = directed_ring(5)
    assert top.directed and top.name == "directed_ring(5)"
    np.testing.assert_array_equal(top.in_degree, np.ones(5))
    np.testing.assert_array_equal(top.out_degree, np.ones(5))
    # edge i -> i+1: node 1 receives from node 0, node 0 from node 4
    np.testing.assert_array_equal(top.in_neighbors(1), [0])
    np.testing.assert_array_equal(top.in_neighbors(0), [4])
    assert top.n_edges == 5
    assert top.is_connected()
    assert top.eccentricity(0) == 4
    assert top.diameter() == 4
    G = top.to_networkx()
    assert isinstance(G, nx.DiGraph)
    assert set(G.edges) == {(0, 1), (1, 2), (2, 3), (3, 4), (4, 0)}


def test_directed_path_not_strongly_connected():
    top = from_edges([(0, 1), (1, 2)], directed=True)
    assert not top.is_connected()
    assert top.eccentricity(0) == 2
    with pytest.raises(TopologyError, match="unreachable"):
        top.eccentricity(2)
    with pytest.raises(TopologyError, match="strongly connected"):
        top.diameter()


# ---------------------------------------------------------------------------------------------
# random generators
# ---------------------------------------------------------------------------------------------


def test_erdos_renyi_seeded():
    a = erdos_renyi(60, 0.1, seed=3)
    b = erdos_renyi(60, 0.1, seed=3)
    c = erdos_renyi(60, 0.1, seed=4)
    assert (a.adjacency != b.adjacency).nnz == 0
    assert (a.adjacency != c.adjacency).nnz > 0
    assert a.is_connected() and c.is_connected()
    assert a.name == "erdos_renyi(60, p=0.1, seed=3)"
    assert (a.adjacency != a.adjacency.T).nnz == 0


def test_erdos_renyi_edge_count_and_full():
    top = erdos_renyi(400, 0.05, seed=0, connected=False)
    expected = 0.05 * 400 * 399  # directed messages
    assert abs(top.n_edges - expected) < 5 * np.sqrt(expected)
    full = erdos_renyi(7, 1.0, seed=1)
    assert full.n_edges == 42


def test_erdos_renyi_impossible():
    with pytest.raises(TopologyError, match="disconnected") as info:
        erdos_renyi(50, 0.001, seed=0, max_tries=3)
    assert "after 3 tries" in str(info.value)
    assert "\n" not in str(info.value)


def test_erdos_renyi_large_sparse_is_fast():
    top = erdos_renyi(20_000, 2e-4, seed=0, connected=False)
    assert top.n_nodes == 20_000
    assert abs(top.n_edges - 2e-4 * 20_000 * 19_999) < 2000


@pytest.mark.parametrize("p", [0, -0.1, 1.5, float("nan")])
def test_erdos_renyi_bad_p(p):
    with pytest.raises(TopologyError, match="p"):
        erdos_renyi(10, p)


def test_random_geometric():
    top = random_geometric(80, 0.25, seed=1)
    assert top.is_connected()
    pos = top.positions
    assert pos.shape == (80, 2) and pos.min() >= 0 and pos.max() <= 1
    # every edge is within the radius, and every close pair is an edge
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    expected = (d <= 0.25) & ~np.eye(80, dtype=bool)
    np.testing.assert_array_equal(top.adjacency.toarray() != 0, expected)
    with pytest.raises(TopologyError, match="disconnected"):
        random_geometric(100, 0.01, seed=0, max_tries=2)


# ---------------------------------------------------------------------------------------------
# mixing matrices
# ---------------------------------------------------------------------------------------------


def test_metropolis_ring4_exact():
    W = ring(4).mixing("metropolis")
    t = 1 / 3
    expected = np.array([[t, t, 0, t], [t, t, t, 0], [0, t, t, t], [t, 0, t, t]])
    np.testing.assert_allclose(W.matrix.toarray(), expected, rtol=0, atol=1e-15)
    assert W.is_doubly_stochastic() and W.is_symmetric() and W.is_nonnegative()
    assert W.matrix.has_canonical_format
    np.testing.assert_array_equal(W.offdiag_count_in, [2, 2, 2, 2])
    np.testing.assert_array_equal(W.offdiag_count_out, [2, 2, 2, 2])
    assert W.n_messages == 8
    assert W.matrix.nnz == 12  # 8 off-diagonal + explicit diagonal


def test_metropolis_star_weights():
    W = star(4).mixing().matrix.toarray()
    # hub degree 3, leaves degree 1: edge weight 1/4; hub keeps 1/4, leaves keep 3/4
    np.testing.assert_allclose(W[0], [0.25, 0.25, 0.25, 0.25])
    np.testing.assert_allclose(W[1], [0.25, 0.75, 0, 0])


def test_slem_ring_analytical():
    n = 8
    s = ring(n).mixing().slem()
    assert abs(s - (1 / 3 + 2 / 3 * np.cos(2 * np.pi / n))) < 1e-12
    W = ring(n).mixing()
    assert abs(W.spectral_gap() - (1 - s)) < 1e-15


def test_slem_complete_average():
    W = complete(6).mixing("complete_average")
    np.testing.assert_allclose(W.matrix.toarray(), np.full((6, 6), 1 / 6))
    assert abs(W.slem()) < 1e-12
    with pytest.raises(TopologyError, match="complete graph"):
        ring(6).mixing("complete_average")


def test_slem_sparse_method_large_ring():
    n = 3000
    W = ring(n).mixing()
    s = W.slem()  # n > 2000: ARPACK path
    assert abs(s - (1 / 3 + 2 / 3 * np.cos(2 * np.pi / n))) < 1e-6


def test_slem_sparse_matches_dense_nonsymmetric():
    top = from_edges([(0, 1), (1, 2), (2, 0), (0, 3), (3, 4), (4, 0), (2, 4)], directed=True)
    W = top.mixing("uniform")
    assert abs(W.slem("sparse") - W.slem("dense")) < 1e-8


def test_uniform_directed_row_not_column_stochastic():
    top = from_edges([(0, 1), (0, 2), (0, 3)], directed=True)  # hub 0 sends to 1, 2, 3
    W = top.mixing("uniform")
    expected = np.array([[1, 0, 0, 0], [0.5, 0.5, 0, 0], [0.5, 0, 0.5, 0], [0.5, 0, 0, 0.5]], dtype=float)
    np.testing.assert_allclose(W.matrix.toarray(), expected)
    assert W.is_row_stochastic()
    assert not W.is_column_stochastic()
    d = W.diagnostics()
    assert d["row_stochastic"] and not d["doubly_stochastic"] and not d["symmetric"]
    assert set(d) == {
        "n_nodes",
        "n_messages",
        "row_stochastic",
        "column_stochastic",
        "doubly_stochastic",
        "symmetric",
        "nonnegative",
        "slem",
        "spectral_gap",
    }
    assert d["n_messages"] == 3
    np.testing.assert_array_equal(W.offdiag_count_in, [0, 1, 1, 1])
    np.testing.assert_array_equal(W.offdiag_count_out, [3, 0, 0, 0])
    with pytest.raises(TopologyError, match="doubly stochastic"):
        W.require_doubly_stochastic("algorithm 'dgd'")


def test_uniform_neighbors():
    W = path(3).mixing("uniform_neighbors")
    np.testing.assert_allclose(W.matrix.toarray(), [[0, 1, 0], [0.5, 0, 0.5], [0, 1, 0]])
    assert W.is_row_stochastic()
    assert np.all(W.matrix.diagonal() == 0)
    assert W.n_messages == 4
    with pytest.raises(TopologyError, match="in-neighbour"):
        from_edges([(0, 1)], directed=True).mixing("uniform_neighbors")


def test_max_degree_and_laplacian():
    top = star(5)
    W = top.mixing("max_degree").matrix.toarray()
    np.testing.assert_allclose(W[0], [0.2] * 5)
    np.testing.assert_allclose(W[1], [0.2, 0.8, 0, 0, 0])
    L = top.mixing("laplacian")  # default alpha = 1/(1+d_max) = 1/5 -> same as max_degree here
    np.testing.assert_allclose(L.matrix.toarray(), W)
    assert L.is_doubly_stochastic()
    # ring(4): L has lambda_max = 4, so alpha must be < 0.5
    ok = ring(4).mixing("laplacian", alpha=0.45)
    assert ok.slem() < 1
    for alpha in (0.5, 0.6, -0.1, 0.0):
        with pytest.raises(TopologyError, match="alpha"):
            ring(4).mixing("laplacian", alpha=alpha)


def test_metropolis_rejects_directed():
    with pytest.raises(TopologyError, match="uniform"):
        directed_ring(4).mixing("metropolis")


def test_custom_weights():
    top = ring(4)
    good = np.full((4, 4), 0.25) * (np.eye(4) + top.adjacency.toarray() > 0)
    W = mixing_matrix(top, "custom", weights=good)
    assert W.kind == "custom" and not W.is_doubly_stochastic()
    with pytest.raises(TopologyError, match="doubly stochastic") as info:
        W.require_doubly_stochastic("algorithm 'dgd'")
    msg = str(info.value)
    assert msg.startswith("algorithm 'dgd' needs doubly stochastic") and "'custom'" in msg
    assert "row sums in [0.75, 0.75]" in msg
    bad = good.copy()
    bad[0, 2] = 0.1  # 0 and 2 are not adjacent on ring(4)
    with pytest.raises(TopologyError, match=r"W\[0, 2\]"):
        mixing_matrix(top, "custom", weights=bad)
    with pytest.raises(TopologyError, match="shape"):
        mixing_matrix(top, "custom", weights=np.eye(3))
    nan = good.copy()
    nan[1, 1] = np.nan
    with pytest.raises(TopologyError, match="non-finite"):
        mixing_matrix(top, "custom", weights=sparse.csr_array(nan))
    with pytest.raises(TopologyError, match="needs weights"):
        mixing_matrix(top, "custom")
    # sparse weights with explicit off-diagonal zeros outside the graph are fine
    ds = mixing_matrix(top, "custom", weights=sparse.csr_array(top.mixing().matrix))
    ds.require_doubly_stochastic("test")


def test_mixing_kind_errors():
    with pytest.raises(TopologyError, match="known kinds") as info:
        ring(4).mixing("gossip")
    assert all(k in str(info.value) for k in MIXING_KINDS)
    with pytest.raises(TopologyError, match="alpha"):
        ring(4).mixing("metropolis", alpha=0.1)


def test_mixing_support_within_topology_all_kinds():
    top = erdos_renyi(30, 0.2, seed=5)
    A = top.adjacency.toarray() != 0
    for kind in ("metropolis", "max_degree", "laplacian", "uniform", "uniform_neighbors"):
        W = top.mixing(kind)
        assert isinstance(W, MixingMatrix) and W.topology is top
        M = W.matrix
        assert M.has_canonical_format
        off = (M.toarray() != 0) & ~np.eye(30, dtype=bool)
        assert not (off & ~A).any()
        assert W.is_row_stochastic()
        # explicit diagonal: every row stores its (i, i) entry
        rows = np.repeat(np.arange(30), np.diff(M.indptr))
        assert np.sum(M.indices == rows) == 30


# ---------------------------------------------------------------------------------------------
# constructors and validation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("A", "match"),
    [
        (np.ones((2, 3)), "square"),
        (np.array([[0, -1], [-1, 0]]), "negative"),
        (np.array([[0, np.nan], [1, 0]]), "non-finite"),
        (sparse.csr_array(np.array([[0, np.inf], [1, 0]])), "non-finite"),
        (np.ones(3), "2-D"),
    ],
)
def test_from_adjacency_invalid(A, match):
    with pytest.raises(TopologyError, match=match):
        from_adjacency(A)


def test_from_adjacency_infers_direction_and_strips_diagonal():
    sym = np.array([[1, 2, 0], [2, 0, 1], [0, 1, 0]])
    top = from_adjacency(sym)
    assert not top.directed and top.n_edges == 4
    assert np.all(top.adjacency.diagonal() == 0) and np.all(top.adjacency.data == 1)
    asym = np.array([[0, 1], [0, 0]])
    d = from_adjacency(asym)
    assert d.directed
    np.testing.assert_array_equal(d.in_neighbors(0), [1])
    with pytest.raises(TopologyError, match="not symmetric"):
        from_adjacency(asym, directed=False)


def test_from_edges_and_networkx_roundtrip():
    G = nx.petersen_graph()
    top = from_networkx(G)
    ref = nx.to_scipy_sparse_array(G, nodelist=sorted(G), weight=None)
    assert (top.adjacency != ref).nnz == 0
    edges = list(G.edges)
    top2 = from_edges(edges)
    assert (top2.adjacency != top.adjacency).nnz == 0
    back = top.to_networkx()
    assert isinstance(back, nx.Graph) and not back.is_directed()
    assert set(back.nodes) == set(G.nodes)
    assert set(map(frozenset, back.edges)) == set(map(frozenset, G.edges))

    D = nx.DiGraph([("a", "b"), ("b", "c"), ("c", "a"), ("a", "c")])
    dtop = from_networkx(D, name="tri")
    assert dtop.directed and dtop.name == "tri"
    ref = nx.to_scipy_sparse_array(D, nodelist=["a", "b", "c"], weight=None)
    assert (dtop.adjacency != ref.T).nnz == 0  # our A[i, j] = edge j -> i
    assert set(dtop.to_networkx().edges) == {(0, 1), (1, 2), (2, 0), (0, 2)}
    np.testing.assert_array_equal(from_edges([(0, 1)], n=3, directed=True).in_neighbors(1), [0])
    with pytest.raises(TopologyError, match="n=2"):
        from_edges([(0, 5)], n=2)


# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------


def test_make_topology():
    assert set(TOPOLOGIES) == {
        "ring",
        "path",
        "star",
        "complete",
        "grid",
        "torus",
        "erdos_renyi",
        "random_geometric",
        "hypercube",
        "directed_ring",
    }
    g = make_topology("grid", 12)
    assert g.name == "grid_2d(3, 4)" and g.n_edges == 34
    assert make_topology("torus", 7).name == "torus(1, 7)"
    assert make_topology("hypercube", 16).name == "hypercube(4)"
    assert make_topology("ring", 5).n_edges == 10
    er = make_topology("erdos_renyi", 30, p=0.3, seed=2)
    assert (er.adjacency != erdos_renyi(30, 0.3, seed=2).adjacency).nnz == 0
    with pytest.raises(TopologyError, match="known kinds") as info:
        make_topology("moebius", 5)
    assert "ring" in str(info.value) and "erdos_renyi" in str(info.value)
    with pytest.raises(TopologyError, match="power of 2"):
        make_topology("hypercube", 12)
    with pytest.raises(TopologyError, match="'q'"):
        make_topology("erdos_renyi", 10, q=0.5)
    with pytest.raises(TopologyError, match="'p'"):
        make_topology("erdos_renyi", 10)
    with pytest.raises(TopologyError, match="n"):
        make_topology("ring", 0)
    with pytest.raises(TopologyError, match="p"):
        make_topology("erdos_renyi", 10, p=2.0)


# ---------------------------------------------------------------------------------------------
# groups, messengers, connectivity
# ---------------------------------------------------------------------------------------------


def test_groups_and_messengers():
    top = with_groups(ring(6), [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(top.messengers, [0, 3])
    np.testing.assert_array_equal(top.group_nodes(1), [3, 4, 5])
    sub = top.group_subgraph(1)
    assert sub.n_nodes == 3 and sub.n_edges == 4  # path 3 - 4 - 5
    np.testing.assert_array_equal(sub.in_degree, [1, 2, 1])
    mt = top.messenger_topology()
    assert mt.n_nodes == 2 and mt.n_edges == 2
    explicit = with_groups(ring(6), [0, 0, 0, 1, 1, 1], messengers=[2, 5])
    np.testing.assert_array_equal(explicit.messengers, [2, 5])
    with pytest.raises(TopologyError, match="messenger of group 1"):
        with_groups(ring(6), [0, 0, 0, 1, 1, 1], messengers=[0, 1])
    with pytest.raises(TopologyError, match="not a node id"):
        with_groups(ring(6), [0, 0, 0, 1, 1, 1], messengers=[0, 9])
    with pytest.raises(TopologyError, match="shape"):
        with_groups(ring(6), [0, 1])
    with pytest.raises(TopologyError, match="group 1 is empty"):
        with_groups(ring(4), [0, 0, 2, 2])
    with pytest.raises(TopologyError, match="no groups"):
        ring(4).group_nodes(0)


def test_require_connected_two_triangles():
    top = from_edges([(0, 1), (1, 2), (2, 0), (3, 4), (4, 5), (5, 3)], name="two_triangles")
    assert not top.is_connected() and top.n_components() == 2
    with pytest.raises(TopologyError, match="2 components") as info:
        top.require_connected("algorithm 'dgd'")
    msg = str(info.value)
    assert msg.startswith("algorithm 'dgd' needs a connected graph") and "\n" not in msg
    with pytest.raises(TopologyError, match="components"):
        top.diameter()
    ring(5).require_connected("x")


def test_topology_validation():
    with pytest.raises(TopologyError, match="not symmetric"):
        Topology(sparse.csr_array(np.array([[0.0, 1.0], [0.0, 0.0]])))
    t = Topology(np.array([[1.0, 1.0], [1.0, 0.0]]))  # self loop stripped
    assert t.n_edges == 2 and isinstance(t.adjacency, sparse.csr_array)
    with pytest.raises(TopologyError, match="positions"):
        Topology(ring(3).adjacency, positions=np.zeros((2, 2)))
    with pytest.raises(TopologyError, match="n must be"):
        ring(0)
    with pytest.raises(TopologyError, match="n must be"):
        ring(2.5)
    assert "ring(3)" in repr(ring(3))
