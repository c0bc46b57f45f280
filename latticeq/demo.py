"""The main job on embedded defaults (``latticeq demo``, run by ``make setup``).

1. NSM of catalog lattices by Monte Carlo, against their reference values.
2. Exact closest point: latticeq's Schnorr–Euchner decoder against fpylll's ``CVP.closest_vector``
   on the same points, in the same run.
"""

from __future__ import annotations

import time

import numpy as np

DEMO_LATTICES = ("A2", "D4", "E8", "K12", "BW16", "Leech")
BENCH_LATTICES = ("E8", "BW16", "Leech")


def run_demo(samples: int = 200_000, seed: int = 0, console=None) -> dict:
    import numba
    from rich.console import Console
    from rich.table import Table

    from latticeq.design.nsm import estimate_nsm
    from latticeq.lattice.reduce import fpylll_closest
    from latticeq.lattice import Lattice, catalog

    console = console or Console()
    results = {"nsm": [], "closest": []}
    table = Table(title=f"NSM by Monte Carlo ({samples:,} samples, seed {seed})")
    for col in ("lattice", "n", "NSM", "± stderr", "reference", "deviation (σ)", "time (s)"):
        table.add_column(col, justify="right")
    for name in DEMO_LATTICES:
        L = catalog.get(name)
        r = estimate_nsm(L, samples=samples, seed=seed, progress=True)
        ref = catalog.reference_nsm(name)
        table.add_row(name, str(L.dim), f"{r.nsm:.6f}", f"{r.stderr:.1e}", f"{ref:.6f}",
                      f"{r.sigmas_from(ref):+.2f}", f"{r.wall_time_s:.1f}")
        results["nsm"].append({"lattice": name, **r.to_dict(), "reference": ref})
    console.print(table)

    rng = np.random.default_rng(seed)
    table = Table(title="Exact closest point, µs per point (same points, same run)")
    for col in ("lattice", "n", f"latticeq ({numba.get_num_threads()} threads)", "latticeq (1 thread)",
                "fpylll CVP", "speed-up (1 thread)", "agree"):
        table.add_column(col, justify="right")
    for name in BENCH_LATTICES:
        base = catalog.get(name).normalized()
        L = Lattice(base.generator, name=name)  # no Conway–Sloane decoder: the sphere decoder
        X = rng.random((4000, L.dim)) * 4
        L.closest_point(X[:8])  # compile and prepare outside the clock
        t0 = time.perf_counter()
        P = L.closest_point(X)
        t_all = (time.perf_counter() - t0) / len(X)
        prev = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            t0 = time.perf_counter()
            L.closest_point(X)
            t_one = (time.perf_counter() - t0) / len(X)
        finally:
            numba.set_num_threads(prev)
        k = 100
        Pf, dt = fpylll_closest(L.generator, X[:k])
        t_f = dt / k
        d_ours = np.sum((X[:k] - P[:k]) ** 2, axis=1)
        d_f = np.sum((X[:k] - Pf) ** 2, axis=1)
        agree = int(np.sum(d_ours <= d_f + 1e-6))
        table.add_row(name, str(L.dim), f"{t_all * 1e6:.1f}", f"{t_one * 1e6:.1f}", f"{t_f * 1e6:.1f}",
                      f"{t_f / t_one:.1f}×", f"{agree}/{k}")
        results["closest"].append({"lattice": name, "us_all_threads": t_all * 1e6, "us_one_thread": t_one * 1e6,
                                   "us_fpylll": t_f * 1e6, "agree": agree, "checked": k})
    console.print(table)
    return results
