"""Incoherence processing: randomized Hadamard transforms of any width.

Before vector quantization a layer ``(W, H)`` is rotated to ``(U W Vᵀ, V H Vᵀ)`` with
``U``, ``V`` random orthogonal transforms of the output and input dimension (QuIP#, Tseng et al.
2024): the weights become Gaussian-like, with no outlier coordinate, and the Hessian loses
its dominant directions, so a lattice codebook designed for a Gaussian source fits them. The
objective is unchanged, ``tr((W − Q) H (W − Q)ᵀ) = tr((W' − Q') H' (W' − Q')ᵀ)``, and the
transform is undone exactly in the dequantized weights ``Uᵀ Q' V``.

Transforms are ``T = H_n · diag(s) / √n`` with ``H_n`` a Hadamard matrix (``H Hᵀ = n I``) and
random signs ``s`` (seeded). ``H_n`` is a Kronecker product of Sylvester matrices (orders
``2^k``) and Paley matrices: Paley I, order ``q + 1`` for a prime ``q ≡ 3 (mod 4)`` (12, 20,
24, 32, 44, 48, …); Paley II, order ``2(q + 1)`` for a prime ``q ≡ 1 (mod 4)`` (12, 28, 36, 60,
…) — SmolLM2's widths 192 = 12·16, 576 = 12·48 and 1536 = 12·128 are all covered. Where no
construction is known here (e.g. n ≡ 2 mod 4, n > 2), a seeded dense random orthogonal matrix
(QR of a Gaussian matrix) is used if ``fallback=True``, and the transform says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = ["hadamard", "paley_orders", "RandomOrthogonal", "random_orthogonal"]


def _is_prime(q: int) -> bool:
    if q < 2:
        return False
    if q % 2 == 0:
        return q == 2
    r = int(math.isqrt(q))
    return all(q % f for f in range(3, r + 1, 2))


def _jacobsthal(q: int) -> np.ndarray:
    """``Q_ij = χ(j − i)``, χ the quadratic character mod the prime ``q``."""
    chi = np.full(q, -1, dtype=np.int64)
    chi[0] = 0
    chi[np.unique((np.arange(1, q) ** 2) % q)] = 1
    idx = (np.arange(q)[None, :] - np.arange(q)[:, None]) % q
    return chi[idx]


def _paley1(q: int) -> np.ndarray:
    """Paley construction I: order ``q + 1``, ``q ≡ 3 (mod 4)`` prime."""
    Q = _jacobsthal(q)
    S = np.zeros((q + 1, q + 1), dtype=np.int64)
    S[0, 1:] = 1
    S[1:, 0] = -1
    S[1:, 1:] = Q
    return np.eye(q + 1, dtype=np.int64) + S


def _paley2(q: int) -> np.ndarray:
    """Paley construction II: order ``2(q + 1)``, ``q ≡ 1 (mod 4)`` prime."""
    Q = _jacobsthal(q)
    C = np.zeros((q + 1, q + 1), dtype=np.int64)
    C[0, 1:] = 1
    C[1:, 0] = 1
    C[1:, 1:] = Q
    return np.kron(C, np.array([[1, 1], [1, -1]])) + np.kron(np.eye(q + 1, dtype=np.int64),
                                                            np.array([[1, -1], [-1, -1]]))


@lru_cache(maxsize=None)
def paley_orders(limit: int = 4096) -> dict[int, tuple[str, int]]:
    """Orders ``≤ limit`` with a Paley construction: ``{order: ("I" or "II", q)}``."""
    out: dict[int, tuple[str, int]] = {}
    for q in range(3, limit):
        if not _is_prime(q):
            continue
        if q % 4 == 3 and q + 1 <= limit:
            out.setdefault(q + 1, ("I", q))
        if q % 4 == 1 and 2 * (q + 1) <= limit:
            out.setdefault(2 * (q + 1), ("II", q))
    return out


@lru_cache(maxsize=64)
def _hadamard_plan(n: int) -> tuple[int, ...] | None:
    """Factors (Paley orders; 2 for a Sylvester step) whose Kronecker product has order ``n``."""
    if n == 1:
        return ()
    if n == 2:
        return (2,)
    if n % 4:
        return None
    pal = paley_orders(max(n, 4))
    if n in pal:
        return (n,)
    for p in sorted(pal, reverse=True):  # the largest Paley factor first, then the rest
        if n % p == 0:
            rest = _hadamard_plan(n // p)
            if rest is not None:
                return (p, *rest)
    if n % 2 == 0:
        rest = _hadamard_plan(n // 2)
        if rest is not None:
            return (2, *rest)
    return None


def hadamard(n: int) -> np.ndarray | None:
    """A Hadamard matrix of order ``n`` (int64, ``H Hᵀ = n I``), or None if none is constructed."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"order must be a positive integer, got {n!r}")
    plan = _hadamard_plan(int(n))
    if plan is None:
        return None
    H = np.ones((1, 1), dtype=np.int64)
    pal = paley_orders(max(int(n), 4))
    for f in plan:
        if f == 2:
            F = np.array([[1, 1], [1, -1]], dtype=np.int64)
        else:
            kind, q = pal[f]
            F = _paley1(q) if kind == "I" else _paley2(q)
        H = np.kron(H, F)
    return H


@dataclass(frozen=True)
class RandomOrthogonal:
    """A seeded orthogonal transform of ``R^n``: randomized Hadamard, or dense random orthogonal.

    ``T = K · diag(signs) · norm`` with ``K = blocks[0] ⊗ blocks[1] ⊗ …`` (Kronecker factors of
    the Hadamard matrix, grouped into blocks of order ≤ 256; one dense block for the fallback),
    ``T Tᵀ = I``. :meth:`forward` maps rows ``x ↦ x Tᵀ`` and :meth:`inverse` maps back, one
    factor at a time: ``n · Σ order(block)`` operations per row instead of ``n²`` (for 1536 =
    12 · 128: 140 instead of 1536 per coordinate). ``matrix`` builds the dense ``T``. ``kind`` is
    ``"hadamard"`` or ``"dense"`` (the fallback), so a run record says which one was used;
    ``factors`` lists the Hadamard construction's factors.
    """

    n: int
    seed: int
    kind: str
    factors: tuple[int, ...]
    blocks: tuple[np.ndarray, ...]
    signs: np.ndarray
    norm: float

    @property
    def matrix(self) -> np.ndarray:
        K = np.ones((1, 1))
        for B in self.blocks:
            K = np.kron(K, B)
        return K * (self.signs * self.norm)[None, :]

    def forward(self, X):
        """Rows of ``X`` (``(..., n)``, numpy or torch) in the transformed basis: ``X Tᵀ``."""
        return self._apply(X * self._like(X, self.signs * self.norm), transpose=True)

    def inverse(self, Y):
        """Undo :meth:`forward`: ``Y T``."""
        return self._apply(Y, transpose=False) * self._like(Y, self.signs * self.norm)

    def _apply(self, X, transpose: bool):
        """``X Kᵀ`` (transpose) or ``X K``, factor by factor on the reshaped last axis."""
        lead = tuple(X.shape[:-1])
        sizes = [len(B) for B in self.blocks]
        Y = X.reshape(*lead, *sizes)
        nl = len(lead)
        for axis, B in enumerate(self.blocks):
            M = self._like(X, B.T if transpose else B)
            Y = Y.swapaxes(nl + axis, -1) if hasattr(Y, "swapaxes") else Y.transpose(nl + axis, -1)
            Y = Y @ M
            Y = Y.swapaxes(nl + axis, -1) if hasattr(Y, "swapaxes") else Y.transpose(nl + axis, -1)
        return Y.reshape(*lead, self.n)

    @staticmethod
    def _like(X, A):
        if hasattr(X, "detach"):  # torch
            import torch

            return torch.as_tensor(np.ascontiguousarray(A), dtype=X.dtype, device=X.device)
        return A.astype(np.result_type(X.dtype, np.float64) if X.dtype.kind == "f" else np.float64)

    def describe(self) -> dict:
        return {"n": self.n, "seed": self.seed, "kind": self.kind, "factors": list(self.factors)}


def _blocks(n: int, plan: tuple[int, ...], limit: int = 256) -> tuple[np.ndarray, ...]:
    """The Hadamard factors of ``plan`` as Kronecker blocks, consecutive factors merged while
    the block's order stays ≤ ``limit`` (fewer, larger matrix products)."""
    pal = paley_orders(max(int(n), 4))
    out: list[np.ndarray] = []
    cur = np.ones((1, 1))
    for f in plan:
        if f == 2:
            F = np.array([[1.0, 1.0], [1.0, -1.0]])
        else:
            kind, q = pal[f]
            F = (_paley1(q) if kind == "I" else _paley2(q)).astype(np.float64)
        if len(cur) * f > limit and len(cur) > 1:
            out.append(cur)
            cur = np.ones((1, 1))
        cur = np.kron(cur, F)
    out.append(cur)
    return tuple(out)


def random_orthogonal(n: int, seed: int, *, fallback: bool = True) -> RandomOrthogonal:
    """``T = H_n diag(s) / √n`` with seeded random signs ``s``; where no Hadamard matrix of
    order ``n`` is constructed here, a seeded dense random orthogonal matrix if ``fallback``,
    else ValueError naming the width."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"order must be a positive integer, got {n!r}")
    plan = _hadamard_plan(int(n))
    rng = np.random.default_rng([int(seed), int(n)])
    if plan is not None:
        s = rng.choice(np.array([-1.0, 1.0]), size=n)
        return RandomOrthogonal(int(n), int(seed), "hadamard", plan, _blocks(int(n), plan), s, 1 / math.sqrt(n))
    if not fallback:
        raise ValueError(f"no Hadamard matrix of order {n} is constructed (Sylvester × Paley I/II products); "
                         "allow the dense random orthogonal fallback, or use a width with one")
    Qm, Rm = np.linalg.qr(rng.standard_normal((n, n)))
    Qm = Qm * np.sign(np.diag(Rm))[None, :]  # Haar-distributed
    return RandomOrthogonal(int(n), int(seed), "dense", (), (Qm,), np.ones(n), 1.0)
