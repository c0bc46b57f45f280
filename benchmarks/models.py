"""Whole-model quantization of SmolLM2-135M-Instruct: perplexity and time per solver.

Question: at 4, 3 and 2 bits, per-channel and g = 128, do the lattice solvers reach lower
perplexity on *Pride and Prejudice* than GPTQ with act-order (the named baseline), and at
what cost in time?

Every configuration runs the same sequential pipeline (:mod:`latticeq.nn.pipeline`) on the same
calibration windows (the shipped novels except *Pride and Prejudice*, seed 0) and is scored on
the same fixed prefix of non-overlapping 512-token windows of *Pride and Prejudice*; the
dequantized Q4_1 model (the baseline the packaged weights give) is scored on the same windows.
Records go to ``results/quant/*.json`` (one per run; existing records are kept, so the script
resumes), the table to ``benchmarks/models.md``. A run in progress prints its progress (a line per
block and per evaluation step, also when the output is not a terminal) and keeps its per-block
state in ``~/.cache/latticeq/quant-state/<record name>/`` (written atomically after each block):
an interrupted run continues from its last finished block when the script is started again with
the same settings, and the state is removed once the record is written.

Run: ``nice -n 10 .venv/bin/python benchmarks/models.py [--nsamples 128] [--eval-windows 16]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import shutil
import time
from pathlib import Path

from latticeq.io import CACHE_ROOT

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results" / "quant"
#: per-block state of runs in progress (outside git; removed when a run's record is written)
STATE = CACHE_ROOT / "quant-state"

#: (bits, group_size, method, act_order, mse grid) in order of priority (targets first): the
#: baseline GPTQ act-order, the best lattice solver (MSE-clipped start, ±1 refinement,
#: H-weighted grid refit), GPTQ on the same MSE-clipped grid (to show what the grid alone
#: buys), RTN, and the remaining settings.
DEFAULT_RUNS = (
    [(b, g, m, True, mse) for b in (3, 2) for g in (None, 128)
     for (m, mse) in (("gptq", False), ("gptq+refine+refit", True), ("gptq", True))]
    + [(b, g, "rtn", False, False) for b in (4, 3, 2) for g in (None, 128)]
    + [(4, g, m, True, mse) for g in (None, 128) for (m, mse) in (("gptq", False), ("gptq+refine+refit", True))]
    + [(3, g, "gptq+refine", True, False) for g in (None, 128)]
)


CPU_FILE = ROOT / "benchmarks" / "models_cpu_seconds.json"
SEQLEN = 512  # tokens per calibration and evaluation window
PREFIX = 16  # evaluation windows of the main table (the first ones of Pride and Prejudice)


def _cpu_seconds() -> float:
    """User + system CPU time of this process (all threads) — fairer than wall time on a busy machine."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _name(bits, gs, method, act, nsamples, mse=False, windows=PREFIX):
    g = "pc" if gs is None else f"g{gs}"
    cal = "" if method == "rtn" else f"-n{nsamples}"  # plain RTN uses no calibration
    ev = "" if windows == PREFIX else f"-w{windows}"  # the default 16-window prefix keeps the short names
    return f"smollm2-{bits}b-{g}-{method.replace('+', '-')}{'-act' if act else ''}{'-mse' if mse else ''}{cal}{ev}.json"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nsamples", type=int, default=128, help="calibration windows of 512 tokens")
    ap.add_argument("--eval-windows", type=int, default=PREFIX,
                    help="first K windows of Pride and Prejudice (0: all of it, 327 windows)")
    ap.add_argument("--runs", default=None,
                    help="comma-separated bits:group:method:act[:mse] entries, e.g. 3:pc:gptq:1,2:128:gptq+refine+refit:1:mse")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--table-only", action="store_true", help="only rebuild benchmarks/models.md")
    args = ap.parse_args(argv)
    if args.eval_windows < 0:
        ap.error(f"--eval-windows must be 0 (all) or a positive number of windows, got {args.eval_windows}")

    import torch

    from latticeq.io import atomic_write_text
    from latticeq.nn.calib import calibration_windows, describe_calibration
    from latticeq.nn.evaluate import eval_windows, perplexity
    from latticeq.nn.model import load_model, load_tokenizer
    from latticeq.nn.pipeline import QuantizeOptions, quantize_model
    from latticeq.nn.records import make_record, markdown_table, read_records, write_record

    torch.set_num_threads(args.threads)
    runs = DEFAULT_RUNS
    if args.runs:
        runs = []
        for item in args.runs.split(","):
            b, g, m, a, *rest = item.split(":")
            if rest not in ([], ["mse"]):
                raise SystemExit(f"bad run spec {item!r}: expected bits:group:method:act[:mse]")
            runs.append((int(b), None if g == "pc" else int(g), m, a == "1", rest == ["mse"]))
    seqlen = SEQLEN
    if not args.table_only:
        tok = load_tokenizer("smollm2")
        base = load_model("smollm2")
        calib = calibration_windows(tok, nsamples=args.nsamples, seqlen=seqlen, seed=0)
        ev, _ = eval_windows(tok, None, seqlen)
        n_ev = ev.shape[0] if args.eval_windows == 0 else min(args.eval_windows, ev.shape[0])
        cal_info = {"source": describe_calibration(None), "nsamples": args.nsamples, "seqlen": seqlen}

        fpath = RESULTS / f"smollm2-float-w{n_ev}.json"
        if not fpath.exists():
            t0 = time.perf_counter()
            pr = perplexity(base, windows=ev, seqlen=seqlen, max_windows=n_ev, progress=False)
            write_record(make_record(
                model="smollm2", method="none", bits=None, group_size=None, sym=False, act_order=False,
                calibration=None, seed=None, perplexity=pr.perplexity, eval=pr.eval_info(),
                wall_time_s=time.perf_counter() - t0, quant_time_s=None, peak_memory_bytes=None, layers=[],
            ), fpath)
            print(f"float baseline: {pr.perplexity:.3f}", flush=True)

        for bits, gs, method, act, mse in runs:
            path = RESULTS / _name(bits, gs, method, act, args.nsamples, mse, n_ev)
            if path.exists():
                continue
            t0 = time.perf_counter()
            c0 = _cpu_seconds()
            net = copy.deepcopy(base)
            opts = QuantizeOptions(bits=bits, group_size=gs, act_order=act, method=method, seed=0, mse=mse)
            state = STATE / path.stem
            resume = (state / "inputs.pt").is_file()
            print(f"{path.name}: {'resuming from ' if resume else 'quantizing; state in '}{state}", flush=True)
            res = quantize_model(net, calib, opts, state_dir=state, resume=resume, progress=True)
            pr = perplexity(net, windows=ev, seqlen=seqlen, max_windows=n_ev, progress=True)
            rec = make_record(
                model="smollm2", method=method, bits=bits, group_size=gs, sym=False, mse=mse, act_order=act,
                calibration=cal_info if opts.needs_calibration else None, seed=0, perplexity=pr.perplexity, eval=pr.eval_info(),
                wall_time_s=time.perf_counter() - t0, quant_time_s=res.quant_time_s,
                peak_memory_bytes=res.peak_memory_bytes, layers=res.layer_stats,
            )
            write_record(rec, path)
            shutil.rmtree(state, ignore_errors=True)
            if not resume:  # a resumed run's earlier CPU time was spent by another process: not counted
                cpu = json.loads(CPU_FILE.read_text()) if CPU_FILE.exists() else {}
                cpu[path.name] = _cpu_seconds() - c0
                atomic_write_text(CPU_FILE, json.dumps(cpu, indent=1, sort_keys=True) + "\n")
            print(f"{path.name}: ppl {pr.perplexity:.3f}, quant {res.quant_time_s:.0f} s", flush=True)
            del net

    # scalar-grid runs only: lattice-codebook records (``codebook``) are benchmarks/vq_models.md's
    recs = [r for r in read_records(sorted(RESULTS.glob("smollm2-*.json")))
            if r["model"] == "smollm2" and not r.get("codebook")]
    cpu = json.loads(CPU_FILE.read_text()) if CPU_FILE.exists() else {}

    def table_of(rs):
        return markdown_table(rs, extra={"CPU time (s)": {r["_path"]: (f"{cpu[Path(r['_path']).name]:.0f}"
                                                                     if Path(r["_path"]).name in cpu else "—")
                                                           for r in rs}})

    def ncal(r):
        return (r.get("calibration") or {}).get("nsamples")

    def nev(r):
        return (r.get("eval") or {}).get("windows")

    prefix = [r for r in recs if nev(r) == PREFIX]
    main_recs = [r for r in prefix if ncal(r) in (None, args.nsamples)]
    other = [r for r in prefix if ncal(r) not in (None, args.nsamples)]
    table = table_of(main_recs)
    for k in sorted({nev(r) for r in recs} - {PREFIX}, reverse=True):
        table += (f"\n## Evaluated on {k} windows ({k * SEQLEN:,} tokens of Pride and Prejudice)\n\n"
                  f"A check that the {PREFIX}-window prefix ranks the methods as the longer text does.\n\n"
                  + table_of([r for r in recs if nev(r) == k]))
    if other:
        table += ("\n## Earlier runs with other calibration sizes\n\nEach compared with GPTQ at the same calibration "
                  "size; the float baseline is the row above.\n\n" + table_of(other))
    md = ROOT / "benchmarks" / "models.md"
    header = (
        "# SmolLM2-135M-Instruct: whole-model quantization (benchmarks/models.py)\n\n"
        "Perplexity on a fixed prefix of *Pride and Prejudice* (non-overlapping 512-token windows, "
        "GPTQ's evaluation; the `eval windows` column gives the prefix), calibration on random "
        "512-token windows of the other four shipped novels (seed 0; `calibration` column). "
        "`float` is the dequantized Q4_1 model the package ships, on the same windows. "
        "`vs GPTQ` = perplexity / perplexity of GPTQ act-order at the same bits and grouping "
        "(the named baseline; < 1 is better). Times are wall-clock seconds on a shared 2-core CPU "
        "(other jobs were running), so compare them within this table only; `CPU time` is the "
        "process's user + system CPU seconds for the run (quantization + evaluation), the fairer "
        "measure on a busy machine. `peak memory` is the benchmark process's peak resident set so "
        "far (one process runs many configurations, keeping the baseline model in memory), so it "
        "only bounds a single run's peak from above.\n\n"
    )
    done = {Path(r["_path"]).name for r in recs}
    missing = [f"{b}-bit {'per-channel' if g is None else f'g{g}'} {m}{' act-order' if a else ''}{', mse grid' if e else ''}"
               for b, g, m, a, e in DEFAULT_RUNS if _name(b, g, m, a, args.nsamples, e) not in done]
    footer = ("\nNot run yet (the session's CPU budget on the shared machine ran out; the script "
              "resumes them): " + "; ".join(missing) + ".\n") if missing else ""
    if any("group_refresh" not in r and r.get("group_size") for r in recs):
        header = header.replace("\n\n", "\n\n" + OLD_REFRESH_NOTE + "\n\n", 1)
    atomic_write_text(md, header + table + footer + _speed_section())
    print(table)


#: the label of g128 records made before the published group refresh (they lack ``group_refresh``)
OLD_REFRESH_NOTE = (
    "> **Made before GPTQ's published group refresh** (issue 15): the g128 rows zero-padded the last, 64-wide "
    "group of the 576-wide layers (damping slightly above the reference's; the refresh rules agree at g128), and "
    "Hessians were accumulated with a full xᵀx product (now BLAS syrk on one triangle: the same matrix up to "
    "float32 rounding). A rerun of `benchmarks/models.py` uses the published algorithm.")


def _speed_section(top: int = 6) -> str:
    """Where the time goes, from ``benchmarks/pipeline_speed.md`` (its targets table and the
    GPTQ profile's top entries, after and before)."""
    path = ROOT / "benchmarks" / "pipeline_speed.md"
    if not path.is_file():
        return ""
    lines = path.read_text().splitlines()
    table = [ln for ln in lines if ln.startswith("|")]

    def top_of(start: int) -> list[str]:
        for i in range(start, len(lines)):
            if lines[i].startswith("#") and "gptq" in lines[i] and "Top" in lines[i]:
                j = lines.index("```", i)
                return lines[j + 2 : j + 2 + top]  # past the fence and the total line
        return []

    before_at = lines.index("# Before") if "# Before" in lines else len(lines)
    after, before = top_of(0)[: top] if before_at else [], top_of(before_at)
    out = ["", "## Where the time goes (`benchmarks/pipeline_speed.py` → `benchmarks/pipeline_speed.md`)", "",
           lines[2] if len(lines) > 2 else "", "", *table, ""]
    for title, rows in (("after", after), ("before", before)):
        if rows:
            out += [f"GPTQ (3-bit g128 act-order) under cProfile, top {top} by own time, {title}:", "", "```", *rows,
                    "```", ""]
    return "\n".join(out)


if __name__ == "__main__":
    main()
