"""GPU benchmark: latticeq's GPTQ against the published reference on the same GPU, and a
whole-model run with ``--device cuda``. Writes ``benchmarks/gpu.md``.

1. GPTQ (3-bit, g128, act-order) on 4096×4096 and 11008×4096 layers (random weights, Hessian
   ``2XᵀX/N`` of correlated random inputs), float32 on the GPU, timed interleaved with the
   transcribed reference (:func:`latticeq.nn.solvers.reference.reference_gptq`, a per-column
   loop of torch operations, as IST-DASLab's ``gptq.py``): seconds per layer and the ratio, and
   whether the codes agree.
2. ``latticeq quantize smollm2 --bits 3 --group-size 128 --act-order --method gptq --device cuda``
   end to end (wall time and quantization time from its run record).

Needs a CUDA device; without one it says so and exits with status 3 (CI never runs it).
Usage: ``python benchmarks/gpu.py [--repeats 3] [--skip-model]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from latticeq.io import atomic_write_text
from latticeq.nn.grid import Grid
from latticeq.nn.layer import LayerProblem
from latticeq.nn.solvers import solve
from latticeq.nn.solvers.reference import reference_gptq

SHAPES = [(4096, 4096), (11008, 4096)]


def _problem(m, n, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    k = 2 * n
    mix = torch.randn(n, n, generator=g, device="cuda") / n ** 0.5
    X = torch.randn(k, n, generator=g, device="cuda") @ (torch.eye(n, device="cuda") + mix)
    H = 2 * X.T @ X / k
    W = 0.02 * torch.randn(m, n, generator=g, device="cuda")
    return W, H


def _time(fn):
    torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t, out


def layer_rows(repeats: int) -> list[str]:
    rows = ["| layer | latticeq GPTQ (s) | reference GPTQ (s) | speed-up | codes equal |",
            "|---|---:|---:|---:|---:|"]
    grid = Grid(3, group_size=128)
    for m, n in SHAPES:
        W, H = _problem(m, n)
        P = LayerProblem(W, H)
        ours, ref, same = [], [], None
        for _ in range(repeats):  # interleaved, so both see the same GPU state
            t, sol = _time(lambda: solve(P, grid, "gptq", act_order=True, dtype=torch.float32))
            ours.append(t)
            t, (_, cref) = _time(lambda: reference_gptq(W, H, bits=3, groupsize=128, actorder=True))
            ref.append(t)
            same = float((sol.codes.to(cref) == cref).float().mean())
        a, b = min(ours), min(ref)
        rows.append(f"| {m}×{n} | {a:.3f} | {b:.3f} | {b / a:.1f}× | {100 * same:.2f}% |")
        print(rows[-1], flush=True)
    return rows


def model_rows() -> list[str]:
    out = Path(tempfile.mkdtemp()) / "smol-cuda"
    cmd = [sys.executable, "-c", "from latticeq.cli import main; main()", "quantize", "smollm2", "--bits", "3", "--group-size", "128",
           "--act-order", "--method", "gptq", "--device", "cuda", "--out", str(out), "--no-progress"]
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t
    rec = json.loads((out / "latticeq_record.json").read_text())
    return ["| run | wall (s) | quantization (s) | peak GPU memory (MiB) |", "|---|---:|---:|---:|",
            f"| SmolLM2-135M 3-bit g128 act-order GPTQ, --device cuda | {wall:.1f} | {rec['quant_time_s']:.1f} | "
            f"{rec['peak_memory_bytes'] / 2**20:.0f} |"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-model", action="store_true")
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".md")))
    a = ap.parse_args()
    if a.repeats < 1:
        ap.error("--repeats must be >= 1")
    if not torch.cuda.is_available():
        print("no CUDA device: this benchmark needs a GPU (nothing written)", file=sys.stderr)
        return 3
    lines = ["# GPU benchmark", "", f"Device: {torch.cuda.get_device_name()}; torch {torch.__version__}; "
             f"float32; best of {a.repeats} interleaved runs.", "", *layer_rows(a.repeats), ""]
    if not a.skip_model:
        lines += [*model_rows(), ""]
    atomic_write_text(a.out, "\n".join(lines))
    print(f"-> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
