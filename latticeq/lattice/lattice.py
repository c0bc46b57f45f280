"""The lattice object.

A lattice Λ = {u B : u ∈ Zⁿ} is given by a generator matrix B whose **rows** are basis vectors
(the convention of Conway & Sloane and of Agrell et al.). Everything here is float64.

Closest-point search goes to the fastest exact decoder available: a Conway–Sloane decoder attached
by the catalog, otherwise Schnorr–Euchner sphere decoding on the LLL-reduced, lower-triangular form
of the basis (Agrell, Eriksson, Vardy, Zeger, "Closest point search in lattices", IEEE Trans. IT 2002).

Examples
--------
>>> import numpy as np
>>> from latticeq.lattice import Lattice
>>> L = Lattice([[2.0, 0.0], [1.0, 3 ** 0.5]], name="A2 (scaled)")
>>> round(L.volume, 6), L.dim
(3.464102, 2)
>>> L.closest_point([[0.9, 0.8]])
array([[1.        , 1.73205081]])
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latticeq import __version__
from latticeq.io import atomic_write_json
from latticeq.lattice.reduce import lll as _lll

__all__ = ["Lattice", "Theta"]

# Smallest singular value relative to the largest below which a basis counts as numerically singular.
_SINGULAR_RTOL = 1e-12

Decoder = Callable[[np.ndarray], np.ndarray]


def _as_generator(generator) -> np.ndarray:
    try:
        B = np.array(generator)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"generator must be an n×n real matrix: {exc}") from None
    if B.dtype == object:
        raise ValueError("generator must be an n×n real matrix (got a ragged or non-numeric array)")
    if B.dtype.kind not in "iuf":
        raise ValueError(f"generator must be real-valued, got dtype {B.dtype}")
    B = B.astype(np.float64)
    if B.ndim != 2:
        raise ValueError(f"generator must be a 2-D n×n matrix (rows = basis vectors), got {B.ndim}-D shape {B.shape}")
    if B.shape[0] != B.shape[1]:
        raise ValueError(
            f"generator must be square (n basis vectors in R^n), got shape {B.shape}; "
            "for a lattice of lower rank, express its basis in coordinates of its own span"
        )
    if B.shape[0] == 0:
        raise ValueError("generator is empty")
    if not np.all(np.isfinite(B)):
        raise ValueError("generator contains NaN or infinite entries")
    s = np.linalg.svd(B, compute_uv=False)
    if s[-1] == 0.0:
        raise ValueError("generator is singular: its rows are linearly dependent")
    if s[-1] < _SINGULAR_RTOL * s[0]:
        raise ValueError(
            f"generator is numerically singular (condition number {s[0] / s[-1]:.3g} > {1 / _SINGULAR_RTOL:.0e})"
        )
    return B


def _as_points(X, n: int, what: str = "points") -> tuple[np.ndarray, bool]:
    X = np.asarray(X)
    if X.dtype.kind not in "iuf":
        raise ValueError(f"{what} must be real-valued, got dtype {X.dtype}")
    X = X.astype(np.float64)
    single = X.ndim == 1
    if single:
        X = X[None, :]
    if X.ndim != 2 or X.shape[1] != n:
        raise ValueError(f"{what} must have shape (m, {n}) or ({n},) for this {n}-dimensional lattice, got {np.shape(X)}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{what} contain NaN or infinite entries")
    return np.ascontiguousarray(X), single


@dataclass(frozen=True)
class Theta:
    """Theta series truncated at ``max_norm2``: the number of lattice vectors of each squared norm.

    ``norms[k]`` are the distinct squared norms (0 included) and ``counts[k]`` how many vectors have
    that norm; norms closer than a relative tolerance are merged.
    """

    norms: np.ndarray
    counts: np.ndarray

    @property
    def cumulative(self) -> np.ndarray:
        return np.cumsum(self.counts)


class Lattice:
    """A full-rank lattice in Rⁿ.

    Parameters
    ----------
    generator : (n, n) array_like
        Basis vectors as rows. Must be real, finite and (numerically) nonsingular: anything else
        raises ValueError naming the problem; nothing is silently coerced.
    name : str, optional
    provenance : dict, optional
        Where the lattice came from (method, seed, …); saved with it.
    decoder : callable, optional
        Exact closest-point map ``(m, n) -> (m, n)`` in the coordinates of ``generator`` (the catalog
        attaches Conway–Sloane decoders). Used by :meth:`closest_point` when present.
    nsm : tuple (value, stderr), optional
        A known NSM estimate, saved with the lattice.
    """

    def __init__(self, generator, name: str | None = None, provenance: dict | None = None,
                 decoder: Decoder | None = None, nsm: tuple[float, float] | None = None):
        self._B = _as_generator(generator)
        self._B.setflags(write=False)
        self.name = name
        self.provenance = dict(provenance or {})
        self.decoder = decoder
        self.nsm = nsm
        self._decoding_form: tuple | None = None

    # ------------------------------------------------------------------ basic invariants
    @property
    def generator(self) -> np.ndarray:
        """The generator matrix, rows = basis vectors (read-only view)."""
        return self._B

    @property
    def dim(self) -> int:
        return self._B.shape[0]

    @property
    def gram(self) -> np.ndarray:
        """Gram matrix ``B Bᵀ``."""
        return self._B @ self._B.T

    @property
    def volume(self) -> float:
        """Volume of a fundamental cell, ``|det B|``."""
        sign, logdet = np.linalg.slogdet(self._B)
        return float(np.exp(logdet))

    @property
    def determinant(self) -> float:
        """Determinant of the Gram matrix (= volume²), the 'determinant' of Conway & Sloane."""
        return self.volume ** 2

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        return f"<Lattice{label} dim={self.dim} volume={self.volume:.6g}>"

    # ------------------------------------------------------------------ new lattices from old
    def _derived(self, B, name=None, decoder=None, **extra) -> Lattice:
        prov = dict(self.provenance)
        prov.update(extra)
        return Lattice(B, name=name if name is not None else self.name, provenance=prov, decoder=decoder)

    def scaled(self, s: float) -> Lattice:
        """The lattice s·Λ (s > 0)."""
        s = float(s)
        if not (math.isfinite(s) and s > 0):
            raise ValueError(f"scale must be a positive finite number, got {s}")
        dec = None
        if self.decoder is not None:
            inner = self.decoder
            dec = lambda X: s * inner(X / s)  # noqa: E731
        return self._derived(s * self._B, decoder=dec)

    def normalized(self) -> Lattice:
        """The same lattice scaled to unit volume."""
        return self.scaled(self.volume ** (-1.0 / self.dim))

    def rotated(self, Q) -> Lattice:
        """The lattice Λ·Q for an orthogonal Q (points are rows, so they rotate on the right)."""
        Q = np.asarray(Q, dtype=np.float64)
        if Q.shape != (self.dim, self.dim) or not np.allclose(Q @ Q.T, np.eye(self.dim), atol=1e-9):
            raise ValueError(f"Q must be an orthogonal {self.dim}×{self.dim} matrix")
        dec = None
        if self.decoder is not None:
            inner = self.decoder
            dec = lambda X: inner(X @ Q.T) @ Q  # noqa: E731
        return self._derived(self._B @ Q, decoder=dec)

    def triangular(self) -> Lattice:
        """The same lattice, rotated so that its generator is lower-triangular.

        ``L = cholesky(B Bᵀ)`` with positive diagonal; ``B = L Q`` for the orthogonal ``Q = L⁻¹B``.
        """
        L = np.linalg.cholesky(self.gram)
        Q = np.linalg.solve(L, self._B)
        dec = None
        if self.decoder is not None:
            inner = self.decoder
            dec = lambda X: inner(X @ Q) @ Q.T  # noqa: E731
        return self._derived(L, decoder=dec)

    def lll(self, delta: float = 0.99) -> tuple[Lattice, np.ndarray]:
        """LLL-reduced basis of the same lattice (same coordinates) and the unimodular transform U.

        ``reduced.generator == U @ self.generator``.
        """
        R, U = _lll(self._B, delta)
        return self._derived(R, decoder=self.decoder), U

    def dual(self) -> Lattice:
        """The dual lattice Λ* = {y : y·x ∈ Z for all x ∈ Λ}, generator ``(B⁻¹)ᵀ``."""
        name = None if self.name is None else (self.name[:-1] if self.name.endswith("*") else self.name + "*")
        return Lattice(np.linalg.inv(self._B).T, name=name, provenance={"dual_of": self.name})

    @staticmethod
    def product(lattices: Sequence[Lattice], scales: Sequence[float] | None = None, name: str | None = None) -> Lattice:
        """Orthogonal direct sum s₁Λ₁ ⊕ … ⊕ s_kΛ_k (block-diagonal generator).

        The closest point of a direct sum is the concatenation of the components' closest points,
        so the product keeps the components' decoders.
        """
        lattices = list(lattices)
        if not lattices:
            raise ValueError("product needs at least one lattice")
        for L in lattices:
            if not isinstance(L, Lattice):
                raise ValueError(f"product takes Lattice objects, got {type(L).__name__}")
        if scales is None:
            scales = [1.0] * len(lattices)
        scales = [float(s) for s in scales]
        if len(scales) != len(lattices):
            raise ValueError(f"got {len(scales)} scales for {len(lattices)} lattices")
        parts = [L.scaled(s) for L, s in zip(lattices, scales)]
        n = sum(p.dim for p in parts)
        B = np.zeros((n, n))
        offsets = np.cumsum([0] + [p.dim for p in parts])
        for p, a in zip(parts, offsets):
            B[a:a + p.dim, a:a + p.dim] = p.generator
        if name is None:
            name = " ⊕ ".join((p.name or f"L{p.dim}") for p in parts)
        decoder = None
        if all(p.decoder is not None for p in parts):
            def decoder(X, parts=parts, offsets=offsets):
                return np.concatenate([p.decoder(X[:, a:a + p.dim]) for p, a in zip(parts, offsets)], axis=1)
        return Lattice(B, name=name, decoder=decoder,
                       provenance={"product": [p.name for p in parts], "scales": scales})

    # ------------------------------------------------------------------ closest point
    def _prepare_decoding(self):
        """LLL-reduce, then rotate to lower-triangular form: B_r = U B = L Q."""
        if self._decoding_form is None:
            R, U = _lll(self._B)
            L = np.linalg.cholesky(R @ R.T)
            Q = np.linalg.solve(L, R)
            self._decoding_form = (np.ascontiguousarray(L), Q, R, U)
        return self._decoding_form

    def closest_coords(self, X) -> np.ndarray:
        """Integer coordinates u (rows) of the exact closest lattice points: ``u @ generator``.

        Ties (points equidistant from two lattice points, a measure-zero event) are broken by the
        decoder's search order.
        """
        X, single = _as_points(X, self.dim)
        if self.decoder is not None:
            u = np.rint(np.linalg.solve(self._B.T, self.decoder(X).T).T).astype(np.int64)
        else:
            from latticeq.lattice.decode.sphere import closest_coords as _se
            L, Q, R, U = self._prepare_decoding()
            ur, _, _ = _se(L, X @ Q.T)
            u = ur @ U
        return u[0] if single else u

    def closest_point(self, X) -> np.ndarray:
        """Exact closest lattice points to the rows of X (shape (m, n) or (n,))."""
        X, single = _as_points(X, self.dim)
        if self.decoder is not None:
            P = np.asarray(self.decoder(X), dtype=np.float64)
        else:
            from latticeq.lattice.decode.sphere import closest_coords as _se
            L, Q, R, U = self._prepare_decoding()
            ur, _, _ = _se(L, X @ Q.T)
            P = ur.astype(np.float64) @ R
        return P[0] if single else P

    def quantization_error(self, X) -> np.ndarray:
        """X − Q(X): the error vectors of quantizing X to the lattice."""
        X, single = _as_points(X, self.dim)
        E = X - self.closest_point(X)
        return E[0] if single else E

    # ------------------------------------------------------------------ short vectors
    def short_vectors(self, max_norm2: float, max_count: int = 500_000) -> tuple[np.ndarray, np.ndarray]:
        """All nonzero lattice vectors of squared norm ≤ ``max_norm2``: (vectors (N, n), squared norms (N,)).

        Raises ValueError when more than ``max_count`` vectors qualify.
        """
        from latticeq.lattice.decode.sphere import short_vectors as _sv
        max_norm2 = float(max_norm2)
        if not (math.isfinite(max_norm2) and max_norm2 > 0):
            raise ValueError(f"max_norm2 must be a positive finite number, got {max_norm2}")
        L, Q, R, U = self._prepare_decoding()
        coords, norms = _sv(L, max_norm2, max_count=max_count)
        return coords.astype(np.float64) @ R, norms

    def _short_norms(self, max_norm2: float, max_count: int) -> np.ndarray:
        """Squared norms of all nonzero vectors with squared norm ≤ max_norm2 (counting mode)."""
        from latticeq.lattice.decode.sphere import short_vectors as _sv
        L, Q, R, U = self._prepare_decoding()
        return _sv(L, float(max_norm2), max_count=max_count, coords=False)

    def minimum_norm(self) -> float:
        """Squared length of the shortest nonzero vector."""
        L, Q, R, U = self._prepare_decoding()
        bound = float(np.min(np.sum(R * R, axis=1))) * (1 + 1e-9)
        return float(self._short_norms(bound, 2_000_000).min())

    def kissing_number(self, rtol: float = 1e-6, max_count: int = 2_000_000) -> int:
        """Number of lattice vectors of minimal norm."""
        m = self.minimum_norm()
        norms = self._short_norms(m * (1 + rtol), max_count)
        return int(np.count_nonzero(norms <= m * (1 + rtol)))

    def theta_series(self, max_norm2: float, rtol: float = 1e-6, max_count: int = 20_000_000) -> Theta:
        """Counts of lattice vectors by squared norm up to ``max_norm2`` (the origin included)."""
        norms = np.sort(self._short_norms(max_norm2, max_count))
        shells, counts = [0.0], [1]
        for v in norms:
            if abs(v - shells[-1]) <= rtol * max(v, 1e-300):
                counts[-1] += 1
            else:
                shells.append(float(v))
                counts.append(1)
        return Theta(np.array(shells), np.array(counts, dtype=np.int64))

    def packing_density(self) -> float:
        """Fraction of space covered by balls of radius ρ = √(min norm)/2 around lattice points."""
        n = self.dim
        rho = math.sqrt(self.minimum_norm()) / 2
        ball = math.pi ** (n / 2) / math.gamma(n / 2 + 1) * rho ** n
        return ball / self.volume

    # ------------------------------------------------------------------ similarity
    def is_similar(self, other: Lattice, tol: float = 1e-6, max_nodes: int = 200_000) -> bool:
        """Whether the two lattices are equal up to rotation (or reflection) and scale.

        Both are scaled to unit volume. Then an isometry is searched for: vectors b₁…bₙ of the other
        lattice whose inner products match the Gram matrix of an LLL-reduced basis a₁…aₙ of this one
        (backtracking over the vectors of the right norms). Equal volumes make such vectors a basis.
        Cheap invariants (dimension, theta series of the first shells) are compared first.
        """
        if not isinstance(other, Lattice):
            raise ValueError(f"compare with a Lattice, got {type(other).__name__}")
        if self.dim != other.dim:
            return False
        A, _ = self.normalized().lll()
        Bl = other.normalized()
        G = A.gram
        n = self.dim
        order = np.argsort(np.diag(G), kind="stable")
        G = G[np.ix_(order, order)]
        norms_needed = np.unique(np.round(np.diag(G), 9))
        vecs, vnorms = Bl.short_vectors(float(np.max(np.diag(G))) * (1 + tol))
        cand = {}
        for v in norms_needed:
            sel = np.abs(vnorms - v) <= tol * max(v, 1.0)
            cand[v] = vecs[sel]
        # the minimal shells must match in size (theta series check)
        for v in norms_needed:
            mine, _ = A.short_vectors(v * (1 + tol))
            mine_n = np.sum(np.abs(np.sum(mine * mine, axis=1) - v) <= tol * max(v, 1.0))
            if mine_n != len(cand[v]):
                return False
        chosen = np.zeros((n, n))
        nodes = 0

        def extend(i: int) -> bool:
            nonlocal nodes
            if i == n:
                return True
            C = cand[np.round(G[i, i], 9)]
            ok = np.ones(len(C), dtype=bool)
            if i:
                ok = np.all(np.abs(C @ chosen[:i].T - G[i, :i]) <= tol * 10, axis=1)
            for c in C[ok]:
                nodes += 1
                if nodes > max_nodes:
                    raise RuntimeError(
                        f"is_similar: isometry search exceeded {max_nodes} nodes; the answer is undecided")
                chosen[i] = c
                if extend(i + 1):
                    return True
            return False

        return extend(0)

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        d = {
            "format": "latticeq.lattice",
            "version": 1,
            "name": self.name,
            "dim": self.dim,
            "generator": self._B.tolist(),  # json writes float repr: exact round trip
            "volume": self.volume,
            "provenance": self.provenance,
            "latticeq_version": __version__,
            "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        if self.nsm is not None:
            d["nsm"] = {"value": float(self.nsm[0]), "stderr": float(self.nsm[1])}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Lattice:
        """A lattice from its JSON form, every field validated (ValueError naming the field)."""
        if not isinstance(d, dict) or "generator" not in d:
            raise ValueError("not a latticeq lattice: a JSON object with a 'generator' key is required")
        name, prov, nsm = d.get("name"), d.get("provenance"), d.get("nsm")
        if name is not None and not isinstance(name, str):
            raise ValueError(f"lattice field 'name' must be a string, got {type(name).__name__}")
        if prov is not None and not isinstance(prov, dict):
            raise ValueError(f"lattice field 'provenance' must be an object, got {type(prov).__name__}")

        def number(v, what):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"lattice field {what} must be a number, got {v!r}")
            return float(v)

        if isinstance(nsm, dict):
            if "value" not in nsm:
                raise ValueError("lattice field 'nsm' needs a 'value'")
            nsm = (number(nsm["value"], "'nsm.value'"), number(nsm.get("stderr", float("nan")), "'nsm.stderr'"))
        elif isinstance(nsm, (list, tuple)) and len(nsm) == 2:
            nsm = (number(nsm[0], "'nsm[0]'"), number(nsm[1], "'nsm[1]'"))
        elif nsm is not None:
            raise ValueError(f"lattice field 'nsm' must be {{value, stderr}} or null, got {nsm!r}")
        return cls(d["generator"], name=name, provenance=prov, nsm=nsm)

    def to_json(self, path, overwrite: bool = True) -> Path:
        """Save as JSON (full-precision floats), atomically (temp file, then rename)."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        return atomic_write_json(path, self.to_dict(), indent=1, end="", mkdir=True)

    @classmethod
    def from_json(cls, path) -> Lattice:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no lattice file at {path}")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from None
        try:
            return cls.from_dict(d)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
