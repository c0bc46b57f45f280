"""Benchmark: exact closest point, latticeq's numba Schnorr–Euchner vs fpylll's CVP.closest_vector.

For each lattice (E8, Λ16, Λ24 from the catalog and random unit-volume lattices in dimensions 17
and 20), the generator is normalized to unit volume, scaled by 2^20 and rounded to an integer basis
(fpylll works on integer lattices), LLL-reduced by fpylll; both decoders then solve the *same*
integer problem: latticeq on the lower-triangular form of that basis, fpylll's
``CVP.closest_vector`` on the basis itself. Targets are uniform in a cube of side 4 around the
origin (in unit-volume scale), rounded to the same integer grid. Agreement is checked point by
point (same squared distance, in exact integer arithmetic). Where the catalog has a Conway–Sloane
decoder (E8) it is timed too.

Run:  .venv/bin/python benchmarks/closest_point.py [--points 4000] [--fpylll-points 400]
Writes benchmarks/closest_point.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import datetime, timezone

import numpy as np

SCALE = 2.0**20


def _int_reduced(B):
    from fpylll import LLL, IntegerMatrix

    A = IntegerMatrix.from_matrix(np.rint(B * SCALE).astype(np.int64).tolist())
    LLL.reduction(A)
    Ai = np.array([[A[i, j] for j in range(A.ncols)] for i in range(A.nrows)], dtype=np.int64)
    return A, Ai


def _lower_triangular(Bf):
    Q, R = np.linalg.qr(Bf.T)
    s = np.sign(np.diag(R))
    Q = Q * s[None, :]
    R = R * s[:, None]
    return np.ascontiguousarray(R.T), Q  # Bf = Lt @ Q.T


def _time(f, reps=3, clock=time.perf_counter):
    best = np.inf
    out = None
    for _ in range(reps):
        t0 = clock()
        out = f()
        best = min(best, clock() - t0)
    return best, out


def bench_case(name, B, decoder, rng, points, fpylll_points, threads_all):
    import numba
    from fpylll import CVP

    from latticeq.lattice.decode.sphere import closest_coords

    n = B.shape[0]
    B_cat = B
    B = B / abs(np.linalg.det(B)) ** (1.0 / n)
    A, Ai = _int_reduced(B)
    Bf = Ai.astype(np.float64)
    Lt, Q = _lower_triangular(Bf)
    T = np.rint(rng.uniform(-2.0, 2.0, size=(points, n)) * SCALE).astype(np.int64)
    Y = (T.astype(np.float64)) @ Q  # targets in the triangular frame

    closest_coords(Lt, Y[:4])  # compile / warm
    numba.set_num_threads(1)
    t1, (U, d2, ex) = _time(lambda: closest_coords(Lt, Y), clock=time.process_time)
    numba.set_num_threads(threads_all)
    tall, (U2, _, _) = _time(lambda: closest_coords(Lt, Y))
    assert np.array_equal(U, U2)
    assert ex.all()

    k = min(fpylll_points, points)
    t0 = time.process_time()
    V = [CVP.closest_vector(A, tuple(int(v) for v in T[i])) for i in range(k)]
    tf = time.process_time() - t0
    V = np.array(V, dtype=np.int64)
    P = U[:k] @ Ai
    dq = np.sum((T[:k] - P) ** 2, axis=1)
    df = np.sum((T[:k] - V) ** 2, axis=1)
    agree = int(np.sum(dq == df))
    better_fp = int(np.sum(df < dq))

    row = {
        "lattice": name,
        "n": n,
        "se_1": 1e6 * t1 / points,
        "se_all": 1e6 * tall / points,
        "fpylll": 1e6 * tf / k,
        "agree": f"{agree}/{k}",
        "fpylll_better": better_fp,
        "cs": None,
        "cs_agree": "",
    }
    if decoder is not None:
        # the catalog decoder works in the catalog's coordinates: same targets, mapped back
        scale = abs(np.linalg.det(B_cat)) ** (1.0 / n)
        Xc = (T.astype(np.float64) / SCALE) * scale
        decoder(Xc[:4])
        numba.set_num_threads(1)
        tc, Pc = _time(lambda: decoder(Xc), clock=time.process_time)
        numba.set_num_threads(threads_all)
        dc = np.sum((Xc - Pc) ** 2, axis=1) / scale**2
        # same distances as the sphere decoder on the 2^20-rounded problem, up to that rounding
        # (irrational generators such as Λ24/√8 round to a lattice ~1e-6 away)
        row["cs_agree"] = f"{int(np.sum(np.abs(dc - d2 / SCALE**2) < 1e-4))}/{points}"
        row["cs"] = 1e6 * tc / points
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=4000)
    ap.add_argument("--fpylll-points", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "closest_point.md"))
    args = ap.parse_args(argv)

    import numba
    import fpylll

    import latticeq
    from latticeq.lattice import catalog

    threads_all = numba.config.NUMBA_NUM_THREADS
    rng = np.random.default_rng(args.seed)
    cases = []
    E8 = catalog.get("E8")
    cases.append(("E8", E8.generator, E8.decoder))
    BW16 = catalog.get("BW16")
    cases.append(("Λ16 (BW16)", BW16.generator, BW16.decoder))
    cases.append(("random", rng.normal(size=(17, 17)), None))
    cases.append(("random", rng.normal(size=(20, 20)), None))
    cases.append(("random", rng.normal(size=(24, 24)), None))
    Leech = catalog.get("Leech")
    cases.append(("Λ24 (Leech)", Leech.generator, Leech.decoder))

    rows = []
    for name, B, dec in cases:
        r = bench_case(name, np.asarray(B, dtype=np.float64), dec, rng, args.points, args.fpylll_points, threads_all)
        rows.append(r)
        print(f"{r['lattice']:>12} n={r['n']:2d}  SE 1t {r['se_1']:8.2f} µs  all {r['se_all']:8.2f} µs  "
              f"fpylll {r['fpylll']:8.2f} µs  ratio {r['fpylll'] / r['se_1']:6.1f}x  agree {r['agree']}",
              file=sys.stderr)

    lines = []
    lines.append("# Exact closest point: latticeq Schnorr–Euchner vs fpylll `CVP.closest_vector`\n")
    lines.append(
        f"Generated by `benchmarks/closest_point.py` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}; "
        f"latticeq {latticeq.__version__}, numba {numba.__version__}, fpylll {fpylll.__version__}, "
        f"numpy {np.__version__}, Python {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} CPU cores (all threads = {threads_all}; 1-minute load average at the end "
        f"{os.getloadavg()[0]:.1f}: other jobs slow every column alike, the ratios much less). Seed {args.seed}; "
        f"{args.points} targets per lattice for latticeq (best of 3), the first {args.fpylll_points} "
        f"through fpylll (one call per point, as its API requires).\n"
    )
    lines.append(
        "Both solve the same integer problem (unit-volume generator × 2^20, rounded, LLL-reduced by "
        "fpylll; targets uniform in [−2, 2)^n × 2^20, rounded). µs per point. Single-thread columns "
        "are CPU time (`time.process_time`, best of 3 for latticeq), which time-slicing does not "
        "inflate, though jobs on the other cores still slow it through the shared caches and memory; "
        "the all-threads column is wall-clock time and suffers more. Ratio = fpylll / latticeq. "
        "*agree*: points where both return the same squared "
        "distance (exact integers). The fast-decoder column is the catalog's exact decoder "
        "(Conway–Sloane for E8, RM(1,4) cosets of 2·D16 for Λ16, Golay-code cosets for Λ24) on the same targets, one thread, "
        "with its agreement with the sphere decoder.\n"
    )
    lines.append("| lattice | n | latticeq SE, 1 thread (µs) | latticeq SE, all threads (µs) | fpylll (µs) | ratio SE (1 thread) | agree | fast decoder, 1 thread (µs) | ratio fast | agree (fast vs SE) |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        cs = f"{r['cs']:.2f}" if r["cs"] is not None else "—"
        cr = f"{r['fpylll'] / r['cs']:.0f}×" if r["cs"] is not None else "—"
        lines.append(
            f"| {r['lattice']} | {r['n']} | {r['se_1']:.2f} | {r['se_all']:.2f} | {r['fpylll']:.1f} | "
            f"{r['fpylll'] / r['se_1']:.1f}× | {r['agree']} | {cs} | {cr} | {r['cs_agree'] or '—'} |"
        )
    lines.append("")
    lines.append("## Where the target stands (≥ 10× fpylll per point, n = 16–24, one thread)\n")
    for r in rows:
        if 16 <= r["n"] <= 24:
            ratio = r["fpylll"] / r["se_1"]
            status = "met" if ratio >= 10 else "NOT met by the sphere decoder"
            extra = ""
            if r["cs"] is not None:
                rc = r["fpylll"] / r["cs"]
                extra = f"; the catalog's fast decoder gives {rc:.0f}× ({'met' if rc >= 10 else 'not met'})"
            lines.append(f"- {r['lattice']} (n = {r['n']}): sphere decoder {ratio:.1f}× — {status}{extra}.")
    lines.append(
        "\nNotes. The sphere decoder spends ~14 ns per search node (single thread); the Leech lattice "
        "is its hard case — about 2·10⁴ nodes per point on an LLL-reduced basis (BKZ-20 or random "
        "unimodular re-bases did not reduce this materially), because Λ24 has a large covering radius "
        "relative to its minimum and enormous symmetry, so the search must rule out many near-equal "
        "candidates. For Λ24 (and Λ16) the catalog therefore attaches an exact code-coset decoder, "
        "which `Lattice.closest_point` uses automatically. The all-threads column is wall-clock time on a "
        "machine shared with other jobs; on an idle machine it should approach the single-thread "
        "time divided by the number of cores."
    )
    text = "\n".join(lines) + "\n"
    print(text)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, args.out)
    return rows


if __name__ == "__main__":
    main()
