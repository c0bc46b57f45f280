"""Babai's approximate closest-point algorithms (vectorized numpy).

L. Babai, "On Lovász' lattice reduction and the nearest lattice point problem", Combinatorica 6
(1986). Both functions take a general basis ``B`` (rows = basis vectors, k×n with k ≤ n, full row
rank) and targets ``X`` (m×n) and return integer coordinates ``U`` (m×k); the lattice points are
``U @ B``. Ties are rounded half up (``floor(t + 0.5)``), as in :mod:`.sphere`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["babai_rounding", "babai_nearest_plane"]


def _check(B, X):
    B = np.asarray(B)
    if B.ndim != 2 or B.shape[0] == 0 or B.shape[0] > B.shape[1]:
        raise ValueError(f"B must be a k×n basis with 1 <= k <= n (rows = basis vectors), got shape {B.shape}")
    if not np.issubdtype(B.dtype, np.number) or np.iscomplexobj(B):
        raise ValueError(f"B must be a real numeric array, got dtype {B.dtype}")
    B = np.asarray(B, dtype=np.float64)
    if not np.all(np.isfinite(B)):
        raise ValueError("B contains NaN or infinite entries")
    Xa = np.asarray(X)
    single = Xa.ndim == 1
    if single:
        Xa = Xa.reshape(1, -1)
    if Xa.ndim != 2 or Xa.shape[1] != B.shape[1]:
        raise ValueError(f"X must have shape (m, {B.shape[1]}) or ({B.shape[1]},), got {np.asarray(X).shape}")
    if not np.issubdtype(Xa.dtype, np.number) or np.iscomplexobj(Xa):
        raise ValueError(f"X must be a real numeric array, got dtype {Xa.dtype}")
    Xa = np.asarray(Xa, dtype=np.float64)
    if not np.all(np.isfinite(Xa)):
        raise ValueError("X contains NaN or infinite entries")
    # QR of B^T: B = R^T Q^T, R^T lower triangular (Gram–Schmidt of the rows of B in order)
    Q, R = np.linalg.qr(B.T)
    d = np.abs(np.diag(R))
    if d.min() <= 1e-12 * max(d.max(), 1e-300):
        raise ValueError("B is (numerically) rank deficient: its rows must be linearly independent")
    return B, Xa, single, Q, R


def _round(t):
    return np.floor(t + 0.5)


def babai_rounding(B, X):
    """Babai rounding: ``U = round(X B⁺)`` componentwise.

    Parameters
    ----------
    B : array_like (k, n)
        Basis, rows = basis vectors, full row rank.
    X : array_like (m, n) or (n,)
        Targets (for k < n, the component orthogonal to the lattice's span is ignored).

    Returns
    -------
    U : ndarray of int64, (m, k) (or (k,) for a single target)
        Coordinates; the lattice points are ``U @ B``.
    """
    B, X, single, Q, R = _check(B, X)
    # coordinates t with X_proj = t B: t = X Q R^{-1}  (B^T = Q R  =>  B = R^T Q^T)
    T = np.linalg.solve(R, (X @ Q).T).T
    U = _round(T).astype(np.int64)
    return U[0] if single else U


def babai_nearest_plane(B, X):
    """Babai's nearest-plane algorithm (successive interference cancellation).

    With the Gram–Schmidt decomposition ``B = R^T Q^T`` (``R^T`` lower triangular, rows of ``B``
    orthogonalised in order) and ``y = X Q``, set for ``k = k-1, …, 0``

        u_k = round((y_k − Σ_{l>k} u_l R[k,l]) / R[k,k]).

    This is the first leaf of the Schnorr–Euchner search and equals GPTQ's rounding order.

    Parameters
    ----------
    B : array_like (k, n)
        Basis, rows = basis vectors, full row rank.
    X : array_like (m, n) or (n,)
        Targets.

    Returns
    -------
    U : ndarray of int64, (m, k) (or (k,) for a single target)
    """
    B, X, single, Q, R = _check(B, X)
    Y = X @ Q  # (m, k)
    k = B.shape[0]
    U = np.zeros((X.shape[0], k), dtype=np.float64)
    for i in range(k - 1, -1, -1):
        r = Y[:, i] - U[:, i + 1 :] @ R[i, i + 1 :]
        U[:, i] = _round(r / R[i, i])
    U = U.astype(np.int64)
    return U[0] if single else U
