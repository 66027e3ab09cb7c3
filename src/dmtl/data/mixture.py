r"""The FedEM synthetic mixture: every client's data are a mixture of M shared linear classifiers.

Generative model (Marfoq et al. 2021, section 5 and their ``data/synthetic/generate_data.py``)
-----------------------------------------------------------------------------------------------
* components ``theta_m ~ U[-1, 1]^d``, m = 1..M (``(d, C)`` matrices for C > 2 classes);
* client weights ``pi_t ~ Dirichlet(alpha 1_M)``;
* samples per client ``n_t = min(floor(LogNormal(mu, sigma)) + n_min, n_max)`` (reference: mu = 4,
  sigma = 2, n_min = 50, n_max = 1000);
* each sample: ``x ~ U[-1, 1]^d``, a latent component ``z ~ Categorical(pi_t)`` and the label
  ``y = round(sigmoid(x^T theta_z + e))`` with ``e ~ N(0, noise^2)``, i.e. ``y = 1{x^T theta_z + e > 0}``,
  coded ``{-1, +1}`` (the project's binary coding, :class:`dmtl.losses.LogisticLoss`). For ``C > 2``
  (our extension) ``y = argmax_c (x^T theta_z + e)_c`` with ``e ~ N(0, noise^2 I_C)``, coded ``0..C-1``.

The reference's labelling bug, and the fix
------------------------------------------
The reference draws the component counts ``c = Multinomial(n, pi_t)`` and labels the samples block by
block, ``y[i:i + c_m] = label_m(x[i:i + c_m])``, but never advances ``i`` (``current_index`` stays 0).
So every component labels the *first* ``c_m`` rows and overwrites the previous ones: row ``i`` carries
the label of the last component with ``c_m > i``, and every row at or beyond ``max_m c_m`` keeps the
initial label 0. A client's data are then *not* the stated mixture: a fraction ``1 - max_m pi_tm`` of its
rows (27% on average with Dirichlet(0.4) and M = 3) get label 0 whatever x is, so about 63% of all
labels are 0 instead of 50%; and the components are not weighted by ``pi_t``: the last one keeps its
``c_M`` rows, an earlier one only ``max(0, c_m - max_{m' > m} c_m')`` (measured over 300 clients: shares
0.18 / 0.20 / 0.36 against mean weights 0.34 / 0.30 / 0.36). Accuracy figures computed on it (FedEM
~74.7%, FedAvg ~68.2%, Local ~65.7% as recalled from the paper) carry that label noise.

We draw one latent component per sample and label it by that component, which is what the paper
describes and what the generator intends. ``reference_labels=True`` reproduces the bug exactly (same
prefix-overwrite rule, then a per-client shuffle as ``sklearn.utils.shuffle`` does), for comparison with
the published numbers; ``truth["latent"]`` is then -1 on the rows the bug labels 0 regardless of x.

Unseen clients
--------------
The reference's "unseen clients" split keeps the first ``int(train_frac K)`` clients for training and
holds out the rest. ``unseen_frac`` does the same here: the last ``round(unseen_frac K)`` task ids are
flagged in ``truth["unseen"]``; federated algorithms do not train on them and serve them at evaluation
(FedEM: mixture weights from their own data with the global components frozen).

References
----------
O. Marfoq, G. Neglia, A. Bellet, L. Kameni and R. Vidal, "Federated multi-task learning under a
mixture of distributions", NeurIPS 2021 (code: github.com/omarfoq/FedEM, ``data/synthetic``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dmtl.data.registry import register_problem
from dmtl.errors import ConfigError
from dmtl.problem import Placement, Problem
from dmtl.seeding import RunStreams

__all__ = ["fedem_mixture", "sample_sizes"]


def sample_sizes(
    n_tasks: int,
    rng: np.random.Generator,
    log_mean: float = 4.0,
    log_sigma: float = 2.0,
    min_samples: int = 50,
    max_samples: int = 1000,
) -> np.ndarray:
    """Samples per client, ``min(floor(LogNormal(log_mean, log_sigma)) + min_samples, max_samples)``."""
    raw = np.floor(rng.lognormal(log_mean, log_sigma, n_tasks))
    raw = np.minimum(raw, float(max_samples))  # before the cast: a heavy tail can overflow int64
    return np.minimum(raw.astype(np.int64) + min_samples, max_samples)


def _check(name: str, value: Any, low: float, integer: bool = False, strict: bool = False) -> None:
    bad_type = isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating))
    if bad_type or (integer and int(value) != value) or not np.isfinite(value):
        kind = "an integer" if integer else "a finite number"
        raise ConfigError(f"problem.{name} must be {kind} {'>' if strict else '>='} {low}, got {value!r}")
    if value < low or (strict and value == low):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"problem.{name} must be {kind} {'>' if strict else '>='} {low}, got {value!r}")


def _labels(scores: np.ndarray, classes: int) -> np.ndarray:
    """Labels from noisy scores: ``{-1, +1}`` (sign) for 2 classes, argmax otherwise."""
    if classes == 2:
        # round(sigmoid(s)) is 1 iff s > 0 (numpy rounds 0.5 to 0)
        return np.where(scores > 0, 1.0, -1.0)
    return np.argmax(scores, axis=-1).astype(float)


def _component_scores(
    X: np.ndarray, theta: np.ndarray, classes: int, noise: float, rng: np.random.Generator
) -> np.ndarray:
    """Noisy scores of every sample under every component: (K, n, M) or (K, n, M, C)."""
    K, n, d = X.shape
    M = theta.shape[0]
    if classes == 2:
        s = (X.reshape(K * n, d) @ theta.T).reshape(K, n, M)
    else:
        s = (X.reshape(K * n, d) @ theta.transpose(1, 0, 2).reshape(d, M * classes)).reshape(K, n, M, classes)
    if noise:
        s = s + noise * rng.standard_normal(s.shape)
    return s


def _mixture_rows(
    n_rows: np.ndarray,
    n_max: int,
    pi: np.ndarray,
    theta: np.ndarray,
    classes: int,
    noise: float,
    rng: np.random.Generator,
    reference_labels: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Padded features, labels and latent components of every task (rows >= n_rows[t] are zero)."""
    K, M = pi.shape
    d = theta.shape[1]
    X = rng.uniform(-1.0, 1.0, size=(K, n_max, d))
    mask = np.arange(n_max)[None, :] < n_rows[:, None]
    X *= mask[:, :, None]
    S = _component_scores(X, theta, classes, noise, rng)
    lab = _labels(S, classes)  # (K, n, M): every component's label of every row
    if not reference_labels:
        cum = np.cumsum(pi, axis=1)
        cum[:, -1] = 1.0
        u = rng.random((K, n_max))
        z = (u[:, :, None] >= cum[:, None, :]).sum(axis=2)  # Categorical(pi_t)
        y = np.take_along_axis(lab, z[:, :, None], axis=2)[:, :, 0]
    else:
        # The reference's rule: component m labels rows 0..c_m - 1, later components overwrite, rows
        # at or beyond max_m c_m keep label 0 (-1 in our coding).
        counts = np.stack([rng.multinomial(int(n), p) for n, p in zip(n_rows, pi, strict=True)])
        pos = np.arange(n_max)[None, :]
        y = np.full((K, n_max), -1.0 if classes == 2 else 0.0)
        z = np.full((K, n_max), -1, dtype=np.int64)
        for m in range(M):  # loop over components only
            hit = pos < counts[:, m : m + 1]
            y = np.where(hit, lab[:, :, m], y)
            z = np.where(hit, m, z)
        # then shuffle each task's rows (sklearn.utils.shuffle in the reference)
        keys = np.where(mask, rng.random((K, n_max)), np.inf)
        order = np.argsort(keys, axis=1, kind="stable")
        X = np.take_along_axis(X, order[:, :, None], axis=1)
        y = np.take_along_axis(y, order, axis=1)
        z = np.take_along_axis(z, order, axis=1)
    y = np.where(mask, y, 0.0)
    z = np.where(mask, z, -1)
    return X, y, z


def fedem_mixture(
    tasks: int,
    *,
    d: int = 150,
    classes: int = 2,
    components: int = 3,
    noise: float = 0.1,
    alpha: float = 0.4,
    log_mean: float = 4.0,
    log_sigma: float = 2.0,
    min_samples: int = 50,
    max_samples: int = 1000,
    test_samples: int = 500,
    unseen_frac: float = 0.0,
    reference_labels: bool = False,
    nodes: int | None = None,
    rng: np.random.Generator | None = None,
    placement_rng: np.random.Generator | None = None,
) -> Problem:
    r"""The FedEM synthetic mixture (module docstring), labelling bug fixed unless ``reference_labels``.

    Parameters
    ----------
    tasks : int
        Number of clients K (reference: 300).
    d, classes, components : int
        Feature dimension (150), classes (2) and mixture components M (3).
    noise : float
        Standard deviation of the score noise (0.1).
    alpha : float
        Dirichlet concentration of the mixture weights (0.4).
    log_mean, log_sigma, min_samples, max_samples
        Training samples per client ``min(floor(LogNormal(log_mean, log_sigma)) + min_samples,
        max_samples)``.
    test_samples : int
        Test samples per client, from the client's own mixture (the reference uses 5,000; 0: none).
    unseen_frac : float
        Fraction of clients (the last task ids) held out from training: ``truth["unseen"]``.
    reference_labels : bool
        Reproduce the reference generator's labelling bug (for comparison with the published numbers).
    nodes : int, optional
        Number of nodes; default one client per node. Otherwise clients are spread evenly at random.
    rng, placement_rng : numpy Generators
        Streams for the data and for the placement.

    Returns
    -------
    Problem
        Labels in ``{-1, +1}`` (2 classes) or ``0..C-1``; ``truth`` holds ``pi`` (K, M), ``theta``
        (M, d) or (M, d, C), ``latent`` (K, n_max) training rows' components (-1: padding or, with
        ``reference_labels``, rows labelled 0 by the bug), ``unseen`` (K,) bool and, for C > 2,
        ``n_classes`` (a 0-d array: the labels are classes, for ``loss=auto``).
    """
    _check("tasks", tasks, 1, integer=True)
    _check("d", d, 1, integer=True)
    _check("classes", classes, 2, integer=True)
    _check("components", components, 1, integer=True)
    _check("noise", noise, 0.0)
    _check("alpha", alpha, 0.0, strict=True)
    _check("log_sigma", log_sigma, 0.0)
    _check("log_mean", log_mean, -50.0)
    _check("min_samples", min_samples, 1, integer=True)
    _check("max_samples", max_samples, 1, integer=True)
    _check("test_samples", test_samples, 0, integer=True)
    if max_samples < min_samples:
        raise ConfigError(
            f"problem.max_samples={max_samples} must be >= problem.min_samples={min_samples} "
            "(every client needs at least min_samples training samples)"
        )
    if not isinstance(unseen_frac, (int, float)) or not 0.0 <= unseen_frac < 1.0:
        raise ConfigError(f"problem.unseen_frac must be a number in [0, 1), got {unseen_frac!r}")
    if not isinstance(reference_labels, bool):
        raise ConfigError(f"problem.reference_labels must be true or false, got {reference_labels!r}")
    rng = np.random.default_rng(0) if rng is None else rng
    K, M = int(tasks), int(components)
    n_train = sample_sizes(K, rng, log_mean, log_sigma, int(min_samples), int(max_samples))
    pi = rng.dirichlet(alpha * np.ones(M), size=K)
    pi = np.where(np.isfinite(pi), pi, 1.0 / M)  # tiny alpha can underflow to 0/0
    shape = (M, d) if classes == 2 else (M, d, classes)
    theta = rng.uniform(-1.0, 1.0, size=shape)
    X, y, z = _mixture_rows(n_train, int(n_train.max()), pi, theta, classes, noise, rng, reference_labels)
    Xt = yt = None
    if test_samples:
        n_test = np.full(K, int(test_samples))
        Xt, yt, _ = _mixture_rows(n_test, int(test_samples), pi, theta, classes, noise, rng, reference_labels)
    n_unseen = int(round(unseen_frac * K))
    if n_unseen >= K:
        raise ConfigError(f"problem.unseen_frac={unseen_frac} leaves no training client out of {K}")
    unseen = np.arange(K) >= K - n_unseen
    L = K if nodes is None else int(nodes)
    if L == K:
        place = Placement.one_per_node(K)
    else:
        place = Placement.even(K, L, placement_rng if placement_rng is not None else rng)
    return Problem(
        X=X,
        y=y,
        placement=place,
        n_samples=n_train,
        X_test=Xt,
        y_test=yt,
        truth={
            "pi": pi,
            "theta": theta,
            "latent": z,
            "unseen": unseen,
            **({"n_classes": np.array(classes)} if classes > 2 else {}),
        },
        name=(
            f"fedem_synthetic(K={K}, M={M}, d={d}, classes={classes}, alpha={alpha}"
            f"{', reference labels' if reference_labels else ''})"
        ),
    )


@register_problem(
    "fedem_synthetic",
    defaults={
        "tasks": 0,
        "d": 50,
        "classes": 2,
        "components": 3,
        "noise": 0.1,
        "alpha": 0.4,
        "log_mean": 4.0,
        "log_sigma": 2.0,
        "min_samples": 30,
        "max_samples": 300,
        "test_samples": 200,
        "unseen_frac": 0.0,
        "reference_labels": False,
    },
    summary=(
        "FedEM synthetic mixture of M linear classifiers, labelling bug fixed (ALGORITHMS.md section 5); "
        "small defaults; reference: tasks=300 d=150 min_samples=50 max_samples=1000; tasks=0: one per node"
    ),
)
def _build_fedem_synthetic(params: dict, n_nodes: int, streams: RunStreams) -> Problem:
    tasks = params["tasks"] or n_nodes
    return fedem_mixture(
        tasks,
        d=params["d"],
        classes=params["classes"],
        components=params["components"],
        noise=params["noise"],
        alpha=params["alpha"],
        log_mean=params["log_mean"],
        log_sigma=params["log_sigma"],
        min_samples=params["min_samples"],
        max_samples=params["max_samples"],
        test_samples=params["test_samples"],
        unseen_frac=params["unseen_frac"],
        reference_labels=params["reference_labels"],
        nodes=n_nodes,
        rng=streams.generator("data"),
        placement_rng=streams.generator("placement"),
    )
