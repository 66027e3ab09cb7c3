"""Algorithms, one module per family; importing this package registers them all."""

from dmtl.algorithms import (  # noqa: F401  (imported to register their algorithms)
    admm_mtrl,  # C-ADMM, D-ADMM, ADMM-Single, online baselines
    altgdmin,  # AltGDmin, Dec-AltGDmin, Dif-AltGDmin
    fedem,  # FedEM, D-EM
    federated,  # Local, FedAvg, FedAvg-FT, FedProx, Ditto
    mocha,  # MOCHA and its baselines
)
from dmtl.algorithms.base import ALGORITHMS, Algorithm, make_algorithm, register

__all__ = ["ALGORITHMS", "Algorithm", "make_algorithm", "register"]
