"""LLL + Babai (Lenstra–Lenstra–Lovász 1982; Babai 1986) for per-channel grids.

With one scale per row, every row's lattice is ``s·L(B)``: one reduction serves the layer.
In code units ``u = w/s + z`` the row objective is ``s² ‖(u − v) B‖²``. We reverse ``B`` to a
lower-triangular basis ``L`` (so that the usual Gram–Schmidt order matches GPTQ's), reduce
``L' = U L`` (``U`` unimodular), re-triangularize ``L' = T Qᵀ`` by QR, run nearest-plane on
``T`` with the rotated targets, and map the coefficients back with ``U``.

The reduced basis ignores the box ``[0, maxq]^n``: codes that leave it are clamped, and the
row keeps whichever of (clamped LLL-Babai, GPTQ) has the smaller exact objective — the "box
repair" measured in the benchmark (stats report how many rows left the box and how many
rows LLL won).
"""

from __future__ import annotations

import time

import numpy as np

from latticeq.nn.solvers._base import Prepared

__all__ = ["lll_babai_codes"]


def lll_babai_codes(prep: Prepared, *, delta: float = 0.99, cache: dict | None = None) -> tuple[np.ndarray, dict]:
    """Unconstrained LLL-Babai integer codes (processing order, float64 array, not clamped).

    ``cache``: optional dict supplied by the caller; the reduction depends only on ``H``, the
    order and damping (not on the grid), so it is reused across bit widths.
    """
    if prep.grid.group_size is not None:
        raise ValueError("method 'lll' needs a per-channel grid (group_size=None): with groups every row has its own lattice")
    from latticeq.lattice.reduce import lll

    B = prep.B
    Bn = B.cpu().numpy()
    L = np.ascontiguousarray(Bn[::-1, ::-1])  # lower triangular
    # unit volume first: the reduction is scale-invariant, and the core's singularity test uses
    # det(B), which underflows to 0 for large n at the Hessian's natural scale
    unit = float(np.exp(-np.mean(np.log(np.abs(np.diag(L))))))
    t0 = time.perf_counter()
    key = (L.shape[0], delta, hash(L.tobytes()))
    if cache is not None and key in cache:
        Lr, U = cache[key]
    else:
        Lr, U = lll(L * unit, delta=delta)
        Lr = Lr / unit
        if cache is not None:
            cache[key] = (Lr, U)
    t_red = time.perf_counter() - t0
    Qm, Tm = np.linalg.qr(Lr.T)  # Lr^T = Q T  ->  Lr = T^T Q^T
    T = Tm.T  # lower triangular
    s = prep.S[:, 0].cpu().numpy()
    z = prep.Z[:, 0].cpu().numpy()
    Wp = prep.W.cpu().numpy()
    Uc = (Wp / s[:, None] + z[:, None])[:, ::-1]  # code units, reversed
    Y = (Uc @ L) @ Qm  # targets in the rotated coordinates of T
    n = L.shape[0]
    Vp = np.zeros_like(Y)
    for k in range(n - 1, -1, -1):
        c = Y[:, k] / T[k, k]
        v = np.rint(c)
        Vp[:, k] = v
        Y[:, : k + 1] -= v[:, None] * T[k, : k + 1][None, :]
    V = (Vp @ U.astype(np.float64))[:, ::-1]
    V = np.rint(V)
    gs_before = np.diag(L) ** 2
    gs_after = np.diag(T) ** 2
    stats = {
        "reduction_seconds": t_red,
        "babai_bound_before": float(0.25 * gs_before.sum()),
        "babai_bound_after": float(0.25 * gs_after.sum()),
    }
    return np.ascontiguousarray(V), stats
