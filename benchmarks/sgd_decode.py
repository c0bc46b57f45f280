"""Where the n = 24 SGD step goes, and what each proposed speed-up of its closest-point search buys.

Issue 17 asks for the n = 24 SGD step at 3× the Python-loop baseline of ``benchmarks/sgd.py``
(the same algorithm driven from Python, with the same core decoder per point) and lists options:
keeping the basis better reduced, a better enumeration radius and ordering, warm starts. This
script measures each of them, on three lattices that an n = 24 run meets:

* ``random`` — the LLL-reduced Gaussian start of every SGD run (``random_reduced_generator``);
* ``ours`` — our best n = 24 SGD result (``results/lattices/n24-sgd-from-bw16xe8.json``), what
  the late steps of a long run decode in;
* ``Leech`` — Λ24 from the catalog, the lattice a perfect run would end in.

Per lattice, the same uniform points (seeded) are decoded exactly by the core Schnorr–Euchner
decoder (:func:`latticeq.lattice.decode.sphere.decode_one`) on differently prepared bases, and the
mean number of search nodes and microseconds per point are reported:

* ``LLL`` — what SGD keeps (textbook LLL, δ = 0.99, then the Cholesky factor);
* ``BKZ-10`` / ``BKZ-20`` — fpylll's BKZ with those block sizes (a stronger reduction);
* ``dual-reversed`` — LLL on the dual basis, the rows of its dual taken in reverse order, so that
  the Gram–Schmidt lengths grow towards the level the search starts at (the "detect the strongest
  layer first" ordering of MIMO sphere decoders).

Then, on the LLL basis, the initial search radius: the core decoder starts from Babai's point and
shrinks the radius at every better leaf. ``oracle radius`` starts with the radius of the true
closest point (known from a first pass), the floor that any radius heuristic could reach;
``quantile radius`` starts with the 99.9 % quantile of earlier points' distances and falls back to
a full search when no point lies inside (a heuristic one could ship). Both run the core's
unconstrained search (``sphere._decode_free``) with its initial squared radius given.

Last, the split of one Python-loop step (the baseline) into decoding and everything else, which
bounds what removing the Python loop can give when the decoder is shared: ``(decode + rest) /
decode``.

Run: ``.venv/bin/python benchmarks/sgd_decode.py`` → ``benchmarks/sgd_decode.md``.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np
from numba import njit

from latticeq.design import _kernels as K
from latticeq.design.sgd import random_reduced_generator, sgd_python_step_reference
from latticeq.lattice import catalog
from latticeq.lattice.decode.sphere import BOUND_NONE, _decode_free, decode_one, make_workspace
from latticeq.lattice.lattice import Lattice

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = 4000


@njit(cache=True)
def _targets(Lt, samples, seed):
    """``samples`` points uniform in the fundamental parallelepiped of ``Lt`` (seeded)."""
    np.random.seed(seed)
    n = Lt.shape[0]
    X = np.empty((samples, n))
    z = np.empty(n)
    for r in range(samples):
        K.random_point(Lt, z, X[r])
    return X


@njit(cache=True)
def _decode_all(Lt, X):
    """Exact closest points of the rows of X by the core decoder: (squared distances, nodes)."""
    n = Lt.shape[0]
    inv = np.empty(n)
    for i in range(n):
        inv[i] = 1.0 / Lt[i, i]
    lo = np.full(n, -BOUND_NONE)
    hi = np.full(n, BOUND_NONE)
    S, dist, ctr, iw = make_workspace(n)
    bu = np.empty(n, dtype=np.int64)
    d2 = np.empty(X.shape[0])
    nodes = np.empty(X.shape[0], dtype=np.int64)
    for r in range(X.shape[0]):
        d, _, nd = decode_one(Lt, inv, X[r], lo, hi, 0, S, dist, ctr, iw, bu)
        d2[r] = d
        nodes[r] = nd
    return d2, nodes


@njit(cache=True)
def _radius_nodes(Lt, X, r2):
    """Mean nodes per point when each search starts at squared radius r2[i] (a full search follows
    where no point lies inside), and how many points needed that fallback."""
    n = Lt.shape[0]
    inv = np.empty(n)
    for i in range(n):
        inv[i] = 1.0 / Lt[i, i]
    S, dist, ctr, iw = make_workspace(n)
    bu = np.empty(n, dtype=np.int64)
    total = 0
    fallbacks = 0
    for r in range(X.shape[0]):
        d, _, nd = _decode_free(Lt, inv, X[r], 0, S, dist, ctr, iw, bu, r2[r])
        total += nd
        if d == np.inf:
            fallbacks += 1
            d, _, nd = _decode_free(Lt, inv, X[r], 0, S, dist, ctr, iw, bu, np.inf)
            total += nd
    return total / X.shape[0], fallbacks


def _triangular(B):
    """Lower-triangular generator of the rows of B, in their order (Cholesky of the Gram matrix)."""
    return np.linalg.cholesky(B @ B.T)


def _lll(B):
    B = np.array(B, dtype=np.float64, copy=True)
    K.lll_float(B, 0.99)
    return _triangular(B)


def _bkz(B, block):
    """Rows of a BKZ-``block`` reduced basis of the lattice of B (fpylll on B scaled to integers)."""
    from fpylll import BKZ, IntegerMatrix

    scale = 2.0**30 / np.abs(B).max()
    A = IntegerMatrix.from_matrix(np.rint(B * scale).astype(np.int64).tolist())
    BKZ.reduction(A, BKZ.Param(block, max_loops=8))
    M = np.array([[A[i, j] for j in range(A.ncols)] for i in range(A.nrows)], dtype=np.float64)
    U = np.rint(M / scale @ np.linalg.inv(B))  # the unimodular transform fpylll applied
    assert abs(abs(np.linalg.det(U)) - 1) < 1e-6
    return U @ B


def _dual_reversed(B):
    """Rows of the dual of an LLL-reduced dual basis, in reverse order."""
    D = np.linalg.inv(B).T.copy()
    K.lll_float(D, 0.99)
    return np.linalg.inv(D).T[::-1].copy()


def _lattices():
    out = [("random", random_reduced_generator(24, seed=1))]
    ours = ROOT / "results" / "lattices" / "n24-sgd-from-bw16xe8.json"
    if ours.exists():
        out.append(("ours (n24-sgd-from-bw16xe8)", Lattice.from_json(ours).generator))
    out.append(("Leech", catalog.get("Leech").generator))
    res = []
    for name, G in out:
        G = np.array(G, dtype=np.float64)
        G = G / abs(np.linalg.det(G)) ** (1 / 24)  # unit volume
        res.append((name, _lll(G)))
    return res


def _time_decode(Lt, X):
    _decode_all(Lt, X[:10])
    t = time.perf_counter()
    d2, nodes = _decode_all(Lt, X)
    return d2, nodes.mean(), 1e6 * (time.perf_counter() - t) / len(X)


def main():
    lines = ["# Closest-point search inside the n = 24 SGD step (benchmarks/sgd_decode.py)", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other jobs; one thread. "
             f"{SAMPLES} uniform points per lattice (seeded), the same points for every basis of a lattice; "
             "all bases give the same distances (checked). Node counts are exact and repeatable; the "
             "timings move with the machine's load.", "",
             "## Basis reduction and ordering (core decoder, exact)", "",
             "| lattice | basis | nodes / point | µs / point | saving in nodes vs LLL |", "|---|---|---:|---:|---:|"]
    radius_rows = []
    for name, Lt in _lattices():
        X = _targets(Lt, SAMPLES, 7)
        ref_d2, ref_nodes, ref_us = _time_decode(Lt, X)
        rows = [("LLL (what SGD keeps)", ref_nodes, ref_us)]
        for label, prep in (("BKZ-10", lambda B: _bkz(B, 10)), ("BKZ-20", lambda B: _bkz(B, 20)),
                            ("dual-reversed LLL", _dual_reversed)):
            M = prep(Lt)  # new basis rows, in Lt's frame
            L2 = _triangular(M)  # = M Qᵀ with Q = L2⁻¹ M orthogonal: targets move by Qᵀ too
            X2 = X @ (np.linalg.solve(L2, M)).T
            d2, nodes, us = _time_decode(L2, X2)
            if not np.allclose(d2, ref_d2, rtol=1e-9, atol=1e-12):
                raise AssertionError(f"{name} {label}: distances differ from the LLL basis's")
            rows.append((label, nodes, us))
        for label, nodes, us in rows:
            lines.append(f"| {name} | {label} | {nodes:,.0f} | {us:,.1f} | {ref_nodes / nodes:.2f}× |")
        oracle, _ = _radius_nodes(Lt, X, ref_d2 * (1 + 1e-9))
        q = np.quantile(_decode_all(Lt, _targets(Lt, SAMPLES, 8))[0], 0.999)
        quant, fb = _radius_nodes(Lt, X, np.full(len(X), q))
        radius_rows.append((name, ref_nodes, oracle, quant, fb))
    lines += ["", "## Initial search radius (LLL basis)", "",
              "| lattice | from Babai's point (core) | oracle radius (floor) | 99.9 % quantile radius | "
              "fallbacks | best possible saving |", "|---|---:|---:|---:|---:|---:|"]
    for name, ref, oracle, quant, fb in radius_rows:
        lines.append(f"| {name} | {ref:,.0f} | {oracle:,.0f} | {quant:,.0f} | {fb} / {SAMPLES} | "
                     f"{ref / oracle:.2f}× |")
    lines += ["", "## One Python-loop step at n = 24 (the baseline of benchmarks/sgd.py)", ""]
    # the baseline's run (20 000 steps at step size 0.005 from the random start) in 20 pieces of
    # 1 000 steps; the decoder's share is timed on the lattice each piece starts from, since
    # decoding gets dearer as SGD improves the lattice
    B = random_reduced_generator(24, seed=1)
    sgd_python_step_reference(B, 100, 0.005)
    step_s = dec_us = 0.0
    for piece in range(20):
        _, _, us = _time_decode(B, _targets(B, 500, 100 + piece))
        dec_us += us / 20
        t = time.perf_counter()
        B = sgd_python_step_reference(B, 1000, 0.005, seed=piece)
        step_s += time.perf_counter() - t
    us_step = 1e6 * step_s / 20_000
    ceiling = us_step / dec_us
    lines += ["| part | µs / step |", "|---|---:|",
              f"| closest point (core decoder, on the lattices the run passes through) | {dec_us:,.1f} |",
              f"| everything else (sampling, update, LLL every 100 steps, Python) | {us_step - dec_us:,.1f} |",
              f"| whole step | {us_step:,.1f} |", "",
              f"Compiling everything but the decoder can make the step at most **{ceiling:.2f}×** the "
              "baseline, since both use the same core decoder; a faster core decoder speeds up both.", ""]
    text = "\n".join(lines) + "\n"
    print(text)
    (ROOT / "benchmarks" / "sgd_decode.md").write_text(text)


if __name__ == "__main__":
    main()
