"""Lattice codes: finite sets of lattice points with exact nearest-codeword encoding.

A codebook is the object both halves share: the design half measures it (rate, NSM of its
lattice), the network half quantizes blocks of ``d`` weights to it. Interface
(:class:`Codebook`): ``dim`` ``d``, ``size`` (number of codewords), ``rate`` (bits per
dimension, ``log2(size)/d``), ``encode(X) → codes`` (index of the nearest codeword of each row,
exact), ``decode(codes) → points``, ``spec()`` (a JSON-able description that rebuilds it).

:class:`VoronoiCode` — the Voronoi code ``Λ / qΛ`` (Conway & Sloane, "A fast encoding method for
lattice codes and quantizers", IEEE T-IT 1983): the codewords are the coset representatives of
``qΛ`` in ``Λ`` that lie in the Voronoi region of ``qΛ`` (shifted by a small fixed offset ``a``
so that no codeword sits on its boundary):

    decode(c) = cG − q·Q_Λ((cG − a)/q),   c ∈ {0, …, q−1}^d,

and the code of a lattice point ``x = uG`` is ``u mod q``. The *fast* encoder maps a target to
its closest lattice point and reduces it modulo ``qΛ``; that is the nearest codeword only when
the target lies in the shaping region. Outside it (overload) the nearest codeword is found
exactly here when the code has at most ``2^16`` codewords (a k-d tree over all of them);
larger codes shrink the target towards the origin until it falls inside and keep the nearest
of those candidates (a valid, near codeword; not guaranteed the nearest). ``encode(...,
return_overload=True)`` reports which rows overloaded.

:class:`ScalarCode` — the integers ``{0, …, 2^b − 1}`` in one dimension (the scalar grid of GPTQ
in code units; ``d = 1``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np

__all__ = ["Codebook", "VoronoiCode", "ScalarCode", "EXACT_LIMIT", "codebook_from_spec", "parse_codebook",
           "CODEBOOKS_HELP"]

CODEBOOKS_HELP = ("scalar (the integer grid, default), voronoi:NAME for a catalog lattice (voronoi:D4, "
                  "voronoi:E8, voronoi:BW16, voronoi:Leech) or voronoi:PATH.json for a saved lattice")

#: codes with at most this many codewords are encoded exactly, also under overload
EXACT_LIMIT = 2**16


class Codebook(ABC):
    """A finite set of points of ``R^d`` with an exact nearest-codeword encoder."""

    dim: int
    size: int

    @property
    def rate(self) -> float:
        """Bits per dimension, ``log2(size) / dim``."""
        return math.log2(self.size) / self.dim

    @property
    def bits(self) -> float:
        """Bits per codeword, ``log2(size)``."""
        return math.log2(self.size)

    @abstractmethod
    def encode(self, X, return_overload: bool = False):
        """Codes (int64, shape ``(N,)``) of the nearest codewords of the rows of ``X`` (N × d)."""

    @abstractmethod
    def decode(self, codes) -> np.ndarray:
        """Codewords (N × d) of ``codes``."""

    @abstractmethod
    def spec(self) -> dict:
        """A JSON-able description from which :func:`codebook_from_spec` rebuilds the codebook."""

    def codewords(self) -> np.ndarray:
        """All codewords, ``decode(arange(size))`` (only for small codes)."""
        if self.size > 2**20:
            raise ValueError(f"{self.size} codewords are too many to list")
        return self.decode(np.arange(self.size))

    def _check(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise ValueError(f"targets must be an (N, {self.dim}) array, got shape {X.shape}")
        if not np.all(np.isfinite(X)):
            raise ValueError("targets contain NaN or infinite values")
        return X


class ScalarCode(Codebook):
    """The scalar grid in code units: codewords ``0, 1, …, 2^bits − 1`` (``d = 1``)."""

    def __init__(self, bits: int):
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
            raise ValueError(f"bits must be an integer from 1 to 16, got {bits!r}")
        self.bits_ = bits
        self.dim = 1
        self.size = 2**bits

    def encode(self, X, return_overload: bool = False):
        X = self._check(X)
        v = np.clip(np.rint(X[:, 0]), 0, self.size - 1).astype(np.int64)
        if return_overload:
            return v, (X[:, 0] < -0.5) | (X[:, 0] > self.size - 0.5)
        return v

    def decode(self, codes) -> np.ndarray:
        c = np.asarray(codes, dtype=np.int64)
        if c.size and (c.min() < 0 or c.max() >= self.size):
            raise ValueError(f"codes must lie in [0, {self.size - 1}]")
        return c.astype(np.float64)[:, None]

    def spec(self) -> dict:
        return {"kind": "scalar", "bits": self.bits_}


class VoronoiCode(Codebook):
    """The Voronoi code ``Λ/qΛ`` of a lattice (see the module docstring).

    Parameters
    ----------
    lattice : :class:`~latticeq.lattice.Lattice` (any with a closest-point decoder: catalog
        lattices with their Conway–Sloane decoders, or a saved search result decoded by the
        sphere decoder).
    q : int ≥ 2 — ``q^d`` codewords, rate ``log2 q`` bits per dimension.
    offset : the shift ``a`` of the shaping region (default: a small fixed generic vector, so
        no codeword lies on the region's boundary; ``0`` gives the textbook code with ties).
    """

    def __init__(self, lattice, q: int, offset=None):
        from latticeq.lattice import Lattice

        if not isinstance(lattice, Lattice):
            raise ValueError(f"lattice must be a latticeq Lattice, got {type(lattice).__name__}")
        if isinstance(q, bool) or not isinstance(q, (int, np.integer)) or q < 2:
            raise ValueError(f"q must be an integer >= 2, got {q!r}")
        self.lattice = lattice
        self.q = int(q)
        self.dim = lattice.dim
        self.size = self.q**self.dim
        G = np.asarray(lattice.generator, dtype=np.float64)
        self._G, self._Ginv = G, np.linalg.inv(G)
        if offset is None:  # generic, tiny (relative to the lattice), fixed: reproducible codes
            rng = np.random.default_rng(12345)
            offset = 1e-6 * abs(np.linalg.det(G)) ** (1.0 / self.dim) * rng.standard_normal(self.dim)
        self.offset = np.asarray(offset, dtype=np.float64).reshape(self.dim)
        self._tree = None
        self._table = None

    # -- the code ----------------------------------------------------------------------------
    def decode(self, codes) -> np.ndarray:
        c = self._digits(codes)
        P = c @ self._G
        return P - self.q * self.lattice.closest_point((P - self.offset) / self.q)

    def _digits(self, codes) -> np.ndarray:
        codes = np.asarray(codes, dtype=np.int64).reshape(-1)
        if codes.size and (codes.min() < 0 or codes.max() >= self.size):
            raise ValueError(f"codes must lie in [0, {self.size - 1}]")
        digits = np.empty((codes.size, self.dim), dtype=np.int64)
        r = codes.copy()
        for k in range(self.dim):
            digits[:, k] = r % self.q
            r //= self.q
        return digits.astype(np.float64)

    def _index(self, u) -> np.ndarray:
        """Code of lattice coordinates ``u``: the digits ``u mod q`` in base ``q``."""
        d = np.mod(np.asarray(u, dtype=np.int64), self.q)
        return (d * (self.q ** np.arange(self.dim, dtype=np.int64))[None, :]).sum(axis=1)

    def _fast(self, X):
        """Closest lattice point taken modulo qΛ, and whether that left the shaping region."""
        u = self.lattice.closest_coords(X).reshape(len(X), self.dim)
        codes = self._index(u)
        over = np.any(np.abs(self.decode(codes) - u @ self._G) > 1e-9 * (1 + np.abs(X).max(initial=0)), axis=1)
        return codes, over

    def encode(self, X, return_overload: bool = False):
        """Nearest codewords. Targets outside the shaping region (``overload``, returned on
        request): exact by a k-d tree for codes of at most :data:`EXACT_LIMIT` codewords; for
        larger codes the target is shrunk towards the origin (factors 0.95, 0.90, …, 0.05) and
        the nearest of the in-region candidates is taken — a valid codeword near the target,
        not guaranteed the nearest."""
        X = self._check(X)
        codes, overload = self._fast(X)
        if overload.any():
            codes = codes.copy()
            if self.size <= EXACT_LIMIT:
                codes[overload] = self._exact(X[overload])
            else:
                codes[overload] = self._shrink(X[overload])
        return (codes, overload) if return_overload else codes

    def _shrink(self, X) -> np.ndarray:
        best = np.zeros(len(X), dtype=np.int64)  # code 0 decodes to the origin's coset point
        dist = ((X - self.decode(best)) ** 2).sum(axis=1)
        for a in np.arange(0.95, 0.0, -0.05):
            c, over = self._fast(a * X)
            dc = ((X - self.decode(c)) ** 2).sum(axis=1)
            better = ~over & (dc < dist)
            best[better], dist[better] = c[better], dc[better]
        return best

    def _exact(self, X) -> np.ndarray:
        """Nearest codeword by a k-d tree over all codewords (exact; small codes only)."""
        if self._tree is None:
            from scipy.spatial import cKDTree

            self._table = self.codewords()
            self._tree = cKDTree(self._table)
        _, idx = self._tree.query(X, k=1)
        return np.asarray(idx, dtype=np.int64)

    def spec(self) -> dict:
        from latticeq.lattice import catalog

        name = self.lattice.name
        if name and catalog.is_name(name):
            lat = {"catalog": name}
        else:
            lat = {"generator": self._G.tolist(), "name": name}
        return {"kind": "voronoi", "q": self.q, "lattice": lat, "offset": self.offset.tolist()}


def codebook_from_spec(spec: dict) -> Codebook:
    """Rebuild a codebook from :meth:`Codebook.spec` (a checkpoint records it so)."""
    if not isinstance(spec, dict) or "kind" not in spec:
        raise ValueError("codebook spec must be an object with a 'kind'")
    if spec["kind"] == "scalar":
        return ScalarCode(int(spec["bits"]))
    if spec["kind"] == "voronoi":
        from latticeq.lattice import Lattice, catalog

        lat = spec.get("lattice") or {}
        if "catalog" in lat:
            L = catalog.get(lat["catalog"])
        elif "generator" in lat:
            L = Lattice(lat["generator"], name=lat.get("name"))
        else:
            raise ValueError("voronoi codebook spec needs lattice.catalog or lattice.generator")
        return VoronoiCode(L, int(spec["q"]), offset=spec.get("offset"))
    raise ValueError(f"unknown codebook kind {spec['kind']!r}; known: scalar, voronoi")


def parse_codebook(spec: str, bits: int):
    """The codebook a user names: ``"scalar"`` → None (the scalar grid of :mod:`latticeq.nn.grid`),
    ``"voronoi:NAME"`` / ``"voronoi:PATH.json"`` → :class:`VoronoiCode` with ``q = 2^bits``
    (``bits`` per dimension). ValueError naming what is allowed otherwise."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"codebook must be one of: {CODEBOOKS_HELP}")
    spec = spec.strip()
    if spec == "scalar":
        return None
    kind, _, arg = spec.partition(":")
    if kind != "voronoi" or not arg:
        raise ValueError(f"unknown codebook {spec!r}; allowed: {CODEBOOKS_HELP}")
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
        raise ValueError(f"a Voronoi code has rates of 1 to 8 bits per dimension (q = 2^bits); got {bits!r}")
    from latticeq.lattice import load

    try:
        L = load(arg)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        raise ValueError(f"codebook {spec!r}: {exc}") from None
    return VoronoiCode(L, 2**bits)
