"""Algorithms, one module per family; importing this package registers them all."""

from dmtl.algorithms import altgdmin  # noqa: F401
from dmtl.algorithms.base import ALGORITHMS, Algorithm, make_algorithm, register

__all__ = ["ALGORITHMS", "Algorithm", "make_algorithm", "register"]
