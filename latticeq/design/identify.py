"""Identification of lattices found by a search: theta image, kissing number, comparison.

Agrell, Pook-Kolb and Allen, "Optimization and identification of lattice quantizers",
arXiv 2401.01799, Sec. V: a numerically optimized lattice is only approximately a known one, so
its *theta image* — the squared norms of its short vectors, scaled so that the minimum norm is 1,
against their cumulative count — shows near-vertical steps where the ideal lattice has shells
(4320 vectors of minimal norm for Λ16, 196560 for Λ24). Counting the
vectors within a relative tolerance of the minimum gives the (approximate) kissing number; an
exact comparison up to rotation and scale is :meth:`Lattice.is_similar`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from latticeq.lattice import as_lattice


@dataclass(frozen=True)
class ThetaImage:
    """Sorted squared norms (minimum scaled to 1) of the short vectors, and their cumulative count."""

    norms: np.ndarray
    cumulative: np.ndarray
    minimum_norm: float  # at unit volume
    max_ratio: float = 2.0  # the cutoff actually used (norms ≤ max_ratio × minimum)

    def shells(self, rtol: float = 0.02) -> list[tuple[float, int]]:
        """Cluster the norms into shells (gaps larger than ``rtol`` relative): (mean norm, count)."""
        out: list[tuple[float, int]] = []
        start = 0
        v = self.norms
        for i in range(1, len(v) + 1):
            if i == len(v) or v[i] - v[i - 1] > rtol * v[i - 1]:
                out.append((float(v[start:i].mean()), i - start))
                start = i
        return out

    def first_shell(self, rtol: float = 0.02) -> tuple[float, int] | None:
        """The first shell, or None when it is not closed inside the image: when the norms run
        without a gap larger than ``rtol`` from the minimum up to the cutoff, they form a continuum
        (an unstructured lattice), not a shell, and its count says nothing about kissing."""
        sh = self.shells(rtol)
        if len(sh) > 1 or self.norms[-1] * (1 + rtol) < self.max_ratio:
            return sh[0]
        return None


def theta_image(lattice, max_ratio: float = 2.0, max_count: int = 2_000_000) -> ThetaImage:
    """Theta image: all nonzero vectors with squared norm ≤ ``max_ratio`` × minimum norm.

    ``lattice``: a Lattice, a catalog name or JSON path, or a generator matrix. When more than
    ``max_count`` vectors lie below the cutoff (in 24 dimensions, Λ24 has 16 969 680 up to twice
    its minimum), the cutoff is moved halfway towards the minimum until they fit; the image
    records the cutoff it used (``max_ratio``).
    """
    if not max_ratio >= 1.0:
        raise ValueError(f"max_ratio must be >= 1, got {max_ratio}")
    L = as_lattice(lattice).normalized()
    m = L.minimum_norm()
    ratio = float(max_ratio)
    while True:
        try:
            norms = L._short_norms(m * ratio * (1 + 1e-9), max_count=max_count)
            break
        except ValueError as exc:
            if "max_count" not in str(exc) or ratio - 1.0 < 1e-6:
                raise
            ratio = 1.0 + (ratio - 1.0) / 2
    v = np.sort(np.asarray(norms, dtype=np.float64)) / m
    return ThetaImage(v, np.arange(1, len(v) + 1), float(m), ratio)


def kissing_number(lattice, rtol: float = 0.05) -> int | None:
    """Size of the first shell of the theta image (approximate kissing number).

    ``rtol=0`` counts exactly minimal vectors (up to 1e-9). With ``rtol > 0`` the sorted norms
    are split into shells wherever two consecutive norms differ by more than ``rtol``
    (relative), and the first shell's size is returned: this recognizes the kissing
    configuration of a numerically optimized lattice, whose minimal vectors are spread out.
    None when the norms up to twice the minimum form one continuum (no shell structure at
    ``rtol``; see :meth:`ThetaImage.first_shell`).
    """
    if rtol < 0:
        raise ValueError(f"rtol must be >= 0, got {rtol}")
    if rtol == 0:
        img = theta_image(lattice, max_ratio=1.0 + 1e-9)
        return int(np.count_nonzero(img.norms <= 1.0 + 1e-9))
    first = theta_image(lattice, max_ratio=2.0).first_shell(rtol)
    return None if first is None else int(first[1])


def compare(a, b, tol: float = 1e-6) -> bool:
    """Whether ``a`` and ``b`` are the same lattice up to rotation, reflection and scale.

    Delegates to :meth:`Lattice.is_similar` (isometry search on unit-volume copies); ``tol`` is its
    relative tolerance — raise it (e.g. 1e-2) for lattices found by a numerical search.
    """
    A, B = as_lattice(a), as_lattice(b)
    return bool(A.is_similar(B, tol=tol))


def same_theta_shells(a, b, rtol: float = 0.05, shells: int = 2) -> bool:
    """Whether the first ``shells`` shells of the two theta images agree: the same sizes and
    mean norms (relative to the minimum) within ``5 rtol`` — the theta-image recognition of
    Agrell, Pook-Kolb and Allen for numerically optimized lattices. ``b`` is taken as the
    reference (its shells are split with a tight tolerance)."""
    A, B = as_lattice(a), as_lattice(b)
    if A.dim != B.dim:
        return False
    return _shells_agree(theta_image(A, max_ratio=2.0), theta_image(B, max_ratio=2.0), rtol, shells)


def _shells_agree(ia: ThetaImage, ib: ThetaImage, rtol: float, shells: int) -> bool:
    """:func:`same_theta_shells` on computed theta images (``ib`` the reference)."""
    cut = 1.0 + 0.75 * (min(ia.max_ratio, ib.max_ratio) - 1.0)

    def inner(sh):  # shells well inside both images' cutoffs, so complete in both
        return [x for x in sh if x[0] <= cut * sh[0][0]][:shells]

    mine = inner(ia.shells(rtol))
    ref = inner(ib.shells(1e-6))
    if not ref:
        return False
    return len(ref) == len(mine) and all(
        r[1] == m[1] and abs(r[0] / ref[0][0] - m[0] / mine[0][0]) <= 5 * rtol * r[0] / ref[0][0]
        for r, m in zip(ref, mine))


def identify(lattice, rtol: float = 0.05, tol: float = 1e-2, shells: int = 2) -> str | None:
    """Name of the catalog lattice of the same dimension that ``lattice`` approximately is, or None.

    A catalog lattice matches when it is similar within ``tol`` (:func:`compare`), or when the
    first ``shells`` shells of the two theta images have the same sizes and mean norms within
    ``5 rtol`` of each other (norms relative to the minimum) — the theta-image recognition of
    Agrell, Pook-Kolb and Allen for numerically optimized lattices. Shells of the ideal lattice
    that lie close together (Λ15*: 2048 vectors at 1.25 and 1710 at 4/3 of the minimum) blur into
    one in a found lattice at the default tolerance, so ``rtol``, ``rtol/2`` and ``rtol/4`` are
    tried in turn.
    """
    from latticeq.lattice import catalog

    L = as_lattice(lattice)
    image = None  # the found lattice's theta image, computed once for every candidate
    for name in catalog.names():
        C = catalog.get(name)
        if C.dim != L.dim:
            continue
        image = theta_image(L, max_ratio=2.0) if image is None else image
        ref = theta_image(C, max_ratio=2.0)
        if any(_shells_agree(image, ref, r, shells) for r in (rtol, rtol / 2, rtol / 4)):
            return name
        try:
            if compare(C, L, tol=tol):
                return name
        except RuntimeError:
            continue
    return None


def plot_theta_images(lattices: dict, path, max_ratio: float = 2.0) -> None:
    """Plot theta images (cumulative count against normalized squared norm), log-scaled counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, L in lattices.items():
        img = theta_image(L, max_ratio=max_ratio)
        first = img.first_shell(0.05)
        kiss = "no shells" if first is None else f"κ≈{first[1]}"
        ax.step(img.norms, img.cumulative, where="post", label=f"{label} ({kiss})")
    ax.set_yscale("log")
    ax.set_xlabel("squared norm / minimum squared norm")
    ax.set_ylabel("number of vectors (cumulative)")
    ax.set_title("Theta image")
    ax.legend(fontsize=8)
    fig.tight_layout()
    from latticeq.design.study import _atomic_savefig

    _atomic_savefig(fig, path)
    plt.close(fig)
