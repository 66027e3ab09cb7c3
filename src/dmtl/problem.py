"""Problems: the tasks' data, the ground truth when known, and where each task lives.

Task data are stored *padded*: ``X[t, :n_t]`` holds task ``t``'s ``n_t`` training rows and the rest are
zeros. Zero rows leave least-squares fits and gradients of the squared loss unchanged, so padded
batched linear algebra is exact; losses that are not zero at zero use :attr:`Problem.mask`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

from dmtl.errors import DataError

__all__ = ["Placement", "Problem", "TaskBlock"]


@dataclass(frozen=True, eq=False)
class Placement:
    """Which node holds which task.

    Parameters
    ----------
    task_node : array of int, shape (n_tasks,)
        ``task_node[t]`` is the node holding task ``t``.
    n_nodes : int
        Number of nodes (a node may hold no task).
    """

    task_node: np.ndarray
    n_nodes: int

    def __post_init__(self) -> None:
        tn = np.asarray(self.task_node)
        if tn.ndim != 1 or not np.issubdtype(tn.dtype, np.integer):
            raise DataError(f"placement.task_node must be a 1-D integer array, got {tn.dtype} {tn.shape}")
        if self.n_nodes < 1:
            raise DataError(f"placement needs at least one node, got n_nodes={self.n_nodes}")
        if tn.size and (tn.min() < 0 or tn.max() >= self.n_nodes):
            raise DataError(
                f"placement.task_node must lie in 0..{self.n_nodes - 1}, got values in {tn.min()}..{tn.max()}"
            )
        object.__setattr__(self, "task_node", tn.astype(np.int64))

    @classmethod
    def one_per_node(cls, n_tasks: int) -> Placement:
        """Task ``t`` on node ``t``."""
        return cls(np.arange(n_tasks), n_tasks)

    @classmethod
    def even(cls, n_tasks: int, n_nodes: int, rng: np.random.Generator | None = None) -> Placement:
        """A random permutation of the tasks split into ``n_nodes`` near-equal groups.

        Without ``rng`` the tasks are split in order (tasks 0..K/L-1 on node 0, ...).
        """
        if n_nodes > n_tasks:
            raise DataError(
                f"an even placement of {n_tasks} tasks over {n_nodes} nodes would leave nodes empty; "
                f"use at most {n_tasks} nodes (topology.nodes) or more tasks"
            )
        order = np.arange(n_tasks) if rng is None else rng.permutation(n_tasks)
        task_node = np.empty(n_tasks, dtype=np.int64)
        task_node[order] = np.arange(n_tasks) * n_nodes // n_tasks
        return cls(task_node, n_nodes)

    @property
    def n_tasks(self) -> int:
        return len(self.task_node)

    @property
    def tasks_per_node(self) -> np.ndarray:
        return np.bincount(self.task_node, minlength=self.n_nodes)

    def tasks_of(self, start: int, stop: int) -> np.ndarray:
        """Tasks held by nodes ``start..stop-1``, ordered by node then task id."""
        order = np.argsort(self.task_node, kind="stable")
        sel = (self.task_node[order] >= start) & (self.task_node[order] < stop)
        return order[sel]


@dataclass(frozen=True, eq=False)
class TaskBlock:
    """The tasks of one block of nodes, as the algorithms see them.

    Attributes
    ----------
    tasks : (k,) global task ids, ordered by node.
    node : (k,) local index (0..n_local-1) of the node holding each task.
    X, y, n_samples : padded training data of these tasks.
    to_nodes : sparse (n_local, k) 0/1 matrix; ``to_nodes @ per_task`` sums tasks into their nodes.
    """

    tasks: np.ndarray
    node: np.ndarray
    X: np.ndarray
    y: np.ndarray
    n_samples: np.ndarray
    n_local: int
    X_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    n_test: np.ndarray | None = None
    to_nodes: sparse.csr_array = field(init=False)

    def __post_init__(self) -> None:
        k = len(self.tasks)
        agg = sparse.csr_array((np.ones(k), (self.node, np.arange(k))), shape=(self.n_local, k))
        object.__setattr__(self, "to_nodes", agg)

    @property
    def tasks_per_node(self) -> np.ndarray:
        return np.bincount(self.node, minlength=self.n_local)

    def sum_to_nodes(self, per_task: np.ndarray) -> np.ndarray:
        """Sum a per-task array over each node's tasks: shape (k, ...) -> (n_local, ...)."""
        flat = per_task.reshape(per_task.shape[0], -1)
        return np.asarray(self.to_nodes @ flat).reshape((self.n_local,) + per_task.shape[1:])


@dataclass(frozen=True, eq=False)
class Problem:
    """A multi-task learning problem placed on nodes.

    Parameters
    ----------
    X : array, shape (n_tasks, n_max, d)
        Padded training features; rows beyond each task's ``n_samples`` are padding and are set to
        zero (on a copy when they were not).
    y : array, shape (n_tasks, n_max)
        Padded training targets.
    placement : Placement
        Task-to-node placement.
    n_samples : array of int, shape (n_tasks,), optional
        Training samples per task (default: all ``n_max``).
    X_test, y_test, n_test : optional
        Test data in the same layout.
    truth : dict of arrays
        Ground truth when known (e.g. ``U``, ``B``, ``Theta`` for the low-rank model).
    name : str
        A label for reports.
    """

    X: np.ndarray
    y: np.ndarray
    placement: Placement
    n_samples: np.ndarray | None = None
    X_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    n_test: np.ndarray | None = None
    truth: dict[str, np.ndarray] = field(default_factory=dict)
    name: str = "problem"

    def __post_init__(self) -> None:
        X, y = np.asarray(self.X, dtype=float), np.asarray(self.y, dtype=float)
        if X.ndim != 3:
            raise DataError(f"problem X must have shape (tasks, samples, features), got {X.shape}")
        if y.shape != X.shape[:2]:
            raise DataError(f"problem y must have shape {X.shape[:2]} to match X {X.shape}, got {y.shape}")
        n = X.shape[1] if self.n_samples is None else self.n_samples
        n = np.broadcast_to(np.asarray(n, dtype=np.int64), (X.shape[0],)).copy()
        if np.any(n < 1) or np.any(n > X.shape[1]):
            raise DataError(f"problem n_samples must lie in 1..{X.shape[1]} for every task")
        _require_finite(X, "X")
        _require_finite(y, "y")
        X, y = _zero_padding(X, y, n)
        if self.placement.n_tasks != X.shape[0]:
            raise DataError(f"placement covers {self.placement.n_tasks} tasks but the data have {X.shape[0]}")
        object.__setattr__(self, "X", X)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "n_samples", n)
        if self.X_test is not None:
            Xt = np.asarray(self.X_test, dtype=float)
            yt = np.asarray(self.y_test, dtype=float)
            if Xt.ndim != 3 or Xt.shape[0] != X.shape[0] or Xt.shape[2] != X.shape[2]:
                raise DataError(
                    f"problem X_test must have shape ({X.shape[0]}, m, {X.shape[2]}), got {Xt.shape}"
                )
            if yt.shape != Xt.shape[:2]:
                raise DataError(f"problem y_test must have shape {Xt.shape[:2]}, got {yt.shape}")
            _require_finite(Xt, "X_test")
            _require_finite(yt, "y_test")
            nt = Xt.shape[1] if self.n_test is None else self.n_test
            nt = np.broadcast_to(np.asarray(nt, np.int64), (X.shape[0],)).copy()
            if np.any(nt < 0) or np.any(nt > Xt.shape[1]):
                raise DataError(f"problem n_test must lie in 0..{Xt.shape[1]} for every task")
            Xt, yt = _zero_padding(Xt, yt, nt)
            object.__setattr__(self, "X_test", Xt)
            object.__setattr__(self, "y_test", yt)
            object.__setattr__(self, "n_test", nt)

    @property
    def n_tasks(self) -> int:
        return self.X.shape[0]

    @property
    def n_features(self) -> int:
        return self.X.shape[2]

    @property
    def n_nodes(self) -> int:
        return self.placement.n_nodes

    @property
    def mask(self) -> np.ndarray:
        """Boolean (n_tasks, n_max): which padded rows are real samples."""
        return np.arange(self.X.shape[1])[None, :] < self.n_samples[:, None]

    def block(self, start: int, stop: int) -> TaskBlock:
        """The data of the tasks held by nodes ``start..stop-1`` (views where possible)."""
        tasks = self.placement.tasks_of(start, stop)
        return TaskBlock(
            tasks=tasks,
            node=self.placement.task_node[tasks] - start,
            X=self.X[tasks],
            y=self.y[tasks],
            n_samples=self.n_samples[tasks],
            n_local=stop - start,
            X_test=None if self.X_test is None else self.X_test[tasks],
            y_test=None if self.y_test is None else self.y_test[tasks],
            n_test=None if self.n_test is None else self.n_test[tasks],
        )


def _zero_padding(X: np.ndarray, y: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``X``, ``y`` with zeros beyond each task's count ``n`` (copies where they were not).

    Rows past ``n[t]`` are not data; some algorithms mask them, others (AltGDmin's products over all
    rows) rely on their being zero.
    """
    if np.all(n == X.shape[1]):
        return X, y
    pad = np.arange(X.shape[1])[None, :] >= n[:, None]
    if np.any(X[pad] != 0.0):
        X = X.copy()
        X[pad] = 0.0
    if np.any(y[pad] != 0.0):
        y = y.copy()
        y[pad] = 0.0
    return X, y


def _require_finite(a: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(a)):
        bad = np.argwhere(~np.isfinite(a))[0]
        raise DataError(
            f"problem {name} has non-finite values (first at index {tuple(int(i) for i in bad)}); "
            "remove or impute NaN/inf before building the problem"
        )
