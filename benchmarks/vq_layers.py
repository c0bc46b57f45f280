"""Lattice codebooks on real layers: block Babai with Voronoi codes against the best scalar
configuration, on the SmolLM2-135M layers recorded by ``latticeq record-hessians`` (q, k, v, o,
gate, up, down of blocks 0, 15, 29; Austen calibration, Pride and Prejudice held out).

Rows, at each rate (bits per dimension):
* GPTQ act-order, min–max grid, per-channel — the named baseline (error ratio 1, time ratio 1);
* scalar best: MSE-clipped grid, ``gptq+refine+refit``, per-channel (today's best scalar);
* ``e8p`` (the 2^16-point ball of E8 + ¼; at 3 bits + E8/2E8 on the residual, at 4 bits + a
  second e8p stage), with randomized Hadamard incoherence;
* Voronoi codes ``Λ/2^bΛ`` over Z (the scalar grid as a centred 1-D code, with incoherence and
  least-squares scales), D4, E8, BW16, Leech and our own n = 16 lattice
  (``results/lattices/n16-sgd.json``), with randomized Hadamard incoherence;
* ``e8p`` and D4 followed by block coordinate descent (``--method gptq+refine``: each block
  re-encoded at its exact conditional optimum, kept where the objective drops);
* ablations on E8: no incoherence; no error feedback.

A speed section times GPTQ, ``e8p`` and the Voronoi E8 code on one 1536 × 576 layer (b15.up),
best of three, in the same run.

Reported: mean relative layer error ``tr((W−Q)H(W−Q)ᵀ)/tr(WHWᵀ)``, its ratio to the scalar best
and to GPTQ, mean bits per weight (everything stored counted), and time per layer relative to
GPTQ in the same run. Results are checkpointed per (layer, row) in a JSON file (a rerun resumes)
and the table goes to ``benchmarks/vq_layers.md``.

Usage: ``python benchmarks/vq_layers.py [--bits 2,3,4] [--folder DIR] [--rows ...]``
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from latticeq import __version__
from latticeq.io import atomic_write_json, atomic_write_text
from latticeq.lattice.codebook import parse_codebook
from latticeq.nn.grid import Grid
from latticeq.nn.hessians import DEFAULT_DIR, load_layers
from latticeq.nn.layer import LayerProblem
from latticeq.nn.solvers import solve
from latticeq.nn.solvers.vq import vq_solve

#: label -> (kind, codebook spec for parse_codebook, options)
ROWS = {
    "gptq": ("scalar", None, {}),
    "scalar best: mse grid gptq+refine+refit": ("scalar-best", None, {}),
    "e8p": ("codebook", "e8p", {}),
    "e8p + block descent": ("codebook", "e8p", {"refine_passes": 20}),
    "voronoi Z (incoherent)": ("codebook", "voronoi:Z1", {}),
    "voronoi D4": ("codebook", "voronoi:D4", {}),
    "voronoi D4 + block descent": ("codebook", "voronoi:D4", {"refine_passes": 20}),
    "voronoi E8": ("codebook", "voronoi:E8", {}),
    "voronoi BW16": ("codebook", "voronoi:BW16", {}),
    "voronoi Leech": ("codebook", "voronoi:Leech", {}),
    "voronoi n16 (ours)": ("codebook", "voronoi:results/lattices/n16-sgd.json", {}),
    "E8 without incoherence": ("codebook", "voronoi:E8", {"incoherence": False}),
    "E8 without error feedback": ("codebook", "voronoi:E8", {"feedback": False}),
}


def speed(P, bits=2, repeats=3):
    """Best-of-``repeats`` seconds of GPTQ, e8p and the Voronoi E8 code on one layer, same run."""
    out = {}
    for label, fn in (("gptq", lambda: solve(P, Grid(bits), "gptq", act_order=True)),
                      ("e8p", lambda: vq_solve(P, parse_codebook("e8p", bits), act_order=True)),
                      ("voronoi E8", lambda: vq_solve(P, parse_codebook("voronoi:E8", bits), act_order=True))):
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        out[label] = min(times)
    return out


def run_one(kind, spec, opts, P, bits):
    t = time.perf_counter()
    m, n = P.W.shape
    if kind == "scalar":
        s = solve(P, Grid(bits), "gptq", act_order=True)
        rel, bpw = s.relative_error, bits + (16 + bits) / n + 32 / m
    elif kind == "scalar-best":
        s = solve(P, Grid(bits, mse=True), "gptq+refine+refit", act_order=True)
        rel, bpw = s.relative_error, bits + (16 + bits) / n + 32 / m
    else:
        C = parse_codebook(spec, bits)
        s = vq_solve(P, C, act_order=True, seed=0, **opts)
        rel, bpw = s.relative_error, s.bits_per_weight
    return {"rel": float(rel), "bpw": float(bpw), "seconds": time.perf_counter() - t}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bits", default="2,3,4")
    ap.add_argument("--folder", default=str(Path(DEFAULT_DIR) / "smollm2-n64-l512-s0"),
                    help="recorded Hessians (default: SmolLM2, 64 × 512 tokens, seed 0)")
    ap.add_argument("--rows", default=",".join(ROWS),
                    help="comma-separated row labels to run (the table shows every row with results)")
    ap.add_argument("--state", default=str(Path(__file__).with_name("vq_layers.json")))
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".md")))
    ap.add_argument("--no-speed", action="store_true", help="skip the speed section (kept from the state file)")
    ap.add_argument("--layers", default=None,
                    help="comma-separated layer names to run (default: all; the table is built from every "
                         "result in the state file, each ratio over the layers its row has)")
    a = ap.parse_args()
    bits_list = [int(b) for b in a.bits.split(",")]
    rows = [r for r in a.rows.split(",") if r]
    bad = [r for r in rows if r not in ROWS]
    if bad or any(not 1 <= b <= 8 for b in bits_list):
        ap.error(f"unknown rows {bad} or bits outside 1..8; rows: {list(ROWS)}")
    torch.set_num_threads(1)
    state = json.loads(Path(a.state).read_text()) if Path(a.state).exists() else {}
    layers = list(load_layers(a.folder))
    folder = Path(a.folder)
    if state.get("_folder", folder.name) != folder.name:
        ap.error(f"{a.state} holds results for Hessians {state['_folder']!r}, not {folder.name!r}; "
                 "pass another --state")
    state["_folder"] = folder.name
    if not a.no_speed or "_speed" not in state:
        name, W, H = next(x for x in layers if x[0] == "b15.up")
        P = LayerProblem(torch.from_numpy(np.asarray(W, dtype=np.float64)), torch.from_numpy(np.asarray(H)))
        state["_speed"] = {"layer": name, "shape": list(np.shape(W)), "seconds": speed(P),
                           "time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        atomic_write_json(a.state, state)
        print("speed:", state["_speed"], flush=True)
    run_names = None if a.layers is None else set(a.layers.split(","))
    for b in bits_list:
        for name, W, H in layers:
            if run_names is not None and name not in run_names:
                continue
            P = LayerProblem(torch.from_numpy(np.asarray(W, dtype=np.float64)), torch.from_numpy(np.asarray(H)))
            for r in rows:
                key = f"{b}|{name}|{r}"
                if key in state:
                    continue
                kind, lat, opts = ROWS[r]
                try:
                    state[key] = run_one(kind, lat, opts, P, b)
                except ValueError as exc:  # a rate the codebook cannot provide
                    print(f"{b}-bit {r}: skipped ({exc})", flush=True)
                    continue
                atomic_write_json(a.state, state)
                print(f"{b}-bit {name:28s} {r:40s} rel {state[key]['rel']:.4f}  {state[key]['seconds']:.1f} s", flush=True)
    lines = ["# Lattice codebooks on real SmolLM2 layers", "",
             f"{len(layers)} layers (q, k, v, o, gate, up, down of blocks 0, 15, 29; Hessians from "
             "`latticeq record-hessians`: 64 × 512 Austen tokens). Mean relative layer error over the layers; "
             "ratios of the means. Per-channel scales everywhere; bits per weight count codes, fp16 scales, "
             "the scalar grid's zeros and g_idx. Time: mean seconds per layer ÷ GPTQ's, one thread, same run — "
             "except the `+ block descent` rows, added in a later run (2026-12-02, beside two other jobs on the "
             "2-core machine): their time ratios are against GPTQ's earlier times and overstate their cost.", ""]
    for b in bits_list:
        def vals(r, k, names):
            return np.array([state[f"{b}|{n}|{r}"][k] for n in names])

        lines += [f"## {b} bits per dimension", "",
                  "| codebook / solver | layers | mean rel. error | ÷ scalar best | ÷ GPTQ | ÷ e8p (same layers) | "
                  "bits/weight | time ÷ GPTQ |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in ROWS:  # every row with results in the state, not only this run's --rows
            # every ratio over the layers this row has (all three rows present there)
            names = [n for n, _, _ in layers if all(f"{b}|{n}|{x}" in state for x in
                                                     (r, "gptq", "scalar best: mse grid gptq+refine+refit"))]
            if not names:
                continue
            rel = vals(r, "rel", names).mean()
            sb = vals("scalar best: mse grid gptq+refine+refit", "rel", names).mean()
            g = vals("gptq", "rel", names).mean()
            t = vals(r, "seconds", names).mean() / vals("gptq", "seconds", names).mean()
            e8 = [n for n in names if f"{b}|{n}|e8p" in state]
            ve = "—" if len(e8) < len(names) else f"{rel / vals('e8p', 'rel', names).mean():.3f}"
            lines.append(f"| {r} | {len(names)} | {rel:.5f} | {rel / sb:.3f} | {rel / g:.3f} | {ve} | "
                         f"{vals(r, 'bpw', names).mean():.3f} | {t:.1f}× |")
        lines.append("")
    lines += ["Rows with fewer layers (Leech and our n = 16 lattice: block 15 only, for time) are compared on "
              "their own layers in every ratio column.", ""]
    sp = state["_speed"]
    lines += ["## Speed", "",
              f"One {sp['shape'][0]} × {sp['shape'][1]} layer ({sp['layer']}) at 2 bits, best of three, one thread, "
              f"same run ({sp['time']}):", "",
              "| solver | seconds | ÷ GPTQ |", "|---|---:|---:|"]
    for k, v in sp["seconds"].items():
        lines.append(f"| {k} | {v:.2f} | {v / sp['seconds']['gptq']:.1f}× |")
    lines.append("")
    lines += [f"latticeq {__version__}, {platform.processor() or platform.machine()}, "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", ""]
    atomic_write_text(a.out, "\n".join(lines))
    print(f"-> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
