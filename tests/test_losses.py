"""Tests of dmtl.losses: values, gradients vs finite differences, stability, label checks."""

from __future__ import annotations

import numpy as np
import pytest

from dmtl.errors import ConfigError, DataError
from dmtl.losses import (
    LOSSES,
    HingeLoss,
    LogisticLoss,
    SoftmaxLoss,
    SquaredLoss,
    get_loss,
    masked_mean,
    scores,
)


def _labels(loss, rng, shape):
    if loss.kind == "regression":
        return rng.normal(size=shape)
    return rng.choice([-1.0, 1.0], size=shape)


@pytest.mark.parametrize("name", ["squared", "logistic", "hinge"])
def test_scalar_losses_gradient_matches_finite_differences(name):
    rng = np.random.default_rng(0)
    loss = get_loss(name)
    s = rng.normal(size=(3, 4, 5)) * 2
    y = _labels(loss, rng, s.shape)
    if name == "hinge":  # stay away from the kink
        s = np.where(np.abs(1 - y * s) < 1e-3, s + 0.1, s)
    h = 1e-6
    fd = (loss.value(s + h, y) - loss.value(s - h, y)) / (2 * h)
    np.testing.assert_allclose(loss.grad(s, y), fd, atol=1e-6)
    assert loss.value(s, y).shape == y.shape


def test_softmax_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    loss = SoftmaxLoss()
    s = rng.normal(size=(2, 6, 4))
    y = rng.integers(0, 4, size=(2, 6))
    g = loss.grad(s, y)
    assert g.shape == s.shape
    h = 1e-6
    for c in range(4):
        e = np.zeros(4)
        e[c] = h
        fd = (loss.value(s + e, y) - loss.value(s - e, y)) / (2 * h)
        np.testing.assert_allclose(g[..., c], fd, atol=1e-6)
    np.testing.assert_allclose(g.sum(-1), 0, atol=1e-12)


def test_known_values():
    y = np.array([1.0, -1.0, 1.0])
    s = np.array([2.0, 0.5, 0.0])
    np.testing.assert_allclose(HingeLoss().value(s, y), [0.0, 1.5, 1.0])
    np.testing.assert_allclose(LogisticLoss().value(s, y), np.log1p(np.exp(-y * s)))
    np.testing.assert_allclose(SquaredLoss().value(s, np.array([1.0, 1.0, 1.0])), [0.5, 0.125, 0.5])
    np.testing.assert_allclose(SoftmaxLoss().value(np.zeros((1, 3)), np.array([2])), [np.log(3)])


@pytest.mark.parametrize("name", ["logistic", "hinge", "squared"])
def test_stability_at_large_scores(name):
    loss = get_loss(name)
    s = np.array([1e3, -1e3, 1e3, -1e3])
    y = np.array([1.0, 1.0, -1.0, -1.0])
    v, g = loss.value(s, y), loss.grad(s, y)
    assert np.all(np.isfinite(v)) and np.all(np.isfinite(g))
    if name == "logistic":
        np.testing.assert_allclose(v, [0.0, 1e3, 1e3, 0.0], atol=1e-12)
        np.testing.assert_allclose(g, [0.0, -1.0, 1.0, 0.0], atol=1e-12)


def test_softmax_stable_at_large_scores():
    loss = SoftmaxLoss()
    s = np.array([[1e3, -1e3, 0.0], [-1e3, 1e3, 1e3]])
    v = loss.value(s, np.array([1, 0]))
    g = loss.grad(s, np.array([1, 0]))
    np.testing.assert_allclose(v, [2e3, 2e3 + np.log(2)], rtol=1e-12)
    assert np.all(np.isfinite(g))
    np.testing.assert_array_equal(loss.predict(s), [0, 1])


def test_predict_codings():
    np.testing.assert_array_equal(HingeLoss().predict(np.array([-0.1, 0.0, 3])), [-1, 1, 1])
    np.testing.assert_array_equal(SquaredLoss().predict(np.array([0.3])), [0.3])


def test_label_checks_name_the_input():
    with pytest.raises(DataError, match=r"task 3.*\{-1, \+1\}"):
        HingeLoss().check_labels(np.array([0.0, 1.0]), "task 3")
    with pytest.raises(DataError, match="landmine"):
        LogisticLoss().check_labels(np.array([2.0]), "landmine")
    with pytest.raises(DataError, match="integer class labels"):
        SoftmaxLoss().check_labels(np.array([0.5, 1]), "y")
    with pytest.raises(DataError, match="NaN"):
        SquaredLoss().check_labels(np.array([np.nan]), "y")
    HingeLoss().check_labels(np.array([-1, 1, 1]), "ok")
    SoftmaxLoss().check_labels(np.array([0, 2, 1]), "ok")


def test_get_loss_unknown_lists_names():
    with pytest.raises(ConfigError, match="hinge.*logistic.*softmax.*squared"):
        get_loss("huber")
    assert get_loss("hinge") is LOSSES["hinge"]


def test_masked_mean_and_scores():
    v = np.array([[1.0, 3.0, np.nan], [2.0, 4.0, 6.0]])
    np.testing.assert_allclose(masked_mean(v, np.array([2, 3])), [2.0, 4.0])
    mask = np.array([[True, True, False], [True, True, True]])
    np.testing.assert_allclose(masked_mean(v, mask), [2.0, 4.0])
    X = np.arange(24.0).reshape(2, 3, 4)
    w = np.ones((2, 4))
    np.testing.assert_allclose(scores(X, w), X.sum(-1))
    assert scores(X, np.ones((2, 4, 5))).shape == (2, 3, 5)
