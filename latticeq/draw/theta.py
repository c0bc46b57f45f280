"""Theta images: the number of lattice vectors by squared norm, per shell and cumulative.

The theta series of a lattice Λ is Θ_Λ(q) = Σ_{x∈Λ} q^{||x||²} = Σ_k N_k q^{r_k}, with N_k the
number of vectors on the shell of squared norm r_k (Conway & Sloane, *SPLAG*, ch. 2). The theta
image (Agrell, Pook-Kolb & Allen, "Optimization and identification of lattice quantizers") plots
N_k and the cumulative count Σ_{r_j<=r} N_j against r for lattices scaled to unit volume, so
that different lattices of one dimension compare directly: a better quantizer has fewer, more
crowded inner shells. The dashed reference is the expected count V_n r^{n/2} of a unit-volume
lattice inside the ball of squared radius r, with V_n = π^{n/2}/Γ(n/2+1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from latticeq.draw._io import new_figure, save_figure
from latticeq.lattice import as_lattice


@dataclass
class ThetaCurve:
    """The theta series of one lattice, truncated at ``max_norm2``.

    Attributes
    ----------
    name : lattice name.
    dim : dimension n.
    norms : (k,) distinct squared norms (0 first) of the (possibly unit-volume) lattice.
    counts : (k,) number of vectors on each shell.
    cumulative : (k,) running total of ``counts``.
    scale : factor applied to the lattice (vol^{-1/n} if normalized, else 1).
    normalized : whether the lattice was scaled to unit volume.
    """

    name: str
    dim: int
    norms: np.ndarray
    counts: np.ndarray
    cumulative: np.ndarray
    scale: float
    normalized: bool = True


def ball_volume(n: int) -> float:
    """Volume of the unit n-ball, π^{n/2}/Γ(n/2+1)."""
    return math.pi ** (n / 2) / math.gamma(n / 2 + 1)


def theta_curves(lattices, *, max_norm2: float | None = None, normalize: bool = True,
                 target_count: int = 5000, max_count: int = 2_000_000) -> list:
    """Compute the theta series of one or more lattices for a theta image.

    Parameters
    ----------
    lattices : Lattice, name, generator, or a sequence of them.
    max_norm2 : squared radius to enumerate to (after scaling). Default: the radius whose ball
        holds about ``target_count`` points, (target_count·vol/V_n)^{2/n}, capped at 8× the
        largest minimum norm (the inner shells are what the image is for), and at least 1.05×
        the largest minimum norm so that every lattice shows its first shell.
    normalize : scale every lattice to unit volume first.
    max_count : refuse (ValueError) to enumerate more vectors than this per lattice.

    Returns
    -------
    list of ThetaCurve, in input order.
    """
    if isinstance(lattices, (str,)) or hasattr(lattices, "generator") or (
            isinstance(lattices, np.ndarray) and lattices.ndim == 2):
        lattices = [lattices]
    lats = [as_lattice(x) for x in lattices]
    if not lats:
        raise ValueError("theta needs at least one lattice")
    if max_norm2 is not None and not (math.isfinite(max_norm2) and max_norm2 > 0):
        raise ValueError(f"max_norm2 must be a positive finite number; got {max_norm2}")
    if target_count < 1:
        raise ValueError(f"target_count must be >= 1; got {target_count}")
    scales = [L.volume ** (-1.0 / L.dim) if normalize else 1.0 for L in lats]
    scaled = [L.scaled(s) if s != 1.0 else L for L, s in zip(lats, scales)]
    if max_norm2 is None:
        mmax = max(L.minimum_norm() for L in scaled)
        est = max((target_count * L.volume / ball_volume(L.dim)) ** (2.0 / L.dim) for L in scaled)
        r2 = max(1.05 * mmax, min(est, 8.0 * mmax))
    else:
        r2 = float(max_norm2)
    curves = []
    for L, s, orig in zip(scaled, scales, lats):
        try:
            th = L.theta_series(r2, max_count=max_count)
        except ValueError as exc:
            raise ValueError(f"theta of {orig.name or 'lattice'} up to squared norm {r2:.4g}: {exc}; "
                             "lower max_norm2") from None
        curves.append(ThetaCurve(name=orig.name or f"lattice in R^{L.dim}", dim=L.dim, norms=np.asarray(th.norms),
                                 counts=np.asarray(th.counts), cumulative=np.cumsum(th.counts), scale=s,
                                 normalized=normalize))
    return curves


def plot_theta(curves, out, *, title: str | None = None, reference: bool = True, max_stems: int = 60,
               bins: int = 60):
    """Draw a theta image: per-shell counts (left) and cumulative counts (right), overlaid.

    Parameters
    ----------
    curves : list of ThetaCurve (from :func:`theta_curves`).
    reference : draw the ball-volume expectation V_n r^{n/2} (unit-volume lattices only).
    max_stems, bins : with more than ``max_stems`` distinct norms (a generic lattice, e.g. a
        search result, has nearly all norms distinct) the per-shell panel becomes a histogram
        with ``bins`` bins of squared norm.
    """
    if not curves:
        raise ValueError("no theta curves to draw")
    fig, (a1, a2) = new_figure(1, 2, figsize=(11, 4.4))
    colors = ["tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:gray"]
    k = len(curves)
    span = max(float(c.norms.max()) for c in curves) or 1.0
    width = span / 150
    binned = max(len(c.norms) for c in curves) > max_stems
    edges = np.linspace(0, span * (1 + 1e-9), bins + 1)
    for i, c in enumerate(curves):
        col = colors[i % len(colors)]
        nz = c.norms > 0
        if binned:   # generic lattices (search results) have nearly every norm distinct
            a1.hist(c.norms[nz], bins=edges, weights=c.counts[nz], histtype="step", color=col, lw=1.6,
                    label=f"{c.name} (n={c.dim})")
        else:
            off = (i - (k - 1) / 2) * width
            a1.vlines(c.norms[nz] + off, 0.8, c.counts[nz], color=col, lw=2.0, alpha=0.85)
            a1.plot(c.norms[nz] + off, c.counts[nz], "o", color=col, ms=3.5, label=f"{c.name} (n={c.dim})")
        a2.step(c.norms, c.cumulative, where="post", color=col, lw=1.6, label=c.name)
    unit = all(c.normalized for c in curves)
    if reference and unit:
        dims = sorted({c.dim for c in curves})
        r = np.linspace(0, span, 300)
        for n in dims:
            a2.plot(r, np.maximum(ball_volume(n) * r ** (n / 2), 1), "k--", lw=0.9,
                    label=(f"ball volume $V_{{{n}}}\\,r^{{{n}/2}}$" if len(dims) > 1
                           else f"ball volume $V_{{{n}}}\\,r^{{{n}/2}}$ (unit-volume lattice)"))
    for a in (a1, a2):
        a.set_yscale("log")
        a.set_xlabel("squared norm r" + (" (lattices scaled to unit volume)" if unit else ""))
        a.grid(alpha=0.3, which="both")
    a1.set_ylabel(f"vectors per bin of width {edges[1]:.3g}" if binned else "vectors on the shell")
    a2.set_ylabel("vectors with ||x||² ≤ r")
    a1.set_title("per shell" if not binned else "per shell (binned: many distinct norms)")
    a2.set_title("cumulative")
    a1.legend(fontsize=8)
    a2.legend(fontsize=8, loc="lower right")
    fig.suptitle(title or ("Theta image: " + " vs ".join(c.name for c in curves)))
    desc = "draw theta: " + "; ".join(f"{c.name} (n={c.dim}, unit volume={c.normalized}, up to {c.norms[-1]:.6g})"
                                      for c in curves)
    return save_figure(fig, out, description=desc)
