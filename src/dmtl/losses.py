"""Losses shared by all algorithms: squared, hinge, logistic (binary) and softmax (multi-class).

Every loss works elementwise on *scores* (margins / predictions ``s = x^T w`` computed by the caller,
see :func:`scores`) and is vectorised over any leading batch axes (nodes, tasks, samples):

==============  ===========================  =======================  ==============================
name            value ``l(s, y)``            ``dl/ds``                labels
==============  ===========================  =======================  ==============================
``squared``     ``0.5 (s - y)^2``            ``s - y``                real numbers
``hinge``       ``max(0, 1 - y s)``          ``-y [y s < 1]``         ``{-1, +1}``
``logistic``    ``log(1 + exp(-y s))``       ``-y sigmoid(-y s)``     ``{-1, +1}``
``softmax``     ``logsumexp(s) - s_y``       ``softmax(s) - e_y``     integers ``0 .. C-1``
==============  ===========================  =======================  ==============================

For ``softmax`` the scores carry a trailing class axis: ``scores`` has shape ``(..., C)`` and ``y`` has
shape ``(...)``; ``value`` returns shape ``(...)`` and ``grad`` shape ``(..., C)``. The hinge
sub-gradient at the kink ``y s = 1`` is taken as 0. Logistic and softmax are evaluated stably
(``logaddexp`` and a max-shifted log-sum-exp), so ``|s| = 1e3`` gives finite values and gradients.

Padded task data (``Problem.X`` of shape ``(K, n_max, d)`` with ``n_samples``) are averaged over real
samples only with :func:`masked_mean`.

References
----------
.. [1] S.-S. Shalev-Shwartz and T. Zhang, "Stochastic dual coordinate ascent methods for regularized
   loss minimization", JMLR 14, 2013 (hinge, squared and logistic losses and their conjugates).
"""

from __future__ import annotations

from typing import ClassVar, Protocol, runtime_checkable

import numpy as np

from dmtl.errors import ConfigError, DataError

__all__ = [
    "LOSSES",
    "HingeLoss",
    "LogisticLoss",
    "Loss",
    "SoftmaxLoss",
    "SquaredLoss",
    "get_loss",
    "masked_mean",
    "sample_mask",
    "scores",
]


@runtime_checkable
class Loss(Protocol):
    """A loss ``l(s, y)`` of a score ``s`` and a label ``y``, vectorised over leading axes."""

    name: str
    kind: str  # "regression" | "binary" | "multiclass"

    def value(self, scores: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Elementwise loss, same shape as ``y``."""
        ...

    def grad(self, scores: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Derivative of the loss with respect to the score, same shape as ``scores``."""
        ...

    def predict(self, scores: np.ndarray) -> np.ndarray:
        """Predicted labels in the loss's label coding."""
        ...

    def check_labels(self, y: np.ndarray, where: str) -> None:
        """Raise :class:`DataError` naming ``where`` if ``y`` is not in the loss's label coding."""
        ...


def _finite(y: np.ndarray, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.size and not np.issubdtype(y.dtype, np.number) and y.dtype != bool:
        raise DataError(f"{where}: labels must be numeric, got dtype {y.dtype}")
    if y.size and not np.all(np.isfinite(y)):
        raise DataError(f"{where}: labels contain NaN or infinite values; clean the data")
    return y


class SquaredLoss:
    """Squared loss ``0.5 (s - y)^2`` for regression; prediction is the score itself."""

    name: ClassVar[str] = "squared"
    kind: ClassVar[str] = "regression"

    def value(self, scores: np.ndarray, y: np.ndarray) -> np.ndarray:
        r = np.asarray(scores, dtype=float) - y
        return 0.5 * r * r

    def grad(self, scores: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.asarray(scores, dtype=float) - y

    def predict(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores, dtype=float)

    def check_labels(self, y: np.ndarray, where: str) -> None:
        _finite(y, where)


class _BinaryLoss:
    """Common part of the binary margin losses: labels in ``{-1, +1}``, prediction ``sign(s)``."""

    kind: ClassVar[str] = "binary"
    name: ClassVar[str] = "binary"

    def predict(self, scores: np.ndarray) -> np.ndarray:
        return np.where(np.asarray(scores) >= 0, 1.0, -1.0)

    def check_labels(self, y: np.ndarray, where: str) -> None:
        y = _finite(y, where)
        if y.size and not np.all((y == 1) | (y == -1)):
            bad = np.unique(y[(y != 1) & (y != -1)])[:5]
            raise DataError(
                f"{where}: the {self.name} loss needs labels in {{-1, +1}}, found {bad.tolist()}; "
                "recode the labels (e.g. y -> 2 y - 1 for {0, 1}) or choose a loss matching the data"
            )


class HingeLoss(_BinaryLoss):
    """Hinge loss ``max(0, 1 - y s)``, sub-gradient ``-y`` where ``y s < 1`` and 0 elsewhere."""

    name: ClassVar[str] = "hinge"

    def value(self, scores: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.maximum(0.0, 1.0 - y * np.asarray(scores, dtype=float))

    def grad(self, scores: np.ndarray, y: np.ndarray) -> np.ndarray:
        m = y * np.asarray(scores, dtype=float)
        return np.where(m < 1.0, -np.asarray(y, dtype=float), 0.0) * np.ones_like(m)


class LogisticLoss(_BinaryLoss):
    """Logistic loss ``log(1 + exp(-y s))`` computed as ``logaddexp(0, -y s)``."""

    name: ClassVar[str] = "logistic"

    def value(self, scores: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.logaddexp(0.0, -y * np.asarray(scores, dtype=float))

    def grad(self, scores: np.ndarray, y: np.ndarray) -> np.ndarray:
        m = y * np.asarray(scores, dtype=float)
        # sigmoid(-m) = exp(-logaddexp(0, m)), stable for |m| large
        return -y * np.exp(-np.logaddexp(0.0, m))


class SoftmaxLoss:
    """Multinomial cross-entropy ``logsumexp(s) - s_y`` over a trailing class axis of the scores."""

    name: ClassVar[str] = "softmax"
    kind: ClassVar[str] = "multiclass"

    @staticmethod
    def _log_softmax(scores: np.ndarray) -> np.ndarray:
        s = np.asarray(scores, dtype=float)
        shift = s - s.max(axis=-1, keepdims=True)
        return shift - np.log(np.exp(shift).sum(axis=-1, keepdims=True))

    @staticmethod
    def _index(y: np.ndarray, n_classes: int) -> np.ndarray:
        yi = np.asarray(y).astype(np.intp)
        if yi.size and (yi.min() < 0 or yi.max() >= n_classes):
            raise DataError(
                f"softmax loss: labels must lie in 0..{n_classes - 1} for {n_classes} score columns"
            )
        return yi

    def value(self, scores: np.ndarray, y: np.ndarray) -> np.ndarray:
        logp = self._log_softmax(scores)
        yi = self._index(y, logp.shape[-1])
        return -np.take_along_axis(logp, yi[..., None], axis=-1)[..., 0]

    def grad(self, scores: np.ndarray, y: np.ndarray) -> np.ndarray:
        p = np.exp(self._log_softmax(scores))
        yi = self._index(y, p.shape[-1])
        onehot = np.arange(p.shape[-1]) == yi[..., None]
        return p - onehot

    def predict(self, scores: np.ndarray) -> np.ndarray:
        return np.argmax(np.asarray(scores), axis=-1)

    def check_labels(self, y: np.ndarray, where: str) -> None:
        y = _finite(y, where)
        if y.size and (np.any(y < 0) or np.any(y != np.round(y))):
            raise DataError(
                f"{where}: the softmax loss needs integer class labels 0..C-1, "
                f"found values such as {np.unique(y)[:5].tolist()}; recode the labels"
            )


LOSSES: dict[str, Loss] = {
    "squared": SquaredLoss(),
    "hinge": HingeLoss(),
    "logistic": LogisticLoss(),
    "softmax": SoftmaxLoss(),
}


def get_loss(name: str | Loss) -> Loss:
    """Return the loss registered under ``name`` (a :class:`Loss` instance is returned unchanged).

    Raises
    ------
    ConfigError
        If ``name`` is not a registered loss; the message lists the known names.
    """
    if not isinstance(name, str):
        return name
    try:
        return LOSSES[name]
    except KeyError:
        raise ConfigError(f"unknown loss {name!r}; choose one of {', '.join(sorted(LOSSES))}") from None


def scores(X: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Batched scores ``s[..., i] = X[..., i, :] @ w[..., :]`` (``w`` may carry a trailing class axis).

    ``X`` has shape ``(..., n, d)`` and ``w`` shape ``(..., d)`` (one model per batch entry) or
    ``(..., d, C)`` for multi-class; the result has shape ``(..., n)`` or ``(..., n, C)``.
    """
    X = np.asarray(X)
    w = np.asarray(w)
    if w.ndim == X.ndim - 1:
        return np.einsum("...nd,...d->...n", X, w)
    return X @ w


def sample_mask(n_samples: np.ndarray, n_max: int) -> np.ndarray:
    """Boolean mask ``(K, n_max)``, True on the first ``n_samples[k]`` rows of task k."""
    return np.arange(n_max)[None, :] < np.asarray(n_samples)[:, None]


def masked_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of ``values`` over the last axis restricted to ``mask`` (real samples of padded tasks).

    Parameters
    ----------
    values : ndarray (..., n_max)
        Per-sample values; padded entries may hold anything finite or not (they are ignored).
    mask : ndarray (..., n_max) of bool, or (...) of ints
        True on real samples; an integer array is read as per-task sample counts.

    Returns
    -------
    ndarray (...)
        ``sum_i mask_i v_i / sum_i mask_i``; NaN for a task with no samples.
    """
    values = np.asarray(values, dtype=float)
    mask = np.asarray(mask)
    if mask.dtype != bool:
        mask = np.arange(values.shape[-1]) < mask[..., None]
    mask = np.broadcast_to(mask, values.shape)
    total = np.where(mask, values, 0.0).sum(axis=-1)
    count = mask.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count
