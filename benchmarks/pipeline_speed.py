"""Where the time of ``latticeq quantize smollm2`` goes: wall and quantization time of RTN and
GPTQ (3-bit g128 act-order, 128 × 512 calibration tokens) end to end, each run under cProfile
with its top entries, and the named baseline timed in the same run: the transcribed reference
GPTQ (IST-DASLab ``gptq.py``, float32, one call per layer) on the first block's seven layers
against latticeq's GPTQ on the same Hessians. Writes ``benchmarks/pipeline_speed.md``.

Usage: ``python benchmarks/pipeline_speed.py [--runs rtn,gptq] [--top 12]``
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import tempfile
import time
from pathlib import Path

import torch

from latticeq import __version__
from latticeq.io import atomic_write_text

RUNS = {
    "rtn": ["--bits", "4", "--group-size", "128", "--method", "rtn"],
    "gptq": ["--bits", "3", "--group-size", "128", "--act-order", "--method", "gptq"],
    "gptq+refine+refit --mse": ["--bits", "3", "--group-size", "128", "--act-order", "--mse",
                                "--method", "gptq+refine+refit"],
}


def profiled_run(args, top):
    from click.testing import CliRunner

    from latticeq.cli import main

    out = Path(tempfile.mkdtemp()) / "q"
    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    r = CliRunner().invoke(main, ["quantize", "smollm2", *args, "--out", str(out), "--no-progress"])
    prof.disable()
    wall = time.perf_counter() - t
    if r.exit_code != 0:
        raise RuntimeError(r.output)
    rec = json.loads((out / "latticeq_record.json").read_text())
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    rows = [ln for ln in buf.getvalue().splitlines() if ln.strip() and ln.strip()[0].isdigit()]
    return wall, rec["quant_time_s"], rows


def reference_rows():
    """Reference GPTQ vs ours on block 0's layers (Hessians recorded on the fly, 32 × 512)."""
    from latticeq.nn.grid import Grid
    from latticeq.nn.hessians import load_layers, record_hessians
    from latticeq.nn.layer import LayerProblem
    from latticeq.nn.solvers import solve
    from latticeq.nn.solvers.reference import reference_gptq

    folder = record_hessians("smollm2", blocks=[0], nsamples=32, seqlen=512, progress=False)
    ours = ref = 0.0
    for name, W, H in load_layers(folder):
        Wt, Ht = torch.from_numpy(W).float(), torch.from_numpy(H).float()
        P = LayerProblem(Wt.double(), Ht.double())
        t = time.perf_counter()
        solve(P, Grid(3, group_size=128), "gptq", act_order=True)
        ours += time.perf_counter() - t
        t = time.perf_counter()
        reference_gptq(Wt, Ht, bits=3, groupsize=128, actorder=True)
        ref += time.perf_counter() - t
    return ours, ref


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="rtn,gptq")
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".md")))
    a = ap.parse_args()
    runs = [r for r in a.runs.split(",") if r]
    if any(r not in RUNS for r in runs) or a.top < 1:
        ap.error(f"runs must be among {list(RUNS)}; --top >= 1")
    lines = ["# Where the time of `latticeq quantize smollm2` goes", "",
             f"latticeq {__version__}; torch threads {torch.get_num_threads()}; {os.cpu_count()} CPUs; "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Each run under cProfile (which adds "
             "overhead to Python-heavy parts); 128 × 512 calibration tokens.", "",
             "| run | wall (s) | quantization (s) |", "|---|---:|---:|"]
    profiles = []
    for r in runs:
        wall, quant, rows = profiled_run(RUNS[r], a.top)
        lines.append(f"| {r} ({' '.join(RUNS[r])}) | {wall:.0f} | {quant:.0f} |")
        profiles.append((r, rows))
        print(lines[-1], flush=True)
    ours, ref = reference_rows()
    lines += ["", f"Named baseline, same run: GPTQ solver on block 0's seven layers (3-bit g128 act-order): "
              f"latticeq {ours:.2f} s (float64), reference transcription {ref:.2f} s (float32) — "
              f"{ref / ours:.2f}× the reference's speed.", ""]
    for r, rows in profiles:
        lines += [f"## Top {a.top} entries by own time: {r}", "", "```", *rows, "```", ""]
    atomic_write_text(a.out, "\n".join(lines))
    print(f"-> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
