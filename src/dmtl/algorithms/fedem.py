r"""FedEM (client-server) and D-EM (decentralised): federated EM over a mixture of M shared models.

Model
-----
Client t's data come from a mixture of M components shared by all clients, with client-specific
weights ``pi_t``: ``p_t(x, y) = sum_m pi_tm p_m(y | x) p(x)``. Here ``p_m(y | x) = exp(-loss(s_m, y))``
with the linear scores ``s_m = x^T w_m + b_m`` (logistic: Bernoulli, softmax: categorical, squared:
Gaussian with unit variance up to a constant; the hinge loss is accepted as an unnormalised Gibbs
likelihood). Linear components, as in the reference's synthetic experiment.

One round (ALGORITHMS.md section 5), on every sampled client, from the models it received
-----------------------------------------------------------------------------------------
1. E-step, per training sample i: ``q_i(m) = softmax_m(log pi_tm - loss_m(x_i, y_i))``;
2. ``pi_tm = mean_i q_i(m)``;
3. M-step: ``local_epochs`` epochs of minibatch SGD on every component at once, the batch loss of
   component m being ``(1/|B|) sum_{i in B} q_i(m) loss_m(x_i, y_i)`` (the reference's weighting);
4. ``fedem``: the server sets ``theta_m <- sum_t (n_t / n) theta_m,t`` (clients that were not sampled
   count with the server's model, as in the reference; see :mod:`dmtl.algorithms.federated`): M models
   down to and up from each sampled node per round.
   ``d-em``: no server; every node holds its own M models, and after the local steps each component is
   mixed over the graph, ``theta_m <- W_mix theta_m`` (``mixing_rounds`` gossip rounds with the run's
   mixing weights, Metropolis by default), M models per edge per gossip round.

Prediction: ``p_t(y | x) = sum_m pi_tm p_m(y | x)`` (classification: the label of highest mixture
likelihood; regression: the mixture mean).

Unseen clients (``problem.truth["unseen"]``) never train. At evaluation they run steps 1-2 only,
``unseen_iters`` times from uniform weights, on their own training data with the models frozen (the
server's models; in D-EM their node's copy, which they keep mixing as relays), and predict with the
weights found.

Metrics, besides those of :func:`dmtl.algorithms.federated.report`: ``pi_corr`` (and
``unseen_pi_corr``), the Pearson correlation between the estimated and the true mixture weights of all
training (unseen) clients, over all entries, after matching the components by the permutation that
maximises it (components are identifiable only up to relabelling); D-EM adds ``consensus``, the mean
squared distance of the nodes' models to their average relative to the average's squared norm.

Our choices
-----------
* Components start from independent ``U(-1/sqrt(d), 1/sqrt(d))`` draws (the reference seeds each
  PyTorch learner differently): identical starts would keep them identical forever.
* With ``components=1`` the E-step gives ``q = 1`` and ``pi = 1`` exactly, so FedEM performs exactly
  FedAvg's arithmetic on the same random draws: the runs agree bit for bit (tested).
* ``pi`` may reach exactly 0 for a component whose likelihood underflows; that component is then off
  for that client for good (as in EM and in the reference).
* D-EM mixes with a doubly stochastic matrix, so at consensus it averages clients uniformly, not by
  ``n_t / n`` (the reference's decentralised variant does the same).

References
----------
O. Marfoq, G. Neglia, A. Bellet, L. Kameni and R. Vidal, "Federated multi-task learning under a
mixture of distributions", NeurIPS 2021 (code: github.com/omarfoq/FedEM).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
from scipy.optimize import linear_sum_assignment

from dmtl.algorithms.base import check_int, register
from dmtl.algorithms.federated import (
    _ORDER,
    _SAMPLING,
    FedData,
    FederatedBase,
    FedState,
    download,
    expand,
    init_models,
    keys_for,
    local_sgd,
    loss_values,
    mixture_sums,
    prepare,
    report,
    round_rng,
    row_chunks,
    sample_nodes,
    sgd_flops,
    stream_seed,
    task_starts,
    upload_average,
)
from dmtl.network.comm import Communicator
from dmtl.problem import Problem
from dmtl.seeding import RunStreams

__all__ = ["FedEM", "DEM", "e_step", "adapt_weights", "matched_correlation"]


def _responsibilities(logpi: np.ndarray, losses: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``q_i(m) = softmax_m(log pi_m - loss_m,i)`` on real rows, 0 on padding: (a, M, n)."""
    q = logpi[:, :, None] - losses
    q -= q.max(axis=1, keepdims=True)
    np.exp(q, out=q)
    q *= (mask / q.sum(axis=1))[:, None, :]
    return q


def _shared(data: FedData, W: np.ndarray) -> bool:
    """``W`` holds M shared models (M, *shape), not per-client ones (a, M, *shape)."""
    return W.ndim == len(data.model.shape) + 1


def _log(pi: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(pi)


def e_step(data: FedData, rows: np.ndarray, W: np.ndarray, pi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """E-step and weight update of the given clients.

    Parameters
    ----------
    rows : (a,) clients (block indices); ``W`` shared (M, *shape) or per client (a, M, *shape);
    ``pi`` (a, M) their current weights.

    Returns
    -------
    q : (a, M, n_max) responsibilities (0 on padded rows); pi : (a, M) ``mean_i q_i``.
    """
    M = pi.shape[1]
    q = np.zeros((len(rows), M, data.n_max))
    if len(rows) == 0:
        return q, np.zeros((0, M))
    logpi = _log(pi)
    for j, act, Xc, yc, mc in row_chunks(data.X, data.y, data.mask, data.block.n_samples, rows):
        Wc = W if _shared(data, W) else W[act]
        losses = loss_values(data.loss, data.model.scores(Xc, Wc), yc)
        q[act, :, j : j + Xc.shape[1]] = _responsibilities(logpi[act], losses, mc)
    return q, q.sum(axis=2) / data.n[rows, None]


def adapt_weights(data: FedData, rows: np.ndarray, W: np.ndarray, M: int, iters: int) -> np.ndarray:
    """Mixture weights of clients with frozen models: ``iters`` E-step/weight updates from uniform."""
    pi = np.full((len(rows), M), 1.0 / M)
    if len(rows) == 0:
        return pi
    losses = np.zeros((len(rows), M, data.n_max))
    for j, act, Xc, yc, _ in row_chunks(data.X, data.y, data.mask, data.block.n_samples, rows):
        Wc = W if _shared(data, W) else W[act]
        losses[act, :, j : j + Xc.shape[1]] = loss_values(data.loss, data.model.scores(Xc, Wc), yc)
    mask = data.mask[rows]
    for _ in range(iters):
        pi = _responsibilities(_log(pi), losses, mask).sum(axis=2) / data.n[rows, None]
    return pi


def matched_correlation(est: np.ndarray, true: np.ndarray) -> tuple[float, np.ndarray]:
    """Pearson correlation of ``est[:, perm]`` with ``true`` over all entries, for the component
    permutation ``perm`` that maximises it (exhaustive up to 7 components, else an assignment on
    column inner products). Returns (correlation, perm)."""
    M = true.shape[1]
    if est.shape != true.shape or est.size == 0 or np.std(true) == 0:
        return float("nan"), np.arange(M)
    t = true.ravel()

    def corr(p: np.ndarray) -> float:
        e = est[:, p].ravel()
        return float(np.corrcoef(e, t)[0, 1]) if np.std(e) > 0 else float("nan")

    if M <= 7:
        perms = [np.array(p) for p in itertools.permutations(range(M))]
    else:
        ec, tc = est - est.mean(), true - true.mean()
        r, c = linear_sum_assignment(-(tc.T @ ec))
        perms = [c[np.argsort(r)]]
    vals = [corr(p) for p in perms]
    best = int(np.nanargmax(vals)) if not np.all(np.isnan(vals)) else 0
    return vals[best], perms[best]


@register
@dataclass(frozen=True)
class FedEM(FederatedBase):
    """FedEM: federated EM over M shared linear components (client-server).

    Parameters
    ----------
    components : int
        Number M of mixture components.
    unseen_iters : int
        E-step/weight iterations of unseen clients at evaluation.
    loss, lr, local_epochs, batch_size, fraction, bias, model, hidden
        See :class:`dmtl.algorithms.federated.FederatedBase`.
    """

    components: int = 3
    unseen_iters: int = 10

    name: ClassVar[str] = "fedem"
    network: ClassVar[str] = "server"
    summary: ClassVar[str] = "FedEM: federated EM over a mixture of M shared linear models (server)"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(self.owner, 1, components=self.components, unseen_iters=self.unseen_iters)

    def init(self, problem: Problem, comm: Communicator, rng: RunStreams) -> FedState:
        return self._server_init(problem, comm, rng, self.components)

    def _estep_flops(self, data: FedData, rows: np.ndarray) -> np.ndarray:
        per = np.zeros(len(data.tasks))
        per[rows] = data.n[rows] * data.model.flops * self.components
        return data.block.sum_to_nodes(per)

    def step(self, state: FedState, comm: Communicator) -> FedState:
        data = state.data
        r = state.round + 1
        sel_g = sample_nodes(data.eligible, self.fraction, round_rng(state.seed, _SAMPLING, r))
        sel = comm.local(sel_g)
        received = download(comm, state.W, sel_g)
        rows, W0 = task_starts(data, sel, received)
        shared = received[0] if len(received) else state.W  # every sampled node got the same copy
        q, pi_rows = e_step(data, rows, shared, state.pi[rows])
        keys = keys_for(state.seed, _ORDER, r, data, rows)
        W1 = local_sgd(W0, data, rows, self.lr, self.local_epochs, self.batch_size, keys, q=q)
        comm.compute(
            self._estep_flops(data, rows) + sgd_flops(data, rows, self.components, self.local_epochs)
        )
        W = upload_average(comm, data, sel, rows, W1, W0, state.W, state.n_total)
        pi = state.pi.copy()
        pi[rows] = pi_rows
        return replace(state, W=W, pi=pi, round=r)

    # -- evaluation -----------------------------------------------------------------------------
    def _task_models(self, state: FedState) -> np.ndarray:
        """The models each client predicts with: shared (M, P, C) for FedEM."""
        return state.W

    def weights(self, state: FedState) -> np.ndarray:
        """Every block client's mixture weights (k, M): unseen clients' adapted with frozen models."""
        data = state.data
        pi = state.pi.copy()
        unseen = np.flatnonzero(~data.train)
        if len(unseen):
            W = self._task_models(state)
            Wu = W if _shared(data, W) else W[unseen]
            pi[unseen] = adapt_weights(data, unseen, Wu, self.components, self.unseen_iters)
        return pi

    def evaluate(self, state: FedState, comm: Communicator) -> dict[str, float]:
        data = state.data
        W = self._task_models(state)
        pi = self.weights(state)
        logpi = _log(pi)
        train = mixture_sums(data.loss, data.X, data.y, data.mask, W, logpi, data.model)
        test = None
        if data.X_test is not None:
            test = mixture_sums(data.loss, data.X_test, data.y_test, data.test_mask, W, logpi, data.model)
        out = report(comm, data, train, test)
        if state.truth_pi is not None and state.truth_pi.shape[1] == self.components:
            table = comm.observe(np.concatenate([data.tasks[:, None], data.train[:, None], pi], axis=1))
            order = np.argsort(table[:, 0], kind="stable")
            table = table[order]
            seen = table[:, 1] > 0
            truth = state.truth_pi[table[:, 0].astype(np.int64)]
            out["pi_corr"] = matched_correlation(table[seen, 2:], truth[seen])[0]
            if (~seen).any():
                out["unseen_pi_corr"] = matched_correlation(table[~seen, 2:], truth[~seen])[0]
        return out


@register
@dataclass(frozen=True)
class DEM(FedEM):
    """D-EM: FedEM without a server; every node mixes its M models with its neighbours' each round.

    Parameters
    ----------
    mixing_rounds : int
        Gossip rounds of ``theta_m <- W_mix theta_m`` after the local steps.
    components, unseen_iters, loss, lr, local_epochs, batch_size, fraction, bias, model, hidden
        As for :class:`FedEM` (``fraction``: share of nodes doing local steps in a round; all mix).
    """

    mixing_rounds: int = 1

    name: ClassVar[str] = "d-em"
    network: ClassVar[str] = "graph"
    summary: ClassVar[str] = "D-EM: decentralised FedEM, components mixed over the graph each round"
    test_overrides: ClassVar[list[str]] = [
        *FederatedBase.test_overrides,
        "topology.kind=erdos_renyi",
        "topology.p=0.5",
    ]

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(self.owner, 1, mixing_rounds=self.mixing_rounds)

    def init(self, problem: Problem, comm: Communicator, rng: RunStreams) -> FedState:
        comm.require_graph(f"algorithm {self.name}")
        data = prepare(problem, comm, self.loss, self.owner, self.model_family())
        W = init_models(rng, self.components, data)
        truth = problem.truth.get("pi")
        return FedState(
            data=data,
            W=np.broadcast_to(W, (comm.n_local,) + W.shape).copy(),
            pi=np.full((len(data.tasks), self.components), 1.0 / self.components),
            n_total=float("nan"),
            seed=stream_seed(rng),
            truth_pi=None if truth is None else np.asarray(truth, dtype=float),
        )

    def step(self, state: FedState, comm: Communicator) -> FedState:
        data = state.data
        Wmix = comm.require_graph(f"algorithm {self.name}")
        r = state.round + 1
        sel_g = sample_nodes(data.eligible, self.fraction, round_rng(state.seed, _SAMPLING, r))
        sel = comm.local(sel_g)
        rows = np.flatnonzero(data.train & sel[data.node])
        W0 = state.W[data.node[rows]]
        q, pi_rows = e_step(data, rows, W0, state.pi[rows])
        keys = keys_for(state.seed, _ORDER, r, data, rows)
        W1 = local_sgd(W0, data, rows, self.lr, self.local_epochs, self.batch_size, keys, q=q)
        comm.compute(
            self._estep_flops(data, rows) + sgd_flops(data, rows, self.components, self.local_epochs)
        )
        # each node: the n_t-weighted average of its trained clients' models (its own if none trained)
        k = len(data.tasks)
        num = np.zeros((k,) + state.W.shape[1:])
        den = np.zeros(k)
        num[rows] = expand(data.n[rows], W1.ndim) * W1
        den[rows] = data.n[rows]
        num_n, den_n = data.block.sum_to_nodes(num), data.block.sum_to_nodes(den)
        trained = den_n > 0
        Wn = state.W.copy()
        Wn[trained] = num_n[trained] / expand(den_n[trained], Wn.ndim)
        W = comm.mix(Wn, Wmix, self.mixing_rounds)
        pi = state.pi.copy()
        pi[rows] = pi_rows
        return replace(state, W=W, pi=pi, round=r)

    def _task_models(self, state: FedState) -> np.ndarray:
        return state.W[state.data.node]

    def evaluate(self, state: FedState, comm: Communicator) -> dict[str, float]:
        out = super().evaluate(state, comm)
        allW = comm.observe(state.W.reshape(comm.n_local, -1))
        mean = allW.mean(axis=0)
        out["consensus"] = float(((allW - mean) ** 2).sum(axis=1).mean() / max((mean**2).sum(), 1e-300))
        return out
