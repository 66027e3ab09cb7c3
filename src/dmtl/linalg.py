"""Batched linear-algebra kernels shared by the algorithms (leading axes are batch axes)."""

from __future__ import annotations

import numpy as np

__all__ = ["orthonormalize", "procrustes_rotation", "batched_lstsq", "subspace_distance"]


def orthonormalize(A: np.ndarray) -> np.ndarray:
    """Q factor of the thin QR of each ``A[..., :, :]``, signs fixed so that ``diag(R) > 0``.

    Fixing the signs makes the factor unique, so nodes that orthonormalise the same matrix get the same
    basis, and nearby matrices get nearby bases.
    """
    Q, R = np.linalg.qr(A)
    signs = np.sign(np.diagonal(R, axis1=-2, axis2=-1))
    signs = np.where(signs == 0, 1.0, signs)
    return Q * signs[..., None, :]


def procrustes_rotation(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Orthogonal ``R`` minimising ``||source R - target||_F`` (batched over leading axes).

    ``R = P Q^T`` where ``source^T target = P S Q^T`` is an SVD.
    """
    M = np.swapaxes(source, -1, -2) @ target
    P, _, Qt = np.linalg.svd(M)
    return P @ Qt


def batched_lstsq(A: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares solutions ``argmin_b ||A[k] b - y[k]||`` for a stack (k, n, r), (k, n) -> (k, r).

    Uses a thin QR per problem: the accuracy of the normal equations squared would cap the attainable
    subspace distance near 1e-8.
    """
    Q, R = np.linalg.qr(A)
    rhs = np.einsum("knr,kn->kr", Q, y)
    return np.linalg.solve(R, rhs[..., None])[..., 0]


def subspace_distance(U: np.ndarray, U_star: np.ndarray, ord: str = "fro") -> np.ndarray:
    """``||(I - U U^T) U*||`` for each basis in a stack ``U`` (..., d, r); ``ord`` in {'fro', 2}.

    Computed as ``U* - U (U^T U*)`` rather than ``sqrt(r - ||U^T U*||^2)``, which cancels
    catastrophically below 1e-8.
    """
    M = U_star - U @ (np.swapaxes(U, -1, -2) @ U_star)
    if ord == "fro":
        return np.sqrt(np.einsum("...ij,...ij->...", M, M))
    if ord == 2:
        return np.linalg.norm(M, ord=2, axis=(-2, -1))
    raise ValueError(f"subspace_distance ord must be 'fro' or 2, got {ord!r}")
