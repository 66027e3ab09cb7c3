r"""Neural components for FedEM, D-EM and the federated baselines, trained with PyTorch autograd.

Optional: ``pip install torch==2.13.0`` (the CPU build; any other specifier may download gigabytes).
Select it with ``algorithm.model=mlp`` (and ``algorithm.hidden=H``) on any algorithm of
:mod:`dmtl.algorithms.federated` or :mod:`dmtl.algorithms.fedem`.

:class:`TorchMLP` is a one-hidden-layer ReLU network ``s = W2 relu(W1 x + b1) + b2`` with C outputs.
It follows the :class:`dmtl.algorithms.federated.Model` protocol: a model's parameters are one flat
float64 vector of length P (``[W1, b1, W2, b2]`` row-major), so the engine keeps doing everything else
in NumPy -- sampling, minibatch orders, FedEM's E-step on the returned scores, the server's weighted
averages and D-EM's gossip (``comm.mix`` on the flat vectors) -- and the runs stay backend- and
shard-independent. PyTorch only evaluates the network and its vector-Jacobian product for a batch of
(client, component) pairs at once: the forward pass is two batched ``einsum`` products over
(clients, components), the backward pass ``torch.autograd.grad`` of the scores against the loss
derivatives the engine supplies. Computation is in float64 so that results match across backends to
the last bit, as for the linear models.

Initialisation (from the run's ``init`` stream, in NumPy): every weight and bias of a layer with
``fan_in`` inputs uniform in ``+-1/sqrt(fan_in)`` (PyTorch's ``nn.Linear`` default).

Threads: creating a :class:`TorchMLP` sets PyTorch's intra-op threads to ``DMTL_TORCH_THREADS``
(default 1), as the MPI backend does for BLAS (``backend.blas_threads``): the products are many and
small, and on a shared machine extra threads only contend (measured: 20x slower with 2 threads on a
loaded 2-core machine).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from dmtl.errors import ConfigError

__all__ = ["TorchMLP", "require_torch", "torch_available"]


def torch_available() -> bool:
    """Whether PyTorch can be imported."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def require_torch(what: str) -> ModuleType:
    """The ``torch`` module, or a :class:`ConfigError` naming ``what`` and the install command."""
    try:
        import torch
    except ImportError:
        raise ConfigError(
            f"{what} needs PyTorch, which is not installed; install the CPU build with "
            "`pip install torch==2.13.0` (or use model=linear)"
        ) from None
    return torch


class TorchMLP:
    """One-hidden-layer ReLU network with flat float64 parameters (see the module docstring).

    Parameters
    ----------
    d : int
        Input features.
    n_out : int
        Scores per sample (1, or C for the softmax loss).
    hidden : int
        Hidden width H.
    bias : bool
        Biases in both layers.
    """

    def __init__(self, d: int, n_out: int, hidden: int = 32, bias: bool = True) -> None:
        self.torch = require_torch("the mlp model")
        threads = int(os.environ.get("DMTL_TORCH_THREADS", "1"))
        if self.torch.get_num_threads() != threads:
            self.torch.set_num_threads(threads)
        if hidden < 1 or d < 1 or n_out < 1:
            raise ConfigError(f"TorchMLP needs d, n_out, hidden >= 1, got {d}, {n_out}, {hidden}")
        self.d, self.n_out, self.hidden, self.bias = d, n_out, hidden, bias
        H, C, b = hidden, n_out, int(bias)
        self._sizes = [H * d, H * b, C * H, C * b]
        self.shape = (sum(self._sizes),)
        self.flops = 2.0 * (H * d + H * C)

    # -- parameters --------------------------------------------------------------------------------
    def init(self, gen: np.random.Generator, M: int) -> np.ndarray:
        """``M`` parameter vectors (M, P): layer weights and biases ``U(+-1/sqrt(fan_in))``."""
        bounds = [1 / np.sqrt(self.d)] * 2 + [1 / np.sqrt(self.hidden)] * 2
        parts = [gen.uniform(-bd, bd, size=(M, n)) for bd, n in zip(bounds, self._sizes, strict=True)]
        return np.concatenate(parts, axis=1)

    def _unpack(self, theta: Any) -> tuple[Any, Any | None, Any, Any | None]:
        H, C, d = self.hidden, self.n_out, self.d
        lead = theta.shape[:-1]
        o = np.cumsum([0, *self._sizes])
        W1 = theta[..., o[0] : o[1]].reshape(*lead, H, d)
        W2 = theta[..., o[2] : o[3]].reshape(*lead, C, H)
        b1 = theta[..., o[1] : o[2]] if self.bias else None
        b2 = theta[..., o[3] : o[4]] if self.bias else None
        return W1, b1, W2, b2

    def _forward(self, X: Any, theta: Any) -> Any:
        """``X`` (a, n, d), ``theta`` (a, M, P) tensors -> scores (a, M, n, C)."""
        torch = self.torch
        W1, b1, W2, b2 = self._unpack(theta)
        Z = torch.einsum("and,amhd->amnh", X, W1)
        if b1 is not None:
            Z = Z + b1[:, :, None, :]
        S = torch.einsum("amnh,amch->amnc", torch.relu(Z), W2)
        if b2 is not None:
            S = S + b2[:, :, None, :]
        return S

    def _tensors(self, X: np.ndarray, W: np.ndarray, grad: bool = False) -> tuple[Any, Any]:
        torch = self.torch
        Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float64))
        theta = torch.from_numpy(np.ascontiguousarray(W, dtype=np.float64))
        if theta.dim() == 2:  # shared models: the same M vectors for every client
            theta = theta.unsqueeze(0).expand(X.shape[0], *theta.shape)
        if grad:
            theta = theta.detach().clone().requires_grad_(True)
        return Xt, theta

    # -- the Model protocol ---------------------------------------------------------------------------
    def scores(self, X: np.ndarray, W: np.ndarray) -> np.ndarray:
        """Scores (a, M, n, C) of ``X`` (a, n, d) under ``W`` shared (M, P) or per client (a, M, P)."""
        Xt, theta = self._tensors(X, W)
        with self.torch.no_grad():
            return self._forward(Xt, theta).numpy()

    def vjp(self, X: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
        """Scores and ``backward(G)`` = ``sum_i G_i ds_i / dtheta`` (a, M, P) for per-client ``W``."""
        torch = self.torch
        Xt, theta = self._tensors(X, W, grad=True)
        S = self._forward(Xt, theta)

        def backward(G: np.ndarray) -> np.ndarray:
            g = torch.from_numpy(np.ascontiguousarray(G, dtype=np.float64))
            (out,) = torch.autograd.grad(S, theta, grad_outputs=g)
            return out.numpy()

        return S.detach().numpy(), backward
