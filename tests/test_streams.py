"""Tests of dmtl.data.streams: online multi-task streams, their checks, generator and problem kinds."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from datasets_available import needs

from dmtl.data import build
from dmtl.data import datasets as ds
from dmtl.data.streams import (
    ArrayFeed,
    IteratorStream,
    check_labels,
    dataset_stream,
    fourier_features,
    fourier_params,
    fourier_stream,
    from_arrays,
    hindsight_similarity,
    l2_normalize,
    live_problem,
    stream_feed,
    stream_placement,
)
from dmtl.errors import ConfigError, DataError
from dmtl.seeding import RunStreams

needs_synthetic = needs("omtl_synthetic")
needs_landmine = needs("landmine")
needs_spam = needs("spam")


def _toy(K: int = 3, T: int = 7, d: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(K, T, d)), np.where(rng.random((K, T)) < 0.5, -1.0, 1.0)


# --------------------------------------------------------------------------------------------------
# from_arrays and its checks
# --------------------------------------------------------------------------------------------------


def test_from_arrays_layout_and_placement():
    X, y = _toy()
    p = from_arrays(X, y, name="toy")
    assert p.X.shape == (3, 7, 4) and p.y.shape == (3, 7)
    np.testing.assert_array_equal(p.placement.task_node, [0, 1, 2])
    assert from_arrays(list(X), list(y)).X.shape == (3, 7, 4)  # per-task lists
    np.testing.assert_array_equal(stream_placement(6, 4).task_node, [0, 0, 1, 2, 2, 3])
    wide = stream_placement(3, 10)
    np.testing.assert_array_equal(wide.task_node, [0, 1, 2])
    assert wide.n_nodes == 10
    short = from_arrays(X, y, rounds=5, normalize=True)
    assert short.X.shape == (3, 5, 4)
    np.testing.assert_allclose(np.linalg.norm(short.X, axis=2), 1.0)


def test_zero_one_labels_are_converted_with_a_note():
    X, y = _toy()
    with pytest.warns(UserWarning, match=r"\{0,1\} mapped"):
        p = from_arrays(X, (y + 1) / 2, name="toy")
    np.testing.assert_array_equal(p.y, y)
    assert "{0,1}->{-1,+1}" in p.name
    labels, converted = check_labels(np.array([0, 1, 1]))
    assert converted and labels.tolist() == [-1.0, 1.0, 1.0]


@pytest.mark.parametrize("bad", [[-1, 0, 1], [0, 2], [1, 3], [0.5, 1]])
def test_labels_outside_pm1_or_01_are_rejected(bad):
    X = np.zeros((1, len(bad), 2))
    with pytest.raises(DataError, match=r"must be in \{-1,\+1\}"):
        from_arrays(X, np.array([bad], dtype=float))


def test_unequal_stream_lengths_are_rejected():
    X, y = _toy(K=3, T=6)
    xs = [X[0], X[1], X[2, :4]]
    ys = [y[0], y[1], y[2, :4]]
    with pytest.raises(DataError, match="unequal length.*task 2 has 4"):
        from_arrays(xs, ys)


def test_dimension_mismatch_between_tasks_is_rejected():
    X, y = _toy(K=3, T=6, d=4)
    xs = [X[0], X[1][:, :3], X[2]]
    with pytest.raises(DataError, match="dimension mismatch.*task 1 has 3 features"):
        from_arrays(xs, list(y))


def test_other_bad_arrays():
    X, y = _toy()
    bad = X.copy()
    bad[1, 2, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        from_arrays(bad, y)
    with pytest.raises(DataError, match="examples but labels"):
        from_arrays(list(X), [y[0], y[1], y[2, :3]])
    with pytest.raises(DataError, match="rounds=9"):
        from_arrays(X, y, rounds=9)
    with pytest.raises(DataError, match="at least one task"):
        from_arrays([], [])


def test_array_feed_rounds_and_exhaustion():
    X, y = _toy(K=3, T=5)
    feed = ArrayFeed(X, y, np.array([2, 0]))
    x, lab = feed.get(3)
    np.testing.assert_array_equal(x, X[[2, 0], 3])
    np.testing.assert_array_equal(lab, y[[2, 0], 3])
    with pytest.raises(DataError, match="has 5 rounds.*set rounds <= 5"):
        feed.get(5)
    # a padded problem whose tasks have different lengths is refused by the feed
    from dmtl.problem import Placement, Problem

    p = Problem(X, y, Placement.one_per_node(3), n_samples=np.array([5, 5, 3]))
    with pytest.raises(DataError, match="unequal length"):
        stream_feed(p, np.arange(3))


# --------------------------------------------------------------------------------------------------
# The reference generator
# --------------------------------------------------------------------------------------------------


def test_fourier_stream_is_seeded_and_follows_the_reference_rules():
    a = fourier_stream(5, 400, normalize=False, rng=3)
    b = fourier_stream(5, 400, normalize=False, rng=3)
    c = fourier_stream(5, 400, normalize=False, rng=4)
    np.testing.assert_array_equal(a.xs, b.xs)
    assert not np.array_equal(a.xs, c.xs)
    np.testing.assert_array_equal(a.a[0], [0, 1, 1, 1, 1])
    assert a.phi[0] == 0.0
    x1, x2 = a.xs[..., 0], a.xs[..., 1]
    assert np.all(np.abs(a.xs[..., :2]) < 3)
    np.testing.assert_allclose(a.xs, fourier_features(np.stack([x1, x2], -1)))
    # labels: recompute y = sign(x'_2 - h(x'_1 - a0)) with x' = x R(phi)
    k = 3
    c_, s_ = np.cos(a.phi[k]), np.sin(a.phi[k])
    r1, r2 = x1[k] * c_ - x2[k] * s_, x1[k] * s_ + x2[k] * c_
    z = r1 - a.a[k, 0]
    h = a.a[k, 1] * np.sin(z) + a.a[k, 2] * np.sin(2 * z) + a.a[k, 3] * np.cos(z) + a.a[k, 4] * np.cos(2 * z)
    np.testing.assert_array_equal(a.ys[k], np.where(r2 - h >= 0, 1.0, -1.0))
    n = fourier_stream(5, 50, normalize=True, rng=3)
    np.testing.assert_allclose(np.linalg.norm(n.xs, axis=2), 1.0)
    # the random walk of the task parameters
    a_, phi = fourier_params(200, np.random.default_rng(0), sigma=0.1)
    assert abs(np.std(np.diff(a_, axis=0)) - 0.1) < 0.01
    assert abs(np.std(np.diff(phi)) - 0.1 * np.pi / 4) < 0.01
    with pytest.raises(ConfigError):
        fourier_stream(0, 10)


@needs_synthetic
def test_the_reference_file_uses_the_generator_feature_map():
    s = ds.load_stream()
    x = s.xs[:, :200]
    np.testing.assert_allclose(x, fourier_features(x[..., :2]), rtol=1e-12, atol=1e-12)
    assert np.all(np.abs(x[..., :2]) <= 3)


def test_hindsight_similarity_of_related_tasks():
    s = fourier_stream(4, 3000, normalize=False, rng=0)
    S = hindsight_similarity(s.xs, s.ys)
    np.testing.assert_allclose(np.diag(S), 1.0)
    np.testing.assert_allclose(S, S.T)
    assert S[0, 1] > 0.5  # neighbouring tasks of the random walk are similar


# --------------------------------------------------------------------------------------------------
# Data sets as streams
# --------------------------------------------------------------------------------------------------


@needs_landmine
def test_landmine_stream():
    a = dataset_stream("landmine", 0)
    assert a.xs.shape == (29, 445, 10) and a.ys.shape == (29, 445)
    np.testing.assert_array_equal(a.xs[..., -1], 1.0)  # bias column
    assert set(np.unique(a.ys)) == {-1.0, 1.0}
    b = dataset_stream("landmine", 1)
    assert not np.array_equal(a.ys, b.ys)  # another shuffle
    full = dataset_stream("landmine", 0, length="cycle", bias=False, standardize=False)
    assert full.xs.shape == (29, 690, 9)
    # every sample of a task appears in its stream (cycling reuses a task's samples)
    raw = ds.load("landmine")
    rows = {tuple(r) for r in raw.X[0]}
    assert {tuple(r) for r in full.xs[0]} == rows
    with pytest.raises(DataError, match="'min' or 'cycle'"):
        dataset_stream("landmine", 0, length="max")


@needs_spam
def test_spam_needs_max_features():
    with pytest.raises(DataError, match="max_features"):
        dataset_stream("spam", 0)
    s = dataset_stream("spam", 0, max_features=50)
    assert s.xs.shape == (15, 400, 51)


def test_regression_data_are_not_streams():
    regression = ds.MultiTaskDataset("toy", [np.ones((3, 2))], [np.array([0.5, 1.5, 2.0])])
    with pytest.raises(DataError, match="regression"):
        dataset_stream(regression, 0)


# --------------------------------------------------------------------------------------------------
# Live sources
# --------------------------------------------------------------------------------------------------


def _sources(X: np.ndarray, y: np.ndarray) -> list:
    return [zip(X[k], y[k], strict=True) for k in range(len(X))]


def test_iterator_stream_take_and_rounds():
    X, y = _toy(K=3, T=6)
    s = IteratorStream(_sources(X, y))
    first = s.next_round()
    np.testing.assert_array_equal(first[0], X[:, 0])
    rest = s.take()
    np.testing.assert_array_equal(rest.xs, X[:, 1:])
    np.testing.assert_array_equal(rest.ys, y[:, 1:])
    s01 = IteratorStream(_sources(X, (y + 1) / 2), labels="01")
    np.testing.assert_array_equal(s01.take(4).ys, y[:, :4])


def test_iterator_stream_errors():
    X, y = _toy(K=3, T=6)
    short = [zip(X[0], y[0], strict=True), zip(X[1], y[1], strict=True), zip(X[2, :4], y[2, :4], strict=True)]
    with pytest.raises(DataError, match=r"unequal length: task\(s\) \[2\] ended after 4 rounds"):
        IteratorStream(short).take()
    with pytest.raises(DataError, match="ended after 6 rounds"):
        IteratorStream(_sources(X, y)).take(7)
    wide = [zip(X[0], y[0], strict=True), iter([(np.ones(5), 1.0)])]
    with pytest.raises(DataError, match="dimension mismatch: task 1 .* 5 features"):
        IteratorStream(wide).next_round()
    with pytest.raises(DataError, match="label 0.0 .* expected -1 or \\+1"):
        IteratorStream([iter([(np.ones(2), 0.0)])]).next_round()
    with pytest.raises(DataError, match="expected 0 or 1"):
        IteratorStream([iter([(np.ones(2), -1.0)])], labels="01").next_round()
    with pytest.raises(DataError, match="non-finite"):
        IteratorStream([iter([(np.array([np.nan, 1.0]), 1.0)])]).next_round()


def test_live_problem_peeks_the_first_round():
    X, y = _toy(K=3, T=6)
    p = live_problem(_sources(X, y))
    assert p.n_tasks == 3 and p.n_features == 4
    feed = stream_feed(p, np.array([0, 1, 2]))
    for t in range(6):
        x, lab = feed.get(t)
        np.testing.assert_array_equal(x, X[:, t])
        np.testing.assert_array_equal(lab, y[:, t])
    with pytest.raises(DataError, match="ended after 6"):
        feed.get(6)


# --------------------------------------------------------------------------------------------------
# Problem kinds
# --------------------------------------------------------------------------------------------------


def test_problem_kinds():
    p = build({"kind": "fourier_stream", "tasks": 4, "rounds": 30}, 4, RunStreams(1))
    assert p.X.shape == (4, 30, 9) and "a" in p.truth
    np.testing.assert_allclose(np.linalg.norm(p.X, axis=2), 1.0)
    q = build({"kind": "fourier_stream", "tasks": 4, "rounds": 30}, 4, RunStreams(1))
    np.testing.assert_array_equal(p.X, q.X)
    with pytest.raises(ConfigError, match="problem.rounds"):
        build({"kind": "omtl_synthetic", "rounds": -1}, 5, RunStreams(0))


@needs_synthetic
def test_omtl_synthetic_kind():
    p = build({"kind": "omtl_synthetic", "rounds": 100}, 5, RunStreams(0))
    s = ds.load_stream()
    np.testing.assert_array_equal(p.X, s.xs[:, :100])
    assert p.placement.n_nodes == 5


@needs_landmine
def test_dataset_stream_kind():
    p = build({"kind": "dataset_stream", "dataset": "landmine", "rounds": 50}, 29, RunStreams(0))
    assert p.X.shape == (29, 50, 10)


def test_l2_normalize_keeps_zero_rows():
    X = np.array([[3.0, 4.0], [0.0, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(l2_normalize(X), [[0.6, 0.8], [0.0, 0.0]])
