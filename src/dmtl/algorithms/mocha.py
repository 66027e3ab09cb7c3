r"""Federated multi-task learning: MOCHA and its baselines (ALGORITHMS.md section 4).

Objective (MTRL with a learned task relationship)
-------------------------------------------------
.. math::

    \min_{W, \Omega} \sum_t \frac{1}{n_t} \sum_i \ell(x_{ti}^\top w_t, y_{ti})
        + \frac{\lambda}{2} \operatorname{tr}(W \Omega W^\top)

with the hinge loss (labels ``{-1, +1}``) as in the reference, or the squared loss (regression).
Every task lives on one node (a node may hold several tasks; they then share the node's work fraction
and drop-out). The dual of the W-problem for fixed ``Sigma = Omega^{-1}`` is

.. math::

    D(\alpha) = \sum_t \frac{1}{n_t} \sum_i c(\alpha_{ti}, y_{ti})
        - \frac{1}{2\lambda} \operatorname{tr}(B \Sigma B^\top), \qquad
    B_{:,t} = \frac{1}{n_t} X_t^\top \alpha_t, \quad W(\alpha) = \frac{1}{\lambda} B \Sigma,

``c = alpha y`` with ``alpha y in [0, 1]`` (hinge) or ``c = alpha y - alpha^2/2`` (squared).

MOCHA (``mocha``), one inner round
----------------------------------
Each task t runs ``max(1, floor(n_t frac))`` SDCA steps on its local subproblem (``frac`` fixed, or
``~ U[bottom, top]`` per node per round with ``stragglers``; a node dropped with probability
``drop_prob`` does none; see the deviations below for the ``max(1, .)``). Samples are visited in a
fresh random permutation per round (as the reference). One step on sample i, with ``v = w_t + rho dw_t``:

* hinge: ``beta = clip(lambda n_t (1 - y_i x_i^T v) / (Sigma_tt rho ||x_i||^2) + alpha_i y_i, 0, 1)``,
  ``alpha_i' = y_i beta``;
* squared: ``alpha_i' = alpha_i + (y_i - x_i^T v - alpha_i) / (1 + rho Sigma_tt ||x_i||^2 / (lambda n_t))``;
* ``dw_t += Sigma_tt (alpha_i' - alpha_i) x_i / (lambda n_t)``, ``db_t += (alpha_i' - alpha_i) x_i / n_t``.

Nodes upload ``db_t`` of every task that worked (d + 1 floats per task: the row and a one-float tag,
the task's position, that tells the server which task sent it; see the deviations below), the server applies
``W <- W + (1/lambda) dB Sigma`` (and ``B <- B + dB``) and returns every task its ``w_t``. After every
``inner_iters`` rounds the server takes the Omega-step (:func:`dmtl.oracle.omega_step`:
``A = W^T W`` floored at ``eig_floor``, ``Sigma = A^{1/2} / tr A^{1/2}``, ``Omega = Sigma^{-1}``,
``rho = max_t sum_s |Sigma_ts| / Sigma_tt``) and sends each task ``(w_t, Sigma_tt, rho)``.

Our choice, documented: with ``recompute_w=True`` (default) the server then sets
``W = B Sigma / lambda`` = ``w(alpha)`` for the new Sigma, as in the paper's Algorithm 1 ("central node
computes w = w(alpha)"), so that ``(W, alpha)`` stay primal-dual consistent and the duality gap goes
to zero within every outer iteration. The authors' MATLAB code keeps ``W`` unchanged across the
Omega-step (``recompute_w=False`` reproduces it); ``W`` then carries an offset ``W - B Sigma/lambda``
that SDCA cannot remove, and the gap stalls at a positive value after the first outer iteration.
Within the first outer iteration (and whenever ``update_omega=False``) both are identical.

Metrics: ``primal`` ``P(W)``, ``dual`` ``D(alpha)`` (the true dual for the current Sigma, a lower bound on
the W-problem's optimum; NaN if a hinge dual variable has left its box, ``alpha y`` outside ``[0, 1]``,
where the formula is no longer a dual bound) and ``duality_gap = P - D >= 0``; binary: ``test_error`` /
``train_error`` (mean over the tasks that have test / training samples of the per-task
misclassification rate, the reference's ``opts.avg = 1``; NaN if no task has any) and
``test_accuracy`` / ``train_accuracy`` (pooled over samples, as :mod:`dmtl.algorithms.federated`);
regression: ``test_task_rmse`` / ``train_task_rmse`` (mean over the same tasks of per-task RMSE, the
reference) and ``test_rmse`` / ``train_rmse`` (pooled over samples, as the federated baselines). A task
without test samples has no test error: it is left out of the mean instead of counting as 0.

Systems model (virtual clock)
-----------------------------
Local work is charged through ``comm.compute``: ``steps x step_flops / speed`` per node, where ``step_flops``
defaults to an honest count (``6 d + 15`` per SDCA step, ``4 d + 5`` per SGD sample) and can be set to
the reference's unit costs (8 per MOCHA/CoCoA step, 6 per mini-batch SDCA step, 4 per mini-batch SGD
sample). With ``stragglers`` a node's draw ``f ~ U[bottom, top]`` is both its work fraction (for the
methods that take a fraction) and its *speed* this round (``speed = 1`` otherwise): a straggler doing
``f n_t`` steps takes as long as a full-speed node doing ``n_t``, while a method that needs a fixed amount
of local work (CoCoA-style) waits ``work / f`` for its slowest node. ``comm_cost`` adds a fixed per-round
communication cost, in flop units, charged to every node
after the exchange: a number, or ``"wifi"`` (10), ``"lte"`` (100), ``"3g"`` (1000) as in the
reference. With the default clock the byte-level ledger costs are added on top; with
``clock.compute_rate=1``, ``clock.latency=0`` and large bandwidths only work and ``comm_cost`` count.

``time_model`` says how a round's local work becomes time:

``"parallel"`` (default)
    Parallel wall-clock: the nodes work at the same time, so a round lasts as long as its *busiest*
    node's work (the ledger keeps the max over nodes), plus ``comm_cost``.
``"reference"``
    The reference's sequential "estimated time" (``optimization_driver.m``): every round is charged the
    *total* work of all tasks, ``sum_t steps_t x step_flops / speed`` (the reference's
    ``8 frac sum_t n_t``, 6 and 4 units for Mb-SDCA and Mb-SGD), or for CoCoA-style the number of tasks
    times its largest task's work (the reference's ``max_its x 8 m``), plus ``comm_cost``; a dropped
    task's work is 0 (the reference has no drop-outs). The totals
    are collected with ``comm.observe`` (clock accounting, not messages: the ledger's counts are those
    of the parallel model).

The two differ by about a factor K on the work term (exactly ``sum_t n_t / max_t n_t`` for MOCHA without
heterogeneity: 21.2 on landmine_small), not on ``comm_cost``: under ``"parallel"`` communication weighs
about K times more against local work than in the reference's plots, which favours methods that do
more local work per round and need fewer rounds (CoCoA-style) as ``comm_cost`` grows, and a
straggler's slowness costs only through the busiest node, not through every task. With
``time_model="reference"``, ``clock.compute_rate=1``, no latency, large bandwidths and ``step_flops``
set to the reference's unit costs, ``virtual_time`` is the reference's estimated time up to the
rounding of ``n_t frac`` and two modelling differences: with stragglers the reference charges the
flexible methods ``top x n_t`` whatever the draw (here ``f n_t`` steps at speed ``f``, i.e. ``n_t``),
and it does not slow CoCoA-style down with stragglers (here it is, in both models).

Baselines
---------
``mocha-cocoa`` (CoCoA-style)
    MOCHA's server and local subproblem, but every task solves its subproblem to a *fixed* relative
    accuracy each round: SDCA until the local duality gap (sum of Fenchel-Young gaps of its samples at
    ``v = w_t + rho dw_t``) falls to ``theta`` times its value at the start of the round, checked every
    ``check_every`` steps, at most ``max_local_iters`` steps (reference: 1000). Straggler draws do
    not reduce its work (a fixed accuracy is the point) but slow its nodes down (see the systems model);
    drop-outs apply. Gap checks are charged only with the honest flop count.
``mocha-mbsdca`` (mini-batch SDCA)
    Local SDCA steps against the *fixed* ``w_t`` (no local model update, denominator ``Sigma_tt``), then
    the server scales all updates by ``gamma = min(1, scaling / (total local steps))``:
    ``alpha <- alpha_prev + gamma (alpha - alpha_prev)``, ``W <- W + gamma dB Sigma / lambda``.
``mocha-mbsgd`` (mini-batch SGD)
    Each task computes the hinge sub-gradient of its mean loss on ``max(1, floor(n_t frac))`` sampled
    examples, ``G_t = (1/b_t) sum_{y x^T w_t < 1} y x``; the server steps
    ``W <- W - eta_h (lambda W Omega - G)`` with ``eta_h = step / (lambda mu h)``, ``mu`` the smallest
    eigenvalue of Omega and h the round within the outer iteration (Pegasos), then projects W onto the
    Frobenius ball of radius ``sqrt(2 K / (lambda mu))`` that contains the optimum. (The reference's
    update ``W (I - Omega s/h) + s G_sum / b_total`` omits lambda and mixes the tasks' batch sizes;
    we use the unbiased stochastic sub-gradient of the stated objective.)
``mocha-global``
    One SVM on the pooled data, ``(1/N) sum hinge + (lambda/2) ||w||^2``, by distributed SDCA with
    CoCoA+ "adding" aggregation (subproblem parameter ``sigma' = K``): every task runs
    ``max(1, floor(n_t frac))`` steps against the shared ``w``, the server adds the updates and
    broadcasts ``w``.
``mocha-local``
    One SVM per task, ``sum_t [mean_i hinge + (lambda/2) ||w_t||^2]``, ``max(1, floor(n_t frac))`` SDCA
    steps per round (default one epoch), no communication.

Unseen clients (``problem.truth["unseen"]``, e.g. ``fedem_synthetic`` with ``unseen_frac > 0``) are
rejected with a ConfigError: the MTRL objective gives every task its own model trained on its own data,
so a held-out client has nothing to train on and no model to be served.

Deviations from the reference code (documented choices)
-------------------------------------------------------
* Local steps ``max(1, floor(n_t frac))`` for every task that is not dropped (all methods and
  :func:`mocha_fit`). The reference's ``for s = 1:n_t*frac`` does none when ``n_t frac < 1``: a task
  with few samples, or a straggler's small draw, would then never train (its dual variables and model
  stay at 0 for ever). Identical whenever ``n_t frac >= 1`` (every Landmine task: ``n_t >= 33``).
* Mini-batch SDCA: ``gamma = min(1, scaling / total steps)``. The reference's ``scaling / total``
  exceeds 1 when fewer than ``scaling`` steps are taken in a round (few or small tasks, drop-outs);
  ``alpha y`` then leaves ``[0, 1]``, the "dual" is no longer a lower bound and the iterates can
  diverge. Identical whenever the round takes at least ``scaling`` steps.
* Uploads carry a one-float position tag (d + 1 floats per task; Mb-SDCA also sends its step count,
  d + 2, and receives ``gamma`` with ``w_t``, d + 1): with several tasks per node or drop-outs the
  server needs to know which task sent a row. The reference, one task per machine in one process,
  has no messages; ALGORITHMS.md counts d floats.
* ``recompute_w`` (above) and the time models (above).

Batched reference implementation
--------------------------------
:func:`mocha_fit` runs MOCHA on many independent problems at once (a leading problem axis: splits x
folds x lambdas of the reference protocol), with the same kernels and the same random draws; with one
problem and one task per node it reproduces the ``mocha`` algorithm exactly (tested).
:func:`svm_sdca` is the reference's ``simple_svm`` (cyclic SDCA, stop when the primal changes by less
than ``tol``, at most ``max_epochs`` passes) batched over problems, for the Global and Local baselines.

References
----------
V. Smith, C.-K. Chiang, M. Sanjabi and A. Talwalkar, "Federated multi-task learning", NeurIPS 2017,
and the authors' MATLAB code (github.com/gingsmith/fmtl).
S. Shalev-Shwartz and T. Zhang, "Stochastic dual coordinate ascent methods for regularized loss
minimization", JMLR 14, 2013.
C. Ma, V. Smith, M. Jaggi, M. I. Jordan, P. Richtarik and M. Takac, "Adding vs. averaging in
distributed primal-dual optimization", ICML 2015.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from dmtl.algorithms.base import Algorithm, check_int, check_positive, register
from dmtl.errors import ConfigError, DataError
from dmtl.losses import get_loss
from dmtl.network.comm import Communicator
from dmtl.oracle import omega_step
from dmtl.problem import Problem, TaskBlock
from dmtl.seeding import RunStreams

__all__ = [
    "COMM_COSTS",
    "Mocha",
    "MochaCoCoA",
    "MochaGlobal",
    "MochaLocal",
    "MochaMbSDCA",
    "MochaMbSGD",
    "MochaState",
    "MochaFit",
    "mocha_fit",
    "mtrl_objectives",
    "sdca_steps",
    "svm_sdca",
    "task_errors",
]

COMM_COSTS: dict[str, float] = {"wifi": 10.0, "lte": 100.0, "3g": 1000.0}
"""Per-round communication cost units of the reference's systems experiments."""

LOSSES = ("hinge", "squared")
TIME_MODELS = ("parallel", "reference")
_NSUMS = 11  # columns of _MochaFamily._task_sums
_BOX_TOL = 1e-9  # slack of the hinge dual box alpha y in [0, 1] (rounding of the Mb-SDCA averaging)

_TEST_OVERRIDES = [
    "problem.kind=related_tasks",
    "problem.tasks=6",
    "problem.d=4",
    "problem.samples=12",
    "problem.test_samples=6",
    "topology.nodes=6",
    "rounds=6",
    "eval_every=2",
    "algorithm.lam=0.05",
    "algorithm.inner_iters=3",
    "algorithm.stragglers=true",
    "algorithm.drop_prob=0.2",
]


# ------------------------------------------------------------------------------------------------
# Kernels (vectorised over rows = tasks, possibly of many problems)
# ------------------------------------------------------------------------------------------------


def sdca_steps(
    X: np.ndarray,
    y: np.ndarray,
    xx: np.ndarray,
    rows: np.ndarray,
    order: np.ndarray,
    steps: np.ndarray,
    alpha: np.ndarray,
    v: np.ndarray,
    scale: np.ndarray,
    n_eff: np.ndarray,
    lam: np.ndarray,
    loss: str = "hinge",
    move: bool = True,
    first: int = 0,
) -> np.ndarray:
    """Run SDCA steps on R rows in parallel; the loop is over the step index only.

    Parameters
    ----------
    X, y, xx : (G, n_max, d), (G, n_max), (G, n_max)
        Padded data and squared row norms; row r uses ``X[rows[r]]``.
    rows : (R,) int
        Data row of each SDCA row.
    order : (R, S) int
        Sample visited at step s (``first + s`` for s < steps).
    steps : (R,) int
        Steps of each row (0: idle).
    alpha : (R, n_max)
        Dual variables, updated in place.
    v : (R, d)
        Point where margins are taken (``w + rho dw``), updated in place when ``move``.
    scale : (R,)
        ``rho Sigma_tt`` (MOCHA), ``sigma'`` (CoCoA+), 1 (plain SDCA).
    n_eff : (R,)
        Sample count of the dual scaling (``n_t``, or N for the pooled problem).
    lam : (R,)
        Regularisation of each row.
    loss : {"hinge", "squared"}
    move : bool
        Update ``v`` after every step (False: mini-batch SDCA against a fixed point).
    first : int
        Column of ``order`` to start from.

    Returns
    -------
    db : (R, d)
        ``sum_steps (alpha' - alpha) x / n_eff``.
    """
    R, d = v.shape
    ar = np.arange(R)
    top = int(steps.max(initial=0))
    lam_n = lam * n_eff
    inv_n = 1.0 / n_eff
    step_v = scale / lam
    # feature-major (d, R) layout: per-step reductions and updates run over contiguous rows
    vT = np.ascontiguousarray(v.T)
    dbT = np.zeros((d, R))
    chunk = 64
    for c0 in range(0, top, chunk):
        # gather the chunk's samples step-major, so that every step reads contiguous rows
        cols = np.ascontiguousarray(order[:, first + c0 : first + min(top, c0 + chunk)].T)  # (c, R)
        Xo = np.ascontiguousarray(np.swapaxes(X[rows[None, :], cols], 1, 2))  # (c, d, R)
        yo = y[rows[None, :], cols]
        q2 = xx[rows[None, :], cols] * scale
        if loss == "hinge":
            with np.errstate(divide="ignore"):
                lq = np.where(q2 > 0, lam_n / np.where(q2 > 0, q2, 1.0), np.inf)
        else:
            shrink = 1.0 / (1.0 + q2 / lam_n)
        act = (c0 + np.arange(cols.shape[0]))[:, None] < steps[None, :]
        for s in range(cols.shape[0]):
            i = cols[s]
            x = Xo[s]
            yi = yo[s]
            a = alpha[ar, i]
            m = np.einsum("dr,dr->r", x, vT)
            if loss == "hinge":
                beta = np.clip(lq[s] * (1.0 - yi * m) + a * yi, 0.0, 1.0)
                da = np.where(act[s], yi * beta - a, 0.0)
            else:
                da = np.where(act[s], (yi - m - a) * shrink[s], 0.0)
            alpha[ar, i] = a + da
            c = da * inv_n
            dbT += c * x
            if move:
                vT += (c * step_v) * x
    if move:
        v[...] = vT.T
    return np.ascontiguousarray(dbT.T)


def _local_steps(n: np.ndarray, frac: np.ndarray, dropped: np.ndarray) -> np.ndarray:
    """Local steps of each task: ``max(1, floor(n frac))``, 0 for a dropped task.

    Notes
    -----
    The reference's ``for s = 1:n*frac`` takes ``floor(n frac)`` steps, none at all when ``n frac < 1``:
    a small task (or a straggler's small draw) would never train. Every task that is not dropped takes
    at least one step; identical to the reference whenever ``n frac >= 1``.
    """
    return np.where(dropped, 0, np.maximum(1.0, np.floor(n * frac))).astype(np.int64)


def _order(keys: np.ndarray, mask: np.ndarray, n: np.ndarray, length: int) -> np.ndarray:
    """Visit order (R, length): a random permutation of each row's samples, repeated cyclically.

    Row r visits its samples by increasing key; only the first ``min(length, n_r)`` places of the
    permutation are needed, so a partition precedes the sort when ``length`` is short.
    """
    masked = np.where(mask, keys, 2.0)
    width = min(max(length, 1), masked.shape[1])
    if width < masked.shape[1]:
        part = np.argpartition(masked, width - 1, axis=1)[:, :width]
        perm = np.take_along_axis(part, np.argsort(np.take_along_axis(masked, part, 1), axis=1), 1)
    else:
        perm = np.argsort(masked, axis=1, kind="stable")
    pos = np.arange(max(length, 1))[None, :] % np.maximum(n, 1)[:, None]
    return np.take_along_axis(perm, pos, axis=1)


def _conj(loss: str, alpha: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``-loss*(-alpha)``: ``alpha y`` (hinge) or ``alpha y - alpha^2 / 2`` (squared)."""
    return alpha * y if loss == "hinge" else alpha * y - 0.5 * alpha * alpha


def _fy_gap(loss: str, margins: np.ndarray, alpha: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fenchel-Young gaps ``l(s) + l*(-alpha) + alpha s`` per sample, ``s`` the score."""
    if loss == "hinge":
        ym = y * margins
        return np.maximum(0.0, 1.0 - ym) - alpha * y * (1.0 - ym)
    r = margins - y + alpha
    return 0.5 * r * r


def _check_hyper(
    owner: str,
    *,
    loss: str,
    losses: tuple[str, ...],
    frac: float,
    bottom: float,
    top: float,
    drop_prob: float,
    eig_floor: float,
    flags: dict[str, Any],
    ints: dict[str, Any],
) -> None:
    """Checks shared by the MOCHA-family algorithms and :func:`mocha_fit` (ConfigError, one line each)."""
    if not isinstance(loss, str) or loss not in losses:
        raise ConfigError(f"{owner}.loss must be one of {', '.join(losses)}, got {loss!r}")
    check_positive(owner, frac=frac, top=top, eig_floor=eig_floor)
    check_int(owner, 1, **ints)
    real = (int, float, np.integer, np.floating)
    if isinstance(bottom, bool) or not (isinstance(bottom, real) and 0 <= bottom <= top):
        raise ConfigError(f"{owner}.bottom must satisfy 0 <= bottom <= top, got {bottom!r}")
    if isinstance(drop_prob, bool) or not (isinstance(drop_prob, real) and 0 <= drop_prob < 1):
        raise ConfigError(f"{owner}.drop_prob must lie in [0, 1), got {drop_prob!r}")
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise ConfigError(f"{owner}.{key} must be true or false, got {value!r}")


def _resolve_cost(owner: str, value: float | str) -> float:
    if isinstance(value, str):
        if value.lower() not in COMM_COSTS:
            raise ConfigError(
                f"{owner}.comm_cost must be a number >= 0 or one of {', '.join(COMM_COSTS)}, got {value!r}"
            )
        return COMM_COSTS[value.lower()]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
        raise ConfigError(f"{owner}.comm_cost must be a number >= 0 or one of {', '.join(COMM_COSTS)}")
    return float(value)


# ------------------------------------------------------------------------------------------------
# State
# ------------------------------------------------------------------------------------------------


@dataclass
class MochaState:
    """State of a block of nodes (and the replicated server state).

    Attributes
    ----------
    data : the block's tasks.
    mask, xx : (k, n_max) real-sample mask and squared row norms of the block's tasks.
    alpha : (k, n_max) dual variables (zero on padding).
    w : (k, d) each task's current model (what its node received).
    sig, rho : (k,) the tasks' ``Sigma_tt`` and the current ``rho``.
    rng : the ``nodes`` stream (draws the full per-round arrays; every shard the same numbers).
    W, B : (K, d) server's models and ``B`` rows, in node order (replicated; None for mocha-local).
    Sigma, Omega : (K, K) server's task covariance and precision (node order).
    order : (K,) global task ids in node order; ``block_pos`` the block's positions in it.
    iteration : completed rounds; ``inner`` rounds since the last Omega-step.
    """

    data: TaskBlock
    mask: np.ndarray
    xx: np.ndarray
    alpha: np.ndarray
    w: np.ndarray
    sig: np.ndarray
    rho: np.ndarray
    rng: np.random.Generator
    order: np.ndarray
    block_pos: np.ndarray
    task_node: np.ndarray
    n_max: int
    W: np.ndarray | None = None
    B: np.ndarray | None = None
    Sigma: np.ndarray | None = None
    Omega: np.ndarray | None = None
    n_total: float = 0.0
    iteration: int = 0
    inner: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------
# Shared machinery
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _MochaFamily(Algorithm):
    """Hyper-parameters and machinery shared by MOCHA and its baselines."""

    lam: float = 1e-4
    loss: str = "hinge"
    frac: float = 0.5
    inner_iters: int = 100
    stragglers: bool = False
    bottom: float = 0.1
    top: float = 1.0
    drop_prob: float = 0.0
    update_omega: bool = True
    eig_floor: float = 1e-7
    comm_cost: float | str = 0.0
    step_flops: float | None = None
    time_model: str = "parallel"

    family: ClassVar[str] = "federated MTL (MOCHA)"
    network: ClassVar[str] = "server"
    test_overrides: ClassVar[list[str]] = _TEST_OVERRIDES
    _losses: ClassVar[tuple[str, ...]] = LOSSES

    def __post_init__(self) -> None:
        owner = f"algorithm({self.name})"
        check_positive(owner, lam=self.lam)
        _check_hyper(
            owner,
            loss=self.loss,
            losses=self._losses,
            frac=self.frac,
            bottom=self.bottom,
            top=self.top,
            drop_prob=self.drop_prob,
            eig_floor=self.eig_floor,
            flags={"stragglers": self.stragglers, "update_omega": self.update_omega},
            ints={"inner_iters": self.inner_iters},
        )
        if self.time_model not in TIME_MODELS:
            raise ConfigError(
                f"{owner}.time_model must be one of {', '.join(TIME_MODELS)}, got {self.time_model!r}"
            )
        _resolve_cost(owner, self.comm_cost)
        if self.step_flops is not None:
            check_positive(owner, step_flops=self.step_flops)

    # -- initialisation ---------------------------------------------------------------------------
    def _init_block(self, problem: Problem, comm: Communicator, rng: RunStreams) -> MochaState:
        owner = f"algorithm({self.name})"
        loss = get_loss(self.loss)
        unseen = problem.truth.get("unseen")
        if unseen is not None and np.any(unseen):
            raise ConfigError(
                f"{owner} cannot serve unseen clients (every MTRL task trains its own model on its own "
                f"data): set problem.unseen_frac=0 ({int(np.sum(unseen))} clients are flagged unseen)"
            )
        mask_all = problem.mask
        loss.check_labels(problem.y[mask_all], f"{owner}: problem training labels (loss={self.loss})")
        if problem.y_test is not None:
            tmask = np.arange(problem.y_test.shape[1])[None, :] < problem.n_test[:, None]
            loss.check_labels(problem.y_test[tmask], f"{owner}: problem test labels (loss={self.loss})")
        data = problem.block(comm.start, comm.stop)
        mask = np.arange(data.X.shape[1])[None, :] < data.n_samples[:, None]
        X = np.where(mask[:, :, None], data.X, 0.0)
        order = problem.placement.tasks_of(0, problem.n_nodes)
        pos = np.empty(problem.n_tasks, dtype=np.int64)
        pos[order] = np.arange(problem.n_tasks)
        k, n_max, d = data.X.shape
        return MochaState(
            data=replace_block(data, X),
            mask=mask,
            xx=np.einsum("knd,knd->kn", X, X),
            alpha=np.zeros((k, n_max)),
            w=np.zeros((k, d)),
            sig=np.ones(k),
            rho=np.ones(k),
            rng=rng.generator("nodes"),
            order=order,
            block_pos=pos[data.tasks],
            task_node=problem.placement.task_node[order],
            n_max=n_max,
        )

    def _init_server(self, state: MochaState, comm: Communicator, d: int) -> MochaState:
        """Server state W = B = 0, Sigma = I/K, Omega = K I, rho = 1; each task receives (Sigma_tt, rho)."""
        K = len(state.order)
        Sigma = np.eye(K) / K
        sent = comm.scatter(np.stack([np.diag(Sigma), np.ones(K)], 1), counts=state.data.tasks_per_node)
        return replace(
            state,
            W=np.zeros((K, d)),
            B=np.zeros((K, d)),
            Sigma=Sigma,
            Omega=K * np.eye(K),
            sig=sent[:, 0].copy(),
            rho=sent[:, 1].copy(),
        )

    # -- per-round randomness ------------------------------------------------------------------------
    def _draws(self, state: MochaState, comm: Communicator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Keys (k, n_max), work fraction (k,) and drop-out flag (k,) of the block's tasks.

        The full arrays are drawn every round in a fixed order (keys for all tasks by global id,
        fractions and drop-outs for all nodes), whatever the settings and the sharding.
        """
        n_tasks = len(state.order)
        keys = state.rng.random((n_tasks, state.n_max))[state.data.tasks]
        frac_nodes = state.rng.uniform(self.bottom, self.top, comm.n_nodes)
        drop_nodes = state.rng.random(comm.n_nodes) < self.drop_prob
        node = state.data.node
        speed = comm.local(frac_nodes) if self.stragglers else np.ones(comm.n_local)
        state.extra["speed"] = speed
        frac = speed[node] if self.stragglers else np.full(len(node), float(self.frac))
        return keys, frac, comm.local(drop_nodes)[node]

    def _step_cost(self, d: int, kind: str = "sdca") -> float:
        if self.step_flops is not None:
            return float(self.step_flops)
        return 6.0 * d + 15.0 if kind == "sdca" else 4.0 * d + 5.0

    def _charge(
        self, comm: Communicator, state: MochaState, per_task_flops: np.ndarray, fixed_accuracy: bool = False
    ) -> None:
        """Local work at each node's speed this round (its straggler draw, or 1), by ``time_model``.

        ``"parallel"``: every node its own work (the ledger keeps the busiest node's). ``"reference"``:
        every node the total over all tasks (``fixed_accuracy``, CoCoA-style: the number of tasks times
        the largest task's work), gathered with ``comm.observe`` (accounting, not a message).
        """
        data = state.data
        speed = state.extra["speed"]
        if self.time_model == "parallel":
            comm.compute(data.sum_to_nodes(per_task_flops) / speed)
            return
        task_time = per_task_flops / speed[data.node]
        if fixed_accuracy:
            node_max = np.zeros(comm.n_local)
            np.maximum.at(node_max, data.node, task_time)
            total = len(state.order) * float(comm.observe(node_max).max(initial=0.0))
        else:
            total = float(comm.observe(data.sum_to_nodes(task_time)).sum())
        comm.compute(np.full(comm.n_local, total))

    def _charge_round(self, comm: Communicator) -> None:
        cost = _resolve_cost(self.name, self.comm_cost)
        if cost > 0:
            comm.compute(np.full(comm.n_local, cost))

    # -- server ------------------------------------------------------------------------------------
    def _omega(self, state: MochaState) -> tuple[np.ndarray, np.ndarray, float]:
        assert state.W is not None
        Sigma, Omega, rho = omega_step(state.W.T, self.eig_floor)
        return Sigma, Omega, float(rho)

    # -- metrics -----------------------------------------------------------------------------------
    def _task_sums(self, state: MochaState, models: np.ndarray) -> np.ndarray:
        """Per node, summed over its tasks (``_NSUMS`` columns): mean loss, mean conjugate, per-task
        train / test error (rate or RMSE), 1 (tasks), pooled train / test wrong counts (or squared
        errors), train / test sample counts, 1 if the task has test samples, and the number of hinge
        dual variables outside their box (``alpha y`` not in ``[0, 1]``)."""
        data = state.data
        loss = get_loss(self.loss)
        k = len(data.tasks)
        per = np.zeros((k, _NSUMS))
        if k:
            s = np.einsum("knd,kd->kn", data.X, models)
            n = data.n_samples
            per[:, 0] = np.where(state.mask, loss.value(s, data.y), 0.0).sum(1) / n
            per[:, 1] = np.where(state.mask, _conj(self.loss, state.alpha, data.y), 0.0).sum(1) / n
            per[:, 5], per[:, 7] = self._error(s, data.y, state.mask)
            per[:, 2] = self._per_task(per[:, 5], per[:, 7])
            if data.X_test is not None:
                tmask = np.arange(data.X_test.shape[1])[None, :] < data.n_test[:, None]
                st = np.einsum("knd,kd->kn", data.X_test, models)
                per[:, 6], per[:, 8] = self._error(st, data.y_test, tmask)
                per[:, 3] = self._per_task(per[:, 6], per[:, 8])
                per[:, 9] = per[:, 8] > 0
            per[:, 4] = 1.0
            if self.loss == "hinge":
                box = state.alpha * data.y
                per[:, 10] = (state.mask & ((box < -_BOX_TOL) | (box > 1.0 + _BOX_TOL))).sum(1)
        return data.sum_to_nodes(per)

    def _error(self, s: np.ndarray, y: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per task: number of mistakes (hinge) or sum of squared errors (squared), and sample count."""
        if self.loss == "hinge":
            bad = np.where(mask, np.where(s >= 0, 1.0, -1.0) != y, False).sum(1)
        else:
            bad = np.where(mask, (s - y) ** 2, 0.0).sum(1)
        return bad.astype(float), mask.sum(1).astype(float)

    def _per_task(self, bad: np.ndarray, cnt: np.ndarray) -> np.ndarray:
        rate = bad / np.maximum(cnt, 1.0)
        return rate if self.loss == "hinge" else np.sqrt(rate)

    def _error_metrics(self, sums: np.ndarray, has_test: bool) -> dict[str, float]:
        """Per-task means over the tasks that have samples (the reference's ``opts.avg = 1``) and pooled
        sample-weighted values; NaN when there is no sample at all."""
        parts = [("train", 2, 5, 7, 4)] + ([("test", 3, 6, 8, 9)] if has_test else [])
        out = {}
        for prefix, task_col, bad_col, cnt_col, tasks_col in parts:
            pooled = sums[bad_col] / sums[cnt_col] if sums[cnt_col] > 0 else np.nan
            per_task = sums[task_col] / sums[tasks_col] if sums[tasks_col] > 0 else np.nan
            if self.loss == "hinge":
                out[f"{prefix}_error"] = float(per_task)
                out[f"{prefix}_accuracy"] = float(1.0 - pooled)
            else:
                out[f"{prefix}_task_rmse"] = float(per_task)
                out[f"{prefix}_rmse"] = float(np.sqrt(pooled))
        return out

    @staticmethod
    def _dual(sums: np.ndarray, value: float) -> float:
        """The dual value, NaN if a hinge dual variable is outside its box (no longer a dual bound)."""
        return float(value) if sums[10] == 0 else float("nan")


def _upload(
    comm: Communicator, state: MochaState, rows: np.ndarray, active: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The active tasks upload their ``rows`` tagged with their position (one float of header); the
    server gets the rows and the positions (node order) of their senders."""
    tagged = np.hstack([rows, state.block_pos[:, None].astype(float)])[active]
    counts = state.data.sum_to_nodes(active.astype(float)).astype(np.int64)
    full = comm.gather(tagged, counts=counts)
    return full[:, :-1], full[:, -1].astype(np.int64)


def replace_block(data: TaskBlock, X: np.ndarray) -> TaskBlock:
    """The block with padded rows of ``X`` zeroed (padding must not contribute)."""
    return TaskBlock(
        tasks=data.tasks,
        node=data.node,
        X=X,
        y=np.where(np.arange(X.shape[1])[None, :] < data.n_samples[:, None], data.y, 0.0),
        n_samples=data.n_samples,
        n_local=data.n_local,
        X_test=data.X_test,
        y_test=data.y_test,
        n_test=data.n_test,
    )


# ------------------------------------------------------------------------------------------------
# MOCHA and the MTRL-objective baselines
# ------------------------------------------------------------------------------------------------


@register
@dataclass(frozen=True)
class Mocha(_MochaFamily):
    """MOCHA: per-task SDCA on the MTRL dual, server aggregation, closed-form Omega-step.

    Parameters
    ----------
    lam : float
        Regularisation lambda > 0.
    loss : {"hinge", "squared"}
        Task loss (labels ``{-1, +1}`` for hinge).
    frac : float
        Local SDCA steps per round as a fraction of n_t (0.5 as the reference).
    inner_iters : int
        H_in: inner rounds between Omega-steps (one runner round = one inner round).
    stragglers : bool
        Draw each node's fraction from U[bottom, top] every round instead of ``frac``.
    bottom, top : float
        Straggler range (0.1 and 1.0 as the reference).
    drop_prob : float
        Probability that a node does no work (and sends nothing) in a round.
    update_omega : bool
        Take the Omega-step every ``inner_iters`` rounds (False: Omega fixed at K I).
    recompute_w : bool
        After the Omega-step set ``W = B Sigma / lambda`` (paper); False keeps W (reference code).
    eig_floor : float
        Floor of the eigenvalues of ``W^T W`` in the Omega-step.
    comm_cost : float or {"wifi", "lte", "3g"}
        Fixed per-round communication cost in flop units (10, 100, 1000).
    step_flops : float, optional
        Flops charged per SDCA step (default ``6 d + 15``; the reference's unit cost is 8).
    time_model : {"parallel", "reference"}
        How local work becomes virtual time (module notes): the busiest node's work per round
        (parallel wall-clock, default) or the total work of all tasks per round (the reference's
        sequential "estimated time", about K times larger on the work term).
    """

    recompute_w: bool = True

    name: ClassVar[str] = "mocha"
    summary: ClassVar[str] = "MOCHA: federated MTRL by per-task SDCA with stragglers and drop-outs"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.recompute_w, bool):
            raise ConfigError(f"algorithm({self.name}).recompute_w must be true or false")

    def init(self, problem: Problem, comm: Communicator, rng: RunStreams) -> MochaState:
        state = self._init_block(problem, comm, rng)
        return self._init_server(state, comm, problem.n_features)

    def _local(self, state: MochaState, comm: Communicator) -> tuple[MochaState, np.ndarray, np.ndarray]:
        """Run the round's local SDCA; returns (state, db (k, d), steps (k,))."""
        keys, frac, dropped = self._draws(state, comm)
        data = state.data
        steps = _local_steps(data.n_samples, frac, dropped)
        order = _order(keys, state.mask, data.n_samples, int(steps.max(initial=0)))
        alpha = state.alpha.copy()
        v = state.w.copy()
        lam = np.full(len(steps), self.lam)
        db = sdca_steps(
            data.X,
            data.y,
            state.xx,
            np.arange(len(steps)),
            order,
            steps,
            alpha,
            v,
            state.rho * state.sig,
            data.n_samples.astype(float),
            lam,
            self.loss,
        )
        self._charge(comm, state, steps * self._step_cost(data.X.shape[2]))
        return replace(state, alpha=alpha), db, steps

    def step(self, state: MochaState, comm: Communicator) -> MochaState:
        state, db, steps = self._local(state, comm)
        return self._aggregate(state, comm, db, steps > 0, gamma=None)

    def _aggregate(
        self,
        state: MochaState,
        comm: Communicator,
        db: np.ndarray,
        active: np.ndarray,
        gamma: Callable[[np.ndarray], float] | None,
        extra_up: np.ndarray | None = None,
    ) -> MochaState:
        """Upload the active tasks' ``db`` (plus ``extra_up`` columns), update W on the server, and send
        every task its row ``[w_t (, gamma) (, Sigma_tt, rho after an Omega-step)]``."""
        data = state.data
        K, d = state.W.shape
        full, idx = _upload(comm, state, db if extra_up is None else np.hstack([db, extra_up]), active)
        dB = np.zeros((K, d))
        dB[idx] = full[:, :d]
        g = 1.0 if gamma is None else gamma(full)
        W = state.W + g * (state.Sigma @ dB) / self.lam
        B = state.B + g * dB
        Sigma, Omega, rho = state.Sigma, state.Omega, None
        inner = state.inner + 1
        if self.update_omega and inner == self.inner_iters:
            state = replace(state, W=W)
            Sigma, Omega, rho = self._omega(state)
            inner = 0
            if getattr(self, "recompute_w", True):
                W = Sigma @ B / self.lam
        cols = [W]
        if gamma is not None:
            cols.append(np.full((K, 1), g))
        if rho is not None:
            cols += [np.diag(Sigma)[:, None], np.full((K, 1), rho)]
        rows = comm.scatter(np.hstack(cols), counts=data.tasks_per_node)
        w = rows[:, :d].copy()
        sig, rho_loc = state.sig, state.rho
        if rho is not None:
            sig, rho_loc = rows[:, -2].copy(), rows[:, -1].copy()
        self._charge_round(comm)
        state.extra["gamma"] = rows[:, d] if gamma is not None else None
        return replace(
            state,
            W=W,
            B=B,
            Sigma=Sigma,
            Omega=Omega,
            w=w,
            sig=sig,
            rho=rho_loc,
            iteration=state.iteration + 1,
            inner=inner,
        )

    def evaluate(self, state: MochaState, comm: Communicator) -> dict[str, float]:
        sums = comm.observe(self._task_sums(state, state.w)).sum(axis=0)
        W, B = state.W, state.B
        primal = sums[0] + 0.5 * self.lam * float(np.sum(state.Omega * (W @ W.T)))
        dual = self._dual(sums, sums[1] - float(np.sum(state.Sigma * (B @ B.T))) / (2 * self.lam))
        out = {"primal": float(primal), "dual": dual, "duality_gap": float(primal - dual)}
        out.update(self._error_metrics(sums, state.data.X_test is not None))
        return out


@register
@dataclass(frozen=True)
class MochaCoCoA(Mocha):
    """CoCoA-style baseline: MOCHA's subproblem solved to a fixed relative accuracy ``theta`` per round.

    Parameters (besides MOCHA's)
    ----------------------------
    theta : float
        Stop a task's local SDCA when its local duality gap is <= theta x its value at round start.
    check_every : int
        Steps between gap checks (5 as the reference).
    max_local_iters : int
        Cap on local steps per round (1000 as the reference).
    """

    theta: float = 0.5
    check_every: int = 5
    max_local_iters: int = 1000

    name: ClassVar[str] = "mocha-cocoa"
    summary: ClassVar[str] = "CoCoA-style baseline: fixed local accuracy per round (waits for stragglers)"

    def __post_init__(self) -> None:
        super().__post_init__()
        owner = f"algorithm({self.name})"
        check_positive(owner, theta=self.theta)
        check_int(owner, 1, check_every=self.check_every, max_local_iters=self.max_local_iters)

    def _local(self, state: MochaState, comm: Communicator) -> tuple[MochaState, np.ndarray, np.ndarray]:
        keys, _, dropped = self._draws(state, comm)
        data = state.data
        k, _, d = data.X.shape
        n = data.n_samples.astype(float)
        order = _order(keys, state.mask, data.n_samples, self.max_local_iters)
        alpha = state.alpha.copy()
        v = state.w.copy()
        scale = state.rho * state.sig
        lam = np.full(k, self.lam)
        ar = np.arange(k)

        def local_gap() -> np.ndarray:
            s = np.einsum("knd,kd->kn", data.X, v)
            return np.where(state.mask, _fy_gap(self.loss, s, alpha, data.y), 0.0).sum(1) / n

        gap0 = local_gap()
        running = ~dropped & (gap0 > 0)
        done_steps = np.zeros(k, dtype=np.int64)
        db = np.zeros((k, d))
        checks = np.zeros(k)
        pos = 0
        while running.any() and pos < self.max_local_iters:
            chunk = min(self.check_every, self.max_local_iters - pos)
            steps = np.where(running, chunk, 0)
            db += sdca_steps(
                data.X, data.y, state.xx, ar, order, steps, alpha, v, scale, n, lam, self.loss, first=pos
            )
            done_steps += steps
            pos += chunk
            checks += running
            running &= local_gap() > self.theta * gap0
        flops = done_steps * self._step_cost(d)
        if self.step_flops is None:
            flops = flops + checks * data.n_samples * (2.0 * d + 6.0)
        self._charge(comm, state, flops, fixed_accuracy=True)
        state.extra["steps"] = done_steps
        return replace(state, alpha=alpha), db, done_steps


@register
@dataclass(frozen=True)
class MochaMbSDCA(Mocha):
    """Mini-batch SDCA baseline: local steps against a fixed ``w_t``, updates scaled by
    ``gamma = min(1, scaling / total steps)`` at the server.

    Parameters (besides MOCHA's)
    ----------------------------
    scaling : float
        Numerator of gamma (10 as the reference's ``mbsdca_scaling``).

    Notes
    -----
    The reference uses ``gamma = scaling / total steps`` uncapped. With fewer than ``scaling`` steps in
    a round (a few small tasks, drop-outs) that exceeds 1: the averaged ``alpha y`` leaves ``[0, 1]``,
    the reported dual stops being a lower bound and the iterates can diverge. Capping at 1 (the plain
    sum of the SDCA updates, each of which stays in the box) keeps every iterate dual-feasible and
    bounded; identical to the reference whenever a round takes at least ``scaling`` steps. (Steps taken
    against the same ``w_t`` are only safe with ``gamma`` about ``1 / steps``: with few steps per round
    and ``gamma = 1`` the primal can still oscillate; lower ``scaling`` for such problems.)
    """

    scaling: float = 10.0

    name: ClassVar[str] = "mocha-mbsdca"
    summary: ClassVar[str] = "mini-batch SDCA baseline on the MTRL objective"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(f"algorithm({self.name})", scaling=self.scaling)

    def step(self, state: MochaState, comm: Communicator) -> MochaState:
        keys, frac, dropped = self._draws(state, comm)
        data = state.data
        k, _, d = data.X.shape
        steps = _local_steps(data.n_samples, frac, dropped)
        order = _order(keys, state.mask, data.n_samples, int(steps.max(initial=0)))
        alpha = state.alpha.copy()
        v = state.w.copy()
        lam = np.full(k, self.lam)
        n = data.n_samples.astype(float)
        ar = np.arange(k)
        db = sdca_steps(
            data.X, data.y, state.xx, ar, order, steps, alpha, v, state.sig, n, lam, self.loss, False
        )
        self._charge(comm, state, steps * self._step_cost(d))
        active = steps > 0

        def gamma(full: np.ndarray) -> float:  # capped at 1: see the deviations in the module notes
            total = full[:, d].sum()
            return float(min(1.0, self.scaling / total)) if total > 0 else 0.0

        new = self._aggregate(state, comm, db, active, gamma, extra_up=steps[:, None].astype(float))
        g = new.extra["gamma"]
        alpha = state.alpha + g[:, None] * (alpha - state.alpha) if len(g) else alpha
        return replace(new, alpha=alpha)


@register
@dataclass(frozen=True)
class MochaMbSGD(Mocha):
    """Mini-batch SGD baseline on the MTRL primal (Pegasos steps, Frobenius-ball projection).

    Parameters (besides MOCHA's)
    ----------------------------
    step : float
        Multiplier of the step ``eta_h = step / (lambda mu h)``.
    """

    step_size: float = 1.0

    name: ClassVar[str] = "mocha-mbsgd"
    summary: ClassVar[str] = "mini-batch SGD baseline on the MTRL objective"
    _losses: ClassVar[tuple[str, ...]] = ("hinge",)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(f"algorithm({self.name})", step_size=self.step_size)

    def step(self, state: MochaState, comm: Communicator) -> MochaState:
        keys, frac, dropped = self._draws(state, comm)
        data = state.data
        k, _, d = data.X.shape
        steps = _local_steps(data.n_samples, frac, dropped)
        width = int(steps.max(initial=0))
        order = _order(keys, state.mask, data.n_samples, width)
        ar = np.arange(k)[:, None]
        Xb = data.X[ar, order]  # (k, width, d)
        yb = data.y[ar, order]
        inb = np.arange(width)[None, :] < steps[:, None]
        viol = inb & (yb * np.einsum("kbd,kd->kb", Xb, state.w) < 1.0)
        G = np.einsum("kb,kbd->kd", np.where(viol, yb, 0.0), Xb) / np.maximum(steps, 1)[:, None]
        self._charge(comm, state, steps * self._step_cost(d, "sgd"))
        full, idx = _upload(comm, state, G, steps > 0)
        K = state.W.shape[0]
        Gall = np.zeros((K, d))
        Gall[idx] = full
        h = state.inner + 1
        mu = float(np.linalg.eigvalsh(state.Omega)[0])
        eta = self.step_size / (self.lam * mu * h)
        W = state.W - eta * (self.lam * state.Omega @ state.W - Gall)
        radius = np.sqrt(2.0 * K / (self.lam * mu))
        norm = float(np.linalg.norm(W))
        if norm > radius:
            W = W * (radius / norm)
        Sigma, Omega, inner = state.Sigma, state.Omega, h
        if self.update_omega and h == self.inner_iters:
            Sigma, Omega, _ = omega_step(W.T, self.eig_floor)
            inner = 0
        w = comm.scatter(W, counts=data.tasks_per_node)
        self._charge_round(comm)
        return replace(
            state, W=W, Sigma=Sigma, Omega=Omega, w=w.copy(), iteration=state.iteration + 1, inner=inner
        )

    def evaluate(self, state: MochaState, comm: Communicator) -> dict[str, float]:
        sums = comm.observe(self._task_sums(state, state.w)).sum(axis=0)
        W = state.W
        primal = sums[0] + 0.5 * self.lam * float(np.sum(state.Omega * (W @ W.T)))
        out = {"primal": float(primal)}
        out.update(self._error_metrics(sums, state.data.X_test is not None))
        return out


# ------------------------------------------------------------------------------------------------
# Global and Local SVM baselines
# ------------------------------------------------------------------------------------------------


@register
@dataclass(frozen=True)
class MochaGlobal(_MochaFamily):
    """Global baseline: one model for all tasks on the pooled data, by CoCoA+ (adding) SDCA.

    Objective ``(1/N) sum_all loss + (lambda/2) ||w||^2``; each round every task runs
    ``max(1, floor(n_t frac))`` SDCA steps with subproblem parameter ``sigma' = K`` against the shared ``w``,
    the server adds ``sum_t db_t / lambda`` and broadcasts ``w``. ``frac`` defaults to 1 (one epoch).
    """

    frac: float = 1.0

    name: ClassVar[str] = "mocha-global"
    summary: ClassVar[str] = "Global baseline: one SVM on the pooled data (distributed SDCA, CoCoA+ adding)"

    def init(self, problem: Problem, comm: Communicator, rng: RunStreams) -> MochaState:
        state = self._init_block(problem, comm, rng)
        counts = state.data.sum_to_nodes(state.data.n_samples[:, None].astype(float))
        n_total = comm.broadcast(comm.gather(counts).sum()).item()
        d = problem.n_features
        return replace(state, W=np.zeros((1, d)), B=np.zeros((1, d)), n_total=float(n_total))

    def step(self, state: MochaState, comm: Communicator) -> MochaState:
        keys, frac, dropped = self._draws(state, comm)
        data = state.data
        k, _, d = data.X.shape
        K = len(state.order)
        steps = _local_steps(data.n_samples, frac, dropped)
        order = _order(keys, state.mask, data.n_samples, int(steps.max(initial=0)))
        alpha = state.alpha.copy()
        v = state.w.copy()
        db = sdca_steps(
            data.X,
            data.y,
            state.xx,
            np.arange(k),
            order,
            steps,
            alpha,
            v,
            np.full(k, float(K)),
            np.full(k, state.n_total),
            np.full(k, self.lam),
            self.loss,
        )
        self._charge(comm, state, steps * self._step_cost(d))
        active = steps > 0
        counts = data.sum_to_nodes(active.astype(float)).astype(np.int64)
        full = comm.gather(db[active], counts=counts)
        dsum = full.sum(axis=0)
        W = state.W + dsum[None, :] / self.lam
        B = state.B + dsum[None, :]
        w = comm.broadcast(W[0])
        self._charge_round(comm)
        return replace(
            state,
            alpha=alpha,
            W=W,
            B=B,
            w=np.broadcast_to(w, (k, d)).copy(),
            iteration=state.iteration + 1,
        )

    def evaluate(self, state: MochaState, comm: Communicator) -> dict[str, float]:
        data = state.data
        per = self._task_sums(state, state.w)
        # pooled means: re-weight the per-task means by n_t / N
        k = len(data.tasks)
        loss = get_loss(self.loss)
        pooled = np.zeros((k, 2))
        if k:
            s = np.einsum("knd,kd->kn", data.X, state.w)
            pooled[:, 0] = np.where(state.mask, loss.value(s, data.y), 0.0).sum(1)
            pooled[:, 1] = np.where(state.mask, _conj(self.loss, state.alpha, data.y), 0.0).sum(1)
        sums = comm.observe(np.hstack([per, data.sum_to_nodes(pooled)])).sum(axis=0)
        w = state.W[0]
        primal = sums[_NSUMS] / state.n_total + 0.5 * self.lam * float(w @ w)
        b = state.B[0]
        dual = self._dual(sums, sums[_NSUMS + 1] / state.n_total - float(b @ b) / (2 * self.lam))
        out = {"primal": float(primal), "dual": dual, "duality_gap": float(primal - dual)}
        out.update(self._error_metrics(sums, data.X_test is not None))
        return out


@register
@dataclass(frozen=True)
class MochaLocal(_MochaFamily):
    """Local baseline: one SVM per task by SDCA (``max(1, floor(n_t frac))`` steps per round), no
    communication.

    Objective ``sum_t [mean_i loss + (lambda/2) ||w_t||^2]``. ``frac`` defaults to 1 (one epoch).
    """

    frac: float = 1.0

    name: ClassVar[str] = "mocha-local"
    network: ClassVar[str] = "any"
    summary: ClassVar[str] = "Local baseline: one SVM per task (SDCA), no communication"

    def init(self, problem: Problem, comm: Communicator, rng: RunStreams) -> MochaState:
        return self._init_block(problem, comm, rng)

    def step(self, state: MochaState, comm: Communicator) -> MochaState:
        keys, frac, dropped = self._draws(state, comm)
        data = state.data
        k, _, d = data.X.shape
        steps = _local_steps(data.n_samples, frac, dropped)
        order = _order(keys, state.mask, data.n_samples, int(steps.max(initial=0)))
        alpha = state.alpha.copy()
        v = state.w.copy()
        sdca_steps(
            data.X,
            data.y,
            state.xx,
            np.arange(k),
            order,
            steps,
            alpha,
            v,
            np.ones(k),
            data.n_samples.astype(float),
            np.full(k, self.lam),
            self.loss,
        )
        self._charge(comm, state, steps * self._step_cost(d))
        return replace(state, alpha=alpha, w=v, iteration=state.iteration + 1)

    def evaluate(self, state: MochaState, comm: Communicator) -> dict[str, float]:
        data = state.data
        per = self._task_sums(state, state.w)
        reg = np.zeros((len(data.tasks), 1))
        if len(data.tasks):
            reg[:, 0] = 0.5 * self.lam * np.einsum("kd,kd->k", state.w, state.w)
        sums = comm.observe(np.hstack([per, data.sum_to_nodes(reg)])).sum(axis=0)
        primal = sums[0] + sums[_NSUMS]
        # w_t = b_t / lambda: (1/(2 lambda)) ||b_t||^2 = (lambda/2) ||w_t||^2
        dual = self._dual(sums, sums[1] - sums[_NSUMS])
        out = {"primal": float(primal), "dual": dual, "duality_gap": float(primal - dual)}
        out.update(self._error_metrics(sums, data.X_test is not None))
        return out


# ------------------------------------------------------------------------------------------------
# Batched reference implementation (many independent problems at once)
# ------------------------------------------------------------------------------------------------


@dataclass
class MochaFit:
    """Result of :func:`mocha_fit`: per problem ``W`` (P, K, d) (row t = task t's model), ``B``,
    ``Sigma``/``Omega`` (P, K, K), ``rho`` (P,), ``alpha`` (P, K, n_max)."""

    W: np.ndarray
    B: np.ndarray
    Sigma: np.ndarray
    Omega: np.ndarray
    rho: np.ndarray
    alpha: np.ndarray


def _check_problems(
    owner: str, y: np.ndarray, mask: np.ndarray, group: np.ndarray | None, loss: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check the problems' masks (P, K, n_max), data groups (P,) and training labels (DataError);
    returns ``(mask, group, n)`` with ``n`` (P, K) the training samples per task."""
    G, K, n_max = y.shape
    mask = np.asarray(mask, dtype=bool)
    group = np.arange(G) if group is None else np.asarray(group, dtype=np.int64)
    P = mask.shape[0] if mask.ndim else 0
    if group.shape != (P,) or mask.shape != (P, K, n_max):
        raise DataError(f"{owner}: mask must be (P, {K}, {n_max}) with group (P,), got {mask.shape}")
    if P and (group.min() < 0 or group.max() >= G):
        raise DataError(f"{owner}: group must index the {G} data groups (0..{G - 1}), got {group.tolist()}")
    n = mask.sum(-1)
    if np.any(n == 0):
        raise DataError(f"{owner}: a task has no training sample; every task needs one")
    used = np.zeros((G, K, n_max), dtype=bool)
    np.logical_or.at(used, group, mask)
    get_loss(loss).check_labels(y[used], f"{owner}: training labels (loss={loss})")
    return mask, group, n


def _flat(X: np.ndarray) -> np.ndarray:
    return X.reshape((X.shape[0] * X.shape[1],) + X.shape[2:])


def mocha_fit(
    X: np.ndarray,
    y: np.ndarray,
    mask: np.ndarray,
    lam: float | np.ndarray,
    *,
    group: np.ndarray | None = None,
    loss: str = "hinge",
    outer: int = 10,
    inner: int = 100,
    frac: float = 0.5,
    stragglers: tuple[float, float] | None = None,
    drop_prob: float = 0.0,
    recompute_w: bool = True,
    update_omega: bool = True,
    eig_floor: float = 1e-7,
    rng: np.random.Generator | None = None,
    callback: Callable[[int, MochaFit, np.ndarray], None] | None = None,
) -> MochaFit:
    """MOCHA on P independent problems at once (vectorised over problems and tasks).

    Parameters
    ----------
    X, y : (G, K, n_max, d), (G, K, n_max)
        Data groups (e.g. one per random split); problem p uses group ``group[p]``.
    mask : (P, K, n_max) bool
        Training samples of each problem (a subset of its group's samples, e.g. a CV fold).
    lam : float or (P,)
        Regularisation per problem.
    group : (P,) int, optional
        Data group of each problem (default ``arange(G)``).
    loss, outer, inner, frac, drop_prob, recompute_w, update_omega, eig_floor
        As :class:`Mocha` (``outer`` x ``inner`` rounds in total).
    stragglers : (bottom, top), optional
        Work fractions ~ U[bottom, top] per task per round instead of ``frac``.
    rng : Generator
        Source of the per-round draws, in the order of :class:`Mocha` (keys, fractions, drop-outs):
        with P = 1 and one task per node, ``streams.generator("nodes")`` reproduces the ``mocha``
        algorithm run with the same seed.
    callback : callable(round, fit, steps), optional
        Called after every round (for curves).

    Notes
    -----
    The hyper-parameters are checked as :class:`Mocha`'s (ConfigError) and the labels of every
    problem's training samples as the loss's (DataError: ``{-1, +1}`` for hinge). Local steps are
    ``max(1, floor(n_t frac))`` as in :class:`Mocha` (module notes: the reference takes none when
    ``n_t frac < 1``).
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    if X.ndim != 4 or y.shape != X.shape[:3]:
        raise DataError(f"mocha_fit: X must be (G, K, n_max, d) and y (G, K, n_max), got {X.shape} {y.shape}")
    G, K, n_max, d = X.shape
    bottom, top = stragglers if stragglers is not None else (0.1, 1.0)
    _check_hyper(
        "mocha_fit",
        loss=loss,
        losses=LOSSES,
        frac=frac,
        bottom=bottom,
        top=top,
        drop_prob=drop_prob,
        eig_floor=eig_floor,
        flags={"recompute_w": recompute_w, "update_omega": update_omega},
        ints={"outer": outer, "inner": inner},
    )
    mask, group, n = _check_problems("mocha_fit", y, mask, group, loss)
    P = mask.shape[0]
    lam_p = np.broadcast_to(np.asarray(lam, dtype=float), (P,)).copy()
    if np.any(lam_p <= 0) or not np.all(np.isfinite(lam_p)):
        raise ConfigError(f"mocha_fit: lambda must be finite and > 0, got {lam_p.min()}")
    rng = np.random.default_rng(0) if rng is None else rng
    Xf, yf = _flat(X), _flat(y)
    xxf = np.einsum("rnd,rnd->rn", Xf, Xf)
    rows = (group[:, None] * K + np.arange(K)[None, :]).ravel()
    R = P * K
    n_r = n.ravel()
    lam_r = np.repeat(lam_p, K)
    fit = MochaFit(
        W=np.zeros((P, K, d)),
        B=np.zeros((P, K, d)),
        Sigma=np.broadcast_to(np.eye(K) / K, (P, K, K)).copy(),
        Omega=np.broadcast_to(K * np.eye(K), (P, K, K)).copy(),
        rho=np.ones(P),
        alpha=np.zeros((P, K, n_max)),
    )
    alpha = fit.alpha.reshape(R, n_max)
    mflat = mask.reshape(R, n_max)
    for r in range(outer * inner):
        keys = rng.random((P, K, n_max)).reshape(R, n_max)
        fr = rng.uniform(bottom, top, (P, K))
        dropped = rng.random((P, K)) < drop_prob
        f = fr if stragglers is not None else np.full((P, K), float(frac))
        steps = _local_steps(n, f, dropped).ravel()
        order = _order(keys, mflat, n_r, int(steps.max(initial=0)))
        v = fit.W.reshape(R, d).copy()
        scale = (fit.rho[:, None] * np.diagonal(fit.Sigma, axis1=1, axis2=2)).ravel()
        db = sdca_steps(Xf, yf, xxf, rows, order, steps, alpha, v, scale, n_r.astype(float), lam_r, loss)
        dB = db.reshape(P, K, d)
        fit.W = fit.W + (fit.Sigma @ dB) / lam_p[:, None, None]
        fit.B = fit.B + dB
        if update_omega and (r + 1) % inner == 0:
            fit.Sigma, fit.Omega, fit.rho = omega_step(np.swapaxes(fit.W, 1, 2), eig_floor)
            if recompute_w:
                fit.W = fit.Sigma @ fit.B / lam_p[:, None, None]
        if callback is not None:
            callback(r + 1, fit, steps.reshape(P, K))
    fit.alpha = alpha.reshape(P, K, n_max)
    return fit


def _scores(X: np.ndarray, group: np.ndarray, W: np.ndarray, chunk: int = 64) -> np.ndarray:
    """Scores (P, K, m) of models W (P, K, d) on data X (G, K, m, d) of each problem's group."""
    P = W.shape[0]
    out = np.empty((P,) + X.shape[1:3])
    for s in range(0, P, chunk):
        sl = slice(s, s + chunk)
        out[sl] = np.einsum("pkmd,pkd->pkm", X[group[sl]], W[sl])
    return out


def task_errors(
    X: np.ndarray, y: np.ndarray, mask: np.ndarray, group: np.ndarray, W: np.ndarray, loss: str = "hinge"
) -> np.ndarray:
    """Per problem and task: misclassification rate (hinge) or RMSE (squared) on ``mask``; (P, K).

    A task with no sample in ``mask`` gets 0 (callers average over tasks that have samples)."""
    if loss not in LOSSES:
        raise ConfigError(f"task_errors: loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    s = _scores(X, group, W)
    yy = y[group]
    cnt = np.maximum(mask.sum(-1), 1)
    if loss == "hinge":
        return np.where(mask, np.where(s >= 0, 1.0, -1.0) != yy, False).sum(-1) / cnt
    return np.sqrt(np.where(mask, (s - yy) ** 2, 0.0).sum(-1) / cnt)


def mtrl_objectives(
    X: np.ndarray,
    y: np.ndarray,
    mask: np.ndarray,
    group: np.ndarray,
    fit: MochaFit,
    lam: float | np.ndarray,
    loss: str = "hinge",
) -> tuple[np.ndarray, np.ndarray]:
    """Primal ``P(W)`` and dual ``D(alpha)`` (P,) of a :func:`mocha_fit` state.

    Inputs are checked as :func:`mocha_fit`'s (loss, labels, masks). The dual is NaN for a problem
    whose hinge dual variables leave their box (``alpha y`` outside ``[0, 1]``): it is then no bound.
    """
    if not isinstance(loss, str) or loss not in LOSSES:
        raise ConfigError(f"mtrl_objectives: loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    y = np.asarray(y, dtype=float)
    mask, group, n = _check_problems("mtrl_objectives", y, mask, group, loss)
    P = fit.W.shape[0]
    lam_p = np.broadcast_to(np.asarray(lam, dtype=float), (P,))
    if np.any(lam_p <= 0) or not np.all(np.isfinite(lam_p)):
        raise ConfigError(f"mtrl_objectives: lambda must be finite and > 0, got {lam_p.min()}")
    s = _scores(X, group, fit.W)
    yy = y[group]
    lv = get_loss(loss).value(s, yy)
    primal = (np.where(mask, lv, 0.0).sum(-1) / n).sum(-1)
    primal = primal + 0.5 * lam_p * np.einsum("pkl,pkl->p", fit.Omega, fit.W @ np.swapaxes(fit.W, 1, 2))
    c = np.where(mask, _conj(loss, fit.alpha, yy), 0.0).sum(-1) / n
    BB = fit.B @ np.swapaxes(fit.B, 1, 2)
    dual = c.sum(-1) - np.einsum("pkl,pkl->p", fit.Sigma, BB) / (2 * lam_p)
    if loss == "hinge":
        box = fit.alpha * yy
        bad = (mask & ((box < -_BOX_TOL) | (box > 1.0 + _BOX_TOL))).any(axis=(1, 2))
        dual = np.where(bad, np.nan, dual)
    return primal, dual


def svm_sdca(
    X: np.ndarray,
    y: np.ndarray,
    mask: np.ndarray,
    lam: float | np.ndarray,
    *,
    group: np.ndarray | None = None,
    max_epochs: int = 500,
    tol: float = 1e-5,
) -> tuple[np.ndarray, np.ndarray]:
    """The reference's ``simple_svm`` batched over R independent SVMs.

    Cyclic SDCA on ``mean_i hinge(y_i x_i^T w) + (lambda/2) ||w||^2`` (samples in index order), one
    pass per epoch; a problem stops when its monitored value ``mean hinge + lambda w^T w`` (the
    reference's stopping quantity) changes by less than ``tol`` between epochs, or after ``max_epochs``.

    Parameters
    ----------
    X, y : (G, n_max, d), (G, n_max)
        Data groups; problem r uses group ``group[r]`` restricted to ``mask[r]``.
    mask : (R, n_max) bool
    lam : float or (R,)

    Returns
    -------
    w : (R, d) models; epochs : (R,) passes used.
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    G, n_max, d = X.shape
    mask = np.asarray(mask, dtype=bool)
    R = mask.shape[0]
    group = np.arange(G) if group is None else np.asarray(group, dtype=np.int64)
    lam_r = np.broadcast_to(np.asarray(lam, dtype=float), (R,)).copy()
    n = mask.sum(-1)
    if np.any(n == 0):
        raise DataError("svm_sdca: a problem has no training sample")
    xx = np.einsum("gnd,gnd->gn", X, X)
    order = np.argsort(~mask, axis=1, kind="stable")  # members first, in index order
    alpha = np.zeros((R, n_max))
    w = np.zeros((R, d))
    prev = np.zeros(R)
    done = np.zeros(R, dtype=bool)
    epochs = np.zeros(R, dtype=np.int64)
    for _ in range(max_epochs):
        live = np.flatnonzero(~done)  # converged problems leave the batch
        a_live, w_live = alpha[live], w[live]
        sdca_steps(
            X,
            y,
            xx,
            group[live],
            order[live],
            n[live],
            a_live,
            w_live,
            np.ones(live.size),
            n[live].astype(float),
            lam_r[live],
            "hinge",
        )
        alpha[live], w[live] = a_live, w_live
        epochs[live] += 1
        val = np.empty(R)
        for s in range(0, R, 32):
            sl = slice(s, s + 32)
            m = y[group[sl]] * np.einsum("rnd,rd->rn", X[group[sl]], w[sl])
            val[sl] = np.where(mask[sl], np.maximum(0.0, 1.0 - m), 0.0).sum(-1) / n[sl]
        val += lam_r * np.einsum("rd,rd->r", w, w)
        done |= np.abs(prev - val) < tol
        prev = val
        if done.all():
            break
    return w, epochs


def svm_newton(
    X: np.ndarray,
    y: np.ndarray,
    mask: np.ndarray,
    lam: float | np.ndarray,
    *,
    group: np.ndarray | None = None,
    mu_path: tuple[float, ...] = (1.0, 0.1, 0.01, 1e-3, 1e-4, 1e-5, 1e-6),
    newton_iters: int = 100,
) -> np.ndarray:
    """Near-exact linear SVMs (no intercept), batched: Newton's method in the primal (d variables) on
    the smoothed hinge ``h_mu(z) = z^2 / (2 mu)`` for ``0 < z < mu``, ``z - mu/2`` beyond (z = 1 - y x^T w),
    followed along a decreasing ``mu_path`` (warm starts); ``|h_mu - hinge| <= mu / 2``, so the final
    objective is within ``mu_path[-1] / 2`` of the SVM optimum.

    Used for the reference protocol's Global and Local baselines: the reference's cyclic SDCA
    (:func:`svm_sdca`) needs up to 500 sequential passes over the pooled 11,000 Landmine samples per
    (split, fold, lambda), hours of Python; the SVM it approximates is computed here directly.

    Parameters
    ----------
    X, y : (G, n_max, d), (G, n_max); mask : (R, n_max) bool; lam : float or (R,); group : (R,) int
        As :func:`svm_sdca`.

    Returns
    -------
    w : (R, d)
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    G, n_max, d = X.shape
    mask = np.asarray(mask, dtype=bool)
    R = mask.shape[0]
    group = np.arange(G) if group is None else np.asarray(group, dtype=np.int64)
    lam_r = np.broadcast_to(np.asarray(lam, dtype=float), (R,)).copy()
    # group-major layout (G', c): the problems of one data group share its samples, so margins and
    # Hessians are matrix products over the group's data (no per-problem copies); short groups are
    # padded with empty dummy problems
    ug, inv = np.unique(group, return_inverse=True)
    counts = np.bincount(inv)
    c = int(counts.max())
    slot = np.empty(R, dtype=np.int64)
    order = np.argsort(inv, kind="stable")
    slot[order] = np.arange(R) - np.repeat(np.cumsum(counts) - counts, counts)
    Gp = ug.size
    Zg = (y[:, :, None] * X)[ug]  # (G', n, d): margins are Z w
    M = np.zeros((Gp, n_max, c), dtype=bool)
    M[inv, :, slot] = mask
    lam_g = np.ones((Gp, c))
    lam_g[inv, slot] = lam_r
    n = np.maximum(M.sum(1), 1).astype(float)  # (G', c)
    w = np.zeros((Gp, c, d))

    def smoothed(z: np.ndarray, mu: float) -> np.ndarray:
        h = np.where(z >= mu, z - 0.5 * mu, np.where(z > 0, z * z / (2 * mu), 0.0))
        return np.where(M, h, 0.0).sum(1) / n

    eye = np.eye(d)
    for mu in mu_path:
        live = np.ones((Gp, c), dtype=bool)
        nu = lam_g.copy()  # Levenberg-Marquardt damping: Newton steps on a nearly piecewise-linear
        for _ in range(newton_iters):  # loss overshoot by orders of magnitude without it
            z = 1.0 - Zg @ np.swapaxes(w, 1, 2)  # (G', n, c)
            dh = np.where(M, np.clip(z / mu, 0.0, 1.0), 0.0)  # h'(z) in [0, 1]
            quad = (M & (z > 0) & (z < mu)) / mu
            grad = lam_g[:, :, None] * w - (np.swapaxes(dh, 1, 2) @ Zg) / n[:, :, None]
            H = np.empty((Gp, c, d, d))
            for j in range(d):  # loop over features, not problems
                H[:, :, j, :] = np.swapaxes(quad * Zg[:, :, j : j + 1], 1, 2) @ Zg
            H /= n[:, :, None, None]
            H += (lam_g + nu)[:, :, None, None] * eye
            step = -np.linalg.solve(H, grad[..., None])[..., 0]
            dec = -np.einsum("gcd,gcd->gc", grad, step)
            f0 = smoothed(z, mu) + 0.5 * lam_g * np.einsum("gcd,gcd->gc", w, w)
            live &= dec > 1e-15 * np.maximum(1.0, f0)
            if not live.any():
                break
            wt = w + step
            f1 = smoothed(z - Zg @ np.swapaxes(step, 1, 2), mu) + 0.5 * lam_g * np.einsum(
                "gcd,gcd->gc", wt, wt
            )
            ok = live & (f1 <= f0 - 1e-4 * dec)
            w = np.where(ok[:, :, None], wt, w)
            nu = np.where(ok, nu / 4.0, nu * 8.0)
    return w[inv, slot]
