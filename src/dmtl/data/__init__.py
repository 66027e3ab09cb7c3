"""Data: synthetic generators, real data loaders, and the registry of problem kinds.

Importing this package registers every problem kind.
"""

from dmtl.data import (  # noqa: F401  (imported to register their problem kinds)
    mixture,  # fedem_synthetic
    real,  # dataset, related_tasks
    streams,  # omtl_synthetic, fourier_stream, dataset_stream
    synthetic,  # lowrank
)
from dmtl.data.registry import PROBLEMS, build, problem_params, register_problem

__all__ = ["PROBLEMS", "build", "problem_params", "register_problem"]
