"""Exact and box-constrained closest-point search: Schnorr–Euchner sphere decoding (numba).

The lattice is given by a lower-triangular generator ``Lt`` (n×n, positive diagonal) whose rows are
the basis vectors, so a lattice point is ``u @ Lt`` for an integer row vector ``u``. Because ``Lt``
is lower triangular, coordinate ``j`` of ``u @ Lt`` depends only on ``u_j, …, u_{n-1}``, and

    ‖x − u Lt‖² = Σ_k Lt[k,k]² (c_k − u_k)²,   c_k = (x_k − Σ_{l>k} u_l Lt[l,k]) / Lt[k,k].

The search (Agrell, Eriksson, Vardy, Zeger, "Closest point search in lattices", IEEE Trans. Inf.
Theory 48(8), 2002, algorithm DECODE) fixes ``u_{n-1}``, then ``u_{n-2}``, … depth first, visiting
the candidates of each level in Schnorr–Euchner order (nearest to the centre ``c_k`` first, then
alternating outwards), and prunes a branch as soon as its partial distance reaches the best leaf
found so far. The first leaf is Babai's nearest-plane point. The centres are kept in a partial-sum
matrix ``S[t, l] = x_t − Σ_{j≥l} u_j Lt[j,t]`` of which only the entries that changed since the last
visit are recomputed (Ghasemmehdi & Agrell, "Faster recursions in sphere decoding", IEEE Trans.
Inf. Theory 57(6), 2011, Algorithm 5): ``stale[t]`` records the highest level whose coordinate
changed since row ``t`` was last brought up to date.

Box constraints ``lo_k ≤ u_k ≤ hi_k`` restrict each level's zigzag to the box (when one side of the
box is reached, the enumeration continues on the other side only); a node budget stops the search
early and returns the best leaf so far, flagged as not proven exact.

Tie-breaking (documented, deterministic): a centre is rounded half up (``floor(c + 0.5)``). Without
a box the candidates of a level are visited in the classic zigzag ``r, r±1, r∓1, r±2, …`` starting
towards the centre (upwards when the centre is exactly ``r``); inside a box, of two candidates
equally far from the centre the larger is visited first. A leaf replaces the incumbent only if it is
*strictly* closer, so among equidistant closest points the first one reached in this order is
returned. Floating-point rounding can decide near-ties either way; the result is exact up to ~1e-12
relative in squared distance.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

__all__ = [
    "closest_coords",
    "decode_one",
    "make_workspace",
    "short_vectors",
    "check_triangular",
    "BOUND_NONE",
]

#: Sentinel magnitude used for "no bound" on a coordinate (|u_k| never gets near it).
BOUND_NONE = 1 << 62


@njit(cache=True, nogil=True)
def _decode_free(Lt, inv_diag, x, max_nodes, S, dist, ctr, iw, ubest, radius2):
    """Unconstrained Schnorr–Euchner search (classic zigzag); same workspaces as decode_one.

    ``radius2`` is the initial squared search radius: ``np.inf`` (what :func:`decode_one` passes)
    makes Babai's point the first incumbent; a finite radius prunes from the start, and when no
    lattice point lies strictly inside it the returned distance is ``inf`` and ``ubest`` is left
    untouched."""
    n = x.shape[0]
    u = iw[0]
    step = iw[1]
    stale = iw[3]
    for t in range(n):
        S[t, n] = x[t]
        stale[t] = n - 1
    best = radius2
    found = np.inf
    nodes = 0
    exact = True
    dist[n] = 0.0
    k = n - 1
    c = x[k] * inv_diag[k]
    ctr[k] = c
    r = math.floor(c + 0.5)
    u[k] = np.int64(r)
    step[k] = 1 if c >= r else -1
    while True:
        y = (ctr[k] - u[k]) * Lt[k, k]
        newd = dist[k + 1] + y * y
        nodes += 1
        if newd < best:
            if k != 0:
                dist[k] = newd
                # descend to level t = k - 1: refresh only the stale partial sums of row t
                t = k - 1
                h = stale[t]
                sm = S[t, h + 1]
                for l in range(h, t, -1):
                    sm -= u[l] * Lt[l, t]
                    S[t, l] = sm
                if t > 0 and stale[t - 1] < h:
                    stale[t - 1] = h
                stale[t] = k
                k = t
                c = sm * inv_diag[t]
                ctr[t] = c
                r = math.floor(c + 0.5)
                u[t] = np.int64(r)
                step[t] = 1 if c >= r else -1
                continue
            best = newd
            found = newd
            for i in range(n):
                ubest[i] = u[i]
            if max_nodes > 0 and nodes >= max_nodes:
                exact = False
                break
        elif max_nodes > 0 and nodes >= max_nodes:
            exact = False
            break
        # level k exhausted (or leaf reached): next zigzag candidate one level up
        k += 1
        if k == n:
            break
        st = step[k]
        u[k] += st
        step[k] = -st - (1 if st > 0 else -1)
    return found, exact, nodes


@njit(cache=True, nogil=True)
def decode_one(Lt, inv_diag, x, lo, hi, max_nodes, S, dist, ctr, iw, ubest):
    """Closest point of one target by box-constrained Schnorr–Euchner search (numba, no allocation).

    Callable from other ``@njit`` code. All arrays are C-contiguous; nothing is allocated.

    Parameters
    ----------
    Lt : float64[:, :] (n, n)
        Lower-triangular generator, positive diagonal, rows = basis vectors (point = ``u @ Lt``).
    inv_diag : float64[:] (n,)
        ``1.0 / np.diag(Lt)``.
    x : float64[:] (n,)
        Target point.
    lo, hi : int64[:] (n,)
        Inclusive bounds ``lo[k] <= u[k] <= hi[k]`` (``lo <= hi``); use ``-BOUND_NONE`` /
        ``BOUND_NONE`` for an unconstrained coordinate.
    max_nodes : int
        Node budget (candidates examined); 0 = unlimited. The first leaf (box-clamped Babai) is
        always completed, so at least ``n`` nodes are spent.
    S : float64[:, :] (n, n+1)
        Workspace: partial sums ``S[t, l] = x_t - sum_{j>=l} u_j Lt[j, t]``.
    dist : float64[:] (n+1,)
        Workspace: partial squared distances of levels ``k..n-1``.
    ctr : float64[:] (n,)
        Workspace: centres ``c_k``.
    iw : int64[:, :] (4, n)
        Workspace: current ``u``, next upper candidate, next lower candidate, stale markers.
    ubest : int64[:] (n,)
        Output: integer coordinates of the closest point found.

    Returns
    -------
    (dist2, exact, nodes) : (float, bool, int)
        Squared distance ``||x - ubest @ Lt||^2``, whether the search completed (result proven
        optimal within the box), and the number of nodes visited.

    Use :func:`make_workspace` to allocate ``S, dist, ctr, iw`` once per thread.
    """
    n = x.shape[0]
    free = True
    for i in range(n):
        if lo[i] > -BOUND_NONE or hi[i] < BOUND_NONE:
            free = False
            break
    if free:
        return _decode_free(Lt, inv_diag, x, max_nodes, S, dist, ctr, iw, ubest, np.inf)
    u = iw[0]
    up = iw[1]
    dn = iw[2]
    stale = iw[3]
    for t in range(n):
        S[t, n] = x[t]
        stale[t] = n - 1
    best = np.inf
    nodes = 0
    exact = True
    dist[n] = 0.0
    k = n - 1
    # enter the top level
    c = x[k] * inv_diag[k]
    ctr[k] = c
    r = np.int64(math.floor(c + 0.5))
    if r < lo[k]:
        r = lo[k]
    elif r > hi[k]:
        r = hi[k]
    u[k] = r
    up[k] = r + 1
    dn[k] = r - 1
    while True:
        if max_nodes > 0 and nodes >= max_nodes and best < np.inf:
            exact = False
            break
        y = (ctr[k] - u[k]) * Lt[k, k]
        newd = dist[k + 1] + y * y
        nodes += 1
        if newd < best:
            if k == 0:
                best = newd
                for i in range(n):
                    ubest[i] = u[i]
            else:
                dist[k] = newd
                # descend to level t = k - 1: refresh only the stale partial sums of row t
                t = k - 1
                h = stale[t]
                for l in range(h, t, -1):
                    S[t, l] = S[t, l + 1] - u[l] * Lt[l, t]
                if t > 0 and stale[t - 1] < h:
                    stale[t - 1] = h
                stale[t] = k
                k = t
                c = S[t, k + 1] * inv_diag[t]
                ctr[t] = c
                r = np.int64(math.floor(c + 0.5))
                if r < lo[t]:
                    r = lo[t]
                elif r > hi[t]:
                    r = hi[t]
                u[t] = r
                up[t] = r + 1
                dn[t] = r - 1
                continue
        # level k is exhausted (its remaining candidates are farther) or a leaf was reached:
        # move up to the next level that still has a candidate inside the box
        done = True
        while k < n - 1:
            k += 1
            c = ctr[k]
            a = up[k]
            b = dn[k]
            oka = a <= hi[k]
            okb = b >= lo[k]
            if oka and ((not okb) or (a - c) <= (c - b)):
                u[k] = a
                up[k] = a + 1
            elif okb:
                u[k] = b
                dn[k] = b - 1
            else:
                continue
            done = False
            break
        if done:
            break
    return best, exact, nodes


@njit(cache=True)
def make_workspace(n):
    """Workspace ``(S, dist, ctr, iw)`` for :func:`decode_one` in dimension ``n``."""
    S = np.empty((n, n + 1), dtype=np.float64)
    dist = np.empty(n + 1, dtype=np.float64)
    ctr = np.empty(n, dtype=np.float64)
    iw = np.empty((4, n), dtype=np.int64)
    return S, dist, ctr, iw


@njit(cache=True, parallel=True)
def _closest_batch(Lt, X, lo, hi, max_nodes, nthreads, U, D2, EX):
    m, n = X.shape
    inv_diag = np.empty(n, dtype=np.float64)
    for i in range(n):
        inv_diag[i] = 1.0 / Lt[i, i]
    per_point = lo.shape[0] > 1
    nchunk = min(m, 16 * nthreads)
    for ch in prange(nchunk):
        start = (ch * m) // nchunk
        end = ((ch + 1) * m) // nchunk
        S, dist, ctr, iw = make_workspace(n)
        for i in range(start, end):
            j = i if per_point else 0
            d2, ex, _ = decode_one(Lt, inv_diag, X[i], lo[j], hi[j], max_nodes, S, dist, ctr, iw, U[i])
            D2[i] = d2
            EX[i] = ex


def check_triangular(Lt, *, name="Lt"):
    """Validate a lower-triangular generator with positive diagonal; return it as float64 C array."""
    A = np.asarray(Lt)
    if A.ndim != 2 or A.shape[0] != A.shape[1] or A.shape[0] == 0:
        raise ValueError(f"{name} must be a square non-empty 2-D array, got shape {A.shape}")
    if not np.issubdtype(A.dtype, np.number) or np.iscomplexobj(A):
        raise ValueError(f"{name} must be a real numeric array, got dtype {A.dtype}")
    A = np.ascontiguousarray(A, dtype=np.float64)
    if not np.all(np.isfinite(A)):
        raise ValueError(f"{name} contains NaN or infinite entries")
    if np.any(np.triu(A, 1) != 0.0):
        raise ValueError(f"{name} must be lower triangular (rows = basis vectors); it has nonzero entries above the diagonal")
    if np.any(np.diag(A) <= 0.0):
        raise ValueError(f"{name} must have a strictly positive diagonal (use Lattice.triangular())")
    return A


def _as_bounds(b, m, n, name):
    B = np.asarray(b)
    if B.dtype.kind not in "iu":
        if B.dtype.kind == "f" and np.all(np.isfinite(B)) and np.all(B == np.round(B)):
            B = B.astype(np.int64)
        else:
            raise ValueError(f"{name} must be an integer array of shape (n,) or (m, n); got dtype {B.dtype}")
    B = B.astype(np.int64)
    if B.shape == (n,):
        return np.ascontiguousarray(B.reshape(1, n))
    if B.shape == (m, n):
        return np.ascontiguousarray(B)
    raise ValueError(f"{name} must have shape ({n},) or ({m}, {n}), got {B.shape}")


def closest_coords(Lt, X, lo=None, hi=None, max_nodes=0):
    """Exact (optionally box-constrained) closest lattice points, as integer coordinates.

    For each row ``x`` of ``X`` find the integer vector ``u`` minimising ``||x - u @ Lt||^2``
    subject to ``lo <= u <= hi`` (componentwise), by Schnorr–Euchner depth-first search with
    pruning (Agrell, Eriksson, Vardy & Zeger 2002) and the lazy partial-sum recursions of
    Ghasemmehdi & Agrell 2011 (Algorithm 5). Points are processed in parallel (numba ``prange``;
    the thread count follows ``numba.set_num_threads``).

    The search is exact for any ``Lt`` but fastest on a reduced basis: pass the triangular form of
    an LLL-reduced generator (``Lattice.lll()[0].triangular()``).

    Parameters
    ----------
    Lt : array_like (n, n)
        Lower-triangular generator with positive diagonal; rows are basis vectors.
    X : array_like (m, n) or (n,)
        Targets, in the same coordinates as the rows of ``Lt``.
    lo, hi : array_like of int, shape (n,) or (m, n), optional
        Inclusive integer bounds on the coordinates (per coordinate, or per point and coordinate).
        ``None`` means unbounded on that side.
    max_nodes : int, default 0
        Node budget per point; 0 = unlimited. When the budget runs out the best leaf found so far
        is returned with ``exact=False`` (the first leaf, box-clamped Babai, is always completed).

    Returns
    -------
    U : ndarray of int64, (m, n)
        Integer coordinates; the closest points are ``U @ Lt``.
    dist2 : ndarray of float64, (m,)
        Squared distances ``||x - U @ Lt||^2``.
    exact : ndarray of bool, (m,)
        True where the search completed (the point is a proven closest point within the box).

    Notes
    -----
    Ties: centres are rounded half up and only strictly closer leaves replace the incumbent, so
    among equidistant closest points the first one in the Schnorr–Euchner order is returned (see
    the module docstring). Unconstrained searches (no finite bound) take a faster path with the
    classic zigzag; box-constrained ones restrict the zigzag to the box.

    Examples
    --------
    >>> import numpy as np
    >>> U, d2, ex = closest_coords(np.eye(2), np.array([[0.4, 1.6]]))
    >>> U.tolist(), bool(ex[0])
    ([[0, 2]], True)
    """
    Lt = check_triangular(Lt)
    n = Lt.shape[0]
    Xa = np.asarray(X)
    single = Xa.ndim == 1
    if single:
        Xa = Xa.reshape(1, -1)
    if Xa.ndim != 2 or Xa.shape[1] != n:
        raise ValueError(f"X must have shape (m, {n}) or ({n},) to match Lt, got {np.asarray(X).shape}")
    if not np.issubdtype(Xa.dtype, np.number) or np.iscomplexobj(Xa):
        raise ValueError(f"X must be a real numeric array, got dtype {Xa.dtype}")
    Xa = np.ascontiguousarray(Xa, dtype=np.float64)
    if not np.all(np.isfinite(Xa)):
        raise ValueError("X contains NaN or infinite entries")
    m = Xa.shape[0]
    if isinstance(max_nodes, bool) or not isinstance(max_nodes, (int, np.integer)) or max_nodes < 0:
        raise ValueError(f"max_nodes must be a non-negative integer (0 = unlimited), got {max_nodes!r}")
    lo_a = np.full((1, n), -BOUND_NONE, dtype=np.int64) if lo is None else _as_bounds(lo, m, n, "lo")
    hi_a = np.full((1, n), BOUND_NONE, dtype=np.int64) if hi is None else _as_bounds(hi, m, n, "hi")
    if lo_a.shape[0] != hi_a.shape[0]:
        # broadcast the per-coordinate one to per point
        if lo_a.shape[0] == 1:
            lo_a = np.ascontiguousarray(np.broadcast_to(lo_a, hi_a.shape))
        else:
            hi_a = np.ascontiguousarray(np.broadcast_to(hi_a, lo_a.shape))
    if np.any(lo_a > hi_a):
        raise ValueError("lo must be <= hi for every coordinate (empty box)")
    U = np.zeros((m, n), dtype=np.int64)
    D2 = np.zeros(m, dtype=np.float64)
    EX = np.zeros(m, dtype=np.bool_)
    if m > 0:
        _closest_batch(Lt, Xa, lo_a, hi_a, np.int64(max_nodes), np.int64(numba.get_num_threads()), U, D2, EX)
    if single:
        return U[0], D2[0], EX[0]
    return U, D2, EX


# --------------------------------------------------------------------------- short vectors


@njit(cache=True)
def _short_enum(Lt, radius2, max_count, want_coords, coords, norms):
    """Enumerate all nonzero u with ||u Lt||^2 <= radius2 (Fincke–Pohst ranges, SE order)."""
    n = Lt.shape[0]
    u = np.zeros(n, dtype=np.int64)
    umax = np.zeros(n, dtype=np.int64)
    ctr = np.zeros(n, dtype=np.float64)
    dist = np.zeros(n + 1, dtype=np.float64)
    count = 0
    overflow = False
    eps = 1e-9 * max(radius2, 1.0)
    R = radius2 + eps
    k = n - 1
    # level setup
    c = 0.0
    ctr[k] = c
    w = math.sqrt(R) / Lt[k, k]
    u[k] = np.int64(math.ceil(c - w))
    umax[k] = np.int64(math.floor(c + w))
    while True:
        if u[k] > umax[k]:
            k += 1
            if k == n:
                break
            u[k] += 1
            continue
        y = (ctr[k] - u[k]) * Lt[k, k]
        nd = dist[k + 1] + y * y
        if nd > R:
            u[k] += 1
            continue
        if k == 0:
            nz = False
            for i in range(n):
                if u[i] != 0:
                    nz = True
                    break
            if nz:
                if count >= max_count:
                    overflow = True
                    break
                norms[count] = nd
                if want_coords:
                    for i in range(n):
                        coords[count, i] = u[i]
                count += 1
            u[0] += 1
            continue
        dist[k] = nd
        t = k - 1
        s = 0.0
        for l in range(t + 1, n):
            s += u[l] * Lt[l, t]
        c = -s / Lt[t, t]
        ctr[t] = c
        rem = R - nd
        if rem < 0.0:
            rem = 0.0
        w = math.sqrt(rem) / Lt[t, t]
        u[t] = np.int64(math.ceil(c - w))
        umax[t] = np.int64(math.floor(c + w))
        k = t
    return count, overflow


def short_vectors(Lt, radius2, *, max_count=2_000_000, coords=True):
    """All nonzero lattice vectors of squared norm at most ``radius2`` (Fincke–Pohst enumeration).

    Parameters
    ----------
    Lt : array_like (n, n)
        Lower-triangular generator with positive diagonal (rows = basis vectors). A reduced basis
        makes the enumeration much faster.
    radius2 : float
        Squared radius (inclusive, with a relative tolerance of 1e-9 for rounding).
    max_count : int, default 2_000_000
        Maximum number of vectors; more raises ValueError (both ``v`` and ``-v`` are counted).
    coords : bool, default True
        If False (counting mode) only the squared norms are returned, which saves ``n`` int64 per
        vector — e.g. the theta series of Λ24 up to norm 4 (196560 vectors).

    Returns
    -------
    (U, norms2) if ``coords`` else norms2
        ``U`` int64 (k, n) with vectors ``U @ Lt``; ``norms2`` float64 (k,); sorted by norm.
    """
    Lt = check_triangular(Lt)
    try:
        radius2 = float(radius2)
    except (TypeError, ValueError):
        raise ValueError(f"radius2 must be a real number, got {radius2!r}") from None
    if not np.isfinite(radius2) or radius2 < 0:
        raise ValueError(f"radius2 must be finite and >= 0, got {radius2}")
    if isinstance(max_count, bool) or not isinstance(max_count, (int, np.integer)) or max_count < 1:
        raise ValueError(f"max_count must be a positive integer, got {max_count!r}")
    n = Lt.shape[0]
    norms = np.empty(max_count, dtype=np.float64)
    cbuf = np.empty((max_count if coords else 1, n), dtype=np.int64)
    count, overflow = _short_enum(Lt, radius2, np.int64(max_count), bool(coords), cbuf, norms)
    if overflow:
        raise ValueError(
            f"more than max_count={max_count} lattice vectors of squared norm <= {radius2}; "
            "raise max_count or lower radius2"
        )
    norms = norms[:count]
    order = np.argsort(norms, kind="stable")
    if coords:
        return cbuf[:count][order].copy(), norms[order].copy()
    return norms[order].copy()
