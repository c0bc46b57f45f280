"""Compiled kernels of the design half (SGD, NSM re-estimation) around the shared core decoder.

All kernels work on a lower-triangular generator ``Lt`` with positive diagonal whose rows are
the basis vectors (a lattice point is ``u @ Lt``). The exact closest point comes from the core's
single-point Schnorr–Euchner kernel :func:`latticeq.lattice.decode.sphere.decode_one` (Agrell,
Eriksson, Vardy and Zeger, "Closest point search in lattices", IEEE Trans. IT 48 (2002), with the
lazy partial sums of Ghasemmehdi & Agrell 2011), called unbounded (``BOUND_NONE``) from inside the
numba code, so that the whole SGD inner loop (sampling, exact closest point, update, periodic LLL
reduction and re-triangularization) runs compiled. The decoder's workspace is allocated once per
kernel call, never per step.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from latticeq.lattice.decode.sphere import BOUND_NONE, decode_one, make_workspace


@njit(cache=True)
def _gso(B, mu, bb):
    n = B.shape[0]
    bstar = np.empty_like(B)
    for i in range(n):
        for k in range(B.shape[1]):
            bstar[i, k] = B[i, k]
        for j in range(i):
            s = 0.0
            for k in range(B.shape[1]):
                s += B[i, k] * bstar[j, k]
            mu[i, j] = s / bb[j]
            for k in range(B.shape[1]):
                bstar[i, k] -= mu[i, j] * bstar[j, k]
        s = 0.0
        for k in range(B.shape[1]):
            s += bstar[i, k] * bstar[i, k]
        bb[i] = s
        mu[i, i] = 1.0


@njit(cache=True)
def lll_float(B, delta=0.99):
    """Textbook LLL (Lenstra–Lenstra–Lovász 1982) in floating point, in place on the rows of B.

    Meant for the small, already nearly reduced bases that occur inside SGD; the Gram–Schmidt
    data are recomputed after every swap, which is O(n^3) but swaps are rare there.
    """
    n = B.shape[0]
    mu = np.zeros((n, n))
    bb = np.empty(n)
    _gso(B, mu, bb)
    k = 1
    while k < n:
        for j in range(k - 1, -1, -1):
            q = np.floor(mu[k, j] + 0.5)
            if q != 0.0:
                for t in range(B.shape[1]):
                    B[k, t] -= q * B[j, t]
                for t in range(j + 1):
                    mu[k, t] -= q * mu[j, t]
        if bb[k] >= (delta - mu[k, k - 1] ** 2) * bb[k - 1]:
            k += 1
        else:
            for t in range(B.shape[1]):
                tmp = B[k, t]
                B[k, t] = B[k - 1, t]
                B[k - 1, t] = tmp
            _gso(B, mu, bb)
            k = max(k - 1, 1)


@njit(cache=True)
def retriangularize(B):
    """LLL-reduce, take the Cholesky factor of the Gram matrix and rescale to unit volume."""
    n = B.shape[0]
    lll_float(B, 0.99)
    G = B @ B.T
    L = np.linalg.cholesky(G)
    logdet = 0.0
    for i in range(n):
        logdet += np.log(L[i, i])
    s = np.exp(-logdet / n)
    for i in range(n):
        for j in range(n):
            B[i, j] = L[i, j] * s if j <= i else 0.0


@njit(cache=True, nogil=True)
def random_point(Lt, z, x):
    """Draw ``z`` uniform in [0, 1)^n (numba's global generator) and set ``x = z @ Lt``: a point
    uniform in the fundamental parallelepiped of the lower-triangular ``Lt``."""
    n = Lt.shape[0]
    for i in range(n):
        z[i] = np.random.random()
    for j in range(n):
        s = 0.0
        for i in range(j, n):
            s += z[i] * Lt[i, j]
        x[j] = s


@njit(cache=True)
def sgd_chunk(B, t_start, t_stop, T, mu0, nu, reduce_every, batch, seed):
    """Run steps ``t_start <= t < t_stop`` of Agrell–Allen Algorithm 1 in place on ``B``.

    Returns the sum of ``||e||^2 / n`` over the points drawn (for a running NSM estimate; B has
    unit volume, so this averages to the NSM), or NaN as soon as the iteration diverges (a
    diagonal entry leaves ``[1e-4, 1e4]`` or is not finite, or a point's ``||e||^2/n`` exceeds
    100, far above any unit-volume reduced lattice's): a too large step size, which would
    otherwise send the decoder into an endless search of a degenerate lattice.
    """
    np.random.seed(seed)
    n = B.shape[0]
    z = np.empty(n)
    x = np.empty(n)
    y = np.empty(n)
    e = np.empty(n)
    inv = np.empty(n)
    lo = np.full(n, -BOUND_NONE)
    hi = np.full(n, BOUND_NONE)
    S, dist, ctr, iw = make_workspace(n)
    bu = np.empty(n, dtype=np.int64)
    grad = np.zeros((n, n))
    acc = 0.0
    denom = max(T - 1, 1)
    for t in range(t_start, t_stop):
        mu = mu0 * nu ** (-t / denom)
        for i in range(n):
            if not (1e-4 <= B[i, i] <= 1e4):  # also catches NaN
                return np.nan
            inv[i] = 1.0 / B[i, i]
        if batch > 1:
            for i in range(n):
                for j in range(i + 1):
                    grad[i, j] = 0.0
        for b in range(batch):
            random_point(B, z, x)
            decode_one(B, inv, x, lo, hi, 0, S, dist, ctr, iw, bu)
            for i in range(n):
                y[i] = z[i] - bu[i]
            e2 = 0.0
            for j in range(n):
                s = 0.0
                for i in range(j, n):
                    s += y[i] * B[i, j]
                e[j] = s
                e2 += s * s
            if not (e2 / n <= 100.0):
                return np.nan
            acc += e2 / n
            if batch == 1:
                for i in range(n):
                    for j in range(i):
                        B[i, j] -= mu * y[i] * e[j]
                    B[i, i] -= mu * (y[i] * e[i] - e2 / (n * B[i, i]))
            else:
                for i in range(n):
                    for j in range(i):
                        grad[i, j] += y[i] * e[j]
                    grad[i, i] += y[i] * e[i] - e2 / (n * B[i, i])
        if batch > 1:
            for i in range(n):
                for j in range(i + 1):
                    B[i, j] -= mu * grad[i, j] / batch
        if (t + 1) % reduce_every == 0:
            retriangularize(B)
    return acc


@njit(cache=True, nogil=True)
def nsm_moments(Lt, samples, seed):
    """Monte Carlo sums of ``||e||^2/n`` and its square for ``samples`` uniform points."""
    np.random.seed(seed)
    n = Lt.shape[0]
    z = np.empty(n)
    x = np.empty(n)
    inv = np.empty(n)
    for i in range(n):
        inv[i] = 1.0 / Lt[i, i]
    lo = np.full(n, -BOUND_NONE)
    hi = np.full(n, BOUND_NONE)
    S, dist, ctr, iw = make_workspace(n)
    bu = np.empty(n, dtype=np.int64)
    s1 = 0.0
    s2 = 0.0
    for r in range(samples):
        random_point(Lt, z, x)
        d2, _, _ = decode_one(Lt, inv, x, lo, hi, 0, S, dist, ctr, iw, bu)
        d = d2 / n
        s1 += d
        s2 += d * d
    return s1, s2
