"""The channel: what happens to a message on a graph link between two nodes.

By default a link is perfect: every message arrives, exactly as sent. A :class:`Channel` makes it lossy
in two seeded, reproducible ways, configured in the run's ``faults:`` section:

``drop_prob``
    every message ``j -> i`` of a gossip round is lost independently with this probability. The
    receiver then uses its own value in the sender's place, i.e. the lost weight ``W[i, j]`` moves to
    ``W[i, i]``: each round's effective mixing matrix stays row-stochastic (a common model of packet
    loss in gossip; e.g. Fagnani and Zampieri 2009), though no longer doubly stochastic, so consensus
    may drift from the exact average.
``compression``
    the sender transmits a compressed version of its row, and the byte counts shrink accordingly:

    * ``"quantize"``: unbiased stochastic rounding of ``x / max|x|`` to ``2^(bits-1) - 1`` levels per
      sign (QSGD, Alistarh et al. 2017): ``bits`` bits per value plus one float64 scale per message.
    * ``"topk"``: the ``ceil(topk * f)`` largest-magnitude entries of each message of ``f`` values, each
      sent as a float64 value and an int32 index, or as the dense row when that is smaller (biased;
      no error feedback).

    A node's own value (the diagonal term of ``W X``) is never compressed. The ledger counts the bytes
    of the encoded message; the MPI backend moves the decoded values as float64 (its transport view,
    ``summary["transport"]``, shows those bytes).

Randomness never comes from a generator's state: every draw is a counter-based hash of
``(seed, call, receiver, sender)`` (drops) or ``(seed, call, sender, coordinate)`` (stochastic rounding),
where ``call`` counts the channel's gossip rounds. Every shard of a sharded run draws exactly the
values it needs and they are the same on every backend and any number of shards.

Only graph links are affected (``comm.mix`` and ``comm.neighbors``); server links, flooding and
``observe`` stay perfect. Per-link delays, stragglers and crashes are not modelled here.

References
----------
F. Fagnani and S. Zampieri, "Average consensus with packet drop communication", SIAM J. Control
Optim. 48(1), 2009. D. Alistarh, D. Grubic, J. Li, R. Tomioka and M. Vojnovic, "QSGD:
Communication-efficient SGD via gradient quantization and encoding", NeurIPS 2017.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from dmtl.errors import ConfigError

__all__ = ["Channel", "COMPRESSIONS", "hash_uniform"]

COMPRESSIONS = ("none", "quantize", "topk")

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = (np.uint64(s) for s in (30, 27, 31, 11))


def _splitmix(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser (Steele, Lea and Flood 2014), elementwise on uint64 (wrapping)."""
    z = z ^ (z >> _S30)
    z = z * _M1
    z ^= z >> _S27
    z *= _M2
    z ^= z >> _S31
    return z


def hash_uniform(seed: int, call: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Uniform draws in [0, 1), one per element of the broadcast of ``a`` and ``b`` (integer ids).

    A pure function of ``(seed, call, a, b)``: no generator state, so any subset of the draws can be
    computed anywhere and agrees with the full set.
    """
    key = np.uint64(_splitmix(np.array([(seed * _GOLDEN + call) & _MASK], dtype=np.uint64))[0])
    z = _splitmix(np.asarray(a, dtype=np.uint64) ^ key)
    z = _splitmix(z ^ np.asarray(b, dtype=np.uint64))
    return (z >> _S11).astype(np.float64) * (1.0 / (1 << 53))


@dataclass(frozen=True)
class Channel:
    """A seeded lossy channel for graph links (see the module docstring).

    Parameters
    ----------
    drop_prob : float in [0, 1)
        Probability that a message is lost.
    compression : {"none", "quantize", "topk"}
    bits : int in [2, 32]
        Bits per value for ``"quantize"`` (sign included).
    topk : float in (0, 1]
        Fraction of each message's values kept by ``"topk"``.
    seed : int
        Seed of the channel's draws (the runner derives it from the run seed).
    """

    drop_prob: float = 0.0
    compression: str = "none"
    bits: int = 8
    topk: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("bits", "seed"):  # numpy integers too
            value = getattr(self, name)
            if isinstance(value, numbers.Integral) and not isinstance(value, bool):
                object.__setattr__(self, name, int(value))
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"the channel's seed must be an integer, got {self.seed!r}")
        p = self.drop_prob
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
            raise ConfigError(f"faults.drop_prob must be a number in [0, 1), got {p!r}")
        if self.compression not in COMPRESSIONS:
            raise ConfigError(
                f"faults.compression must be one of {', '.join(map(repr, COMPRESSIONS))}, "
                f"got {self.compression!r}"
            )
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 2 <= self.bits <= 32:
            raise ConfigError(f"faults.bits must be an integer in [2, 32], got {self.bits!r}")
        k = self.topk
        if isinstance(k, bool) or not isinstance(k, (int, float)) or not 0.0 < k <= 1.0:
            raise ConfigError(f"faults.topk must be a fraction in (0, 1], got {k!r}")

    @classmethod
    def from_config(cls, section: dict[str, Any], seed: int) -> Channel | None:
        """The channel of a run's ``faults:`` section, or None when it is perfect."""
        channel = cls(
            drop_prob=section.get("drop_prob", 0.0),
            compression=section.get("compression", "none"),
            bits=section.get("bits", 8),
            topk=section.get("topk", 0.1),
            seed=int(seed),
        )
        return channel if channel.active else None

    @property
    def active(self) -> bool:
        return self.drop_prob > 0.0 or self.compression != "none"

    # -- compression ------------------------------------------------------------------------------
    def kept_values(self, f: int) -> int:
        """Values a compressed message of ``f`` values carries."""
        if self.compression == "topk":
            # the small slack keeps e.g. 0.07 * 100 = 7.000000000000001 at 7
            return min(f, max(1, math.ceil(self.topk * f - 1e-9)))
        return f

    def message_bytes(self, f: int) -> float:
        """Bytes on the wire of one message of ``f`` float64 values."""
        if self.compression == "quantize":
            return math.ceil(f * self.bits / 8) + 8.0
        if self.compression == "topk":
            # float64 value + int32 index per kept entry, or the dense row when that is smaller
            return min(self.kept_values(f) * 12.0, 8.0 * f)
        return 8.0 * f

    def compress(self, X: np.ndarray, call: int, nodes: np.ndarray) -> np.ndarray:
        """What the senders ``nodes`` (global ids, one per row of ``X`` (n, f)) put on the wire."""
        if X.size == 0:
            return X
        if self.compression == "quantize":
            return self._quantize(X, call, nodes)
        if self.compression == "topk":
            return self._topk(X)
        return X

    def _quantize(self, X: np.ndarray, call: int, nodes: np.ndarray) -> np.ndarray:
        levels = float((1 << (self.bits - 1)) - 1)
        scale = np.max(np.abs(X), axis=1, keepdims=True)
        safe = np.where(scale > 0.0, scale, 1.0)
        y = X * (levels / safe)
        u = hash_uniform(self.seed, call, nodes[:, None], np.arange(X.shape[1])[None, :])
        q = np.floor(y + u)  # stochastic rounding: E[q] = y
        return q * (safe / levels)

    def _topk(self, X: np.ndarray) -> np.ndarray:
        n, f = X.shape
        k = self.kept_values(f)
        if k >= f:
            return X.copy()
        # the k largest |x| of each row; ties go to the lower index (a stable sort)
        order = np.argsort(-np.abs(X), axis=1, kind="stable")[:, :k]
        out = np.zeros_like(X)
        rows = np.arange(n)[:, None]
        out[rows, order] = X[rows, order]
        return out

    # -- drops ------------------------------------------------------------------------------------
    def delivered(self, call: int, receivers: np.ndarray, senders: np.ndarray) -> np.ndarray:
        """Whether message ``senders[e] -> receivers[e]`` (global ids) of gossip round ``call`` arrives."""
        if self.drop_prob <= 0.0:
            return np.ones(len(receivers), dtype=bool)
        keep = hash_uniform(self.seed ^ 0x5EED, call, receivers, senders) >= self.drop_prob
        return keep | (receivers == senders)
