r"""Federated baselines with linear models: Local, FedAvg, FedAvg + fine-tuning, FedProx and Ditto.

All of them, and FedEM / D-EM (:mod:`dmtl.algorithms.fedem`), share the machinery of this module:
linear models ``s = x^T w + b`` (one score, or C scores for the softmax loss) trained with any loss of
:mod:`dmtl.losses`, by local minibatch SGD run on every client of a block at once.

Clients, nodes, rounds
----------------------
A *client* is a task (its own data and, for FedEM, its own mixture weights). A node holds one or more
clients (usually one). One ``step`` is one communication round:

1. the server samples ``max(1, int(fraction * L'))`` of the ``L'`` nodes that hold a training client,
   uniformly without replacement (the reference's rule);
2. it sends its model(s) to the sampled nodes (``comm.scatter``: one download per sampled node);
3. every client of a sampled node runs ``local_epochs`` epochs of minibatch SGD from the received model;
4. each sampled node uploads ``sum_t n_t (w_t - w)`` over its clients (``comm.gather``), and the server
   sets ``w <- w + sum_t n_t (w_t - w) / n`` with ``n`` the training samples of *all* training clients.
   This is the reference's aggregation ``w <- sum_t (n_t / n) w_t`` where clients that were not sampled
   contribute the server's model unchanged; with full participation it is exactly the weighted average.

Local SGD, vectorised over clients
----------------------------------
Each epoch every client shuffles its own ``n_t`` samples and walks through them in minibatches of
``batch_size``: ``ceil(n_t / batch_size)`` steps, the last one possibly smaller, each the gradient of the
batch *mean* loss (weighted per sample by ``q`` in FedEM's M-step, still divided by the batch size as
in the reference). All clients run their step ``s`` together; a client whose epoch is shorter has
finished and sits out the remaining steps (it is *masked*, not cycled), so a client with fewer samples
does fewer steps, as in the reference's per-client data loaders. Padded rows never enter a batch. The
Python loop runs over epochs and minibatch steps only; each step gathers the active clients' batches
into one ``(clients, batch, d)`` array and applies batched matrix products.

Randomness
----------
Every random draw of round ``r`` comes from a generator seeded by the run's ``nodes`` stream, the round
and a purpose tag (sampling, minibatch order, fine-tuning order, personal-model order). Each draw is made
for *all* nodes / clients of the network and the block takes its rows, so the result does not depend on
how nodes are split into shards, and a round can be replayed from the state alone.

Baselines
---------
``local``
    every client trains its own model on its own data, ``local_epochs`` epochs per round; no
    communication.
``fedavg``
    FedAvg [1]_ (local epochs, client sampling).
``fedavg-ft``
    FedAvg; at evaluation every client fine-tunes the global model for ``finetune_epochs`` local epochs
    (the reference's ``--locally_tune_clients``).
``fedprox``
    FedProx [2]_: the local objective gets ``(mu / 2) ||w - w_server||^2``.
``ditto``
    Ditto [3]_: FedAvg for the global model ``w``; each sampled client also runs ``personal_epochs``
    epochs of SGD on its personal model, ``f_t(v) + (lam / 2) ||v - w||^2``, with ``w`` the model it
    received this round. Predictions use the personal models.

Unseen clients (``problem.truth["unseen"]``) never train or upload. At evaluation they are served the
current global model: ``fedavg``/``fedprox`` use it as is, ``fedavg-ft`` fine-tunes it, ``ditto`` trains
a personal model from it for ``personal_epochs`` epochs; ``local`` treats them like any client (there is
no federation to be unseen from).

Metrics (collective): ``train_loss``, ``train_accuracy`` (``train_rmse`` for the squared loss),
``test_loss``, ``test_accuracy`` (``test_rmse``) over training clients, and ``unseen_test_*`` over unseen
ones; accuracies are weighted by sample counts as in the reference. ``fedavg-ft`` adds ``global_test_*``
and ``global_unseen_test_*``, the untuned global model's. Full passes over the padded client data
(FedEM's E-step, metrics) sweep chunks of 128 rows and skip chunks past a client's last sample
(:func:`row_chunks`), so padding costs neither time nor results.

References
----------
.. [1] B. McMahan, E. Moore, D. Ramage, S. Hampson and B. Aguera y Arcas, "Communication-efficient
   learning of deep networks from decentralized data", AISTATS 2017.
.. [2] T. Li, A. K. Sahu, M. Zaheer, M. Sanjabi, A. Talwalkar and V. Smith, "Federated optimization in
   heterogeneous networks", MLSys 2020.
.. [3] T. Li, S. Hu, A. Beirami and V. Smith, "Ditto: fair and robust federated learning through
   personalization", ICML 2021.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Protocol

import numpy as np

from dmtl.algorithms.base import Algorithm, check_int, check_positive, register
from dmtl.errors import ConfigError, DataError
from dmtl.losses import LOSSES, Loss, get_loss
from dmtl.network.comm import Communicator
from dmtl.problem import Problem, TaskBlock
from dmtl.seeding import RunStreams

__all__ = [
    "FedData",
    "FedState",
    "Local",
    "FedAvg",
    "FedAvgFT",
    "FedProx",
    "Ditto",
    "infer_loss",
    "row_chunks",
    "LinearModel",
    "Model",
]

# purpose tags of the per-round generators
_SAMPLING, _ORDER, _FINETUNE, _PERSONAL, _UNSEEN = 0, 1, 2, 3, 4


# ---------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class FedData:
    """A block's clients, ready for the linear-model engine.

    Attributes
    ----------
    block : the :class:`TaskBlock` (tasks ordered by node).
    X, y : (k, n_max, d), (k, n_max) padded training data; ``y`` in the loss's coding.
    mask : (k, n_max) real training rows; ``n`` (k,) their counts (float).
    train : (k,) clients that take part in training (not flagged unseen).
    X_test, y_test, test_mask : test data or None.
    loss : the loss; ``n_out`` scores per sample (C for softmax, else 1).
    model : the model family (:class:`LinearModel`, or a neural one from :mod:`dmtl.models`).
    n_tasks, n_max : of the whole problem (for shard-independent random draws).
    eligible : (n_nodes,) nodes holding at least one training client (global).
    """

    block: TaskBlock
    X: np.ndarray
    y: np.ndarray
    mask: np.ndarray
    n: np.ndarray
    train: np.ndarray
    X_test: np.ndarray | None
    y_test: np.ndarray | None
    test_mask: np.ndarray | None
    loss: Loss
    n_out: int
    model: Model
    n_tasks: int
    n_max: int
    eligible: np.ndarray

    @property
    def d(self) -> int:
        return self.X.shape[2]

    @property
    def node(self) -> np.ndarray:
        return self.block.node

    @property
    def tasks(self) -> np.ndarray:
        return self.block.tasks


def infer_loss(problem: Problem) -> str:
    """The loss matching the problem's labels: ``logistic`` when every label is -1 or +1, ``softmax``
    when the problem declares classes (``truth["n_classes"]``), ``squared`` otherwise (integer targets
    such as School's exam scores are regression targets unless declared as classes)."""
    y = problem.y[problem.mask]
    if problem.y_test is not None:
        mt = np.arange(problem.y_test.shape[1])[None, :] < problem.n_test[:, None]
        y = np.concatenate([y, problem.y_test[mt]])
    if y.size and np.all((y == 1) | (y == -1)):
        return "logistic"
    if "n_classes" in problem.truth:
        return "softmax"
    return "squared"


def prepare(
    problem: Problem, comm: Communicator, loss_name: str, owner: str, model: Callable[[int, int], Model]
) -> FedData:
    """Check the labels against the loss and build the block's :class:`FedData`; ``model(d, n_out)``
    builds the model family."""
    name = infer_loss(problem) if loss_name == "auto" else loss_name
    loss = get_loss(name)
    mask_all = problem.mask
    loss.check_labels(problem.y[mask_all], f"{owner}: problem training labels")
    n_out = 1
    test_mask_all = None
    if problem.X_test is not None:
        test_mask_all = np.arange(problem.y_test.shape[1])[None, :] < problem.n_test[:, None]
        loss.check_labels(problem.y_test[test_mask_all], f"{owner}: problem test labels")
    if loss.kind == "multiclass":
        top = problem.y[mask_all].max()
        if test_mask_all is not None and test_mask_all.any():
            top = max(top, problem.y_test[test_mask_all].max())
        n_out = max(int(top) + 1, int(problem.truth.get("n_classes", 2)))
    unseen_all = np.asarray(problem.truth.get("unseen", np.zeros(problem.n_tasks, bool)), dtype=bool)
    if unseen_all.shape != (problem.n_tasks,):
        raise DataError(
            f"problem.truth['unseen'] must be a boolean array of shape ({problem.n_tasks},), "
            f"got {unseen_all.shape}"
        )
    if unseen_all.all():
        raise DataError(f"{owner}: every client is flagged unseen; at least one must train")
    eligible = np.zeros(problem.n_nodes, bool)
    eligible[problem.placement.task_node[~unseen_all]] = True
    block = problem.block(comm.start, comm.stop)
    mask = block.n_samples[:, None] > np.arange(block.X.shape[1])[None, :]
    test_mask = None
    if block.X_test is not None:
        test_mask = block.n_test[:, None] > np.arange(block.X_test.shape[1])[None, :]
    return FedData(
        block=block,
        X=block.X,
        y=block.y,
        mask=mask,
        n=block.n_samples.astype(float),
        train=~unseen_all[block.tasks],
        X_test=block.X_test,
        y_test=block.y_test,
        test_mask=test_mask,
        loss=loss,
        n_out=n_out,
        model=model(problem.n_features, n_out),
        n_tasks=problem.n_tasks,
        n_max=problem.X.shape[1],
        eligible=eligible,
    )


def init_models(rng: RunStreams, M: int, data: FedData) -> np.ndarray:
    """``M`` models (M, *shape), drawn by the model family from the ``init`` stream: the same on every
    node and shard."""
    return data.model.init(rng.generator("init"), M)


# ---------------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------------
class Model(Protocol):
    """A model family: parameters of one model are an array of shape ``shape`` (float64, so that they
    travel through the communicator and average like any array).

    ``scores(X, W)``: ``X`` (a, n, d); ``W`` shared (M, *shape) or per client (a, M, *shape); returns
    (a, M, n, C). ``vjp(X, W)``: per-client ``W``; returns the scores and ``backward(G)`` -> the
    gradient ``sum_i G_i ds_i / dW`` of shape (a, M, *shape). ``init(gen, M)``: (M, *shape).
    ``flops``: multiply-adds x 2 of one forward pass per sample and model.
    """

    shape: tuple[int, ...]
    flops: float

    def init(self, gen: np.random.Generator, M: int) -> np.ndarray: ...

    def scores(self, X: np.ndarray, W: np.ndarray) -> np.ndarray: ...

    def vjp(self, X: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]: ...


class LinearModel:
    """Linear scores ``s = x^T w + b``: parameters (P, C) with ``P = d (+ 1 for the intercept)``, the
    intercept in the last row. Initialised ``U(-1/sqrt(d), 1/sqrt(d))`` (PyTorch's ``nn.Linear``)."""

    def __init__(self, d: int, n_out: int, bias: bool = True) -> None:
        self.d, self.n_out, self.bias = d, n_out, bias
        self.shape = (d + int(bias), n_out)
        self.flops = 2.0 * self.shape[0] * n_out

    def init(self, gen: np.random.Generator, M: int) -> np.ndarray:
        bound = 1.0 / np.sqrt(self.d)
        return gen.uniform(-bound, bound, size=(M, *self.shape))

    def scores(self, X: np.ndarray, W: np.ndarray) -> np.ndarray:
        a, n, d = X.shape
        if W.ndim == 3:
            # one product for all clients, as (M C, d) @ (d, a n): OpenBLAS runs the (a n, d) @ (d, M C)
            # form with a tall-skinny kernel that is several times slower, worse still with threads
            M, _, C = W.shape
            S = W[:, :d, :].transpose(0, 2, 1).reshape(M * C, d) @ X.reshape(a * n, d).T
            if self.bias:
                S += W[:, d, :].reshape(M * C, 1)
            return S.reshape(M, C, a, n).transpose(2, 0, 3, 1)
        S = np.matmul(X[:, None], W[:, :, :d, :])
        return S + W[:, :, None, d, :] if self.bias else S

    def vjp(self, X: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
        d = self.d
        S = np.matmul(X[:, None], W[:, :, :d, :])
        if self.bias:
            S += W[:, :, None, d, :]

        def backward(G: np.ndarray) -> np.ndarray:
            gW = np.matmul(np.swapaxes(X, 1, 2)[:, None], G)  # (b, M, d, C)
            if self.bias:
                gW = np.concatenate([gW, G.sum(axis=2)[:, :, None, :]], axis=2)
            return gW

        return S, backward


def linear_model(bias: bool) -> Callable[[int, int], Model]:
    return lambda d, n_out: LinearModel(d, n_out, bias)


# ---------------------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------------------
CHUNK = 128  # rows per chunk when sweeping padded client data


def row_chunks(
    X: np.ndarray, y: np.ndarray, mask: np.ndarray, n: np.ndarray, rows: np.ndarray, chunk: int = CHUNK
) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Sweep padded client data in chunks of rows, skipping padding.

    Yields ``(j, act, Xc, yc, mc)``: rows ``j .. j + chunk - 1`` of the clients ``rows[act]`` that have
    more than ``j`` samples (``n`` counts per block client). The work is ``sum_t ceil(n_t / chunk)``
    chunks instead of ``n_max / chunk`` per client; the loop runs over chunks, never over clients.
    """
    nr = n[rows]
    top = int(nr.max()) if len(rows) else 0
    for j in range(0, top, chunk):
        act = np.flatnonzero(nr > j)
        r = rows[act]
        yield j, act, X[r, j : j + chunk], y[r, j : j + chunk], mask[r, j : j + chunk]


def loss_values(loss: Loss, S: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-sample losses (a, M, n) of scores ``S`` (a, M, n, C) against labels ``y`` (a, n)."""
    if S.shape[-1] == 1:
        return loss.value(S[..., 0], y[:, None, :])
    return loss.value(S, y[:, None, :])


def _loss_grads(loss: Loss, S: np.ndarray, y: np.ndarray) -> np.ndarray:
    if S.shape[-1] == 1:
        return loss.grad(S[..., 0], y[:, None, :])[..., None]
    return loss.grad(S, y[:, None, :])


def round_rng(seed: tuple[Any, tuple[int, ...]], purpose: int, round_: int) -> np.random.Generator:
    """The generator of round ``round_`` for ``purpose``, derived from the run's ``nodes`` stream."""
    entropy, key = seed
    return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(*key, purpose, round_)))


def stream_seed(rng: RunStreams) -> tuple[Any, tuple[int, ...]]:
    ss = rng.seed_sequence("nodes")
    return ss.entropy, tuple(ss.spawn_key)


def sample_nodes(eligible: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Global mask of the nodes sampled this round: ``max(1, int(fraction L'))`` of the ``L'`` eligible
    nodes, uniformly without replacement (the smallest of one uniform draw per node)."""
    n_el = int(eligible.sum())
    k = max(1, int(fraction * n_el))
    if k >= n_el:
        return eligible.copy()
    u = np.where(eligible, rng.random(eligible.shape[0]), np.inf)
    out = np.zeros_like(eligible)
    out[np.argsort(u, kind="stable")[:k]] = True
    return out


def local_sgd(
    W: np.ndarray,
    data: FedData,
    rows: np.ndarray,
    lr: float,
    epochs: int,
    batch_size: int,
    keys: Callable[[int], np.ndarray],
    q: np.ndarray | None = None,
    prox: tuple[float, np.ndarray] | None = None,
) -> np.ndarray:
    r"""Local minibatch SGD epochs on many clients at once.

    Parameters
    ----------
    W : (a, M, P, C)
        Starting models of the ``a`` training clients (M models each); not modified.
    rows : (a,)
        Their indices in the block's task arrays.
    lr, epochs, batch_size
        Step size, epochs, minibatch size.
    keys : callable
        ``keys(epoch)`` -> (a, n_max) uniform keys; each client's sample order is the argsort of its
        keys over its real rows.
    q : (a, M, n_max), optional
        Per-sample weights of each model (FedEM's responsibilities).
    prox : (mu, W_ref), optional
        Adds ``mu (w - w_ref)`` to every gradient (FedProx, Ditto's personal models).

    Returns
    -------
    (a, M, P, C) the models after the epochs. A step's gradient on client t is
    ``(1/|B|) sum_{i in B} q_i(m) dl(s_i, y_i)/ds * [x_i; 1]`` (+ the proximal term).
    """
    W = W.copy()
    if len(rows) == 0:
        return W
    X, y, loss, model = data.X, data.y, data.loss, data.model
    n = data.block.n_samples[rows]
    steps = -(-n // batch_size)
    max_steps = int(steps.max())
    width = np.arange(batch_size)
    for epoch in range(epochs):
        k = np.where(data.mask[rows], keys(epoch), np.inf)
        order = np.argsort(k, axis=1, kind="stable")
        for s in range(max_steps):
            act = np.flatnonzero(steps > s)
            idx = order[act, s * batch_size : (s + 1) * batch_size]  # (b, w)
            w = idx.shape[1]
            valid = (s * batch_size + width[:w])[None, :] < n[act, None]
            nb = valid.sum(axis=1)
            blk = rows[act]
            Xb = X[blk[:, None], idx]  # (b, w, d)
            yb = y[blk[:, None], idx]
            Wa = W[act]
            S, backward = model.vjp(Xb, Wa)
            coef = (valid / nb[:, None])[:, None, :]  # (b, 1, w)
            if q is not None:
                coef = coef * np.take_along_axis(q[act], idx[:, None, :], axis=2)
            gW = backward(_loss_grads(loss, S, yb) * coef[..., None])  # G: (b, M, w, C)
            if prox is not None:
                mu, ref = prox
                gW += mu * (Wa - ref[act])
            W[act] = Wa - lr * gW
    return W


def sgd_flops(data: FedData, rows: np.ndarray, M: int, epochs: int) -> np.ndarray:
    """Per-node flop estimate of ``epochs`` SGD epochs (forward + backward) of the given clients."""
    per = np.zeros(len(data.tasks))
    per[rows] = 2.0 * epochs * data.n[rows] * data.model.flops * M
    return data.block.sum_to_nodes(per)


def keys_for(
    seed: tuple[Any, tuple[int, ...]], purpose: int, round_: int, data: FedData, rows: np.ndarray
) -> Callable[[int], np.ndarray]:
    """``keys(epoch)``: one uniform draw per (client, row) of the whole problem, the block's rows taken."""
    rng = round_rng(seed, purpose, round_)
    drawn: list[np.ndarray] = []
    glob = data.tasks[rows]

    def keys(epoch: int) -> np.ndarray:
        while len(drawn) <= epoch:
            drawn.append(rng.random((data.n_tasks, data.n_max))[glob])
        return drawn[epoch]

    return keys


# ---------------------------------------------------------------------------------------------------
# server exchange
# ---------------------------------------------------------------------------------------------------
def expand(v: np.ndarray, ndim: int) -> np.ndarray:
    """A per-client vector shaped to broadcast against (clients, ...) arrays of ``ndim`` axes."""
    return v.reshape(v.shape + (1,) * (ndim - 1))


def download(comm: Communicator, W: np.ndarray, sel_global: np.ndarray) -> np.ndarray:
    """The server sends ``W`` to the sampled nodes; returns the copies the block's sampled nodes got,
    one row per sampled local node (in node order)."""
    counts = comm.local(sel_global).astype(np.int64)
    total = int(sel_global.sum())
    flat = np.broadcast_to(W.reshape(1, -1), (total, W.size))
    got = comm.scatter(flat, counts)
    return got.reshape((-1,) + W.shape)


def task_starts(data: FedData, sel: np.ndarray, received: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Training clients of the sampled local nodes and their starting models (received copies)."""
    rows = np.flatnonzero(data.train & sel[data.node])
    slot = np.cumsum(sel) - 1
    return rows, received[slot[data.node[rows]]]


def upload_average(
    comm: Communicator,
    data: FedData,
    sel: np.ndarray,
    rows: np.ndarray,
    W_new: np.ndarray,
    W_start: np.ndarray,
    W_server: np.ndarray,
    n_total: float,
) -> np.ndarray:
    """Sampled nodes upload ``sum_t n_t (w_t - w)``; the server returns ``w + sum / n_total``."""
    k = len(data.tasks)
    delta = np.zeros((k,) + W_server.shape)
    delta[rows] = expand(data.n[rows], W_new.ndim) * (W_new - W_start)
    per_node = data.block.sum_to_nodes(delta)[sel]
    up = comm.gather(per_node.reshape(len(per_node), W_server.size), counts=sel.astype(np.int64))
    return W_server + up.sum(axis=0).reshape(W_server.shape) / n_total


def total_samples(comm: Communicator, data: FedData) -> float:
    """The server learns ``n``, the training samples of all training clients (one float per node)."""
    per = data.block.sum_to_nodes(np.where(data.train, data.n, 0.0))
    return float(comm.gather(per[:, None]).sum())


# ---------------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------------
def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    top = np.max(a, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return np.squeeze(top, axis) + np.log(np.exp(a - top).sum(axis=axis))


def mixture_sums(
    loss: Loss, X: np.ndarray, y: np.ndarray, mask: np.ndarray, W: np.ndarray, logpi: np.ndarray, model: Model
) -> np.ndarray:
    r"""Per-client sums [negative log-likelihood, correct (or squared error), count] of the mixture
    prediction ``p(y | x) = sum_m pi_m exp(-loss_m(x, y))``.

    ``X`` (a, n, d), ``y`` and ``mask`` (a, n) padded data; ``W`` shared (M, *shape) or per client
    (a, M, *shape); ``logpi`` (a, M). For one model (``logpi = 0``) the first column is the summed loss and
    the prediction the loss's own (sign, argmax or the score). Classification predicts the label of
    highest mixture likelihood; regression (squared loss) predicts the mixture mean ``sum_m pi_m s_m``.
    """
    a = X.shape[0]
    out = np.zeros((a, 3))
    for _, act, Xc, yc, mc in row_chunks(X, y, mask, mask.sum(axis=1), np.arange(a)):
        S = model.scores(Xc, W if W.ndim == len(model.shape) + 1 else W[act])  # (b, M, w, C)
        lp = logpi[act][:, :, None]
        ll = _logsumexp(lp - loss_values(loss, S, yc), axis=1)  # (b, w)
        out[act, 0] -= np.where(mc, ll, 0.0).sum(axis=1)
        out[act, 2] += mc.sum(axis=1)
        if loss.kind == "regression":
            pred = np.einsum("bm,bmw->bw", np.exp(logpi[act]), S[..., 0])
            out[act, 1] += np.where(mc, (pred - yc) ** 2, 0.0).sum(axis=1)
            continue
        if loss.kind == "binary":
            pos = _logsumexp(lp - loss_values(loss, S, np.ones_like(yc)), axis=1)
            neg = _logsumexp(lp - loss_values(loss, S, -np.ones_like(yc)), axis=1)
            pred = np.where(pos >= neg, 1.0, -1.0)
        else:
            Sm = S - S.max(axis=-1, keepdims=True)
            logp = Sm - np.log(np.exp(Sm).sum(axis=-1, keepdims=True))  # per-model log p(c | x)
            pred = np.argmax(_logsumexp(lp[..., None] + logp, axis=1), axis=-1)
        out[act, 1] += ((pred == yc) & mc).sum(axis=1)
    return out


def report(comm: Communicator, data: FedData, train: np.ndarray, test: np.ndarray | None) -> dict[str, float]:
    """Metrics from per-client sums (k, 3) of the training and test data (collective)."""
    k = len(data.tasks)
    cols = [train, data.train[:, None].astype(float)]
    if test is not None:
        cols.insert(1, test)
    allv = comm.observe(np.concatenate(cols, axis=1) if k else np.zeros((0, 3 * len(cols) - 2)))
    seen = allv[:, -1] > 0
    reg = data.loss.kind == "regression"
    acc = "rmse" if reg else "accuracy"

    def add(out: dict[str, float], prefix: str, s: np.ndarray) -> None:
        cnt = max(s[2], 1.0)
        out[f"{prefix}_loss"] = float(s[0] / cnt)
        out[f"{prefix}_{acc}"] = float(np.sqrt(s[1] / cnt) if reg else s[1] / cnt)

    out: dict[str, float] = {}
    add(out, "train", allv[seen, 0:3].sum(axis=0))
    if test is not None:
        add(out, "test", allv[seen, 3:6].sum(axis=0))
        if (~seen).any():
            add(out, "unseen_test", allv[~seen, 3:6].sum(axis=0))
    return out


# ---------------------------------------------------------------------------------------------------
# state and the shared base class
# ---------------------------------------------------------------------------------------------------
@dataclass
class FedState:
    """State of a block of nodes for the federated algorithms.

    Attributes
    ----------
    data : the block's clients.
    W : server algorithms: (M, P, C) the server's models; graph/local algorithms: per node or client.
    pi : (k, M) each client's mixture weights (FedEM family; ones otherwise).
    personal : (k, 1, P, C) personal models (Ditto) or None.
    n_total : training samples of all training clients (known to the server).
    seed : entropy and spawn key of the ``nodes`` stream (per-round generators derive from it).
    round : completed rounds.
    truth_pi : (n_tasks, M) true mixture weights, or None (observer data for metrics).
    """

    data: FedData
    W: np.ndarray
    pi: np.ndarray
    n_total: float
    seed: tuple[Any, tuple[int, ...]]
    personal: np.ndarray | None = None
    round: int = 0
    truth_pi: np.ndarray | None = None


def check_loss(owner: str, loss: str) -> None:
    if loss != "auto" and loss not in LOSSES:
        raise ConfigError(f"{owner}.loss must be 'auto' or one of {', '.join(sorted(LOSSES))}, got {loss!r}")


@dataclass(frozen=True)
class FederatedBase(Algorithm):
    """Hyper-parameters common to the federated algorithms.

    Parameters
    ----------
    loss : str
        ``auto`` (logistic for labels in {-1, +1}, softmax when the problem declares
        ``truth["n_classes"]``, else squared) or a name of :data:`dmtl.losses.LOSSES`.
    lr : float
        SGD step size (> 0).
    local_epochs : int
        Local epochs per round.
    batch_size : int
        Minibatch size.
    fraction : float
        Fraction of the nodes sampled per round, in (0, 1].
    bias : bool
        Fit an intercept.
    model : {"linear", "mlp"}
        Component / client model: linear (NumPy), or a one-hidden-layer ReLU network of width
        ``hidden`` trained with PyTorch autograd (optional: ``pip install torch==2.13.0``; see
        :mod:`dmtl.models.torch_models`).
    hidden : int
        Hidden width of the ``mlp`` model.
    """

    loss: str = "auto"
    lr: float = 0.05
    local_epochs: int = 1
    batch_size: int = 64
    fraction: float = 1.0
    bias: bool = True
    model: str = "linear"
    hidden: int = 32

    family: ClassVar[str] = "federated"
    test_overrides: ClassVar[list[str]] = [
        "problem.kind=fedem_synthetic",
        "problem.d=5",
        "problem.min_samples=8",
        "problem.max_samples=40",
        "problem.test_samples=10",
        "problem.unseen_frac=0.25",
        "topology.nodes=8",
        "rounds=3",
        "eval_every=1",
        "algorithm.batch_size=8",
        "algorithm.fraction=0.5",
    ]

    def __post_init__(self) -> None:
        owner = f"algorithm({self.name})"
        check_loss(owner, self.loss)
        check_positive(owner, lr=self.lr, fraction=self.fraction)
        check_int(owner, 1, local_epochs=self.local_epochs, batch_size=self.batch_size)
        if self.fraction > 1:
            raise ConfigError(f"{owner}.fraction must lie in (0, 1], got {self.fraction!r}")
        if not isinstance(self.bias, bool):
            raise ConfigError(f"{owner}.bias must be true or false, got {self.bias!r}")
        if self.model not in ("linear", "mlp"):
            raise ConfigError(f"{owner}.model must be 'linear' or 'mlp', got {self.model!r}")
        check_int(owner, 1, hidden=self.hidden)
        if self.model == "mlp":
            from dmtl.models.torch_models import require_torch

            require_torch(f"{owner}.model='mlp'")

    def model_family(self) -> Callable[[int, int], Model]:
        """``(d, n_out) -> Model`` for the configured model."""
        if self.model == "mlp":
            from dmtl.models.torch_models import TorchMLP

            return lambda d, n_out: TorchMLP(d, n_out, self.hidden, self.bias)
        return linear_model(self.bias)

    @property
    def owner(self) -> str:
        return f"algorithm({self.name})"

    def _server_init(self, problem: Problem, comm: Communicator, rng: RunStreams, M: int) -> FedState:
        data = prepare(problem, comm, self.loss, self.owner, self.model_family())
        W = init_models(rng, M, data)
        truth = problem.truth.get("pi")
        return FedState(
            data=data,
            W=W,
            pi=np.full((len(data.tasks), M), 1.0 / M),
            n_total=total_samples(comm, data),
            seed=stream_seed(rng),
            truth_pi=None if truth is None else np.asarray(truth, dtype=float),
        )

    def _fedavg_round(
        self, state: FedState, comm: Communicator, prox_mu: float | None = None
    ) -> tuple[FedState, np.ndarray, np.ndarray, np.ndarray]:
        """One FedAvg/FedProx round; returns the new state and (rows, received start models, sel)."""
        data = state.data
        r = state.round + 1
        sel_g = sample_nodes(data.eligible, self.fraction, round_rng(state.seed, _SAMPLING, r))
        sel = comm.local(sel_g)
        received = download(comm, state.W, sel_g)
        rows, W0 = task_starts(data, sel, received)
        keys = keys_for(state.seed, _ORDER, r, data, rows)
        prox = None if prox_mu is None else (prox_mu, W0)
        W1 = local_sgd(W0, data, rows, self.lr, self.local_epochs, self.batch_size, keys, prox=prox)
        comm.compute(sgd_flops(data, rows, 1, self.local_epochs))
        W = upload_average(comm, data, sel, rows, W1, W0, state.W, state.n_total)
        return replace(state, W=W, round=r), rows, W0, sel

    def _global_metrics(self, state: FedState, comm: Communicator) -> dict[str, float]:
        data = state.data
        lp = np.zeros((len(data.tasks), 1))
        train = mixture_sums(data.loss, data.X, data.y, data.mask, state.W, lp, data.model)
        test = None
        if data.X_test is not None:
            test = mixture_sums(data.loss, data.X_test, data.y_test, data.test_mask, state.W, lp, data.model)
        return report(comm, data, train, test)

    def _personal_metrics(self, state: FedState, comm: Communicator, models: np.ndarray) -> dict[str, float]:
        data = state.data
        lp = np.zeros((len(data.tasks), 1))
        train = mixture_sums(data.loss, data.X, data.y, data.mask, models, lp, data.model)
        test = None
        if data.X_test is not None:
            test = mixture_sums(data.loss, data.X_test, data.y_test, data.test_mask, models, lp, data.model)
        return report(comm, data, train, test)


# ---------------------------------------------------------------------------------------------------
# the baselines
# ---------------------------------------------------------------------------------------------------
@register
@dataclass(frozen=True)
class Local(FederatedBase):
    """Every client trains its own linear model on its own data; no communication.

    Parameters: see :class:`FederatedBase` (``fraction`` is ignored: every client trains every round).
    """

    name: ClassVar[str] = "local"
    network: ClassVar[str] = "any"
    summary: ClassVar[str] = "local training only: one linear model per client, no communication"

    def init(self, problem: Problem, comm: Communicator, rng: RunStreams) -> FedState:
        data = prepare(problem, comm, self.loss, self.owner, self.model_family())
        W = init_models(rng, 1, data)
        k = len(data.tasks)
        return FedState(
            data=data,
            W=W,
            pi=np.ones((k, 1)),
            n_total=float(data.n.sum()),
            seed=stream_seed(rng),
            personal=np.broadcast_to(W, (k,) + W.shape).copy(),
        )

    def step(self, state: FedState, comm: Communicator) -> FedState:
        data = state.data
        r = state.round + 1
        rows = np.arange(len(data.tasks))
        keys = keys_for(state.seed, _ORDER, r, data, rows)
        V = local_sgd(state.personal, data, rows, self.lr, self.local_epochs, self.batch_size, keys)
        comm.compute(sgd_flops(data, rows, 1, self.local_epochs))
        return replace(state, personal=V, round=r)

    def evaluate(self, state: FedState, comm: Communicator) -> dict[str, float]:
        return self._personal_metrics(state, comm, state.personal)


@register
@dataclass(frozen=True)
class FedAvg(FederatedBase):
    """FedAvg: sampled clients run local SGD epochs from the server's model; weighted average.

    Parameters: see :class:`FederatedBase`.
    """

    name: ClassVar[str] = "fedavg"
    network: ClassVar[str] = "server"
    summary: ClassVar[str] = "FedAvg with local epochs and client sampling (linear models)"

    def init(self, problem: Problem, comm: Communicator, rng: RunStreams) -> FedState:
        return self._server_init(problem, comm, rng, 1)

    def step(self, state: FedState, comm: Communicator) -> FedState:
        return self._fedavg_round(state, comm)[0]

    def evaluate(self, state: FedState, comm: Communicator) -> dict[str, float]:
        return self._global_metrics(state, comm)


@register
@dataclass(frozen=True)
class FedAvgFT(FedAvg):
    """FedAvg, evaluated after every client fine-tunes the global model locally.

    Parameters
    ----------
    finetune_epochs : int
        Local epochs of fine-tuning at evaluation (on seen and unseen clients alike).
    finetune_lr : float, optional
        Its step size (default ``lr``).
    """

    finetune_epochs: int = 1
    finetune_lr: float | None = None

    name: ClassVar[str] = "fedavg-ft"
    summary: ClassVar[str] = "FedAvg + local fine-tuning of the global model at evaluation"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(self.owner, 1, finetune_epochs=self.finetune_epochs)
        if self.finetune_lr is not None:
            check_positive(self.owner, finetune_lr=self.finetune_lr)

    def finetuned(self, state: FedState) -> np.ndarray:
        """Every client's fine-tuned copy of the global model, (k, 1, P, C) (local work, no messages)."""
        data = state.data
        rows = np.arange(len(data.tasks))
        start = np.broadcast_to(state.W, (len(rows),) + state.W.shape)
        keys = keys_for(state.seed, _FINETUNE, state.round, data, rows)
        lr = self.lr if self.finetune_lr is None else self.finetune_lr
        return local_sgd(start, data, rows, lr, self.finetune_epochs, self.batch_size, keys)

    def evaluate(self, state: FedState, comm: Communicator) -> dict[str, float]:
        out = self._personal_metrics(state, comm, self.finetuned(state))
        glob = self._global_metrics(state, comm)
        out.update({f"global_{k}": v for k, v in glob.items() if k.startswith(("test_", "unseen_"))})
        return out


@register
@dataclass(frozen=True)
class FedProx(FederatedBase):
    """FedProx: FedAvg whose local objective adds ``(mu / 2) ||w - w_server||^2``.

    Parameters
    ----------
    mu : float
        Proximal weight (> 0; mu = 0 would be FedAvg).
    """

    mu: float = 0.1

    name: ClassVar[str] = "fedprox"
    network: ClassVar[str] = "server"
    summary: ClassVar[str] = "FedProx: FedAvg with a proximal term mu/2 ||w - w_server||^2"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self.owner, mu=self.mu)

    def init(self, problem: Problem, comm: Communicator, rng: RunStreams) -> FedState:
        return self._server_init(problem, comm, rng, 1)

    def step(self, state: FedState, comm: Communicator) -> FedState:
        return self._fedavg_round(state, comm, prox_mu=self.mu)[0]

    def evaluate(self, state: FedState, comm: Communicator) -> dict[str, float]:
        return self._global_metrics(state, comm)


@register
@dataclass(frozen=True)
class Ditto(FederatedBase):
    """Ditto: FedAvg for the global model plus personal models pulled towards it.

    Parameters
    ----------
    lam : float
        Weight of ``(lam / 2) ||v_t - w||^2`` in each client's personal objective (> 0).
    personal_epochs : int, optional
        Epochs on the personal model per round (default ``local_epochs``); unseen clients train a
        personal model from the current global model for this many epochs at evaluation.
    """

    lam: float = 0.1
    personal_epochs: int | None = None

    name: ClassVar[str] = "ditto"
    network: ClassVar[str] = "server"
    summary: ClassVar[str] = "Ditto: personal models regularised towards the FedAvg global model"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self.owner, lam=self.lam)
        if self.personal_epochs is not None:
            check_int(self.owner, 1, personal_epochs=self.personal_epochs)

    @property
    def _pe(self) -> int:
        return self.local_epochs if self.personal_epochs is None else self.personal_epochs

    def init(self, problem: Problem, comm: Communicator, rng: RunStreams) -> FedState:
        state = self._server_init(problem, comm, rng, 1)
        k = len(state.data.tasks)
        return replace(state, personal=np.broadcast_to(state.W, (k,) + state.W.shape).copy())

    def step(self, state: FedState, comm: Communicator) -> FedState:
        new, rows, W0, _ = self._fedavg_round(state, comm)
        data = state.data
        keys = keys_for(state.seed, _PERSONAL, new.round, data, rows)
        V = state.personal.copy()
        V[rows] = local_sgd(
            state.personal[rows], data, rows, self.lr, self._pe, self.batch_size, keys, prox=(self.lam, W0)
        )
        comm.compute(sgd_flops(data, rows, 1, self._pe))
        return replace(new, personal=V)

    def evaluate(self, state: FedState, comm: Communicator) -> dict[str, float]:
        data = state.data
        models = state.personal
        unseen = np.flatnonzero(~data.train)
        if len(unseen):
            models = models.copy()
            start = np.broadcast_to(state.W, (len(unseen),) + state.W.shape)
            keys = keys_for(state.seed, _UNSEEN, state.round, data, unseen)
            models[unseen] = local_sgd(
                start, data, unseen, self.lr, self._pe, self.batch_size, keys, prox=(self.lam, start)
            )
        return self._personal_metrics(state, comm, models)
