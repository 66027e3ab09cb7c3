r"""Online classification metrics: cumulative error rates, precision, recall and F1.

In online learning every example is first predicted, then revealed. The headline metric is the
*cumulative* error rate of task k after t rounds,

.. math::  e_k(t) = \frac{1}{t} \sum_{s \le t} 1\{\hat y_{k,s} \ne y_{k,s}\},

and its mean over tasks. Cumulative precision, recall and F1 count the positive class (label +1) over
all predictions made so far:

``precision = TP / (TP + FP)``, ``recall = TP / (TP + FN)``, ``F1 = 2 P R / (P + R)``, each 0 when its
denominator is 0. Task-level values are averaged over tasks (macro average), as in the reference code
of the online ADMM paper. (That code passes ``(y_pred, y)`` to a function declared ``(y, y_pred)``, so
its "precision" is the recall and vice versa; F1 is symmetric and unaffected. We use the standard
definitions.)

The counters are kept incrementally by the algorithms in an :class:`OnlineCounts` (a few vectorised
additions per round), and turned into metrics by :func:`online_metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "OnlineCounts",
    "ScoreLog",
    "summary_table",
    "online_metrics",
    "cumulative_error_rates",
    "cumulative_mistakes",
    "precision_recall_f1",
    "PER_TASK_LIMIT",
]

PER_TASK_LIMIT = 30
"""Per-task error rates are reported as ``error_rate_task{k}`` when there are at most this many tasks."""


@dataclass
class OnlineCounts:
    """Cumulative confusion counts of an online learner, per row (a task, or a (node, task) pair).

    Attributes
    ----------
    table : float array (..., 4)
        Counts of (prediction, label) = (-1, -1), (-1, +1), (+1, -1), (+1, +1), i.e. TN, FN, FP, TP:
        column ``2 [pred > 0] + [y > 0]``. One fancy-indexed increment per round.
    """

    table: np.ndarray
    _rows: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def zeros(cls, *shape: int) -> OnlineCounts:
        return cls(np.zeros((*shape, 4)))

    def add(self, scores: np.ndarray, y: np.ndarray, rows: tuple[np.ndarray, ...] | None = None) -> None:
        """Count one prediction ``sign(score)`` (0 -> +1) per row against labels ``y`` in {-1, +1}.

        ``rows``: where each prediction goes (an advanced index into ``table``'s leading axes with
        distinct entries); default one prediction for every row of a 1-D table.
        """
        code = 2 * (scores >= 0.0) + (y > 0.0)
        if rows is None:
            if self._rows is None or len(self._rows) != len(code):
                self._rows = np.arange(len(code))
            self.table[self._rows, code] += 1.0
        else:
            self.table[(*rows, code)] += 1.0

    def summary(self) -> np.ndarray:
        """Columns predictions, mistakes, predicted positives, true positives, TP (shape (..., 5))."""
        return summary_table(self.table)


class ScoreLog:
    """Scores and labels of k rows, one per round, folded into confusion counts in chunks.

    Cheaper per round than :meth:`OnlineCounts.add` (two row copies instead of a handful of
    operations); the counts are brought up to date when :attr:`table` is read.

    Parameters
    ----------
    rows : int
        Predictions per round (e.g. the block's tasks).
    chunk : int, optional
        Rounds buffered before folding (default: up to 4096, at most ~1M buffered scores).
    """

    def __init__(self, rows: int, chunk: int | None = None) -> None:
        chunk = chunk or max(16, min(4096, (1 << 20) // max(rows, 1)))
        self.counts = OnlineCounts.zeros(rows)
        self.scores = np.empty((chunk, rows))
        self.labels = np.empty((chunk, rows))
        self.n = 0

    def add(self, scores: np.ndarray, y: np.ndarray) -> None:
        """Log one round: scores (prediction ``sign``, 0 -> +1) and labels in {-1, +1}."""
        i = self.n
        self.scores[i] = scores
        self.labels[i] = y
        self.n = i + 1
        if self.n == len(self.scores):
            self.fold()

    def fold(self) -> None:
        """Add the buffered rounds to the counts."""
        n, k = self.n, self.scores.shape[1]
        if n == 0:
            return
        code = 2 * (self.scores[:n] >= 0.0) + (self.labels[:n] > 0.0)
        idx = (4 * np.arange(k))[None, :] + code
        self.counts.table += np.bincount(idx.ravel(), minlength=4 * k).reshape(k, 4)
        self.n = 0

    @property
    def table(self) -> np.ndarray:
        """Confusion counts (rows, 4), up to date."""
        self.fold()
        return self.counts.table


def summary_table(confusion: np.ndarray) -> np.ndarray:
    """(..., 4) confusion counts (TN, FN, FP, TP) -> (..., 5) predictions, mistakes, predicted
    positives, true positives, TP."""
    tn, fn, fp, tp = (confusion[..., i] for i in range(4))
    return np.stack([tn + fn + fp + tp, fn + fp, fp + tp, fn + tp, tp], axis=-1)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def precision_recall_f1(table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 of each row of a summary table (..., 5); 0 where undefined."""
    pred_pos, true_pos, tp = table[..., 2], table[..., 3], table[..., 4]
    precision = _safe_div(tp, pred_pos)
    recall = _safe_div(tp, true_pos)
    f1 = _safe_div(2.0 * precision * recall, precision + recall)
    return precision, recall, f1


def online_metrics(per_task: np.ndarray, per_task_limit: int = PER_TASK_LIMIT) -> dict[str, float]:
    """Metrics from per-task cumulative counts: (K, 4) confusion counts or a (K, 5) summary table.

    Returns
    -------
    dict
        ``error_rate``: mean over tasks of the per-task cumulative error rates (tasks that made no
        prediction yet are left out); ``error_rate_task{k}`` for K <= ``per_task_limit``;
        ``error_rate_pooled``: all mistakes over all predictions; ``precision``, ``recall``, ``f1``
        (macro averages over tasks); ``mistakes`` (total) and ``predictions`` (total).
    """
    per_task = np.asarray(per_task, dtype=float)
    if per_task.shape[-1] == 4:
        per_task = summary_table(per_task)
    n, mistakes = per_task[:, 0], per_task[:, 1]
    rates = _safe_div(mistakes, n)
    seen = n > 0
    precision, recall, f1 = precision_recall_f1(per_task)
    out: dict[str, float] = {
        "error_rate": float(rates[seen].mean()) if seen.any() else 0.0,
        "error_rate_pooled": float(mistakes.sum() / n.sum()) if n.sum() > 0 else 0.0,
        "precision": float(precision[seen].mean()) if seen.any() else 0.0,
        "recall": float(recall[seen].mean()) if seen.any() else 0.0,
        "f1": float(f1[seen].mean()) if seen.any() else 0.0,
        "mistakes": float(mistakes.sum()),
        "predictions": float(n.sum()),
    }
    if len(per_task) <= per_task_limit:
        for k, r in enumerate(rates):
            out[f"error_rate_task{k}"] = float(r)
    return out


def cumulative_mistakes(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Cumulative mistake counts along the last axis (rounds)."""
    return np.cumsum(np.asarray(pred) != np.asarray(y), axis=-1)


def cumulative_error_rates(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Cumulative error rates ``e(t)`` along the last axis (rounds), e.g. (K, T) -> (K, T)."""
    c = cumulative_mistakes(y, pred)
    return c / np.arange(1, c.shape[-1] + 1)
