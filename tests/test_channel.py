"""The lossy channel (``faults:``): seeded drops and compression on graph links, with their accounting."""

from __future__ import annotations

import numpy as np
import pytest

from dmtl.backends.local import LocalCommunicator
from dmtl.errors import ConfigError
from dmtl.network.channel import Channel, hash_uniform
from dmtl.network.ledger import ClockModel
from dmtl.network.topology import complete, ring
from dmtl.runner import run

RING4_W = np.array([[1, 1, 0, 1], [1, 1, 1, 0], [0, 1, 1, 1], [1, 0, 1, 1]], dtype=float) / 3.0


def _ring4(channel: Channel | None) -> tuple:
    top = ring(4)
    W = top.mixing("metropolis")
    clock = ClockModel(latency=0.5, link_bandwidth=100.0, server_bandwidth=40.0, compute_rate=2.0)
    return W, LocalCommunicator(4, clock, top, W, channel=channel)


# -- draws -------------------------------------------------------------------------------------------
def test_hash_uniform_is_a_pure_function_of_its_ids() -> None:
    a = np.arange(1000)[:, None]
    b = np.arange(50)[None, :]
    full = hash_uniform(7, 3, a, b)
    assert full.shape == (1000, 50)
    assert full.min() >= 0.0 and full.max() < 1.0
    # any subset, computed on its own (as a shard does), equals the same entries of the full set
    np.testing.assert_array_equal(hash_uniform(7, 3, a[400:410], b[:, 5:9]), full[400:410, 5:9])
    assert not np.array_equal(hash_uniform(8, 3, a, b), full)  # another seed
    assert not np.array_equal(hash_uniform(7, 4, a, b), full)  # another round
    # uniform: mean 1/2, variance 1/12, and no cell of a 20-bin histogram far from 5%
    assert abs(full.mean() - 0.5) < 0.005
    assert abs(full.var() - 1 / 12) < 0.002
    hist = np.histogram(full, bins=20, range=(0, 1))[0] / full.size
    assert np.all(np.abs(hist - 0.05) < 0.003)


def test_drops_hit_the_requested_fraction_and_never_the_diagonal() -> None:
    ch = Channel(drop_prob=0.3, seed=1)
    recv = np.repeat(np.arange(300), 300)
    send = np.tile(np.arange(300), 300)
    kept = ch.delivered(0, recv, send)
    off = recv != send
    assert kept[~off].all()
    assert abs(1.0 - kept[off].mean() - 0.3) < 0.01
    np.testing.assert_array_equal(kept, ch.delivered(0, recv, send))  # reproducible
    assert not np.array_equal(kept, ch.delivered(1, recv, send))  # fresh draws each round


# -- compression -------------------------------------------------------------------------------------
def test_quantization_is_unbiased_and_bounded() -> None:
    ch = Channel(compression="quantize", bits=4, seed=3)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5, 40))
    nodes = np.arange(5)
    levels = 7  # 2^(4-1) - 1
    step = np.abs(X).max(axis=1, keepdims=True) / levels
    draws = np.stack([ch.compress(X, call, nodes) for call in range(4000)])
    assert np.all(np.abs(draws - X) <= step + 1e-12)  # one quantisation step at most
    # on the grid, and unbiased: the mean of 4000 draws is within 4 standard errors of x
    np.testing.assert_allclose(np.round(draws / step), draws / step, atol=1e-9)
    se = step / 2 / np.sqrt(len(draws))
    assert np.all(np.abs(draws.mean(axis=0) - X) <= 4 * se + 1e-12)
    assert ch.message_bytes(40) == 40 * 4 / 8 + 8  # 4 bits a value + one float64 scale


def test_topk_keeps_the_largest_entries() -> None:
    ch = Channel(compression="topk", topk=0.25)
    X = np.array([[0.1, -5.0, 2.0, 0.0, 3.0, -0.2, 1.0, 0.5], [1, 1, 1, 1, 1, 1, 1, 1.0]])
    out = ch.compress(X, 0, np.arange(2))
    np.testing.assert_array_equal(out[0], [0, -5.0, 0, 0, 3.0, 0, 0, 0])
    np.testing.assert_array_equal(out[1], [1, 1, 0, 0, 0, 0, 0, 0])  # ties: the lower indices
    assert ch.kept_values(8) == 2 and ch.message_bytes(8) == 2 * 12
    # no float error in the count (0.07 * 100 = 7.000000000000001), never more bytes than the dense row
    assert Channel(compression="topk", topk=0.07).kept_values(100) == 7
    assert Channel(compression="topk", topk=0.9).message_bytes(100) == 800
    assert Channel(compression="quantize").compress(np.zeros((3, 0)), 0, np.arange(3)).shape == (3, 0)


# -- through the communicator ------------------------------------------------------------------------
def test_dropped_messages_are_replaced_by_the_receivers_own_row() -> None:
    ch = Channel(drop_prob=0.4, seed=11)
    W, comm = _ring4(ch)
    X = np.arange(20, dtype=float).reshape(4, 5)
    out = comm.mix(X, W)
    # by hand: the round's effective matrix moves every lost weight to the diagonal
    rows, cols = np.nonzero(RING4_W)
    kept = ch.delivered(0, rows, cols)
    E = np.zeros((4, 4))
    for i, j, k in zip(rows, cols, kept, strict=True):
        E[i, j if k else i] += RING4_W[i, j]
    np.testing.assert_allclose(E.sum(axis=1), 1.0)
    np.testing.assert_allclose(out, E @ X, rtol=1e-14)
    lost = int((~kept).sum())
    assert 0 < lost < 8  # this seed drops some messages, not all
    tot = comm.ledger_totals()
    assert (tot["messages"], tot["bytes"], tot["lost"]) == (8, 8 * 5 * 8, lost)
    nodes = comm.node_ledger()
    np.testing.assert_array_equal(nodes["sent"][:, 0], [2, 2, 2, 2])  # sent, whatever happened next
    per_node_lost = np.bincount(rows[~kept], minlength=4)
    np.testing.assert_array_equal(nodes["lost"][:, 0], per_node_lost)
    np.testing.assert_array_equal(nodes["received"][:, 0], 2 - per_node_lost)
    np.testing.assert_array_equal(nodes["received"][:, 2], (2 - per_node_lost) * 40)


def test_compressed_gossip_counts_the_bytes_on_the_wire() -> None:
    ch = Channel(compression="quantize", bits=8, seed=2)
    W, comm = _ring4(ch)
    X = np.random.default_rng(1).standard_normal((4, 16))
    out = comm.mix(X, W, rounds=3)
    tot = comm.ledger_totals()
    per_message = 16 + 8  # 16 values of 8 bits + the float64 scale
    assert (tot["messages"], tot["floats"], tot["bytes"], tot["lost"]) == (24, 24 * 16, 24 * per_message, 0)
    # each round: latency + the busiest node's 2 messages of 24 bytes at 100 B/s
    assert tot["virtual_time"] == pytest.approx(3 * (0.5 + 2 * per_message / 100))
    # the own (diagonal) term is exact; only the neighbours' rows carry quantisation error
    exact = np.linalg.matrix_power(RING4_W, 3) @ X
    assert 0 < np.abs(out - exact).max() < 3 * np.abs(X).max() / 127


def test_neighbors_deliver_the_channels_rows() -> None:
    ch = Channel(drop_prob=0.5, seed=5)
    W, comm = _ring4(ch)
    X = np.arange(8, dtype=float).reshape(4, 2)
    hood = comm.neighbors(X, W)
    gids = hood.receivers
    kept = ch.delivered(0, gids, hood.sources)
    expect = np.where(kept[:, None], X[hood.sources], X[gids])
    np.testing.assert_array_equal(hood.rows, expect)
    assert comm.ledger_totals()["lost"] == (~kept).sum()


def test_a_perfect_channel_changes_nothing() -> None:
    W, plain = _ring4(None)
    _, perfect = _ring4(Channel())
    assert perfect.channel is None
    X = np.random.default_rng(2).standard_normal((4, 3))
    np.testing.assert_array_equal(plain.mix(X, W, 4), perfect.mix(X, W, 4))


def test_gossip_over_lossy_links_still_reaches_consensus() -> None:
    """Row-stochastic rounds keep consensus (not the exact average); quantised gossip stays near the
    average, within the noise its steps inject."""
    top = complete(20)
    W = top.mixing("metropolis")
    X = np.random.default_rng(4).standard_normal((20, 3))
    mean = X.mean(axis=0)
    lossy = LocalCommunicator(20, topology=top, mixing=W, channel=Channel(drop_prob=0.3, seed=0))
    Y = lossy.mix(X, W, rounds=60)
    assert np.ptp(Y, axis=0).max() < 1e-10
    assert np.abs(Y[0] - mean).max() < 0.5
    quant = LocalCommunicator(20, topology=top, mixing=W, channel=Channel(compression="quantize", bits=12))
    Z = quant.mix(X, W, rounds=60)
    assert np.abs(Z - mean).max() < 0.01


# -- configuration and runs ---------------------------------------------------------------------------
SMALL = [
    "algorithm.name=dif-altgdmin",
    "topology.kind=ring",
    "topology.nodes=6",
    "problem.d=30",
    "problem.tasks=12",
    "problem.rank=2",
    "problem.samples=20",
    "rounds=20",
    "eval_every=10",
    "output.plots=false",
]


def test_runs_with_faults_are_reproducible_and_seeded() -> None:
    faults = ["faults.drop_prob=0.2", "faults.compression=quantize", "faults.bits=6"]
    a = run(None, [*SMALL, *faults], progress=False)
    b = run(None, [*SMALL, *faults], progress=False)
    c = run(None, [*SMALL, *faults, "seed=1"], progress=False)
    perfect = run(None, SMALL, progress=False)
    assert a.history.equals(b.history)
    assert not a.history["value"].equals(c.history["value"])
    assert a.summary["ledger"]["lost"] > 0 and perfect.summary["ledger"]["lost"] == 0
    assert a.summary["ledger"]["messages"] == perfect.summary["ledger"]["messages"]
    assert a.summary["ledger"]["bytes"] < perfect.summary["ledger"]["bytes"] / 2  # 6-bit values


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("faults.drop_prob=1.0", r"faults.drop_prob must be a number in \[0, 1\)"),
        ("faults.drop_prob=-0.1", r"faults.drop_prob must be >= 0"),
        ("faults.compression=zip", "faults.compression must be one of none, quantize, topk"),
        ("faults.bits=1", "faults.bits must be >= 2"),
        ("faults.bits=40", r"faults.bits must be an integer in \[2, 32\]"),
        ("faults.topk=0", r"faults.topk must be a fraction in \(0, 1\]"),
        ("faults.loss=0.1", "unknown field faults.loss"),
    ],
)
def test_bad_fault_settings_name_the_field(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        run(None, [*SMALL, override], progress=False)


def test_faults_on_a_server_only_algorithm_are_refused() -> None:
    with pytest.raises(ConfigError, match="applies to graph links .* altgdmin talks only to the server"):
        run(None, [*SMALL, "algorithm.name=altgdmin", "faults.drop_prob=0.1"], progress=False)
