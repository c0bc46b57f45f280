"""Compiled kernel of :mod:`latticeq.nn.grid`: GPTQ's MSE clipping search, fused per row."""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def mse_shrink_search(X, xmin, xmax, maxq, sym, steps, norm, scale, zero):
    """GPTQ's MSE clipping search, fused per row (``Quantizer.find_params`` with ``mse=True``).

    For ``p = 1 − i/100`` (``i < steps``) the range ``[p·xmin, p·xmax]`` gives a min–max grid;
    the row keeps the first ``p`` with the smallest ``Σ_j |x_j − Q(x_j)|^norm``. ``scale``/``zero``
    hold the ``p = 1`` parameters on entry and the chosen ones on return. Everything is float64
    as in the reference (weights of an already-quantized model put many ``x/s`` exactly on
    rounding ties, so the division must be exact) except the powers, taken in float32.
    """
    m, k = X.shape
    nf = np.float32(norm)
    for r in prange(m):
        best = np.inf
        for i in range(steps):
            p = 1.0 - i / 100.0
            lo = p * xmin[r]
            hi = p * xmax[r]
            if sym:
                hi = max(abs(lo), hi)
                if lo < 0:
                    lo = -hi
            if lo == 0.0 and hi == 0.0:
                lo, hi = -1.0, 1.0
            s = (hi - lo) / maxq
            z = (maxq + 1) / 2 if sym else np.rint(-lo / s)
            err = 0.0
            for j in range(k):
                q = np.rint(X[r, j] / s) + z
                if q < 0.0:
                    q = 0.0
                elif q > maxq:
                    q = maxq
                d = abs(s * (q - z) - X[r, j])
                if d > 0.0:
                    err += np.float32(d) ** nf
            if err < best:
                best = err
                scale[r] = s
                zero[r] = z
