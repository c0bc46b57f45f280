"""Where the time of ``latticeq quantize smollm2`` goes: wall and quantization time of RTN,
GPTQ (3-bit g128 act-order, 128 × 512 calibration tokens) and ``gptq+refine+refit --mse`` end to
end against the issue's targets (plain runs, no profiler), the top entries of cProfile runs
(``--profile``), and the named baseline timed in the same run: the transcribed reference GPTQ
(IST-DASLab ``gptq.py``, float32, one call per layer) on the first block's seven layers against
latticeq's GPTQ on the same Hessians. Writes ``benchmarks/pipeline_speed.md``; the profile of
an earlier version kept under "before" in that file is carried over.

Usage: ``python benchmarks/pipeline_speed.py [--runs rtn,gptq,refit] [--profile gptq] [--top 12]``
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
    "refit": ["--bits", "3", "--group-size", "128", "--act-order", "--mse", "--method", "gptq+refine+refit"],
}
#: the issue's targets: (what is measured, limit in seconds or a multiple of GPTQ's wall time)
TARGETS = {"rtn": ("quantization", 20.0), "gptq": ("wall", 300.0), "refit": ("wall", "2× gptq")}


def run(args, top=None):
    """``latticeq quantize smollm2 ARGS`` in this process: (wall s, quantization s, profile rows
    or None). With ``top``, under cProfile."""
    from click.testing import CliRunner

    from latticeq.cli import main

    out = Path(tempfile.mkdtemp()) / "q"
    prof = cProfile.Profile() if top else None
    t = time.perf_counter()
    if prof:
        prof.enable()
    r = CliRunner().invoke(main, ["quantize", "smollm2", *args, "--out", str(out), "--no-progress"])
    if prof:
        prof.disable()
    wall = time.perf_counter() - t
    if r.exit_code != 0:
        raise RuntimeError(r.output)
    rec = json.loads((out / "latticeq_record.json").read_text())
    rows = None
    if prof:
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
        rows = [ln for ln in buf.getvalue().splitlines() if ln.strip() and ln.strip()[0].isdigit()]
    return wall, rec["quant_time_s"], rows


def earlier_profiles(path: Path) -> list[str]:
    """The "before" section of an earlier table (kept as it was), or its profiles as "before"."""
    if not path.is_file():
        return []
    text = path.read_text()
    if "\n# Before\n" in text:
        return text[text.index("\n# Before\n") + 1:].splitlines()
    if "\n## Top " not in text:
        return []
    head = text.splitlines()[2] if len(text.splitlines()) > 2 else ""
    body = text[text.index("\n## Top ") + 1:]
    return ["# Before", "", f"The profiles of the previous version of this table ({head.split('. ')[0]}):", "",
            *body.replace("## Top", "### Top").splitlines()]


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
    ap.add_argument("--runs", default="rtn,gptq,refit", help=f"timed runs, among {list(RUNS)}")
    ap.add_argument("--profile", default="gptq", help="runs also profiled (comma-separated; '' for none)")
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".md")))
    a = ap.parse_args()
    runs = [r for r in a.runs.split(",") if r]
    prof_runs = [r for r in a.profile.split(",") if r]
    if any(r not in RUNS for r in runs + prof_runs) or a.top < 1:
        ap.error(f"runs must be among {list(RUNS)}; --top >= 1")
    before = earlier_profiles(Path(a.out))
    lines = ["# Where the time of `latticeq quantize smollm2` goes", "",
             f"latticeq {__version__}; torch threads {torch.get_num_threads()}; {os.cpu_count()} CPUs; "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. 128 × 512 calibration tokens; plain runs "
             "(no profiler), in one process, in this order.", "",
             "| run | flags | wall (s) | quantization (s) | target | met |", "|---|---|---:|---:|---|---|"]
    walls = {}
    for r in runs:
        wall, quant, _ = run(RUNS[r])
        walls[r] = wall
        what, limit = TARGETS[r]
        if isinstance(limit, str):
            base = walls.get("gptq")
            ok = "—" if base is None else ("yes" if wall <= 2 * base else "no")
            target = f"wall ≤ {limit} ({2 * base:.0f} s)" if base else f"wall ≤ {limit}"
        else:
            ok = "yes" if (quant if what == "quantization" else wall) < limit else "no"
            target = f"{what} < {limit:.0f} s"
        lines.append(f"| {r} | `{' '.join(RUNS[r])}` | {wall:.0f} | {quant:.0f} | {target} | {ok} |")
        print(lines[-1], flush=True)
    profiles = []
    for r in prof_runs:
        wall, quant, rows = run(RUNS[r], a.top)
        profiles.append((r, wall, quant, rows))
    ours, ref = reference_rows()
    lines += ["", f"Named baseline, same run: GPTQ solver on block 0's seven layers (3-bit g128 act-order): "
              f"latticeq {ours:.2f} s (float64), reference transcription {ref:.2f} s (float32) — "
              f"{ref / ours:.2f}× the reference's speed.", ""]
    for r, wall, quant, rows in profiles:
        lines += [f"## Top {a.top} entries by own time: {r} under cProfile (wall {wall:.0f} s, quantization "
                  f"{quant:.0f} s; the profiler adds overhead to Python-heavy parts)", "", "```", *rows, "```", ""]
    lines += before
    atomic_write_text(a.out, "\n".join(lines) + "\n")
    print(f"-> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
