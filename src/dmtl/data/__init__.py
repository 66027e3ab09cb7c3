"""Data: synthetic generators, real data loaders, and the registry of problem kinds.

Importing this package registers every problem kind.
"""

from dmtl.data import (
    mixture,  # noqa: F401  (registers fedem_synthetic)
    streams,  # noqa: F401  (registers omtl_synthetic, fourier_stream, dataset_stream)
    synthetic,  # noqa: F401  (registers lowrank)
)
from dmtl.data.registry import PROBLEMS, build, problem_params, register_problem

__all__ = ["PROBLEMS", "build", "problem_params", "register_problem"]
