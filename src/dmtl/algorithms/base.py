"""The algorithm protocol and registry.

An algorithm is a frozen dataclass of hyper-parameters with three methods, in the style of optax's
``init``/``update`` pairs:

``init(problem, comm, rng) -> state``
    the state of the communicator's block of nodes: a dataclass of arrays whose leading axis is the
    node (or the block's tasks), plus the block's data;
``step(state, comm) -> state``
    one iteration; every value that crosses nodes goes through ``comm``;
``evaluate(state, comm) -> dict``
    metrics of the whole network (collective: every shard gets the same numbers).

``network`` says what the algorithm needs: ``"server"``, ``"graph"`` (a connected graph with doubly
stochastic mixing weights unless the algorithm says otherwise) or ``"any"``.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from dmtl.errors import ConfigError
from dmtl.network.comm import Communicator
from dmtl.problem import Problem
from dmtl.seeding import RunStreams

__all__ = ["Algorithm", "ALGORITHMS", "register", "make_algorithm"]

ALGORITHMS: dict[str, type[Algorithm]] = {}


def register(cls: type[Algorithm]) -> type[Algorithm]:
    """Class decorator adding an algorithm to the registry under ``cls.name``."""
    ALGORITHMS[cls.name] = cls
    return cls


class Algorithm(ABC):
    """Base class of all algorithms (subclasses are frozen dataclasses)."""

    name: ClassVar[str] = "abstract"
    family: ClassVar[str] = ""
    network: ClassVar[str] = "any"
    summary: ClassVar[str] = ""

    @abstractmethod
    def init(self, problem: Problem, comm: Communicator, rng: RunStreams) -> Any: ...

    @abstractmethod
    def step(self, state: Any, comm: Communicator) -> Any: ...

    @abstractmethod
    def evaluate(self, state: Any, comm: Communicator) -> dict[str, float]: ...

    def params(self) -> dict[str, Any]:
        """Hyper-parameters as a plain dict (for the run's resolved configuration)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]


def make_algorithm(name: str, **params: Any) -> Algorithm:
    """Instantiate a registered algorithm, validating parameter names.

    Raises
    ------
    ConfigError
        for an unknown algorithm or parameter.
    """
    if name not in ALGORITHMS:
        raise ConfigError(f"unknown algorithm {name!r}; known algorithms: {', '.join(sorted(ALGORITHMS))}")
    cls = ALGORITHMS[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise ConfigError(
            f"algorithm {name!r} has no parameter {unknown[0]!r}; its parameters are: "
            f"{', '.join(fields) or '(none)'}"
        )
    return cls(**params)


def check_positive(owner: str, **values: float) -> None:
    """Raise ConfigError unless every value is a finite number > 0."""
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ConfigError(f"{owner}.{key} must be a number > 0, got {value!r}")
        if not np.isfinite(value) or value <= 0:
            raise ConfigError(f"{owner}.{key} must be a finite number > 0, got {value!r}")


def check_int(owner: str, low: int = 1, **values: int) -> None:
    """Raise ConfigError unless every value is an integer >= ``low``."""
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ConfigError(f"{owner}.{key} must be an integer >= {low}, got {value!r}")
