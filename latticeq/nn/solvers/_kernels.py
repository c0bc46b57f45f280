"""Compiled (numba) inner loops of the layer solvers. Rows are independent and run in
parallel; the column recursion is sequential. All arrays are float64, C-contiguous.

Exact block decoding (``block_decode``, ``block_descent_rows``) calls the core's box-constrained
Schnorr–Euchner kernel :func:`latticeq.lattice.decode.sphere.decode_one`: a block objective
``‖(u − v) L‖²`` over codes ``v ∈ {0, …, maxq}^b`` (``L`` lower triangular, rows = basis vectors)
is the closest point of the target ``x = u L`` in the lattice ``{v L}`` inside the box
``lo = 0, hi = maxq``; the node budget returns the best leaf found (the first leaf is clamped
Babai) and flags the row as not proven exact."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from latticeq.lattice.decode.sphere import decode_one, make_workspace


@njit(cache=True, parallel=True)
def gptq_segment(W1, R1, S, Z, maxq, a, b, Q1, E1, U, kappa):
    """GPTQ columns ``a..b-1`` of a lazy block (all rows).

    ``W1`` (m, cb) block weights (updated in place), ``R1`` (cb, cb) block of the upper
    Cholesky factor of H⁻¹, ``S``/``Z`` (m, cb) column scales/zeros, ``Q1`` codes out,
    ``E1`` errors ``(w − q)/R_ii`` out. For column i:
    ``q = clamp(round(w/s) + z, 0, maxq)``, ``e = (w − s(q − z)) / R_ii``,
    ``W1[:, i+1:] −= e R1[i, i+1:]``.

    Klein randomized rounding when ``kappa[i] > 0``: choose ⌊w/s⌋ or ⌈w/s⌉ with
    ``P ∝ exp(−kappa_i (w/s − v)²)``, using the uniforms ``U`` (m, cb).
    """
    m, cb = W1.shape
    for r in prange(m):
        for i in range(a, b):
            d = R1[i, i]
            w = W1[r, i]
            s = S[r, i]
            z = Z[r, i]
            x = w / s
            k = kappa[i]
            if k > 0.0:
                f = np.floor(x)
                t = x - f
                # P(ceil)/P(floor) = exp(-k((1-t)^2 - t^2)) = exp(-k(1-2t))
                pc = 1.0 / (1.0 + np.exp(k * (1.0 - 2.0 * t)))
                c = f + 1.0 if U[r, i] < pc else f
            else:
                c = np.rint(x)
            q = c + z
            if q < 0.0:
                q = 0.0
            elif q > maxq:
                q = maxq
            Q1[r, i] = q
            e = (w - s * (q - z)) / d
            E1[r, i] = e
            for j in range(i + 1, cb):
                W1[r, j] -= e * R1[i, j]


@njit(cache=True, parallel=True)
def nearest_plane(W, D, B, S, Z, maxq, a, b, V):
    """Babai's nearest-plane levels ``a..b-1`` on the upper-triangular basis ``s_k B_k``.

    The residual target ``x = w B − Σ_{decided} q_j B_j`` is kept as ``x = D + Σ_{undecided}
    w_j B_j`` with ``D = Σ_{decided} (w_j − q_j) B_j`` (weight units, updated in place); since
    ``B`` is upper triangular its coordinate k at level k is ``x_k = D_k + w_k B_kk``. Level k:
    centre ``c = x_k / B_kk = w_k + D_k / B_kk``, index ``v = clamp(round(c/s_k) + z_k, 0,
    maxq)``, ``D += (w_k − s_k (v − z_k)) B_k``. (Writing the centre as ``w_k`` plus a
    correction keeps it exactly ``w_k`` while no earlier decision has touched it, so exact ties
    of weights already on a grid break as in GPTQ.)
    """
    m, n = W.shape
    for r in prange(m):
        for k in range(a, b):
            c = W[r, k] + D[r, k] / B[k, k]
            s = S[r, k]
            z = Z[r, k]
            v = np.rint(c / s) + z
            if v < 0.0:
                v = 0.0
            elif v > maxq:
                v = maxq
            V[r, k] = v
            e = W[r, k] - s * (v - z)
            if e != 0.0:
                for j in range(k, n):
                    D[r, j] += e * B[k, j]


@njit(cache=True)
def _code_box(n, maxq):
    """Integer box ``0 ≤ v_k ≤ maxq`` of the codes, as the core decoder's ``lo``/``hi``."""
    lo = np.zeros(n, dtype=np.int64)
    hi = np.empty(n, dtype=np.int64)
    for k in range(n):
        hi[k] = np.int64(maxq)
    return lo, hi


@njit(cache=True, nogil=True)
def _lattice_target(L, u, x):
    """``x = u L`` for lower-triangular ``L`` (rows = basis vectors): the target point whose
    closest lattice point ``v L`` minimizes ``‖(u − v) L‖²``."""
    n = u.shape[0]
    for k in range(n):
        acc = 0.0
        for j in range(k, n):
            acc += u[j] * L[j, k]
        x[k] = acc


@njit(cache=True, parallel=True)
def block_decode(W1, R1, Ginv, S, Z, maxq, i0, bs, max_nodes, Q1, E1, nodes_out, exact_out):
    """Exactly decode columns ``i0..i0+bs-1`` of a lazy block for all rows, then propagate.

    Block cost of codes v (earlier columns fixed, later ones compensating optimally):
    ``‖(w − q) R_b⁻¹‖²`` with ``R_b = R1[i0:i0+bs, i0:i0+bs]``, ``Ginv = R_b⁻¹`` (upper).
    In code units ``u = w/s + z`` it is ``s² ‖(u − v) R_b⁻¹‖²`` (one scale per row inside the
    block). Errors ``e = (w − q) R_b⁻¹`` equal GPTQ's column errors for the same codes, so
    ``W1[:, i0+bs:] −= e R1[i0:i0+bs, i0+bs:]`` continues GPTQ's recursion.

    The block is decoded by the core's ``decode_one`` on the reversed (lower-triangular) basis
    ``L = J R_b⁻¹ J`` and target ``x = (J u) L`` (``J`` reverses the order), box ``[0, maxq]``;
    ``exact_out[r]`` becomes False when the node budget stopped a search.
    """
    m, cb = W1.shape
    # reversed lower-triangular basis: ‖(u − v) R_b⁻¹‖² = ‖(ũ − ṽ) L‖² with ũ, ṽ reversed
    L = np.empty((bs, bs))
    for p in range(bs):
        for q in range(bs):
            L[p, q] = Ginv[bs - 1 - p, bs - 1 - q]
    inv_diag = np.empty(bs)
    for p in range(bs):
        inv_diag[p] = 1.0 / L[p, p]
    lo, hi = _code_box(bs, maxq)
    for r in prange(m):
        psum, dist, ctr, iw = make_workspace(bs)
        u = np.empty(bs)
        x = np.empty(bs)
        vb = np.empty(bs, dtype=np.int64)
        s = S[r, i0]
        z = Z[r, i0]
        for p in range(bs):
            u[p] = W1[r, i0 + bs - 1 - p] / s + z
        _lattice_target(L, u, x)
        _, ex, nodes = decode_one(L, inv_diag, x, lo, hi, max_nodes, psum, dist, ctr, iw, vb)
        nodes_out[r] += nodes
        if not ex:
            exact_out[r] = False
        # codes (processing order) and errors
        diff = np.empty(bs)
        for p in range(bs):
            col = i0 + bs - 1 - p
            Q1[r, col] = vb[p]
            diff[bs - 1 - p] = W1[r, col] - s * (vb[p] - z)
        for j in range(bs):
            acc = 0.0
            for t in range(j + 1):
                acc += diff[t] * Ginv[t, j]
            E1[r, i0 + j] = acc
        for j in range(i0 + bs, cb):
            acc = 0.0
            for t in range(bs):
                acc += E1[r, i0 + t] * R1[i0 + t, j]
            W1[r, j] -= acc


@njit(cache=True)
def _row_dot(E, G, r):
    """``E[r] · G[r]``: the row objective ``e H eᵀ`` when ``G = E H``."""
    f = 0.0
    for j in range(E.shape[1]):
        f += E[r, j] * G[r, j]
    return f


@njit(cache=True, parallel=True)
def refine_rows(E, V, S, H, G, maxq, max_passes, moves, passes, fout):
    """±1 coordinate descent on codes with exact objective updates.

    Row objective ``f = e H eᵀ`` with ``e = w − q``. Changing code j by ±1 moves
    ``q_j`` by ``δ = ±s_j`` and changes f by ``Δ = −2δ g_j + δ² H_jj`` where ``g = e H``;
    accepted moves (Δ < 0) update ``e_j −= δ`` and ``g −= δ H_j``. Monotone; stops when a
    full pass accepts nothing or after ``max_passes``. ``G = E H`` (computed by the caller with
    BLAS) is updated in place as the gradient; ``fout[r]`` receives the final row objective.
    """
    m, n = E.shape
    for r in prange(m):
        g = G[r]
        f = _row_dot(E, G, r)
        tol = 1e-13 * (abs(f) + 1e-300)
        npass = 0
        for p in range(max_passes):
            npass += 1
            improved = False
            for j in range(n):
                h = H[j, j]
                if h <= 0.0:
                    continue
                s = S[r, j]
                best = -tol
                dbest = 0.0
                if V[r, j] < maxq:
                    d = s
                    delta = -2.0 * d * g[j] + d * d * h
                    if delta < best:
                        best = delta
                        dbest = 1.0
                if V[r, j] > 0.0:
                    d = -s
                    delta = -2.0 * d * g[j] + d * d * h
                    if delta < best:
                        best = delta
                        dbest = -1.0
                if dbest != 0.0:
                    d = dbest * s
                    V[r, j] += dbest
                    E[r, j] -= d
                    for t in range(n):
                        g[t] -= d * H[j, t]
                    f += best
                    moves[r] += 1
                    improved = True
            if not improved:
                break
        passes[r] = npass
        fout[r] = f


@njit(cache=True)
def pivoted_ldl_min(H):
    """Pick order of the pivoted LDLᵀ of H taking the smallest remaining pivot first."""
    n = H.shape[0]
    A = H.copy()
    idx = np.arange(n)
    order = np.empty(n, dtype=np.int64)
    cnt = n
    for k in range(n):
        pp = 0
        best = np.inf
        for a in range(cnt):
            j = idx[a]
            if A[j, j] < best:
                best = A[j, j]
                pp = a
        p = idx[pp]
        order[k] = p
        idx[pp] = idx[cnt - 1]
        cnt -= 1
        piv = A[p, p]
        if piv <= 0.0:
            continue
        for a in range(cnt):
            i = idx[a]
            f = A[i, p] / piv
            if f != 0.0:
                for b in range(cnt):
                    j = idx[b]
                    A[i, j] -= f * A[p, j]
    return order


@njit(cache=True, parallel=True)
def block_descent_rows(E, V, S, H, G, Lchol, starts, bs, maxq, max_nodes, max_passes, moves):
    """Block coordinate descent: each block of ``bs`` columns (starting at ``starts``) is
    re-decoded exactly with all other codes fixed, accepted only if the objective drops.

    With ``g = e H`` (``e = w − q``) and ``δ = s ⊙ (v' − v)`` the change is
    ``Δ = −2 δ g_Bᵀ + δ H_BB δᵀ = s²[(v' − c) H_BB (v' − c)ᵀ − (v − c) H_BB (v − c)ᵀ]`` with
    centre ``c = v + H_BB⁻¹ g_B / s`` (one scale per row inside a block). ``Lchol[b]`` is the
    lower Cholesky factor of ``H_BB`` (``L Lᵀ = H_BB``); the core's box-constrained
    Schnorr–Euchner search (``decode_one`` on target ``c L``, box ``[0, maxq]``) minimizes
    ``‖(c − v') L‖²``. One decoder workspace per row. ``G = E H`` (from the caller) is updated
    in place as the gradient.
    """
    m, n = E.shape
    nb = starts.shape[0]
    inv_diag = np.empty((nb, bs))
    for b in range(nb):
        for i in range(bs):
            inv_diag[b, i] = 1.0 / Lchol[b, i, i]
    lo, hi = _code_box(bs, maxq)
    for r in prange(m):
        g = G[r]
        f0 = _row_dot(E, G, r)
        tol = 1e-13 * abs(f0)
        psum, dist, ctr, iw = make_workspace(bs)
        u = np.empty(bs)
        x = np.empty(bs)
        vb = np.empty(bs, dtype=np.int64)
        y = np.empty(bs)
        for p in range(max_passes):
            improved = False
            for b in range(nb):
                a = starts[b]
                s = S[r, a]
                L = Lchol[b]
                # y = H_BB^{-1} g_B via L Lᵀ y = g_B
                for i in range(bs):
                    acc = g[a + i]
                    for j in range(i):
                        acc -= L[i, j] * y[j]
                    y[i] = acc / L[i, i]
                for i in range(bs - 1, -1, -1):
                    acc = y[i]
                    for j in range(i + 1, bs):
                        acc -= L[j, i] * y[j]
                    y[i] = acc / L[i, i]
                for i in range(bs):
                    u[i] = V[r, a + i] + y[i] / s
                _lattice_target(L, u, x)
                decode_one(L, inv_diag[b], x, lo, hi, max_nodes, psum, dist, ctr, iw, vb)
                # exact change of the objective (accept only a strict decrease)
                delta = 0.0
                for i in range(bs):
                    di = s * (vb[i] - V[r, a + i])
                    if di != 0.0:
                        delta -= 2.0 * di * g[a + i]
                        for j in range(bs):
                            delta += di * H[a + i, a + j] * s * (vb[j] - V[r, a + j])
                if delta < -tol:
                    for i in range(bs):
                        dv = vb[i] - V[r, a + i]
                        if dv != 0.0:
                            d = s * dv
                            V[r, a + i] = vb[i]
                            E[r, a + i] -= d
                            for t in range(n):
                                g[t] -= d * H[a + i, t]
                            moves[r] += 1
                    improved = True
            if not improved:
                break
