"""One run seed, many independent random streams.

``RunStreams(seed)`` spawns a :class:`numpy.random.SeedSequence` into named children, so that drawing
more or fewer numbers in one stream (say, a bigger graph) never changes another (the data). A run is
therefore reproducible stream by stream, and two runs differing only in the algorithm see the same data.
"""

from __future__ import annotations

import numpy as np

__all__ = ["RunStreams", "STREAMS"]

# Order matters: a stream's seed is its position among the children. Append, never reorder.
STREAMS = ("data", "placement", "topology", "init", "nodes", "channel")


class RunStreams:
    """Independent generators derived from one run seed.

    Parameters
    ----------
    seed : int or None
        The run seed. ``None`` draws fresh entropy (recorded in ``entropy`` so the run can be repeated).
    """

    def __init__(self, seed: int | None) -> None:
        self.root = np.random.SeedSequence(seed)
        self.entropy = self.root.entropy
        self._children = dict(zip(STREAMS, self.root.spawn(len(STREAMS)), strict=True))

    def generator(self, name: str) -> np.random.Generator:
        """A fresh generator for stream ``name`` (the same numbers every call)."""
        if name not in self._children:
            raise KeyError(f"unknown random stream {name!r}; known streams: {', '.join(STREAMS)}")
        return np.random.default_rng(self._children[name])

    def seed_sequence(self, name: str) -> np.random.SeedSequence:
        self.generator(name)  # validates the name
        return self._children[name]
