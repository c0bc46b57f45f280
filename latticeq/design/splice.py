"""Orthogonal splicing: direct sums of catalog lattices with optimal scale ratios.

E. Agrell and B. Allen, "On the best lattice quantizers", IEEE Trans. IT 69 (2023), Sec. on
products: if lattice ``L_k`` of dimension ``n_k`` has NSM ``G_k`` and volume ``V_k``, the direct
sum ``s_1 L_1 ⊕ … ⊕ s_K L_K`` has second moment per dimension ``G_k s_k^2 V_k^(2/n_k)`` in block
``k``. Choosing the scales so that these are all equal (``s_k ∝ G_k^(-1/2) V_k^(-1/n_k)``)
minimizes the NSM of the product, which is then

    G = prod_k G_k^(n_k / n),      n = sum_k n_k.

The best splice in dimension ``n`` minimizes ``sum_k n_k log G_k`` over compositions of ``n``
into dimensions of catalog lattices with known NSM: a knapsack solved by dynamic programming.
It is the baseline the fusion methods (``latticeq.design.fusion``) must beat.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Splice:
    """A product of catalog lattices with optimal scales (largest component first)."""

    components: tuple[str, ...]
    dims: tuple[int, ...]
    nsms: tuple[float, ...]
    nsm: float

    @property
    def dim(self) -> int:
        return sum(self.dims)

    @property
    def label(self) -> str:
        return "×".join(self.components)

    def lattice(self):
        """The spliced :class:`~latticeq.lattice.Lattice`, unit volume, optimal scales."""
        return splice(list(self.components))


def product_nsm(nsms, dims) -> float:
    """NSM of the optimally scaled direct sum: ``prod_k G_k^(n_k/n)``."""
    nsms = np.asarray(nsms, dtype=np.float64)
    dims = np.asarray(dims, dtype=np.float64)
    if nsms.shape != dims.shape or nsms.ndim != 1 or nsms.size == 0:
        raise ValueError("nsms and dims must be non-empty sequences of the same length")
    if np.any(nsms <= 0) or np.any(dims < 1):
        raise ValueError("NSMs must be positive and dimensions >= 1")
    return float(np.exp(np.sum(dims * np.log(nsms)) / dims.sum()))


def optimal_scales(nsms, dims, volumes) -> np.ndarray:
    """Scales ``s_k ∝ G_k^(-1/2) V_k^(-1/n_k)``, normalized so the product has unit volume."""
    nsms = np.asarray(nsms, dtype=np.float64)
    dims = np.asarray(dims, dtype=np.float64)
    volumes = np.asarray(volumes, dtype=np.float64)
    if not (nsms.shape == dims.shape == volumes.shape) or nsms.ndim != 1:
        raise ValueError("nsms, dims and volumes must have the same length")
    if np.any(nsms <= 0) or np.any(volumes <= 0) or np.any(dims < 1):
        raise ValueError("NSMs and volumes must be positive, dimensions >= 1")
    log_s = -0.5 * np.log(nsms) - np.log(volumes) / dims
    # total volume prod s_k^{n_k} V_k = 1
    log_vol = np.sum(dims * log_s + np.log(volumes))
    log_s -= log_vol / dims.sum()
    return np.exp(log_s)


def catalog_table() -> dict[str, tuple[int, float]]:
    """``{name: (dim, reference NSM)}`` for every catalog lattice whose NSM is known."""
    from latticeq.lattice import catalog

    table = {}
    for name in catalog.names():
        g = catalog.reference_nsm(name)
        if g is None or not np.isfinite(g):
            continue
        table[name] = (int(catalog.get(name).dim), float(g))
    return table


def best_per_dimension(n: int, table: dict[str, tuple[int, float]] | None = None) -> dict[int, tuple[float, str]]:
    """``{d: (NSM, name)}``: the catalog lattice of smallest reference NSM in each dimension d ≤ n
    (the first in table order on ties) — the components every best product is made of."""
    table = catalog_table() if table is None else table
    best_of_dim: dict[int, tuple[float, str]] = {}
    for name, (d, g) in table.items():
        if d <= n and (d not in best_of_dim or g < best_of_dim[d][0] - 1e-15):
            best_of_dim[d] = (g, name)
    return best_of_dim


def best_splice(n: int, table: dict[str, tuple[int, float]] | None = None,
                max_components: int | None = None) -> Splice:
    """Best optimally scaled direct sum of catalog lattices in dimension ``n``.

    Dynamic programming over ``best[m] = min_d best[m - d] + d log G*(d)`` where ``G*(d)`` is
    the smallest reference NSM among catalog lattices of dimension ``d``. Ties keep the product
    with fewer components. Examples (Agrell–Allen values): n=13 K12×Z 0.0710346, n=17 Λ16×Z
    0.0691040, n=20 Λ16×D4 0.0698853.
    """
    if not isinstance(n, (int, np.integer)) or not 1 <= n <= 64:
        raise ValueError(f"dimension must be an integer in 1..64, got {n!r}")
    best_of_dim = best_per_dimension(n, table)
    if 1 not in best_of_dim and not best_of_dim:
        raise ValueError("the table has no lattice of dimension <= n")
    INF = math.inf
    cost = [INF] * (n + 1)
    count = [0] * (n + 1)
    choice: list[int | None] = [None] * (n + 1)
    cost[0] = 0.0
    for m in range(1, n + 1):
        for d, (g, _) in sorted(best_of_dim.items()):
            if d > m or cost[m - d] == INF:
                continue
            if max_components is not None and count[m - d] + 1 > max_components:
                continue
            c = cost[m - d] + d * math.log(g)
            if c < cost[m] - 1e-12 or (abs(c - cost[m]) <= 1e-12 and count[m - d] + 1 < count[m]):
                cost[m], count[m], choice[m] = c, count[m - d] + 1, d
    if cost[n] == INF:
        raise ValueError(f"no composition of {n} into the available dimensions "
                         f"{sorted(best_of_dim)}")
    dims = []
    m = n
    while m > 0:
        dims.append(choice[m])
        m -= choice[m]
    dims.sort(reverse=True)
    names = tuple(best_of_dim[d][1] for d in dims)
    nsms = tuple(best_of_dim[d][0] for d in dims)
    return Splice(names, tuple(dims), nsms, product_nsm(nsms, dims))


def splice(components, n: int | None = None, nsms=None):
    """Direct sum of catalog lattices (names or Lattice objects) with optimal scales.

    ``nsms`` gives the components' NSMs; by default a catalog name's reference NSM, and a
    Lattice's recorded estimate (``L.nsm``, e.g. a saved search result).
    The result has unit volume and NSM ``prod G_k^(n_k/n)``; it carries the components, their
    scales and the predicted NSM in its provenance, with the standard error propagated from
    components whose NSM is a Monte Carlo estimate (0 for catalog values).
    """
    from latticeq.lattice import Lattice, catalog

    if len(components) == 0:
        raise ValueError("need at least one component")
    lats, names, gs, ses = [], [], [], []
    for i, c in enumerate(components):
        L = catalog.get(c) if isinstance(c, str) else c
        if not isinstance(L, Lattice):
            raise ValueError(f"component {c!r} is neither a catalog name nor a Lattice")
        lats.append(L)
        names.append(c if isinstance(c, str) else (L.name or f"L{i}"))
        if nsms is not None:
            g, se = nsms[i], 0.0
        elif isinstance(c, str):
            g, se = catalog.reference_nsm(c), 0.0
        else:  # a Lattice: its recorded Monte Carlo estimate and standard error
            g, se = (None, 0.0) if L.nsm is None else L.nsm
        if g is None:
            raise ValueError(f"NSM of component {names[-1]!r} unknown; pass nsms=")
        gs.append(float(g))
        ses.append(float(se))
    dims = [L.dim for L in lats]
    if n is not None and sum(dims) != n:
        raise ValueError(f"component dimensions {dims} sum to {sum(dims)}, not n={n}")
    scales = optimal_scales(gs, dims, [L.volume for L in lats])
    G = product_nsm(gs, dims)
    # G = prod G_k^(n_k/n): relative errors add in quadrature, weighted by n_k/n
    se = G * math.sqrt(sum((d / sum(dims) * s / g) ** 2 for g, s, d in zip(gs, ses, dims)))
    from latticeq import __version__

    prov = {"method": "splice", "components": names, "dims": dims, "scales": scales.tolist(),
            "nsm": G, "nsm_stderr": se, "latticeq": __version__}
    P = Lattice.product(lats, scales=list(scales), name="×".join(names))
    return Lattice(P.generator, name="×".join(names), provenance=prov, decoder=P.decoder,
                   nsm=(G, se))
