"""Algorithms, one module per family; importing this package registers them all."""

from dmtl.algorithms import (  # noqa: F401  (FedEM, D-EM, federated baselines)
    admm_mtrl,  # noqa: F401  (C-ADMM, D-ADMM, ADMM-Single, online baselines)
    altgdmin,  # noqa: F401  (AltGDmin, Dec-AltGDmin, Dif-AltGDmin)
    fedem,
    federated,
)
from dmtl.algorithms.base import ALGORITHMS, Algorithm, make_algorithm, register

__all__ = ["ALGORITHMS", "Algorithm", "make_algorithm", "register"]
