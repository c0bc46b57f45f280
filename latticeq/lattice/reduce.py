"""Lattice basis reduction.

LLL (Lenstra, Lenstra, Lovász 1982) through fpylll: the real basis is scaled to integers, fpylll
finds the unimodular transform U, and U is applied to the float basis, so the reduced basis spans
exactly the same lattice (``B_reduced == U @ B`` up to float rounding of the product).

Examples
--------
>>> import numpy as np
>>> from latticeq.lattice.reduce import lll
>>> B = np.array([[1.0, 0.0], [7.0, 1.0]])
>>> R, U = lll(B)
>>> np.allclose(U @ B, R), abs(round(np.linalg.det(U)))
(True, 1)
"""

from __future__ import annotations

import numpy as np

try:  # fpylll is a hard dependency; the fallback exists only for environments without it
    from fpylll import LLL as _FPLLL
    from fpylll import IntegerMatrix as _IntegerMatrix

    HAVE_FPYLLL = True
except ImportError:  # pragma: no cover - exercised only where fpylll is missing
    HAVE_FPYLLL = False

__all__ = ["lll", "HAVE_FPYLLL"]

# Bits of precision kept when the real basis is scaled to integers for fpylll. The transform is
# applied to the float basis afterwards, so this only affects how well reduced the result is.
_INTEGER_BITS = 40


def _validate_basis(B) -> np.ndarray:
    B = np.asarray(B)
    if B.dtype.kind not in "iuf":
        raise ValueError(f"basis must be a real matrix, got dtype {B.dtype}")
    B = B.astype(np.float64)
    if B.ndim != 2 or B.shape[0] != B.shape[1] or B.shape[0] == 0:
        raise ValueError(f"basis must be a square n×n matrix (rows = basis vectors), got shape {B.shape}")
    if not np.all(np.isfinite(B)):
        raise ValueError("basis contains NaN or infinite entries")
    return B


def lll(B, delta: float = 0.99, *, use_fpylll: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """LLL-reduce a real basis.

    Parameters
    ----------
    B : (n, n) array_like
        Basis vectors as rows, full rank.
    delta : float
        Lovász parameter, 1/4 < delta < 1 (default 0.99).
    use_fpylll : bool, optional
        Force (True) or forbid (False) fpylll; default: use it when installed.

    Returns
    -------
    reduced : (n, n) float64 array
        ``U @ B``, an LLL-reduced basis of the same lattice.
    U : (n, n) int64 array
        The unimodular transform (|det U| = 1).
    """
    B = _validate_basis(B)
    if not 0.25 < delta < 1.0:
        raise ValueError(f"delta must lie in (1/4, 1), got {delta}")
    s = np.linalg.svd(B, compute_uv=False)  # (a determinant test would underflow for tiny bases)
    if s[-1] == 0.0 or s[-1] < 1e-13 * s[0]:
        raise ValueError("basis is (numerically) singular: the rows must be linearly independent")
    if use_fpylll is None:
        use_fpylll = HAVE_FPYLLL
    if use_fpylll and not HAVE_FPYLLL:
        raise ValueError("use_fpylll=True but fpylll is not installed")
    U = _lll_transform_fpylll(B, delta) if use_fpylll else _lll_transform_numpy(B, delta)
    return U.astype(np.float64) @ B, U


def _lll_transform_fpylll(B: np.ndarray, delta: float) -> np.ndarray:
    n = B.shape[0]
    scale = 2.0 ** (_INTEGER_BITS - np.ceil(np.log2(np.max(np.abs(B)))))
    A = _IntegerMatrix.from_matrix([[int(v) for v in row] for row in np.rint(B * scale)])
    U = _IntegerMatrix.identity(n)
    _FPLLL.reduction(A, U, delta=delta)
    out = np.empty((n, n), dtype=np.int64)
    U.to_matrix(out)  # fpylll fills a preallocated array
    return out


def _lll_transform_numpy(B: np.ndarray, delta: float) -> np.ndarray:
    """Textbook LLL (Cohen, Algorithm 2.6.3) on floats; returns the unimodular transform."""
    n = B.shape[0]
    b = B.copy()
    U = np.eye(n, dtype=np.int64)

    def gso(b):
        bstar = np.zeros_like(b)
        mu = np.zeros((n, n))
        for i in range(n):
            bstar[i] = b[i]
            for j in range(i):
                mu[i, j] = b[i] @ bstar[j] / (bstar[j] @ bstar[j])
                bstar[i] -= mu[i, j] * bstar[j]
        return bstar, mu

    bstar, mu = gso(b)
    k = 1
    while k < n:
        for j in range(k - 1, -1, -1):
            q = int(np.rint(mu[k, j]))
            if q:
                b[k] -= q * b[j]
                U[k] -= q * U[j]
                bstar, mu = gso(b)
        if bstar[k] @ bstar[k] >= (delta - mu[k, k - 1] ** 2) * (bstar[k - 1] @ bstar[k - 1]):
            k += 1
        else:
            b[[k - 1, k]] = b[[k, k - 1]]
            U[[k - 1, k]] = U[[k, k - 1]]
            bstar, mu = gso(b)
            k = max(k - 1, 1)
    return U


def fpylll_closest(B, X, bits: int = 30):
    """Closest points of the lattice with generator rows ``B`` to the rows of ``X`` through fpylll's
    ``CVP.closest_vector`` (an independent exact decoder: integer-scaled basis and targets, LLL
    first); returns ``(points, seconds spent in CVP)``."""
    import time

    import numpy as np
    from fpylll import CVP, LLL, IntegerMatrix

    B = np.asarray(B, dtype=np.float64)
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    scale = 2.0 ** (bits - np.ceil(np.log2(np.max(np.abs(B)))))
    A = IntegerMatrix.from_matrix([[int(v) for v in row] for row in np.rint(B * scale)])
    LLL.reduction(A)
    T = [tuple(int(v) for v in row) for row in np.rint(X * scale)]
    t0 = time.perf_counter()
    out = [CVP.closest_vector(A, t) for t in T]
    dt = time.perf_counter() - t0
    return np.array(out, dtype=np.float64) / scale, dt
