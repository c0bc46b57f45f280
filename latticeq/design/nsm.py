"""Normalized second moment (NSM) of a lattice quantizer.

For a lattice Λ ⊂ Rⁿ with volume V and Voronoi cell Ω, the NSM is

    G(Λ) = (1 / (n V^{1 + 2/n})) ∫_Ω ‖x‖² dx  =  E ‖x − Q_Λ(x)‖² / (n V^{2/n}),

the expectation over x uniform in any fundamental region (we use the fundamental parallelepiped
{z B : z ∈ [0,1)ⁿ}), Q_Λ the closest-point map (Conway & Sloane, SPLAG ch. 2 and 21; Agrell &
Allen, "On the best lattice quantizers", IEEE Trans. IT 2023).

The Monte Carlo estimate's standard error is computed by batch means: the sample is cut into
batches, and the spread of the batch means gives the error of their average.

The normalized second-moment *tensor* is U = E[e eᵀ] / V^{2/n} (e = x − Q(x)); for a locally optimal
lattice it is a multiple of the identity, G·I (Zamir & Feder; Agrell & Allen, Theorem 2).

Examples
--------
>>> from latticeq.lattice import catalog
>>> from latticeq.design.nsm import estimate_nsm
>>> r = estimate_nsm(catalog.get("Z3"), samples=20_000, seed=1, progress=False)
>>> abs(r.nsm - 1 / 12) < 4 * r.stderr
True
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

__all__ = ["NSMResult", "estimate_nsm", "sphere_bound"]


def sphere_bound(n: int) -> float:
    """NSM of the n-ball, Γ(n/2 + 1)^{2/n} / ((n + 2) π): a lower bound for every lattice (Zador)."""
    if int(n) != n or n < 1:
        raise ValueError(f"dimension must be a positive integer, got {n}")
    n = int(n)
    return math.exp(2.0 / n * math.lgamma(n / 2 + 1)) / ((n + 2) * math.pi)


@dataclass
class NSMResult:
    """A Monte Carlo NSM estimate.

    Attributes
    ----------
    nsm, stderr : float
        The estimate and its standard error (batch means).
    samples, dim, seed : int
    tensor : (n, n) array
        Normalized second-moment tensor E[e eᵀ] / V^{2/n}; ``trace(tensor) / n == nsm``.
    tensor_deviation : float
        ‖U − (tr U / n) I‖_F / (tr U / n): zero for a lattice whose error is white.
    wall_time_s : float
    """

    nsm: float
    stderr: float
    samples: int
    dim: int
    seed: int | None
    tensor: np.ndarray = field(repr=False)
    tensor_deviation: float = float("nan")
    wall_time_s: float = 0.0

    def sigmas_from(self, reference: float) -> float:
        """(nsm − reference) / stderr: the deviation from a reference value in standard errors."""
        return (self.nsm - reference) / self.stderr if self.stderr > 0 else float("inf")

    def to_dict(self) -> dict:
        return {"nsm": self.nsm, "stderr": self.stderr, "samples": self.samples, "dim": self.dim,
                "seed": self.seed, "tensor_deviation": self.tensor_deviation, "wall_time_s": self.wall_time_s}


def estimate_nsm(lattice, samples: int = 1_000_000, seed: int | None = 0, *, target_stderr: float | None = None,
                 batch: int | None = None, progress: bool = True, decoder: str = "latticeq") -> NSMResult:
    """Monte Carlo estimate of the NSM G(Λ) with its standard error.

    Parameters
    ----------
    lattice : Lattice
    samples : int
        Number of uniform points (the maximum when ``target_stderr`` is given).
    seed : int or None
        Seed of the uniform points; the same seed gives the same estimate.
    target_stderr : float, optional
        Stop early once the standard error is at or below this (after at least 10 batches).
    batch : int, optional
        Points per batch (one closest-point call); default min(2¹⁴, samples / 32), so that the
        batch-means error rests on ≥ 32 batches.
    progress : bool
        Show a progress bar with the running estimate.
    decoder : {"latticeq", "fpylll"}
        The exact closest-point decoder: latticeq's own (catalog decoders or Schnorr–Euchner), or
        fpylll's ``CVP.closest_vector`` — an independent implementation, for cross-checks (slow).
    """
    from latticeq.lattice import Lattice

    if not isinstance(lattice, Lattice):
        raise ValueError(f"estimate_nsm needs a Lattice, got {type(lattice).__name__}")
    if int(samples) != samples or samples < 100:
        raise ValueError(f"samples must be an integer ≥ 100, got {samples}")
    samples = int(samples)
    if target_stderr is not None and not (target_stderr > 0):
        raise ValueError(f"target_stderr must be positive, got {target_stderr}")
    if batch is None:
        batch = max(10, min(1 << 14, samples // 32))
    if int(batch) != batch or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch}")
    batch = int(batch)
    if decoder == "latticeq":
        closest = lattice.closest_point
    elif decoder == "fpylll":
        from latticeq.lattice.reduce import fpylll_closest

        def closest(X):
            return fpylll_closest(lattice.generator, X)[0]
    else:
        raise ValueError(f"unknown decoder {decoder!r}; allowed: latticeq, fpylll")

    n = lattice.dim
    B = lattice.generator
    norm = 1.0 / (n * lattice.volume ** (2.0 / n))
    rng = np.random.default_rng(seed)
    means: list[float] = []
    weights: list[int] = []
    S = np.zeros((n, n))
    done = 0
    t0 = time.perf_counter()

    def stats():
        m = np.asarray(means)
        w = np.asarray(weights, dtype=float)
        mean = float(np.sum(m * w) / np.sum(w))
        if len(m) < 2:
            return mean, float("inf")
        # variance of the batch means (weighted: the last batch may be short), then of their average
        k = len(m)
        var = float(np.sum(w * (m - mean) ** 2) / np.sum(w)) * k / (k - 1)
        return mean, math.sqrt(var / k)

    from latticeq.progress import make_progress

    label = lattice.name or f"n={n}"
    with make_progress(progress, transient=True) as bar:
        task = bar.add_task(f"NSM {label}", total=samples)
        while done < samples:
            m = min(batch, samples - done)
            X = rng.random((m, n)) @ B
            E = X - closest(X)
            S += E.T @ E
            means.append(float(np.mean(np.sum(E * E, axis=1))) * norm)
            weights.append(m)
            done += m
            if progress:
                est, se = stats()
                bar.update(task, completed=done, description=f"NSM {label} {est:.7f} ± {se:.1e}")
            if target_stderr is not None and len(means) >= 10 and stats()[1] <= target_stderr:
                break
    nsm, se = stats()
    U = S / done / lattice.volume ** (2.0 / n)
    g = np.trace(U) / n
    dev = float(np.linalg.norm(U - g * np.eye(n)) / g)
    return NSMResult(nsm=nsm, stderr=se, samples=done, dim=n, seed=seed, tensor=U, tensor_deviation=dev,
                     wall_time_s=time.perf_counter() - t0)
