"""Fast exact decoders of the classical root lattices and their coset unions (vectorized numpy).

J. H. Conway & N. J. A. Sloane, "Fast quantizing and decoding algorithms for lattice quantizers and
codes", IEEE Trans. Inf. Theory 28(2), 1982; *Sphere Packings, Lattices and Groups* (SPLAG), ch. 20.

All functions take targets ``X`` of shape (m, N) in the lattice's *natural* coordinates and return the
closest lattice points (m, N) as float64:

* ``Z^n``: componentwise rounding.
* ``D_n`` (integer vectors of even sum): round; if the sum is odd, re-round the coordinate with the
  largest rounding error the other way.
* ``A_n`` (integer vectors of zero sum in R^{n+1}): round, then fix the deficiency ``Δ = Σ round(x)``
  by moving the ``|Δ|`` coordinates with the most extreme rounding errors.
* a union of cosets ``∪_i (Λ + g_i)`` of a lattice with a fast decoder: decode ``x − g_i`` in each
  coset and keep the closest (E8 = D8 ∪ (D8 + ½), D_n* = Z^n ∪ (Z^n + ½), D_n⁺ = D_n ∪ (D_n + ½),
  A_n* = ∪_{i=0..n} (A_n + [i]), E7 = A7 ∪ (A7 + [4]), E7* = ∪ A7 + [0,2,4,6], E6 and E6* as unions
  of cosets of A2³).

Tie-breaking: rounding is half up (``floor(x + 0.5)``); in D_n the first coordinate of maximal error
is flipped; in A_n the stable sort order of the errors decides; among cosets the first listed wins
ties (strict ``<``). Ties have probability zero for continuous inputs.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from numba import njit, prange

__all__ = [
    "decode_zn",
    "decode_dn",
    "decode_an",
    "decode_e8",
    "decode_cosets",
    "decode_blocks",
    "an_glue",
    "CosetDecoder",
]


def _pts(X):
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"points must be a 2-D array (m, N), got shape {X.shape}")
    return X


def _round(X):
    return np.floor(X + 0.5)


def decode_zn(X):
    """Closest points of Z^n: ``floor(x + 1/2)`` componentwise."""
    return _round(_pts(X))


def decode_dn(X):
    """Closest points of D_n = {x ∈ Z^n : Σ x_i even} (Conway & Sloane 1982, §III).

    ``f(x)`` rounds every coordinate; ``g(x)`` equals ``f(x)`` except that the coordinate with the
    largest ``|x_i − f(x_i)|`` is rounded the other way. The closest point is whichever of ``f, g``
    has even coordinate sum.
    """
    X = _pts(X)
    F = _round(X)
    odd = (np.sum(F, axis=1) % 2) != 0
    if np.any(odd):
        Xo, Fo = X[odd], F[odd]
        delta = Xo - Fo
        k = np.argmax(np.abs(delta), axis=1)
        rows = np.arange(Xo.shape[0])
        dk = delta[rows, k]
        # round the other way: towards the other side of x
        Fo[rows, k] += np.where(dk >= 0, 1.0, -1.0)
        F[odd] = Fo
    return F


def decode_an(X):
    """Closest points of A_n = {x ∈ Z^{n+1} : Σ x_i = 0} for targets in R^{n+1} (n + 1 = X.shape[1]).

    The target is first projected onto the hyperplane Σ x = 0. With ``f = round(x)`` and
    ``Δ = Σ f_i``: if Δ > 0 subtract 1 from the Δ coordinates with the smallest ``x_i − f_i``; if
    Δ < 0 add 1 to the |Δ| coordinates with the largest (Conway & Sloane 1982, §IV).
    """
    X = _pts(X)
    N = X.shape[1]
    X = X - X.mean(axis=1, keepdims=True)
    F = _round(X)
    delta = X - F
    D = np.sum(F, axis=1).astype(np.int64)
    if np.any(D != 0):
        rank = np.argsort(np.argsort(delta, axis=1, kind="stable"), axis=1, kind="stable")
        Dc = D[:, None]
        F = F - ((Dc > 0) & (rank < Dc)) + ((Dc < 0) & (rank >= N + Dc))
    return F


def decode_cosets(X, base, glue):
    """Closest points of the union of cosets ``∪_i (Λ + glue[i])`` given a decoder ``base`` of Λ.

    Parameters
    ----------
    X : (m, N) targets.
    base : callable (m, N) -> (m, N), exact closest points of Λ.
    glue : (g, N) coset representatives (the first is usually 0).
    """
    X = _pts(X)
    glue = np.asarray(glue, dtype=np.float64)
    best = None
    bestd = None
    for g in glue:
        P = base(X - g) + g
        d = np.sum((X - P) ** 2, axis=1)
        if best is None:
            best, bestd = P, d
        else:
            better = d < bestd
            best[better] = P[better]
            bestd = np.where(better, d, bestd)
    return best


def decode_blocks(X, base, sizes):
    """Closest points of an orthogonal direct sum: apply ``base`` to consecutive coordinate blocks."""
    X = _pts(X)
    out = np.empty_like(X)
    a = 0
    for s in sizes:
        out[:, a : a + s] = base(X[:, a : a + s])
        a += s
    if a != X.shape[1]:
        raise ValueError(f"block sizes {sizes} do not add up to the dimension {X.shape[1]}")
    return out


_E8_GLUE = np.array([np.zeros(8), np.full(8, 0.5)])


def decode_e8(X):
    """Closest points of E8 = D8 ∪ (D8 + (½)^8) (Conway & Sloane 1982, §V)."""
    X = _pts(X)
    if X.shape[1] != 8:
        raise ValueError(f"E8 targets must have 8 coordinates, got {X.shape[1]}")
    return decode_cosets(X, decode_dn, _E8_GLUE)


def an_glue(n, i):
    """Glue vector [i] of A_n in R^{n+1}: (i/(n+1))^{n+1-i} followed by (−(n+1−i)/(n+1))^i, as Fractions."""
    j = n + 1 - i
    return [Fraction(i, n + 1)] * j + [Fraction(-j, n + 1)] * i


class CosetDecoder:
    """Picklable decoder for ``∪ (base + glue)`` in ambient coordinates, read through a frame ``V``.

    The lattice lives in R^N (natural coordinates); the catalog stores it in R^n with an orthonormal
    frame ``V`` (N × n, orthonormal columns spanning the lattice's span), so that a catalog point
    ``y`` corresponds to the natural point ``y @ V.T``. ``base`` is one of ``"Z"``, ``"D"``, ``"A"``
    (A_k in blocks of size ``block``), and ``glue`` the coset representatives in natural coordinates.
    """

    def __init__(self, base: str, glue, V=None, block: int | None = None, name: str = ""):
        if base not in ("Z", "D", "A"):
            raise ValueError(f"base must be 'Z', 'D' or 'A', got {base!r}")
        self.base = base
        self.glue = np.asarray(glue, dtype=np.float64)
        self.V = None if V is None else np.asarray(V, dtype=np.float64)
        self.block = block
        self.name = name

    def _base(self, X):
        if self.base == "Z":
            return decode_zn(X)
        if self.base == "D":
            return decode_dn(X)
        N = X.shape[1]
        b = self.block or N
        return decode_blocks(X, decode_an, [b] * (N // b))

    def __call__(self, X):
        X = np.asarray(X, dtype=np.float64)
        single = X.ndim == 1
        if single:
            X = X[None, :]
        Y = X if self.V is None else X @ self.V.T
        P = decode_cosets(Y, self._base, self.glue)
        if self.V is not None:
            P = P @ self.V
        return P[0] if single else P

    def __repr__(self):
        return f"CosetDecoder({self.name or self.base}, cosets={len(self.glue)})"


# --------------------------------------------------------------------------- Leech lattice


def _golay_words():
    """The 4096 words of the extended binary Golay code as 24-bit integers (bit i = coordinate i).

    Cyclic [23,12,7] quadratic-residue code with generator polynomial
    g(x) = 1 + x² + x⁴ + x⁵ + x⁶ + x¹⁰ + x¹¹, extended by an overall parity bit.
    """
    g = [1, 0, 1, 0, 1, 1, 1, 0, 0, 0, 1, 1]
    rows = []
    for s in range(12):
        w = 0
        for i, b in enumerate(g):
            if b:
                w |= 1 << (i + s)
        if bin(w).count("1") % 2:
            w |= 1 << 23
        rows.append(w)
    words = np.zeros(4096, dtype=np.int64)
    for b in range(1, 4096):
        low = b & -b
        words[b] = words[b ^ low] ^ rows[low.bit_length() - 1]
    return words


@njit(cache=True, nogil=True)
def _leech_one(z, words, lowidx, T, Q, FM, FI, LBW, E, F, P, Y0, Y1, out):
    # per coordinate i and residue a in {0,1,2,3}: best y with z_i ≈ a + 4y, its cost, parity,
    # and the extra cost of the second-best y (the other parity)
    for a in range(4):
        for i in range(24):
            t = (z[i] - a) * 0.25
            y0 = math.floor(t + 0.5)
            y1 = y0 + 1.0 if t >= y0 else y0 - 1.0
            e0 = z[i] - a - 4.0 * y0
            e1 = z[i] - a - 4.0 * y1
            E[a, i] = e0 * e0
            F[a, i] = e1 * e1 - e0 * e0
            P[a, i] = np.int64(y0) & 1
            Y0[a, i] = y0
            Y1[a, i] = y1
    # per coset m and byte k of a codeword (coordinates 8k … 8k+7), by subset sums over the bits
    # set: the byte's cost T and y-parity Q; per nibble h (coordinates 4h … 4h+3): its cheapest
    # move of one coordinate to the second-best value, FM, and that coordinate, FI
    fmin = np.full(2, np.inf)
    for m in range(2):
        for k in range(3):
            s = 0.0
            par = 0
            for j in range(8):
                s += E[m, 8 * k + j]
                par ^= P[m, 8 * k + j]
                fmin[m] = min(fmin[m], F[m, 8 * k + j], F[2 + m, 8 * k + j])
            T[m, k, 0] = s
            Q[m, k, 0] = par
            for q in range(1, 256):
                i = 8 * k + lowidx[q]
                r = q & (q - 1)
                T[m, k, q] = T[m, k, r] + (E[2 + m, i] - E[m, i])
                Q[m, k, q] = Q[m, k, r] ^ np.uint8(P[2 + m, i] ^ P[m, i])
        for h in range(6):
            for q in range(16):
                fm = np.inf
                fi = -1
                for j in range(4):
                    i = 4 * h + j
                    f = F[2 * ((q >> j) & 1) + m, i]
                    if f < fm:
                        fm = f
                        fi = i
                FM[m, h, q] = fm
                FI[m, h, q] = fi
    # pass 1: cosets whose rounding already has the right parity (cost = sum of best costs); the
    # others' costs before the parity move are kept (LBW) for pass 2
    best = np.inf
    bm = 0
    bb = 0
    bflip = -1
    for m in range(2):
        for b in range(4096):
            w = words[b]
            q0 = w & 255
            q1 = (w >> 8) & 255
            q2 = w >> 16
            c = T[m, 0, q0] + T[m, 1, q1] + T[m, 2, q2]
            if (Q[m, 0, q0] ^ Q[m, 1, q1] ^ Q[m, 2, q2]) == m:
                LBW[m, b] = np.inf
                if c < best:
                    best = c
                    bm = m
                    bb = b
            else:
                LBW[m, b] = c
    # pass 2: the others need one coordinate moved to its second-best value (D_n rule), visited
    # only while their lower bound can still win
    for m in range(2):
        for b in range(4096):
            lb = LBW[m, b]
            if lb + fmin[m] >= best:
                continue
            w = words[b]
            fm = np.inf
            fi = -1
            for h in range(6):
                q = (w >> (4 * h)) & 15
                if FM[m, h, q] < fm:
                    fm = FM[m, h, q]
                    fi = FI[m, h, q]
            if lb + fm < best:
                best = lb + fm
                bm = m
                bb = b
                bflip = fi
    w = words[bb]
    for i in range(24):
        a = 2 * ((w >> i) & 1) + bm
        y = Y1[a, i] if i == bflip else Y0[a, i]
        out[i] = a + 4.0 * y
    return best


@njit(cache=True, parallel=True)
def _leech_batch(Z, words, lowidx, out, nthreads):
    m = Z.shape[0]
    nchunk = min(m, 16 * nthreads)
    for ch in prange(nchunk):
        start = (ch * m) // nchunk
        end = ((ch + 1) * m) // nchunk
        T = np.empty((2, 3, 256))
        Q = np.empty((2, 3, 256), dtype=np.uint8)
        FM = np.empty((2, 6, 16))
        FI = np.empty((2, 6, 16), dtype=np.int64)
        LBW = np.empty((2, 4096))
        E = np.empty((4, 24))
        F = np.empty((4, 24))
        P = np.empty((4, 24), dtype=np.int64)
        Y0 = np.empty((4, 24))
        Y1 = np.empty((4, 24))
        for k in range(start, end):
            _leech_one(Z[k], words, lowidx, T, Q, FM, FI, LBW, E, F, P, Y0, Y1, out[k])


_LEECH = {}


def decode_leech(X):
    """Exact closest points of the Leech lattice Λ24 in the catalog's coordinates (min norm 4, unimodular).

    In the standard coordinates √8·Λ24 = {x ∈ Z²⁴ : x ≡ 2c + m (mod 4) for a Golay codeword c and
    m ∈ {0, 1}, Σx ≡ 4m (mod 8)} (SPLAG ch. 4 §11), i.e. the union over the 2·4096 pairs (m, c) of
    cosets (2c + m·1) + 4·{y : Σy ≡ m (mod 2)}. For each coordinate and residue the best and the
    second-best multiple of 4 are found once; then for every codeword the coset's cost is a sum of
    per-coordinate costs (three lookups in per-byte subset-sum tables of 256 entries, small enough
    to stay in the L1 cache) plus, if Σy has the wrong parity, the cheapest single move to a
    second-best value (six lookups in per-nibble tables) — the D_n rule of Conway & Sloane (1982)
    inside each coset, as in their soft-decision decoding of the Leech lattice via the Golay code.
    (Two 4096-entry half-word tables, with the move searched over all 24 coordinates, were 2–4×
    slower for the same points.) A first pass takes the cosets whose rounding already has the right parity; a second
    pass visits the others only while their lower bound can still win. Ties: the first (m, codeword) of
    the first pass wins; the moved coordinate is the first of least extra cost.
    """
    import numba

    X = _pts(X)
    if X.shape[1] != 24:
        raise ValueError(f"Leech targets must have 24 coordinates, got {X.shape[1]}")
    if "words" not in _LEECH:
        _LEECH["words"] = _golay_words()
        _LEECH["lowidx"] = np.array([0] + [(q & -q).bit_length() - 1 for q in range(1, 256)], dtype=np.int64)
    Z = np.ascontiguousarray(X * np.sqrt(8.0))
    out = np.empty_like(Z)
    if Z.shape[0]:
        _leech_batch(Z, _LEECH["words"], _LEECH["lowidx"], out, numba.get_num_threads())
    return out / np.sqrt(8.0)


# --------------------------------------------------------------------------- Barnes–Wall Λ16


@njit(cache=True, nogil=True)
def _code_d_one(z, words, target, E, F, P, Y0, Y1, out):
    """Closest point of ∪_w (w + 2{y : Σy ≡ target[w] mod 2}) for 0/1 codewords w (bitmasks)."""
    n = z.shape[0]
    for a in range(2):
        for i in range(n):
            t = (z[i] - a) * 0.5
            y0 = math.floor(t + 0.5)
            y1 = y0 + 1.0 if t >= y0 else y0 - 1.0
            e0 = z[i] - a - 2.0 * y0
            e1 = z[i] - a - 2.0 * y1
            E[a, i] = e0 * e0
            F[a, i] = e1 * e1 - e0 * e0
            P[a, i] = np.int64(y0) & 1
            Y0[a, i] = y0
            Y1[a, i] = y1
    best = np.inf
    bw = 0
    bflip = -1
    for k in range(words.shape[0]):
        w = words[k]
        cost = 0.0
        par = 0
        fm = np.inf
        fi = -1
        for i in range(n):
            a = (w >> i) & 1
            cost += E[a, i]
            par ^= P[a, i]
            if F[a, i] < fm:
                fm = F[a, i]
                fi = i
        flip = -1
        if par != target[k]:
            cost += fm
            flip = fi
        if cost < best:
            best = cost
            bw = k
            bflip = flip
    w = words[bw]
    for i in range(n):
        a = (w >> i) & 1
        y = Y1[a, i] if i == bflip else Y0[a, i]
        out[i] = a + 2.0 * y
    return best


@njit(cache=True, parallel=True)
def _code_d_batch(Z, words, target, out, nthreads):
    m, n = Z.shape
    nchunk = min(m, 16 * nthreads)
    for ch in prange(nchunk):
        start = (ch * m) // nchunk
        end = ((ch + 1) * m) // nchunk
        E = np.empty((2, n))
        F = np.empty((2, n))
        P = np.empty((2, n), dtype=np.int64)
        Y0 = np.empty((2, n))
        Y1 = np.empty((2, n))
        for k in range(start, end):
            _code_d_one(Z[k], words, target, E, F, P, Y0, Y1, out[k])


def _rm14_words():
    """The 32 words of the first-order Reed–Muller code RM(1,4) (coordinate v ∈ F₂⁴ ↦ bit v)."""
    gens = [0xFFFF] + [sum(1 << v for v in range(16) if (v >> k) & 1) for k in range(4)]
    words = []
    for b in range(32):
        w = 0
        for j in range(5):
            if (b >> j) & 1:
                w ^= gens[j]
        words.append(w)
    return np.array(words, dtype=np.int64)


def decode_bw16(X):
    """Exact closest points of the Barnes–Wall lattice Λ16 in the catalog's coordinates (min norm 4).

    √2·Λ16 = {x ∈ Z¹⁶ : x mod 2 ∈ RM(1,4), Σx ≡ 0 (mod 4)} = ∪_{c ∈ RM(1,4)} (c + 2·D₁₆), since every
    codeword has weight 0, 8 or 16. Each of the 32 cosets is decoded with the Dₙ rule of Conway &
    Sloane (1982) — round, and if the parity is wrong move the coordinate that costs least — from
    per-coordinate tables shared by all cosets. Ties: the first codeword (by index) wins.
    """
    import numba

    X = _pts(X)
    if X.shape[1] != 16:
        raise ValueError(f"BW16 targets must have 16 coordinates, got {X.shape[1]}")
    if "rm14" not in _LEECH:
        w = _rm14_words()
        _LEECH["rm14"] = w
        _LEECH["rm14_target"] = np.array([(bin(int(v)).count("1") // 2) % 2 for v in w], dtype=np.int64)
    Z = np.ascontiguousarray(X * np.sqrt(2.0))
    out = np.empty_like(Z)
    if Z.shape[0]:
        _code_d_batch(Z, _LEECH["rm14"], _LEECH["rm14_target"], out, numba.get_num_threads())
    return out / np.sqrt(2.0)
