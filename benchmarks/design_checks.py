"""The seed paper's open checks 2 and 3: runtime analysis and ablations of lattice fusion.

Zhang, Cao, Li, Yu (arXiv 2502.06887) leave open (2) how the methods' run time grows with n and
(3) what the learned orthogonal transform adds. One campaign of traced runs answers both:

* **Runtime** — wall time, and time to reach within 0.1 % of the run's final NSM, for
  orthogonal splicing, SGD (Agrell–Allen, random start), Householder, Matrix-Exp (orthogonal)
  and Matrix-Exp (free), against n → ``results/runtime.md`` and the log-log plot
  ``results/runtime.png``.
* **Starts** (issue 17: "fuse more than two components"): free Matrix-Exp from the best product
  of exactly three catalog lattices, against the same method from the best splice (two
  components at n = 13, 17, 21), same budget → a second table in ``results/ablations.md``.
* **Ablations** at one step budget (the fusion ``fast`` preset: 600 Adam steps of 1024 points)
  → ``results/ablations.md``: fusion with M fixed to I (learned scales only); a random orthogonal
  M (Haar, the best of K on a quick estimate, then scales learned); Householder; Matrix-Exp;
  free Matrix-Exp.

Tracing: after every chunk of optimizer steps the current generator is scored on one fixed set
of probe points z ~ U[0,1)ⁿ (x = zB: common random numbers, so the trace is smooth along a run);
probing is excluded from the timed optimizer time. "Time to 0.1 %" is the optimizer time after
which every later probe is within 0.1 % of the last one. Final NSMs are fresh Monte Carlo
estimates (exact decoding) on ``--samples`` points. Every run is one JSON record in
``results/design-checks/`` (with its generator), written atomically; a rerun skips finished
runs (same settings), so the campaign resumes.

    python benchmarks/design_checks.py [--dims 13,17,21] [--samples 500000] [--tables-only]
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from latticeq import __version__
from latticeq.design import fusion as F
from latticeq.design import sgd as S
from latticeq.design.search import FUSION_PRESETS, estimate_nsm_mc
from latticeq.design.splice import best_splice
from latticeq.io import atomic_savefig, atomic_write_json, atomic_write_text
from latticeq.lattice.decode.sphere import closest_coords

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "results" / "design-checks"
FUSION = ("householder", "matrix-exp", "matrix-exp-free")
ABLATIONS = ("scales-only", "random-orthogonal")
STARTS = ("three-components",)
VARIANTS = ("splice", "sgd") + FUSION + ABLATIONS + STARTS
LABEL = {"splice": "orthogonal splice", "sgd": "SGD (Agrell–Allen, random start)",
         "householder": "Householder", "matrix-exp": "Matrix-Exp (orthogonal)",
         "matrix-exp-free": "Matrix-Exp (free)", "scales-only": "M = I (scales only)",
         "random-orthogonal": "random orthogonal M (best of K)",
         "three-components": "Matrix-Exp (free) from the best 3-component splice"}
PROBES = 20_000
FUSION_CHUNK = 50      # optimizer steps between probes
SGD_CHUNK = 50_000
K_RANDOM = 8


def _log(msg):
    print(f"[{dt.datetime.now():%H:%M:%S}] {msg}", flush=True)


class Probe:
    """NSM of a generator on fixed points z ~ U[0,1)ⁿ (x = zB), exact decoding."""

    def __init__(self, n, seed=12345):
        self.Z = np.random.default_rng([seed, n]).random((PROBES, n))

    def __call__(self, B):
        """The fusion loss's computation (``fusion._reduction``, closest coordinates) on the probes."""
        B = np.asarray(B, dtype=np.float64)
        n = B.shape[0]
        U, Uinv, Lt = F._reduction(B)
        ur, _, _ = closest_coords(Lt, (self.Z @ Uinv) @ Lt)
        E = (self.Z - ur @ U) @ B
        vol = abs(np.linalg.det(B))
        return float(np.mean(np.sum(E * E, axis=1)) / n / vol ** (2.0 / n))


def settings(n, variant, samples):
    base = {"n": n, "variant": variant, "samples": samples, "probes": PROBES, "seed": 0}
    if variant in FUSION + ABLATIONS + STARTS:
        base.update(FUSION_PRESETS["fast"], chunk=FUSION_CHUNK)
        if variant == "random-orthogonal":
            base["k"] = K_RANDOM
    elif variant == "sgd":
        p = S.PRESETS["fast"]
        base.update(steps=p.steps, mu0=p.mu0, nu=p.nu, chunk=SGD_CHUNK)
    return base


def _trace_fusion(state, probe):
    trace = [[0.0, 0, probe(F.fused_generator(state))]]
    while state.step < state.steps:
        F.fusion_advance(state, FUSION_CHUNK)
        trace.append([state.wall_time, state.step, probe(F.fused_generator(state))])
    return F.fused_generator(state), trace, state.wall_time


def best_splice_of(n, k):
    """The best optimally scaled product of exactly ``k`` catalog lattices in dimension ``n``
    (every multiset of the catalog's best lattice per dimension whose dimensions sum to n)."""
    import itertools

    from latticeq.design.splice import Splice, best_per_dimension, product_nsm

    best_of_dim = best_per_dimension(n)
    best = None
    for dims in itertools.combinations_with_replacement(sorted(best_of_dim, reverse=True), k):
        if sum(dims) != n:
            continue
        nsms = tuple(best_of_dim[d][0] for d in dims)
        g = product_nsm(nsms, dims)
        if best is None or g < best.nsm:
            best = Splice(tuple(best_of_dim[d][1] for d in dims), tuple(dims), nsms, g)
    if best is None:
        raise ValueError(f"no product of {k} catalog lattices has dimension {n}")
    return best


def run_one(n, variant, samples):
    cfg = settings(n, variant, samples)
    probe = Probe(n)
    best_splice(2)  # the catalog's NSM table is built once per process: not part of any method's time
    t0 = time.perf_counter()
    sp = best_splice_of(n, 3) if variant == "three-components" else best_splice(n)
    t_splice = time.perf_counter() - t0
    extra = {}
    if variant == "splice":
        B, trace, opt_time = sp.lattice().generator, None, t_splice
    elif variant == "sgd":
        st = S.sgd_start(n, preset="fast", seed=cfg["seed"])
        trace = [[0.0, 0, probe(st.generator)]]
        while st.step < st.steps:
            S.sgd_advance(st, SGD_CHUNK)
            trace.append([st.wall_time, st.step, probe(st.generator)])
        B, opt_time = st.generator, st.wall_time
    else:
        kw = dict(FUSION_PRESETS["fast"], seed=cfg["seed"])
        if variant in FUSION:
            st = F.fusion_start(sp.lattice(), method=variant, **kw)
        elif variant == "three-components":
            st = F.fusion_start(sp.lattice(), method="matrix-exp-free", **kw)
        elif variant == "scales-only":
            st = F.fusion_start(sp.lattice(), method="matrix-exp", noise=0.0, train_mixing=False, **kw)
        else:  # random orthogonal: Haar matrices, the best of K on the probe points
            t1 = time.perf_counter()
            cands = []
            for k in range(K_RANDOM):
                G = np.random.default_rng([cfg["seed"], n, k]).standard_normal((n, n))
                Q, R = np.linalg.qr(G)
                Q = Q * np.sign(np.diag(R))  # Haar-distributed
                st_k = F.fusion_start(sp.lattice(), method="matrix-exp", noise=0.0, train_mixing=False,
                                      mixing_fixed=Q, **kw)
                cands.append((probe(F.fused_generator(st_k)), k, st_k))
            g, k, st = min(cands, key=lambda c: c[0])
            extra = {"candidates": [c[0] for c in cands], "chosen": k,
                     "selection_seconds": time.perf_counter() - t1}
        B, trace, opt_time = _trace_fusion(st, probe)
        if variant == "random-orthogonal":
            opt_time += extra["selection_seconds"]
    g, se = estimate_nsm_mc(B, samples, seed=777)
    return {"format": "latticeq.design-check/1", "settings": cfg, "nsm": g, "stderr": se,
            "splice_nsm": sp.nsm, "components": list(sp.components), "optimizer_seconds": opt_time,
            "splice_seconds": t_splice, "trace": trace, "time_to_0.1%": _time_to(trace, opt_time),
            "generator": np.asarray(B).tolist(), **extra, "latticeq": __version__,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def _time_to(trace, total):
    """Optimizer time after which every probe stays within 0.1 % of the last one."""
    if not trace:
        return total
    final = trace[-1][2]
    t = trace[-1][0]
    for tt, _, g in reversed(trace):
        if abs(g - final) > 1e-3 * final:
            break
        t = tt
    return t


def _path(n, variant):
    return RUNS / f"n{n}-{variant}.json"


def load(n, variant, samples):
    import json

    p = _path(n, variant)
    if not p.exists():
        return None
    try:
        d = json.loads(p.read_text())
    except ValueError:
        print(f"warning: skipping unreadable record {p}", file=sys.stderr)
        return None
    return d if d.get("settings") == settings(n, variant, samples) else None


def tables(dims, samples):
    recs = {(n, v): load(n, v, samples) for n in dims for v in VARIANTS}
    stamp = f"latticeq {__version__}, {platform.machine()} with {os.cpu_count()} cores (shared), " \
            f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d}"
    # ablations
    cols = ("scales-only", "random-orthogonal") + FUSION
    lines = ["# Ablations: what the learned transform adds to fusion (open check 3 of arXiv 2502.06887)", "",
             f"One step budget for every learned variant: {FUSION_PRESETS['fast']['steps']} Adam steps of "
             f"{FUSION_PRESETS['fast']['batch']} points (the fusion `fast` preset), seed 0, starting from the "
             "best orthogonal splice. NSM on "
             f"{samples:.0e} fresh points (exact decoding) ± standard error; in brackets the gain over the "
             "splice in standard errors.", "",
             "| n | splice | " + " | ".join(LABEL[c] for c in cols) + " |", "|---|---|" + "---|" * len(cols)]
    for n in dims:
        sp = recs[(n, "splice")] or recs.get((n, cols[0]))
        row = [str(n), f"{sp['splice_nsm']:.7f} ({'×'.join(sp['components'])})" if sp else "—"]
        for c in cols:
            r = recs[(n, c)]
            if r is None:
                row.append("not run")
                continue
            row.append(f"{r['nsm']:.7f} ± {r['stderr']:.1e} [{(r['splice_nsm'] - r['nsm']) / r['stderr']:+.0f}σ]")
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Random orthogonal M: K = 8 Haar matrices, scored on the probe points with the splice's "
              "scales; the best one is kept fixed and the scales are learned with the same budget.", "",
              "## Starts: fusing more than two components", "",
              "Free Matrix-Exp, same budget and seed, from the best product of exactly three catalog "
              "lattices against from the best splice; the last column is (from the splice − from three "
              "components) in combined standard errors (positive: three components end lower).", "",
              "| n | best splice | free Matrix-Exp from it | best 3-component product | free Matrix-Exp from it | difference |",
              "|---|---|---|---|---|---:|"]
    for n in dims:
        two, three = recs[(n, "matrix-exp-free")], recs[(n, "three-components")]
        if two is None or three is None:
            lines.append(f"| {n} | not run | | | | |")
            continue
        d = (two["nsm"] - three["nsm"]) / math.hypot(two["stderr"], three["stderr"])
        lines.append(f"| {n} | {two['splice_nsm']:.7f} ({'×'.join(two['components'])}) | {two['nsm']:.7f} ± "
                     f"{two['stderr']:.1e} | {three['splice_nsm']:.7f} ({'×'.join(three['components'])}) | "
                     f"{three['nsm']:.7f} ± {three['stderr']:.1e} | {d:+.1f}σ |")
    lines += ["",
              f"Records: `results/design-checks/`. Generated by `benchmarks/design_checks.py` ({stamp}).", ""]
    atomic_write_text(ROOT / "results" / "ablations.md", "\n".join(lines))
    # runtime
    rt = ("splice", "sgd") + FUSION
    lines = ["# Runtime analysis (open check 2 of arXiv 2502.06887)", "",
             "Optimizer wall time of one run (one thread, probes excluded) and the time after which the "
             "run's NSM stays within 0.1 % of its final value (traced on 20 000 fixed probe points), with "
             f"the final NSM ({samples:.0e} fresh points). SGD: Agrell–Allen Algorithm 1, `fast` preset "
             f"({S.PRESETS['fast'].steps:.0e} steps, μ0 = {S.PRESETS['fast'].mu0}, ν = {S.PRESETS['fast'].nu:g}) "
             "from a random reduced basis; fusion: `fast` preset from the best splice; splice: the dynamic "
             "program over catalog lattices (its NSM is exact).", "",
             "| n | method | wall time (s) | time to 0.1 % (s) | NSM |", "|---|---|---:|---:|---|"]
    for n in dims:
        for v in rt:
            r = recs[(n, v)]
            if r is None:
                lines.append(f"| {n} | {LABEL[v]} | not run | | |")
                continue
            nsm = f"{r['splice_nsm']:.7f} (exact)" if v == "splice" else f"{r['nsm']:.7f} ± {r['stderr']:.1e}"
            lines.append(f"| {n} | {LABEL[v]} | {r['optimizer_seconds']:.3g} | {r['time_to_0.1%']:.3g} | {nsm} |")
    fits = []
    for v in rt[1:]:
        pts = [(n, recs[(n, v)]["optimizer_seconds"]) for n in dims if recs[(n, v)]]
        if len(pts) >= 2:
            a = np.polyfit(np.log([p[0] for p in pts]), np.log([p[1] for p in pts]), 1)[0]
            fits.append(f"{LABEL[v]} ∝ n^{a:.1f}")
    if fits:
        lines += ["", "Log-log slopes of wall time against n over these dimensions: " + "; ".join(fits) + "."]
    lines += ["", f"Plot: `results/runtime.png`. Generated by `benchmarks/design_checks.py` ({stamp}).", ""]
    atomic_write_text(ROOT / "results" / "runtime.md", "\n".join(lines))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for i, v in enumerate(rt):
        pts = [(n, recs[(n, v)]) for n in dims if recs[(n, v)]]
        if not pts:
            continue
        ns, color = [p[0] for p in pts], f"C{i}"
        axes[0].loglog(ns, [p[1]["optimizer_seconds"] for p in pts], "o-", color=color, label=LABEL[v])
        if v != "splice":
            axes[1].loglog(ns, [max(p[1]["time_to_0.1%"], 1e-3) for p in pts], "o-", color=color, label=LABEL[v])
    for ax, t in zip(axes, ("wall time of one run", "time to within 0.1 % of the final NSM")):
        ax.set_xlabel("dimension n")
        ax.set_ylabel("seconds (one thread)")
        ax.set_title(t)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(list(dims))
        ax.set_xticklabels([str(d) for d in dims])
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    atomic_savefig(ROOT / "results" / "runtime.png", fig, dpi=120)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", default="13,17,21")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--samples", type=int, default=500_000)
    ap.add_argument("--tables-only", action="store_true")
    args = ap.parse_args()
    dims = [int(d) for d in args.dims.split(",")]
    variants = args.variants.split(",")
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise SystemExit(f"error: unknown variants {bad}; allowed: {', '.join(VARIANTS)}")
    if not args.tables_only:
        for n in dims:
            for v in variants:
                if load(n, v, args.samples) is not None:
                    _log(f"n={n} {v}: done earlier")
                    continue
                _log(f"n={n} {v}: running")
                rec = run_one(n, v, args.samples)
                atomic_write_json(_path(n, v), rec, indent=None, mkdir=True)
                _log(f"n={n} {v}: NSM {rec['nsm']:.7f} ± {rec['stderr']:.1e}, "
                     f"{rec['optimizer_seconds']:.1f} s, within 0.1 % after {rec['time_to_0.1%']:.1f} s")
                tables(dims, args.samples)
    tables(dims, args.samples)


if __name__ == "__main__":
    main()
