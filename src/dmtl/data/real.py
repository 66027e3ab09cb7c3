"""Problem kinds for the real multi-task data sets, and a small synthetic binary MTL problem.

``problem.kind=dataset``
    One of the real data sets of :mod:`dmtl.data.datasets` (``school``, ``landmine``,
    ``landmine_small``, ``parkinsons``, ``spam``), split per task into training and test parts
    (``test_fraction``, seeded by ``split_seed`` or, when it is null, by the run's ``data`` stream),
    optionally standardised with the *training* statistics (pooled over tasks), converted to the padded
    :class:`dmtl.problem.Problem` layout and placed one task per node (with fewer nodes than tasks the
    tasks are split in order into contiguous groups).

    Spam has 152,543 bag-of-words features: padded densely (15 tasks x 400 e-mails x 152,543) it would
    take 7 GB. The builder therefore keeps the ``max_features`` words (default 2,000) that occur in the
    most training e-mails (document frequency pooled over the users' *training* splits, ties broken by
    the lower column index), then standardises (scaling only, sparse data are never centred) and
    densifies. The selection uses no test data.

``problem.kind=related_binary``
    A small synthetic binary (or regression) multi-task problem for tests and quick runs: task models
    ``w_t = w_0 + spread * g_{c(t)} + noise_t`` around a shared model, with tasks in ``clusters``
    groups; labels ``y = sign(x^T w_t)`` flipped with probability ``flip`` (``{-1, +1}``), or
    ``y = x^T w_t + noise`` for ``kind=regression``.

Conversion helper: :func:`problem_from_dataset` turns a training (and optional test)
:class:`~dmtl.data.datasets.MultiTaskDataset` into a padded :class:`Problem`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from dmtl.data import datasets
from dmtl.data.datasets import MultiTaskDataset
from dmtl.data.registry import register_problem
from dmtl.errors import ConfigError, DataError
from dmtl.problem import Placement, Problem
from dmtl.seeding import RunStreams

__all__ = ["REAL_DATASETS", "pad_tasks", "problem_from_dataset", "select_frequent_features", "real_problem"]

REAL_DATASETS = ("school", "landmine", "landmine_small", "parkinsons", "spam")


def pad_tasks(xs: list[Any], ys: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack per-task (n_t, d) matrices into padded ``X`` (K, n_max, d), ``y`` (K, n_max), ``n`` (K,).

    Sparse matrices are densified (callers bound their width first).
    """
    if not xs:
        raise DataError("cannot build a problem from zero tasks")
    n = np.array([x.shape[0] for x in xs], dtype=np.int64)
    if np.any(n == 0):
        raise DataError(f"task {int(np.flatnonzero(n == 0)[0])} is empty; every task needs samples")
    d = xs[0].shape[1]
    X = np.zeros((len(xs), int(n.max()), d))
    y = np.zeros((len(xs), int(n.max())))
    for t, (x, target) in enumerate(zip(xs, ys, strict=True)):
        X[t, : n[t]] = x.toarray() if sp.issparse(x) else np.asarray(x, dtype=float)
        y[t, : n[t]] = target
    return X, y, n


def placement_for(n_tasks: int, n_nodes: int) -> Placement:
    """One task per node, or contiguous groups of tasks when there are fewer nodes than tasks."""
    if n_nodes == n_tasks:
        return Placement.one_per_node(n_tasks)
    if n_nodes > n_tasks:
        raise ConfigError(
            f"topology.nodes={n_nodes} exceeds the {n_tasks} tasks of the data set; set topology.nodes "
            f"to {n_tasks} (one task per node) or fewer"
        )
    return Placement.even(n_tasks, n_nodes, None)


def problem_from_dataset(
    train: MultiTaskDataset,
    test: MultiTaskDataset | None = None,
    n_nodes: int | None = None,
    name: str | None = None,
) -> Problem:
    """Padded :class:`Problem` from per-task training (and test) data, one task per node by default.

    The data's kind is kept in the problem's name, e.g. ``"landmine (binary)"``.
    """
    X, y, n = pad_tasks(list(train.X), list(train.y))
    Xt = yt = nt = None
    if test is not None:
        if test.n_tasks != train.n_tasks:
            raise DataError(f"test data have {test.n_tasks} tasks, training data {train.n_tasks}")
        Xt, yt, nt = pad_tasks(list(test.X), list(test.y))
    K = train.n_tasks
    return Problem(
        X=X,
        y=y,
        n_samples=n,
        X_test=Xt,
        y_test=yt,
        n_test=nt,
        placement=placement_for(K, K if n_nodes is None else n_nodes),
        name=name or f"{train.name} ({train.kind})",
    )


def select_frequent_features(train: MultiTaskDataset, max_features: int) -> np.ndarray:
    """Column indices of the ``max_features`` features non-zero in the most training rows (sorted)."""
    if max_features < 1:
        raise ConfigError(f"problem.max_features must be an integer >= 1, got {max_features}")
    if train.is_sparse:
        df = sum(np.bincount(sp.csr_array(x).indices, minlength=train.n_features) for x in train.X)
    else:
        df = sum((np.asarray(x) != 0).sum(axis=0) for x in train.X)
    df = np.asarray(df)
    k = min(max_features, train.n_features)
    order = np.lexsort((np.arange(df.size), -df))  # most frequent first, lower index on ties
    return np.sort(order[:k])


def _restrict(ds: MultiTaskDataset, cols: np.ndarray) -> MultiTaskDataset:
    import dataclasses

    xs = [sp.csr_array(x[:, cols]) if sp.issparse(x) else x[:, cols] for x in ds.X]
    names = None if ds.feature_names is None else [ds.feature_names[c] for c in cols]
    return dataclasses.replace(ds, X=xs, y=list(ds.y), feature_names=names, task_names=list(ds.task_names))


def _add_bias(ds: MultiTaskDataset) -> MultiTaskDataset:
    import dataclasses

    xs = [np.hstack([np.asarray(x), np.ones((x.shape[0], 1))]) for x in ds.X]
    names = None if ds.feature_names is None else [*ds.feature_names, "bias"]
    return dataclasses.replace(ds, X=xs, y=list(ds.y), feature_names=names, task_names=list(ds.task_names))


def real_problem(
    name: str,
    *,
    test_fraction: float = 0.25,
    standardize: bool = True,
    split_seed: int | np.random.Generator | None = 0,
    max_features: int = 2000,
    target: str = "motor_UPDRS",
    bias: bool = False,
    n_nodes: int | None = None,
    data_dir: str | None = None,
) -> Problem:
    """Load a real data set, split, (standardise,) pad and place it: the ``dataset`` problem kind.

    Parameters
    ----------
    name : {"school", "landmine", "landmine_small", "parkinsons", "spam"}
        Data set (:data:`dmtl.data.datasets.DATASETS`).
    test_fraction : float
        Fraction of every task's samples held out for testing, in (0, 1).
    standardize : bool
        Z-score features with the pooled training statistics (constant columns untouched; sparse
        features scaled, not centred).
    split_seed : int or Generator
        Seed of the per-task random split.
    max_features : int
        Spam only: keep the words that occur in the most training e-mails (see the module notes).
    target : {"motor_UPDRS", "total_UPDRS"}
        Parkinson's only: the regression target.
    bias : bool
        Append a constant-one feature after standardisation (the data sets other than School have none).
    n_nodes : int, optional
        Nodes; default one per task.
    data_dir : str, optional
        Data directory (default: ``DMTL_DATA`` or ``../shared/data``).
    """
    if name not in REAL_DATASETS:
        raise ConfigError(f"problem.name must be one of {', '.join(REAL_DATASETS)}, got {name!r}")
    if not isinstance(test_fraction, (int, float)) or not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"problem.test_fraction must lie in (0, 1), got {test_fraction!r}")
    options = {"target": target} if name == "parkinsons" else {}
    ds = datasets.load(name, data_dir, **options)
    assert isinstance(ds, MultiTaskDataset)
    train, test = datasets.train_test_split(ds, test_fraction, split_seed)
    if name == "spam" or train.is_sparse:
        cols = select_frequent_features(train, max_features)
        train, test = _restrict(train, cols), _restrict(test, cols)
    if standardize:
        train, test_std = datasets.standardize(train, test)
        assert test_std is not None
        test = test_std
    if bias:
        train, test = _add_bias(train), _add_bias(test)
    suffix = f", {len(cols)} most frequent words" if name == "spam" else ""
    return problem_from_dataset(train, test, n_nodes, name=f"{name} ({train.kind}{suffix})")


@register_problem(
    "dataset",
    defaults={
        "name": "landmine_small",
        "test_fraction": 0.25,
        "standardize": True,
        "split_seed": None,
        "max_features": 2000,
        "target": "motor_UPDRS",
        "bias": False,
        "data_dir": None,
    },
    summary="a real data set (school, landmine, landmine_small, parkinsons, spam), split per task, one "
    "task per node",
)
def _build_dataset(params: dict[str, Any], n_nodes: int, streams: RunStreams) -> Problem:
    seed = params["split_seed"]
    if seed is None:
        seed = streams.generator("data")
    elif isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"problem.split_seed must be an integer or null, got {seed!r}")
    if isinstance(params["max_features"], bool) or not isinstance(params["max_features"], int):
        raise ConfigError(f"problem.max_features must be an integer >= 1, got {params['max_features']!r}")
    return real_problem(
        params["name"],
        test_fraction=params["test_fraction"],
        standardize=params["standardize"],
        split_seed=seed,
        max_features=params["max_features"],
        target=params["target"],
        bias=params["bias"],
        n_nodes=n_nodes,
        data_dir=params["data_dir"],
    )


def related_tasks(
    tasks: int = 8,
    d: int = 5,
    samples: int = 40,
    test_samples: int = 20,
    *,
    clusters: int = 2,
    spread: float = 1.0,
    noise: float = 0.3,
    flip: float = 0.05,
    kind: str = "binary",
    n_nodes: int | None = None,
    rng: np.random.Generator | None = None,
) -> Problem:
    """Synthetic related tasks: ``w_t = w_0 + spread g_{t mod clusters} + noise e_t`` (all Gaussian).

    ``kind="binary"``: ``y = sign(x^T w_t)`` flipped with probability ``flip``, in ``{-1, +1}``;
    ``kind="regression"``: ``y = x^T w_t + 0.1 e``. Task sizes vary: task ``t`` has
    ``samples - (t mod 3)`` training samples, to exercise padding. Truth: ``{"W": (d, K)}``.
    """
    for key, value, low in (
        ("tasks", tasks, 1),
        ("d", d, 1),
        ("samples", samples, 4),
        ("clusters", clusters, 1),
        ("test_samples", test_samples, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ConfigError(f"problem.{key} must be an integer >= {low}, got {value!r}")
    for key, value in (("spread", spread), ("noise", noise)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < np.inf:
            raise ConfigError(f"problem.{key} must be a finite number >= 0, got {value!r}")
    if isinstance(flip, bool) or not isinstance(flip, (int, float)) or not 0.0 <= flip <= 1.0:
        raise ConfigError(f"problem.flip must be a probability in [0, 1], got {flip!r}")
    if kind not in ("binary", "regression"):
        raise ConfigError(f"problem.labels must be 'binary' or 'regression', got {kind!r}")
    rng = np.random.default_rng(0) if rng is None else rng
    w0 = rng.standard_normal(d)
    G = rng.standard_normal((clusters, d))
    W = (w0 + spread * G[np.arange(tasks) % clusters] + noise * rng.standard_normal((tasks, d))).T
    n = samples - (np.arange(tasks) % 3)

    def labels(X: np.ndarray) -> np.ndarray:
        s = np.einsum("knd,dk->kn", X, W)
        if kind == "regression":
            return s + 0.1 * rng.standard_normal(s.shape)
        y = np.where(s >= 0, 1.0, -1.0)
        return np.where(rng.random(s.shape) < flip, -y, y)

    X = rng.standard_normal((tasks, samples, d))
    X[np.arange(samples)[None, :] >= n[:, None]] = 0.0
    y = labels(X)
    y[np.arange(samples)[None, :] >= n[:, None]] = 0.0
    Xt = yt = None
    if test_samples:
        Xt = rng.standard_normal((tasks, test_samples, d))
        yt = labels(Xt)
    return Problem(
        X=X,
        y=y,
        n_samples=n,
        X_test=Xt,
        y_test=yt,
        placement=placement_for(tasks, tasks if n_nodes is None else n_nodes),
        truth={"W": W},
        name=f"related_{kind}(K={tasks}, d={d}, n={samples})",
    )


@register_problem(
    "related_tasks",
    defaults={
        "tasks": 8,
        "d": 5,
        "samples": 40,
        "test_samples": 20,
        "clusters": 2,
        "spread": 1.0,
        "noise": 0.3,
        "flip": 0.05,
        "labels": "binary",
    },
    summary="small synthetic related tasks (binary {-1,+1} or regression) around a shared model, one "
    "task per node",
)
def _build_related(params: dict[str, Any], n_nodes: int, streams: RunStreams) -> Problem:
    return related_tasks(
        params["tasks"],
        params["d"],
        params["samples"],
        params["test_samples"],
        clusters=params["clusters"],
        spread=params["spread"],
        noise=params["noise"],
        flip=params["flip"],
        kind=params["labels"],
        n_nodes=n_nodes,
        rng=streams.generator("data"),
    )
