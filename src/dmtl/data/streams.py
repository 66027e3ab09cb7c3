r"""Online multi-task streams: every task receives one example per round.

Representation
--------------
A stream of K tasks over T rounds is a :class:`dmtl.problem.Problem` with ``X`` of shape (K, T, d)
and ``y`` of shape (K, T) in {-1, +1}: at round t (0-based) task k reveals ``X[k, t]``, the learner
predicts, then ``y[k, t]`` is revealed. Online algorithms read the data through a *feed*
(:func:`stream_feed`): an :class:`ArrayFeed` over the problem's arrays, or an :class:`IteratorFeed`
that pulls examples from live sources (one iterator per task) as the rounds go (:func:`live_problem`).

Sources
-------
* :func:`from_arrays`: arrays or per-task lists, e.g. ``omtl_synthetic.npz`` loaded with
  :func:`dmtl.data.datasets.load_stream` (problem kind ``omtl_synthetic``);
* :func:`fourier_stream`: the reference generator of the online ADMM paper (kind ``fourier_stream``);
* :func:`dataset_stream`: any binary multi-task data set of :mod:`dmtl.data.datasets`, every task's
  samples shuffled into a stream (kind ``dataset_stream``);
* :class:`IteratorStream` / :func:`live_problem`: a pass-through for real-time sources.

Checks (:class:`dmtl.errors.DataError`, one line naming the input and the fix): labels must be in
{-1, +1}; {0, 1} labels are mapped by ``y -> 2 y - 1`` with a warning and a note in the problem's
name; any other label is an error. All tasks' streams must have the same length and the same feature
dimension.

Reference generator (ALGORITHMS.md section 2)
---------------------------------------------
``a_0 = [0, 1, 1, 1, 1]``, ``a_k = a_{k-1} + N(0, sigma^2)`` per entry; ``phi_0 = 0``,
``phi_k = phi_{k-1} + N(0, (sigma pi / 4)^2)``. A sample of task k: ``x ~ U(-3, 3)^2``; ``x' = x R``
with ``R = [[cos phi_k, sin phi_k], [-sin phi_k, cos phi_k]]``; ``s = x'_1 - a_k[0]``;
``h = a_k[1] sin s + a_k[2] sin 2s + a_k[3] cos s + a_k[4] cos 2s``; ``y = sign(x'_2 - h)`` (0 -> +1);
features ``[x1, x2, x1 x2, x1^2, x2^2, x1^3, x2^3, x1 x2^2, x1^2 x2]`` of the unrotated x, optionally
L2-normalised. (The reference draws the task of every example at random; we give every task its own
stream of T examples, which is what the fixed ``omtl_synthetic.npz`` file holds too.)

Placement
---------
Task k lives on node k when there are as many nodes as tasks (C-ADMM: one task per node); with fewer
nodes the tasks are split in order into contiguous groups; with more nodes task k is on node k and the
other nodes hold no task (D-ADMM ignores the placement: every node draws from its own share of every
task's stream, see :mod:`dmtl.algorithms.admm_mtrl`).

References
----------
K. Li et al., "Online multi-task relationship learning via ADMM" (reference code: GitHub
Alberta-Lee/NC-24, ``src/gendata.py``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from dmtl.data import datasets
from dmtl.data.registry import register_problem
from dmtl.errors import ConfigError, DataError
from dmtl.problem import Placement, Problem
from dmtl.seeding import RunStreams

__all__ = [
    "ArrayFeed",
    "IteratorFeed",
    "IteratorStream",
    "LiveProblem",
    "check_labels",
    "check_stream",
    "dataset_stream",
    "fourier_features",
    "fourier_params",
    "fourier_sample",
    "fourier_stream",
    "from_arrays",
    "hindsight_similarity",
    "l2_normalize",
    "live_problem",
    "stream_feed",
    "stream_placement",
]

LABEL_NOTE = "labels {0,1}->{-1,+1}"


# --------------------------------------------------------------------------------------------------
# Checks and helpers
# --------------------------------------------------------------------------------------------------


def check_labels(y: np.ndarray, what: str = "stream labels") -> tuple[np.ndarray, bool]:
    """Labels as float {-1, +1}; ``({0,1} labels, True)`` are mapped by ``2 y - 1``.

    Returns
    -------
    (labels, converted)

    Raises
    ------
    DataError
        when a label is neither in {-1, +1} nor (all of them) in {0, 1}.
    """
    y = np.asarray(y, dtype=np.float64)
    if not np.all(np.isfinite(y)):
        raise DataError(f"{what} contain NaN or infinite values; remove those examples")
    values = np.unique(y)
    if np.isin(values, (-1.0, 1.0)).all():
        return y, False
    if np.isin(values, (0.0, 1.0)).all():
        return 2.0 * y - 1.0, True
    bad = values[~np.isin(values, (-1.0, 0.0, 1.0))]
    shown = (bad if bad.size else values)[:5].tolist()
    raise DataError(
        f"{what} must be in {{-1,+1}} (or all in {{0,1}}, mapped to -1/+1), found {shown}; "
        "recode the labels of a binary task as -1/+1"
    )


def l2_normalize(X: np.ndarray) -> np.ndarray:
    """Every example (last axis) divided by its Euclidean norm; zero vectors stay zero."""
    X = np.asarray(X, dtype=np.float64)
    norm = np.linalg.norm(X, axis=-1, keepdims=True)
    return np.divide(X, norm, out=np.zeros_like(X), where=norm > 0)


def stream_placement(n_tasks: int, n_nodes: int | None) -> Placement:
    """Task k on node k (nodes == tasks or more nodes); contiguous groups when there are fewer nodes."""
    if n_nodes is None or n_nodes == n_tasks:
        return Placement.one_per_node(n_tasks)
    if n_nodes < n_tasks:
        return Placement.even(n_tasks, n_nodes)
    return Placement(np.arange(n_tasks), n_nodes)


def _as_task_list(values: Any, what: str) -> list[np.ndarray]:
    if isinstance(values, np.ndarray):
        return [values[k] for k in range(values.shape[0])] if values.ndim >= 2 else [values]
    if isinstance(values, Sequence) and not isinstance(values, str):
        return [v for v in values]
    raise DataError(f"{what} must be an array (K, T, ...) or a list with one array per task")


def from_arrays(
    xs: Any,
    ys: Any,
    *,
    n_nodes: int | None = None,
    normalize: bool = False,
    rounds: int | None = None,
    name: str = "stream",
    truth: dict[str, np.ndarray] | None = None,
) -> Problem:
    """A stream problem from arrays.

    Parameters
    ----------
    xs : array (K, T, d) or list of K arrays (T, d)
        Task k's t-th example is ``xs[k][t]``.
    ys : array (K, T) or list of K arrays (T,)
        Labels in {-1, +1} (or {0, 1}: mapped to -1/+1 with a warning and a note in the name).
    n_nodes : int, optional
        Number of nodes of the placement (default: one task per node).
    normalize : bool
        L2-normalise every example.
    rounds : int, optional
        Keep the first ``rounds`` rounds only (must not exceed T).
    name : str
        Label of the problem.
    truth : dict, optional
        Known ground truth (e.g. generator parameters, a task similarity).

    Raises
    ------
    DataError
        no task, a non-2-D task, streams of unequal length, feature dimensions that differ between
        tasks, non-finite features, or labels outside {-1, +1} / {0, 1}.
    """
    X_list = _as_task_list(xs, "stream features")
    y_list = _as_task_list(ys, "stream labels")
    if not X_list:
        raise DataError("a stream needs at least one task; got no feature array")
    if len(X_list) != len(y_list):
        raise DataError(f"the stream has {len(X_list)} feature arrays but {len(y_list)} label arrays")
    lengths, dims = [], []
    for k, (x, y) in enumerate(zip(X_list, y_list, strict=True)):
        x = np.asarray(x)
        y = np.asarray(y)
        if x.ndim != 2:
            raise DataError(f"task {k}'s stream features must be 2-D (rounds, features), got shape {x.shape}")
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise DataError(f"task {k} has {x.shape[0]} examples but labels of shape {y.shape}")
        lengths.append(x.shape[0])
        dims.append(x.shape[1])
    if len(set(lengths)) > 1:
        k = int(np.argmax(np.asarray(lengths) != lengths[0]))
        raise DataError(
            f"streams of unequal length: task 0 has {lengths[0]} rounds, task {k} has {lengths[k]}; "
            "every task must receive one example per round (truncate to the shortest, or use "
            "dataset_stream with length='cycle')"
        )
    if len(set(dims)) > 1:
        k = int(np.argmax(np.asarray(dims) != dims[0]))
        raise DataError(
            f"dimension mismatch between tasks: task 0 has {dims[0]} features, "
            f"task {k} has {dims[k]} features; "
            "all tasks of a stream must share one feature space"
        )
    if lengths[0] == 0:
        raise DataError("the stream has no round (T = 0)")
    X = np.stack([np.asarray(x, dtype=np.float64) for x in X_list])
    y, converted = check_labels(np.stack([np.asarray(v) for v in y_list]))
    if not np.all(np.isfinite(X)):
        raise DataError("stream features contain NaN or infinite values; remove or impute them")
    if rounds is not None:
        if not 1 <= rounds <= X.shape[1]:
            raise DataError(f"rounds={rounds} must lie in 1..{X.shape[1]} (the stream's length)")
        X, y = X[:, :rounds], y[:, :rounds]
    if converted:
        warnings.warn(
            f"stream {name!r}: labels {{0,1}} mapped to {{-1,+1}} (y -> 2y - 1)", UserWarning, stacklevel=2
        )
        name = f"{name} [{LABEL_NOTE}]"
    if normalize:
        X = l2_normalize(X)
    return Problem(
        X=X,
        y=y,
        placement=stream_placement(X.shape[0], n_nodes),
        truth=dict(truth or {}),
        name=name,
    )


def hindsight_similarity(X: np.ndarray, y: np.ndarray, ridge: float = 1e-6) -> np.ndarray:
    """Cosine similarity of the tasks' least-squares linear models fitted on their whole streams.

    ``w_k = (X_k^T X_k + ridge n I)^{-1} X_k^T y_k`` for every task (batched), then
    ``S_kj = w_k^T w_j / (||w_k|| ||w_j||)``: a hindsight (oracle) picture of how related the tasks
    are, to compare with a learned Omega.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    K, n, d = X.shape
    G = np.einsum("knd,kne->kde", X, X) + ridge * n * np.eye(d)
    b = np.einsum("knd,kn->kd", X, y)
    W = np.linalg.solve(G, b[:, :, None])[:, :, 0]
    Wn = l2_normalize(W)
    return Wn @ Wn.T


# --------------------------------------------------------------------------------------------------
# The reference Fourier/polynomial generator
# --------------------------------------------------------------------------------------------------


def fourier_params(tasks: int, rng: np.random.Generator, sigma: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Random-walk task parameters ``a`` (K, 5) and rotation angles ``phi`` (K,)."""
    a = np.zeros((tasks, 5))
    a[0, 1:] = 1.0
    phi = np.zeros(tasks)
    if tasks > 1:
        a[1:] = a[0] + np.cumsum(rng.normal(0.0, sigma, size=(tasks - 1, 5)), axis=0)
        phi[1:] = np.cumsum(rng.normal(0.0, sigma * np.pi / 4, size=tasks - 1))
    return a, phi


def fourier_features(x: np.ndarray) -> np.ndarray:
    """The 9-term polynomial map of 2-D inputs (..., 2) -> (..., 9)."""
    x1, x2 = x[..., 0], x[..., 1]
    return np.stack([x1, x2, x1 * x2, x1**2, x2**2, x1**3, x2**3, x1 * x2**2, x1**2 * x2], axis=-1)


def fourier_sample(
    a: np.ndarray, phi: np.ndarray, task_ids: np.ndarray, rng: np.random.Generator, normalize: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """One example of each entry of ``task_ids`` (any shape S): features (S, 9), labels (S,)."""
    task_ids = np.asarray(task_ids)
    x = rng.uniform(-3.0, 3.0, size=(*task_ids.shape, 2))
    c, s = np.cos(phi[task_ids]), np.sin(phi[task_ids])
    r1 = x[..., 0] * c - x[..., 1] * s
    r2 = x[..., 0] * s + x[..., 1] * c
    at = a[task_ids]
    z = r1 - at[..., 0]
    h = (
        at[..., 1] * np.sin(z)
        + at[..., 2] * np.sin(2 * z)
        + at[..., 3] * np.cos(z)
        + at[..., 4] * np.cos(2 * z)
    )
    y = np.where(r2 - h >= 0, 1.0, -1.0)
    feats = fourier_features(x)
    return (l2_normalize(feats) if normalize else feats), y


def fourier_stream(
    tasks: int = 5,
    rounds: int = 10000,
    normalize: bool = True,
    rng: np.random.Generator | int | None = None,
    sigma: float = 0.1,
) -> datasets.StreamArrays:
    """The reference synthetic stream: ``tasks`` related Fourier-boundary tasks, ``rounds`` each.

    Returns
    -------
    StreamArrays
        ``xs`` (K, T, 9), ``ys`` (K, T); the generator parameters are attached as attributes ``a``
        and ``phi``.
    """
    if int(tasks) != tasks or tasks < 1 or int(rounds) != rounds or rounds < 1:
        raise ConfigError(
            f"fourier_stream needs tasks >= 1 and rounds >= 1, got tasks={tasks}, rounds={rounds}"
        )
    if not np.isfinite(sigma) or sigma < 0:
        raise ConfigError(f"problem.sigma must be a finite number >= 0, got {sigma!r}")
    rng = np.random.default_rng(rng)
    a, phi = fourier_params(int(tasks), rng, sigma)
    ids = np.broadcast_to(np.arange(int(tasks))[:, None], (int(tasks), int(rounds)))
    xs, ys = fourier_sample(a, phi, ids, rng, normalize)
    out = datasets.StreamArrays(xs=xs, ys=ys, name="fourier_stream")
    out.a, out.phi = a, phi  # type: ignore[attr-defined]
    return out


# --------------------------------------------------------------------------------------------------
# Multi-task data sets as streams
# --------------------------------------------------------------------------------------------------


def _top_columns(mats: list[Any], m: int) -> np.ndarray:
    """The ``m`` columns with the most non-zeros over all tasks (ties by index)."""
    df = sum(np.asarray((x != 0).sum(axis=0)).ravel() for x in mats)
    order = np.lexsort((np.arange(df.size), -df))
    return np.sort(order[:m])


def dataset_stream(
    dataset: str | datasets.MultiTaskDataset,
    rng: np.random.Generator | int | None = None,
    *,
    length: str = "min",
    standardize: bool = True,
    normalize: bool = False,
    bias: bool = True,
    max_features: int | None = None,
    data_dir: str | None = None,
) -> datasets.StreamArrays:
    """A binary multi-task data set as a stream: each task's samples in a random order.

    Parameters
    ----------
    dataset : name or MultiTaskDataset
        A binary data set (e.g. ``landmine``, ``landmine_small``, ``spam``).
    rng : Generator or seed
        Shuffling randomness.
    length : {"min", "cycle"}
        Tasks differ in size: ``"min"`` truncates every shuffled task to the smallest task's size;
        ``"cycle"`` gives every task the largest size by concatenating fresh shuffles of it.
    standardize : bool
        Z-score the features with statistics pooled over all tasks (dense data only).
    normalize : bool
        L2-normalise every example (after standardisation; before the bias is appended).
    bias : bool
        Append a constant feature 1 (linear online learners have no intercept otherwise).
    max_features : int, optional
        For sparse data (``spam``: 152,543 word counts): keep the ``max_features`` words that occur
        in most e-mails and densify. Sparse data without it are refused: a dense (K, T, d) stream
        of all words would need gigabytes.

    Raises
    ------
    DataError
        a regression data set, sparse data without ``max_features``, or a bad ``length``.
    """
    ds = datasets.load(dataset, data_dir) if isinstance(dataset, str) else dataset
    if isinstance(ds, datasets.StreamArrays):
        raise DataError(
            f"data set {ds.name!r} is already a stream; use problem.kind=omtl_synthetic / from_arrays"
        )
    if ds.kind != "binary":
        raise DataError(
            f"data set {ds.name!r} is a {ds.kind} data set; online classification streams need a binary one "
            "(e.g. landmine, landmine_small, spam)"
        )
    if length not in ("min", "cycle"):
        raise DataError(f"problem.length must be 'min' or 'cycle', got {length!r}")
    xs: list[np.ndarray]
    if ds.is_sparse:
        if not max_features:
            raise DataError(
                f"data set {ds.name!r} is sparse with {ds.n_features} features; a dense stream would not "
                "fit in memory: set problem.max_features (e.g. 2000) to keep the most frequent features"
            )
        cols = _top_columns(ds.X, int(max_features))
        xs = [np.asarray(sp.csr_array(x)[:, cols].toarray(), dtype=np.float64) for x in ds.X]
    else:
        xs = [np.asarray(x, dtype=np.float64) for x in ds.X]
    if standardize:
        stacked = np.vstack(xs)
        mean, std = stacked.mean(0), stacked.std(0)
        std = np.where(std > 0, std, 1.0)
        mean = np.where(np.ptp(stacked, axis=0) > 0, mean, 0.0)
        xs = [(x - mean) / std for x in xs]
    rng = np.random.default_rng(rng)
    n = ds.n_samples
    T = int(n.min() if length == "min" else n.max())
    X_out, y_out = [], []
    for x, y in zip(xs, ds.y, strict=True):
        reps = -(-T // len(y))
        order = np.concatenate([rng.permutation(len(y)) for _ in range(reps)])[:T]
        X_out.append(x[order])
        y_out.append(y[order])
    X = np.stack(X_out)
    if normalize:
        X = l2_normalize(X)
    if bias:
        X = np.concatenate([X, np.ones(X.shape[:2] + (1,))], axis=2)
    y_all, _ = check_labels(np.stack(y_out), f"data set {ds.name!r} labels")
    return datasets.StreamArrays(xs=X, ys=y_all, name=f"{ds.name} stream")


# --------------------------------------------------------------------------------------------------
# Feeds: how an online algorithm reads round t
# --------------------------------------------------------------------------------------------------


class ArrayFeed:
    """Round t of a block of tasks from (K, T, d) arrays, stored round-major for cheap access.

    Parameters
    ----------
    X, y : arrays (K, T, d), (K, T)
        The whole stream.
    tasks : int array
        The block's tasks (rows of ``X``) in block order.
    normalize : bool
        L2-normalise every example once, up front.
    """

    def __init__(self, X: np.ndarray, y: np.ndarray, tasks: np.ndarray, normalize: bool = False) -> None:
        Xb = X[tasks]
        if normalize:
            Xb = l2_normalize(Xb)
        self.X = np.ascontiguousarray(Xb.transpose(1, 0, 2))  # (T, k, d)
        self.y = np.ascontiguousarray(y[tasks].T)  # (T, k)
        self.n_rounds = int(X.shape[1])

    def get(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Features (k, d) and labels (k,) of round ``t`` (0-based)."""
        if t >= self.n_rounds:
            raise DataError(
                f"the stream has {self.n_rounds} rounds and round {t + 1} was requested; "
                f"set rounds <= {self.n_rounds} (or use a longer stream)"
            )
        return self.X[t], self.y[t]


class IteratorStream:
    """A pass-through for real-time sources: one iterator of ``(x, y)`` pairs per task.

    Every round pulls one example from each task's iterator, checks it (feature dimension, finite
    values, label in {-1, +1}, or {0, 1} with ``labels='01'``) and hands it on.

    Parameters
    ----------
    sources : sequence of iterables
        ``sources[k]`` yields task k's examples ``(x, y)`` with ``x`` of shape (d,).
    n_features : int, optional
        Expected d (default: the size of the first example seen).
    labels : {"pm1", "01"}
        Label coding of the sources; ``"01"`` maps 0 -> -1.
    """

    def __init__(self, sources: Sequence[Iterable[Any]], n_features: int | None = None, labels: str = "pm1"):
        if len(sources) == 0:
            raise DataError("IteratorStream needs one source per task; got none")
        if labels not in ("pm1", "01"):
            raise DataError(f"IteratorStream labels must be 'pm1' or '01', got {labels!r}")
        self._its: list[Iterator[Any]] = [iter(s) for s in sources]
        self.n_tasks = len(self._its)
        self.n_features = n_features
        self.labels = labels
        self.rounds_read = np.zeros(self.n_tasks, dtype=np.int64)
        self._peeked: dict[int, tuple[np.ndarray, float]] = {}

    def _check(self, k: int, item: Any) -> tuple[np.ndarray, float]:
        try:
            x, y = item
        except (TypeError, ValueError):
            raise DataError(f"task {k}'s source must yield (x, y) pairs, got {type(item).__name__}") from None
        x = np.asarray(x, dtype=np.float64).ravel()
        if self.n_features is None:
            self.n_features = x.size
        if x.size != self.n_features:
            raise DataError(
                f"dimension mismatch: task {k} sent an example with {x.size} features at round "
                f"{self.rounds_read[k] + 1}, the stream has {self.n_features}"
            )
        if not np.all(np.isfinite(x)):
            raise DataError(f"task {k} sent non-finite features at round {self.rounds_read[k] + 1}")
        y = float(np.asarray(y).ravel()[0]) if np.size(y) == 1 else np.nan
        if self.labels == "01":
            if y not in (0.0, 1.0):
                raise DataError(
                    f"task {k} sent label {y!r} at round {self.rounds_read[k] + 1}; expected 0 or 1"
                )
            y = 2.0 * y - 1.0
        elif y not in (-1.0, 1.0):
            raise DataError(
                f"task {k} sent label {y!r} at round {self.rounds_read[k] + 1}; expected -1 or +1 "
                "(use labels='01' for 0/1 sources)"
            )
        return x, y

    def _next(self, k: int) -> tuple[np.ndarray, float] | None:
        if k in self._peeked:
            return self._peeked.pop(k)
        try:
            item = next(self._its[k])
        except StopIteration:
            return None
        return self._check(k, item)

    def peek(self) -> tuple[np.ndarray, np.ndarray]:
        """The next round of every task without consuming it (used to size a live problem)."""
        out = []
        for k in range(self.n_tasks):
            if k not in self._peeked:
                nxt = self._next(k)
                if nxt is None:
                    raise DataError(f"task {k}'s source is empty")
                self._peeked[k] = nxt
            out.append(self._peeked[k])
        return np.stack([o[0] for o in out]), np.array([o[1] for o in out])

    def _round(self, tasks: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        got = [self._next(int(k)) for k in tasks]
        ended = [int(k) for k, g in zip(tasks, got, strict=True) if g is None]
        if ended and len(ended) < len(tasks):
            raise DataError(
                f"streams of unequal length: task(s) {ended[:5]} ended after "
                f"{int(self.rounds_read[ended[0]])} rounds while others continue; every task must "
                "receive one example per round"
            )
        if ended:
            return None
        self.rounds_read[tasks] += 1
        X = np.stack([g[0] for g in got]) if got else np.zeros((0, int(self.n_features or 0)))  # type: ignore[index]
        y = np.array([g[1] for g in got], dtype=np.float64)  # type: ignore[index]
        return X, y

    def next_round(self, tasks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One example of each of ``tasks`` (default all): features (k, d), labels (k,).

        Raises
        ------
        DataError
            when some of the tasks' sources have ended and others have not (streams of unequal
            length), or all of them have ended.
        """
        tasks = np.arange(self.n_tasks) if tasks is None else np.asarray(tasks)
        out = self._round(tasks)
        if out is None:
            done = int(self.rounds_read[tasks[0]])
            raise DataError(f"the live stream ended after {done} rounds; set rounds to at most {done}")
        return out

    def take(self, rounds: int | None = None) -> datasets.StreamArrays:
        """Materialise ``rounds`` rounds (default: until the sources end, which they must do together)."""
        Xs, ys = [], []
        tasks = np.arange(self.n_tasks)
        while rounds is None or len(Xs) < rounds:
            out = self._round(tasks) if rounds is None else self.next_round(tasks)
            if out is None:
                break
            Xs.append(out[0])
            ys.append(out[1])
        if not Xs:
            raise DataError("the live stream produced no round")
        return datasets.StreamArrays(xs=np.stack(Xs, 1), ys=np.stack(ys, 1), name="live stream")


class IteratorFeed:
    """Round t of a block of tasks pulled from an :class:`IteratorStream` (rounds in order)."""

    def __init__(self, stream: IteratorStream, tasks: np.ndarray, normalize: bool = False) -> None:
        self.stream = stream
        self.tasks = np.asarray(tasks)
        self.normalize = normalize
        self.n_rounds: int | None = None
        self._t = 0

    def get(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        if t != self._t:
            raise DataError(f"a live stream is read in order: round {self._t + 1} is next, not {t + 1}")
        X, y = self.stream.next_round(self.tasks)
        self._t += 1
        return (l2_normalize(X) if self.normalize else X), y


@dataclass(frozen=True, eq=False)
class LiveProblem(Problem):
    """A problem whose examples come from live sources; ``X``/``y`` hold only the first round."""

    source: IteratorStream | None = None


def live_problem(
    sources: Sequence[Iterable[Any]] | IteratorStream,
    *,
    n_nodes: int | None = None,
    labels: str = "pm1",
    name: str = "live stream",
) -> LiveProblem:
    """A problem over real-time sources (one iterator of ``(x, y)`` per task).

    The first example of every task is peeked to learn K and d; online algorithms then pull round
    after round (``algorithm.step``) from the sources through an :class:`IteratorFeed`::

        problem = live_problem([sensor_0, sensor_1, sensor_2])
        comm = LocalCommunicator(problem.n_nodes)
        state = algorithm.init(problem, comm, RunStreams(0))
        while True:
            state = algorithm.step(state, comm)   # DataError when the sources end

    D-ADMM needs array streams (its nodes draw examples of random tasks); materialise with
    ``IteratorStream(sources).take(rounds)`` and :func:`from_arrays`.
    """
    stream = sources if isinstance(sources, IteratorStream) else IteratorStream(sources, labels=labels)
    X0, y0 = stream.peek()
    return LiveProblem(
        X=X0[:, None, :],
        y=y0[:, None],
        placement=stream_placement(stream.n_tasks, n_nodes),
        name=name,
        source=stream,
    )


def check_stream(problem: Problem) -> None:
    """Raise DataError unless ``problem`` is a binary stream: every task with the same number of
    rounds, no padding, labels in {-1, +1}."""
    n = problem.n_samples
    if np.any(n != n[0]):
        k = int(np.argmax(n != n[0]))
        raise DataError(
            f"streams of unequal length: task 0 has {n[0]} rounds, task {k} has {n[k]}; online "
            "algorithms need one example per task per round"
        )
    if n.size and n[0] != problem.X.shape[1]:
        raise DataError(
            f"the streams have {n[0]} rounds but X holds {problem.X.shape[1]} per task (padding); online "
            "algorithms read every round: pass arrays of the streams' own length"
        )
    values = np.unique(problem.y)
    if not np.isin(values, (-1.0, 1.0)).all():
        shown = values[~np.isin(values, (-1.0, 1.0))][:5].tolist()
        raise DataError(
            f"online algorithms classify: labels must be -1 or +1, found {shown}"
            + (
                " (0/1 labels: recode them as 2 y - 1, as from_arrays does)"
                if np.isin(values, (0.0, 1.0)).all()
                else "; real-valued targets (e.g. problem.kind=lowrank) are not a classification "
                "stream: use fourier_stream, dataset_stream or a binary data set"
            )
        )


def stream_feed(problem: Problem, tasks: np.ndarray, normalize: bool = False) -> ArrayFeed | IteratorFeed:
    """The feed of ``tasks`` (block order) for an online algorithm.

    Raises
    ------
    DataError
        when the problem's tasks have unequal numbers of samples (streams of unequal length).
    """
    if isinstance(problem, LiveProblem) and problem.source is not None:
        return IteratorFeed(problem.source, tasks, normalize)
    check_stream(problem)
    return ArrayFeed(problem.X, problem.y, np.asarray(tasks), normalize)


# --------------------------------------------------------------------------------------------------
# Problem kinds
# --------------------------------------------------------------------------------------------------


def _rounds(value: int) -> int | None:
    if value < 0:
        raise ConfigError(f"problem.rounds must be >= 0 (0: the whole stream), got {value}")
    return value or None


@register_problem(
    "omtl_synthetic",
    defaults={"rounds": 0, "normalize": False, "data_dir": ""},
    summary="the online ADMM paper's synthetic stream file (5 tasks x 10,000 rounds, 9 features)",
)
def _build_omtl_synthetic(params: dict, n_nodes: int, streams: RunStreams) -> Problem:
    rounds = _rounds(params["rounds"])  # bad parameters are reported before the file is looked for
    arrays = datasets.load_stream("omtl_synthetic", params["data_dir"] or None)
    return from_arrays(
        arrays.xs,
        arrays.ys,
        n_nodes=n_nodes,
        normalize=params["normalize"],
        rounds=rounds,
        name="omtl_synthetic",
    )


@register_problem(
    "fourier_stream",
    defaults={"tasks": 5, "rounds": 10000, "normalize": True, "sigma": 0.1},
    summary="the reference Fourier/polynomial online multi-task stream generator (seeded)",
)
def _build_fourier(params: dict, n_nodes: int, streams: RunStreams) -> Problem:
    s = fourier_stream(
        params["tasks"], params["rounds"], params["normalize"], streams.generator("data"), params["sigma"]
    )
    return from_arrays(
        s.xs,
        s.ys,
        n_nodes=n_nodes,
        name="fourier_stream",
        truth={"a": s.a, "phi": s.phi},  # type: ignore[attr-defined]
    )


@register_problem(
    "dataset_stream",
    defaults={
        "dataset": "landmine",
        "rounds": 0,
        "length": "min",
        "standardize": True,
        "normalize": False,
        "bias": True,
        "max_features": 0,
        "data_dir": "",
    },
    summary="a binary multi-task data set (landmine, spam, ...) as a shuffled online stream",
)
def _build_dataset_stream(params: dict, n_nodes: int, streams: RunStreams) -> Problem:
    s = dataset_stream(
        params["dataset"],
        streams.generator("data"),
        length=params["length"],
        standardize=params["standardize"],
        normalize=params["normalize"],
        bias=params["bias"],
        max_features=params["max_features"] or None,
        data_dir=params["data_dir"] or None,
    )
    return from_arrays(s.xs, s.ys, n_nodes=n_nodes, rounds=_rounds(params["rounds"]), name=s.name)
