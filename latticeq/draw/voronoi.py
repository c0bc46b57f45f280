"""Voronoi cells of 2-D and 3-D lattices: geometry (exact cell, volume, NSM) and the picture.

The Voronoi cell of a lattice Λ at the origin is the intersection of the half-spaces

.. math::  V = \\{x : \\langle x, v\\rangle \\le \\|v\\|^2/2 \\ \\text{for all}\\ v \\in Λ\\setminus\\{0\\}\\},

and only the *Voronoi-relevant* vectors (those whose half-space contributes a facet) matter
(Conway & Sloane, *SPLAG*, ch. 2 and 21). For n <= 3 the basis is LLL-reduced and the candidates
are the vectors with coefficients in {-2..2}^n; the cell is their ``scipy.spatial.HalfspaceIntersection``.
A missing relevant vector would leave the polytope too large, so the result is checked: its
volume must equal |det G| (else RuntimeError asks for a larger coefficient range). Its
normalized second moment is computed exactly (no Monte Carlo) by splitting the cell into simplices
with apex at the origin: for a simplex S with vertices 0, v_1..v_n,

.. math::  \\int_S \\|x\\|^2 dx = \\frac{\\mathrm{vol}(S)}{(n+1)(n+2)}
           \\Big(\\sum_i \\|v_i\\|^2 + \\big\\|\\sum_i v_i\\big\\|^2\\Big),
   \\qquad G = \\frac{1}{n}\\,\\frac{\\int_V \\|x\\|^2 dx}{\\mathrm{vol}(V)^{1+2/n}}.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from latticeq.draw._io import new_figure, save_figure
from latticeq.lattice.reduce import lll


def as_generator(lattice) -> tuple[np.ndarray, str]:
    """Return ``(generator, name)`` for a :class:`~latticeq.lattice.Lattice` or a square matrix.

    Raises ValueError for non-square, non-finite or singular generators.
    """
    name = getattr(lattice, "name", None)
    G = getattr(lattice, "generator", lattice)
    G = np.asarray(G, dtype=np.float64)
    if G.ndim != 2 or G.shape[0] != G.shape[1] or G.shape[0] == 0:
        raise ValueError(f"a lattice generator must be a square n×n matrix; got shape {G.shape}")
    if not np.isfinite(G).all():
        raise ValueError("lattice generator has non-finite entries")
    if abs(np.linalg.det(G)) < 1e-12 * max(1.0, np.abs(G).max()) ** G.shape[0]:
        raise ValueError("lattice generator is singular (rows must be linearly independent)")
    return G, (name or f"lattice in R^{G.shape[0]}")


@dataclass
class VoronoiCell:
    """The Voronoi cell of a 2-D or 3-D lattice at the origin.

    Attributes
    ----------
    generator : (n, n) reduced generator (rows), same lattice as the input.
    vertices : (k, n) cell vertices.
    faces : list of index arrays into ``vertices``; each a facet polygon in cyclic order
        (in 2-D: a single polygon, the cell boundary, in cyclic order).
    relevant : (r, n) Voronoi-relevant vectors (one facet each).
    volume : area (n=2) or volume (n=3) of the cell; equals |det generator|.
    second_moment : ∫_V ||x||² dx.
    nsm : normalized second moment G = second_moment / (n volume^{1+2/n}).
    covering_radius : max vertex norm.
    """

    generator: np.ndarray
    vertices: np.ndarray
    faces: list
    relevant: np.ndarray
    volume: float
    second_moment: float
    nsm: float
    covering_radius: float

    @property
    def dim(self) -> int:
        return self.generator.shape[0]

    def contains(self, X, tol: float = 1e-9) -> np.ndarray:
        """Whether each row of X lies in the (closed) cell."""
        X = np.atleast_2d(X)
        lhs = X @ self.relevant.T
        rhs = 0.5 * np.einsum("ij,ij->i", self.relevant, self.relevant)
        return (lhs <= rhs + tol * (1 + rhs)).all(axis=1)


def _simplex_second_moment(V: np.ndarray) -> tuple[float, float]:
    """(volume, ∫||x||²) of the simplex with vertices 0 and the rows of V (n×n)."""
    n = V.shape[0]
    vol = abs(np.linalg.det(V)) / np.prod(np.arange(1, n + 1))
    s = V.sum(axis=0)
    return vol, vol / ((n + 1) * (n + 2)) * (np.einsum("ij,ij->", V, V) + s @ s)


def voronoi_cell(lattice, *, coeff_range: int = 2) -> VoronoiCell:
    """Compute the exact Voronoi cell of a 2-D or 3-D lattice.

    Parameters
    ----------
    lattice : Lattice or (n, n) generator with rows the basis vectors, n in {2, 3}.
    coeff_range : candidate relevant vectors are u @ G_reduced with u in {-c..c}^n.

    Returns
    -------
    VoronoiCell

    Raises
    ------
    ValueError
        If the lattice is not 2- or 3-dimensional.
    """
    from scipy.spatial import ConvexHull, HalfspaceIntersection

    G, name = as_generator(lattice)
    n = G.shape[0]
    if n not in (2, 3):
        raise ValueError(f"voronoi draws 2-D and 3-D lattices; {name} has dimension {n} "
                         "(use `latticeq draw theta` for any dimension)")
    scale = abs(np.linalg.det(G)) ** (1.0 / n)
    Gr = lll(G / scale)[0] * scale  # the core's LLL: short, near-orthogonal rows make the candidates suffice
    U = np.array([u for u in itertools.product(range(-coeff_range, coeff_range + 1), repeat=n) if any(u)], dtype=float)
    cand = U @ Gr
    # half-spaces A x + b <= 0 :  <x, v> - |v|^2/2 <= 0
    hs = np.hstack([cand, -0.5 * np.einsum("ij,ij->i", cand, cand)[:, None]])
    verts = HalfspaceIntersection(hs, np.zeros(n)).intersections
    # merge duplicate vertices (several planes through one vertex)
    tol = 1e-9 * scale
    uniq = []
    for v in verts:
        if not any(np.linalg.norm(v - w) < 1e3 * tol for w in uniq):
            uniq.append(v)
    verts = np.array(uniq)
    hull = ConvexHull(verts)
    verts = verts[hull.vertices]
    hull = ConvexHull(verts)

    # relevant vectors: those whose plane holds an (n-1)-dimensional face
    relevant, faces = [], []
    for v in cand:
        on = np.flatnonzero(np.abs(verts @ v - 0.5 * v @ v) < 1e-7 * (1 + v @ v))
        if len(on) >= n and np.linalg.matrix_rank(verts[on[1:]] - verts[on[0]], tol=1e-7 * scale) == n - 1:
            relevant.append(v)
            faces.append(on)
    relevant = np.array(relevant)

    # ordered facet polygons (3-D) / ordered boundary (2-D)
    def cyclic(idx, normal=None):
        P = verts[idx]
        c = P.mean(axis=0)
        if n == 2:
            ang = np.arctan2(P[:, 1] - c[1], P[:, 0] - c[0])
        else:
            e1 = P[0] - c
            e1 /= np.linalg.norm(e1)
            e2 = np.cross(normal / np.linalg.norm(normal), e1)
            ang = np.arctan2((P - c) @ e2, (P - c) @ e1)
        return np.asarray(idx)[np.argsort(ang)]

    if n == 2:
        ordered = [cyclic(np.arange(len(verts)))]
    else:
        ordered = [cyclic(f, v) for f, v in zip(faces, relevant)]

    # exact volume and second moment by simplices with apex at the origin
    vol = sm = 0.0
    for simplex in hull.simplices:
        a, b = _simplex_second_moment(verts[simplex])
        vol += a
        sm += b
    nsm = sm / (n * vol ** (1 + 2.0 / n))
    det = abs(np.linalg.det(G))
    if abs(vol - det) > 1e-6 * det:
        raise RuntimeError(f"Voronoi cell volume {vol} differs from |det| {det}: candidate set too small "
                           f"(raise coeff_range above {coeff_range})")
    return VoronoiCell(generator=Gr, vertices=verts, faces=ordered, relevant=relevant, volume=vol,
                       second_moment=sm, nsm=nsm, covering_radius=float(np.linalg.norm(verts, axis=1).max()))


@dataclass
class VoronoiPicture:
    """Everything drawn by :func:`plot_voronoi`.

    Attributes
    ----------
    name : lattice name.
    cell : the :class:`VoronoiCell` at the origin.
    points : (p, n) lattice points drawn (all within the window).
    samples : (m, n) uniform random points in the window.
    quantized : (m, n) their closest lattice points Q(x).
    errors : (m, n) quantization errors x - Q(x); each lies in ``cell``.
    mse_per_dim : mean of ||x - Q(x)||² / n over the samples (Monte Carlo check of G·V^{2/n}).
    """

    name: str
    cell: VoronoiCell
    points: np.ndarray
    samples: np.ndarray
    quantized: np.ndarray
    errors: np.ndarray
    mse_per_dim: float


def _closest(lattice, G, X, radius):
    """Closest lattice points to X: the core's exact decoder when given a Lattice, else brute force
    over the lattice points within ``radius`` (enough: the covering radius bounds the distance)."""
    if hasattr(lattice, "closest_point"):
        return np.asarray(lattice.closest_point(X), dtype=np.float64)
    from scipy.spatial import cKDTree

    lo, hi = X.min(axis=0) - radius, X.max(axis=0) + radius
    P = lattice_points_in_box(G, lo, hi)
    _, idx = cKDTree(P).query(X)
    return P[idx]


def lattice_points_in_box(G, lo, hi) -> np.ndarray:
    """All lattice points u @ G with lo <= point <= hi (componentwise)."""
    G = np.asarray(G, dtype=np.float64)
    corners = np.array(list(itertools.product(*zip(lo, hi))))
    coords = corners @ np.linalg.inv(G)
    ulo, uhi = np.floor(coords.min(axis=0)) - 1, np.ceil(coords.max(axis=0)) + 1
    U = np.array(list(itertools.product(*[range(int(a), int(b) + 1) for a, b in zip(ulo, uhi)])), dtype=float)
    P = U @ G
    keep = ((P >= np.asarray(lo) - 1e-12) & (P <= np.asarray(hi) + 1e-12)).all(axis=1)
    return P[keep]


def voronoi_picture(lattice, *, samples: int = 60, extent: float = 2.0, seed: int = 0, normalize: bool = True) -> VoronoiPicture:
    """Compute the data for :func:`plot_voronoi`.

    Parameters
    ----------
    lattice : Lattice or (n, n) generator, n in {2, 3}.
    samples : number of random points whose quantization errors are drawn.
    extent : half-width of the drawing window as a multiple of vol^{1/n}
        (the window is [-extent, extent]^n after unit-volume scaling).
    seed : random seed for the samples.
    normalize : scale the lattice to unit volume first (so pictures of lattices compare).
    """
    if samples < 0:
        raise ValueError(f"samples must be >= 0; got {samples}")
    if not extent > 0:
        raise ValueError(f"extent must be > 0; got {extent}")
    G, name = as_generator(lattice)
    n = G.shape[0]
    if n not in (2, 3):
        raise ValueError(f"voronoi draws 2-D and 3-D lattices; {name} has dimension {n} "
                         "(use `latticeq draw theta` for any dimension)")
    s = abs(np.linalg.det(G)) ** (-1.0 / n) if normalize else 1.0
    Gs = G * s
    # the core's exact decoder when given a Lattice, else brute force (see _closest)
    dec = lattice.scaled(s) if hasattr(lattice, "closest_point") and hasattr(lattice, "scaled") else Gs
    cell = voronoi_cell(Gs)
    w = extent * abs(np.linalg.det(Gs)) ** (1.0 / n)
    pts = lattice_points_in_box(Gs, -w * np.ones(n), w * np.ones(n))
    rng = np.random.default_rng(seed)
    inner = 0.8 * w
    X = rng.uniform(-inner, inner, size=(samples, n))
    Q = _closest(dec, Gs, X, cell.covering_radius * 1.01) if samples else np.zeros((0, n))
    E = X - Q
    mse = float((E ** 2).sum(axis=1).mean() / n) if samples else float("nan")
    return VoronoiPicture(name=name, cell=cell, points=pts, samples=X, quantized=Q, errors=E, mse_per_dim=mse)


def plot_voronoi(pic, out, *, title: str | None = None, reference_nsm: float | None = None):
    """Draw a :class:`VoronoiPicture` (2-D: tiled cells; 3-D: the cell as a polytope).

    Lattice points are black dots, the Voronoi cell at the origin is shaded (and in 2-D its
    translates are outlined), sample points are red with an arrow to their closest lattice
    point (the quantization error), the reduced basis vectors are blue arrows. The exact NSM
    is in the title.
    """
    cell = pic.cell
    n = cell.dim
    head = title or pic.name
    nsm_txt = f"G = {cell.nsm:.6f} (exact, from the cell)"
    if reference_nsm is not None:
        nsm_txt += f"; reference {reference_nsm:.6f}"
    if n == 2:
        fig, ax = new_figure(figsize=(6.2, 6.2))
        from matplotlib.patches import Polygon

        poly = cell.vertices[cell.faces[0]]
        for p in pic.points:
            ax.add_patch(Polygon(poly + p, closed=True, fill=False, ec="0.7", lw=0.7))
        ax.add_patch(Polygon(poly, closed=True, fc="tab:blue", alpha=0.18, ec="tab:blue", lw=1.6,
                             label=f"Voronoi cell, area {cell.volume:.4f}"))
        ax.plot(pic.points[:, 0], pic.points[:, 1], "k.", ms=6, label="lattice points")
        for b in cell.generator:
            ax.annotate("", xy=b, xytext=(0, 0), arrowprops=dict(arrowstyle="->", color="tab:blue", lw=1.5))
        if len(pic.samples):
            ax.plot(pic.samples[:, 0], pic.samples[:, 1], ".", color="tab:red", ms=4, label="samples x")
            ax.quiver(pic.quantized[:, 0], pic.quantized[:, 1], pic.errors[:, 0], pic.errors[:, 1],
                      angles="xy", scale_units="xy", scale=1, color="tab:red", width=0.003, alpha=0.7,
                      label="error x − Q(x)")
        lim = np.abs(pic.points).max() * 1.02
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.legend(loc="upper right", fontsize=7, framealpha=0.9)
    else:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
        from mpl_toolkits.mplot3d.art3d import Poly3DCollection

        fig = plt.figure(figsize=(6.8, 6.4))
        ax = fig.add_subplot(projection="3d")
        polys = [cell.vertices[f] for f in cell.faces]
        ax.add_collection3d(Poly3DCollection(polys, facecolor="tab:blue", alpha=0.22, edgecolor="tab:blue", lw=0.8))
        near = pic.points[np.linalg.norm(pic.points, axis=1) <= 2.2 * cell.covering_radius]
        ax.scatter(*near.T, color="k", s=10, depthshade=True, label="lattice points")
        if len(pic.samples):
            ins = np.linalg.norm(pic.quantized, axis=1) <= 2.2 * cell.covering_radius
            X, Q = pic.samples[ins], pic.quantized[ins]
            ax.scatter(*X.T, color="tab:red", s=6, label="samples x")
            for x, q in zip(X, Q):
                ax.plot(*np.stack([q, x]).T, color="tab:red", lw=0.7, alpha=0.7)
            ax.plot([], [], color="tab:red", lw=0.7, label="error x − Q(x)")
        r = 2.2 * cell.covering_radius
        ax.set_xlim(-r, r)
        ax.set_ylim(-r, r)
        ax.set_zlim(-r, r)
        ax.set_box_aspect((1, 1, 1))
        ax.legend(loc="upper right", fontsize=7)
        nsm_txt += f"\n{len(cell.relevant)} facets, {len(cell.vertices)} vertices, volume {cell.volume:.4f}"
    ax.set_title(f"{head}: Voronoi cell and quantization errors\n{nsm_txt}", fontsize=10)
    return save_figure(fig, out, description=f"draw voronoi: lattice {pic.name}, exact NSM {cell.nsm:.9f}, "
                                             f"{len(pic.samples)} samples")
