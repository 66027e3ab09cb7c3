"""Data: synthetic generators, real data loaders, and the registry of problem kinds.

Importing this package registers every problem kind.
"""

from dmtl.data import synthetic  # noqa: F401  (registers its problem kinds)
from dmtl.data.registry import PROBLEMS, build, problem_params, register_problem

__all__ = ["PROBLEMS", "build", "problem_params", "register_problem"]
