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

from fractions import Fraction

import numpy as np

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
