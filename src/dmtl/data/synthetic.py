"""Synthetic problems with a known truth."""

from __future__ import annotations

import numpy as np

from dmtl.data.registry import register_problem
from dmtl.errors import ConfigError
from dmtl.problem import Placement, Problem
from dmtl.seeding import RunStreams

__all__ = ["lowrank_regression"]


def lowrank_regression(
    d: int,
    tasks: int,
    rank: int,
    samples: int,
    *,
    noise: float = 0.0,
    test_samples: int = 0,
    nodes: int | None = None,
    placement: str = "even",
    rng: np.random.Generator | None = None,
    placement_rng: np.random.Generator | None = None,
) -> Problem:
    r"""Linear regression tasks whose models share a rank-``rank`` subspace.

    ``y_t = X_t theta*_t + noise * e_t`` with ``X_t`` and ``e_t`` standard Gaussian, and
    ``Theta* = U* B*``: ``U*`` (d x r) a uniformly random orthonormal basis, ``B*`` (r x K) standard
    Gaussian.

    Parameters
    ----------
    d, tasks, rank, samples : int
        Feature dimension, number of tasks K, rank r (<= min(d, K)), training samples per task n
        (>= r, so each task's coefficients are identifiable given the basis).
    noise : float
        Standard deviation of the additive noise (0: noiseless).
    test_samples : int
        Test samples per task (0: no test set).
    nodes : int, optional
        Number of nodes L; default one task per node (``one_per_node`` needs ``nodes`` = ``tasks``).
    placement : {"even", "ordered", "one_per_node"}
        ``even``: random permutation split evenly; ``ordered``: tasks split in order.
    rng, placement_rng : numpy Generators
        Streams for the data and for the placement.

    Returns
    -------
    Problem
        with ``truth = {"U": U*, "B": B*, "Theta": Theta*}``.

    References
    ----------
    S. Nayer and N. Vaswani, "Fast and sample-efficient federated low rank matrix recovery from
    column-wise linear and quadratic projections", IEEE Trans. Inf. Theory, 2023.
    """
    for name, value, low in (
        ("d", d, 1),
        ("tasks", tasks, 1),
        ("rank", rank, 1),
        ("samples", samples, 1),
        ("test_samples", test_samples, 0),
    ):
        if int(value) != value or value < low:
            raise ConfigError(f"problem.{name} must be an integer >= {low}, got {value!r}")
    if rank > min(d, tasks):
        raise ConfigError(f"problem.rank={rank} must be <= min(problem.d, problem.tasks)={min(d, tasks)}")
    if samples < rank:
        raise ConfigError(
            f"problem.samples={samples} must be >= problem.rank={rank}: each task's r coefficients "
            "need at least r samples"
        )
    if not np.isfinite(noise) or noise < 0:
        raise ConfigError(f"problem.noise must be a finite number >= 0, got {noise!r}")
    if placement == "one_per_node" and nodes is not None and int(nodes) != tasks:
        # checked before the data are drawn: a run on fewer nodes would silently leave tasks out
        raise ConfigError(
            f"problem.placement=one_per_node needs topology.nodes = problem.tasks, got "
            f"topology.nodes={nodes} and problem.tasks={tasks}; set topology.nodes={tasks} or use "
            "problem.placement=even"
        )
    rng = np.random.default_rng(0) if rng is None else rng
    U, _ = np.linalg.qr(rng.standard_normal((d, rank)))
    B = rng.standard_normal((rank, tasks))
    Theta = U @ B
    X = rng.standard_normal((tasks, samples, d))
    y = np.einsum("knd,dk->kn", X, Theta)
    if noise:
        y = y + noise * rng.standard_normal(y.shape)
    Xt = yt = None
    if test_samples:
        Xt = rng.standard_normal((tasks, test_samples, d))
        yt = np.einsum("knd,dk->kn", Xt, Theta) + (
            noise * rng.standard_normal((tasks, test_samples)) if noise else 0.0
        )
    L = tasks if nodes is None else int(nodes)
    if placement == "one_per_node":
        place = Placement.one_per_node(tasks)
    elif placement == "even":
        place = Placement.even(tasks, L, placement_rng if placement_rng is not None else rng)
    elif placement == "ordered":
        place = Placement.even(tasks, L, None)
    else:
        raise ConfigError(
            f"problem.placement must be one of 'even', 'ordered', 'one_per_node', got {placement!r}"
        )
    return Problem(
        X=X,
        y=y,
        placement=place,
        X_test=Xt,
        y_test=yt,
        truth={"U": U, "B": B, "Theta": Theta},
        name=f"lowrank(d={d}, K={tasks}, r={rank}, n={samples}, noise={noise})",
    )


@register_problem(
    "lowrank",
    defaults={
        "d": 200,
        "tasks": 200,
        "rank": 2,
        "samples": 40,
        "test_samples": 0,
        "noise": 0.0,
        "placement": "even",
    },
    summary="synthetic linear regression tasks sharing a rank-r subspace (ALGORITHMS.md section 1)",
)
def _build_lowrank(params: dict, n_nodes: int, streams: RunStreams) -> Problem:
    return lowrank_regression(
        params["d"],
        params["tasks"],
        params["rank"],
        params["samples"],
        noise=params["noise"],
        test_samples=params["test_samples"],
        nodes=n_nodes,
        placement=params["placement"],
        rng=streams.generator("data"),
        placement_rng=streams.generator("placement"),
    )
