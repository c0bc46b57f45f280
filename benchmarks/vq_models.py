"""Lattice-coded SmolLM2-135M end to end: quantize with a codebook, save the latticeq-vq
checkpoint, load it back, score it — against the best scalar configurations.

Question: at 2, 3 and 4 bits per weight, how close do lattice codebooks (``e8p``, Voronoi
codes) bring a whole model to the float one, against the best scalar GPTQ-family rows at the
same or more bits per weight, and what do they cost (time, memory, size, speed)?

Each run is ``latticeq quantize smollm2 --codebook C --bits B --act-order`` with 128 × 512
calibration tokens (the shipped novels except *Pride and Prejudice*, seed 0), scored by
latticeq's perplexity code on all of *Pride and Prejudice* (327 windows of 512 tokens; the
first 16 windows give the short prefix every other table uses). The checkpoint goes to a cache
folder outside git and is resumable (``--resume``); its record is copied to
``results/quant/smollm2-{B}b-vq-{C}-n128-w327.json``.

For each row: bits per weight from the stored tensors (codes, fp16 scales, permutations,
transform signs; embeddings and head are not quantized and not counted), perplexity on the
prefix and on the whole book, the perplexity ratio with its paired standard error against the
best scalar record at the same or more bits per weight that has per-window scores, quantization
time and peak memory. Below the table: the checkpoint's size on disk against the float model's
(fp16) and CPU tokens/s of the loaded checkpoint (codes decoded per call, and folded once into
dense weights, the default) against the dequantized float model, same run.

With ``--finetune``, each run's checkpoint is then fine-tuned (``latticeq finetune``: row scales
and normalization weights, KL divergence to the float model on the same calibration windows,
:mod:`latticeq.nn.finetune`) for ``--epochs E`` into a sibling cache folder ``…-ft-eE`` and scored
the same way; its record is ``…-ft-eE-n128-w327.json``, so schedules of one run stay side by side
(the learning rate decays over all E epochs: a longer schedule is another run, not a continuation;
each keeps its epoch of lowest held-out KL). The codes, so the bits per weight, do not change. Where the
record exists but this machine lacks its checkpoint, the checkpoint is quantized again (scored on
the prefix only, to show it reproduces the record) and the record is kept.

Run: ``nice -n 10 .venv/bin/python benchmarks/vq_models.py [--runs e8p:2,voronoi:E8:3]
[--method gptq+refine] [--finetune [--epochs 2 --lr 3e-3]] [--threads 2] [--table-only] [--redo]
[--no-speed]``.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

from latticeq.io import CACHE_ROOT
from latticeq.nn.finetune import DEFAULT_FINETUNE_PARAMS

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results" / "quant"
CACHE = CACHE_ROOT / "vq-models"
SPEED_FILE = ROOT / "benchmarks" / "vq_models_speed.json"
PREFIX = 16
DEFAULT_RUNS = ("e8p:2", "e8p:4", "voronoi:E8:3", "e8p:3", "voronoi:BW16:2", "voronoi:E8:2")


def _split(run: str):
    cb, _, bits = run.rpartition(":")
    return cb, int(bits)


def _slug(codebook: str) -> str:
    return codebook.replace(":", "-").replace("/", "_").replace(".json", "")


def _record_path(codebook, bits, method="gptq", epochs=None, train=DEFAULT_FINETUNE_PARAMS):
    """The record of a quantization run, or (``epochs`` given) of its fine-tuning for that many
    epochs (``…-ft-eE-in-…`` where the fine-tuning also trained input scales)."""
    tag = "" if method == "gptq" else "-" + method.replace("gptq+", "").replace("+", "-")
    ft = "" if epochs is None else f"-ft-e{epochs}" + ("-in" if "in_scales" in train else "")
    return RESULTS / f"smollm2-{bits}b-vq-{_slug(codebook)}{tag}{ft}-n128-w327.json"


def _checkpoint_dir(record: Path) -> Path:
    """The cache folder of the checkpoint whose record is ``record`` (its name without ``vq``,
    calibration and window tags)."""
    return CACHE / record.stem.replace("-vq-", "-").replace("-n128-w327", "")


def _bpw_scalar(rec) -> float:
    """Bits per weight of a scalar record (older records lack the key): codes, fp16 scales and
    b-bit zeros per group and row, int32 g_idx, over SmolLM2's 30 blocks of 7 layers."""
    if rec.get("bits_per_weight") is not None:
        return rec["bits_per_weight"]
    b, g = rec["bits"], rec.get("group_size")
    shapes = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)]
    tot = wts = 0
    for m, n in shapes:
        groups = 1 if g in (None, -1) else math.ceil(n / g)
        tot += m * n * b + groups * m * (16 + b) + 32 * n
        wts += m * n
    return tot / wts


def _ppl(rec, windows=None):
    w = (rec.get("eval") or {}).get("window_nll")
    if windows is None or w is None:
        return rec["perplexity"] if windows is None or (rec.get("eval") or {}).get("windows") == windows else None
    return math.exp(sum(w[:windows]) / windows) if len(w) >= windows else None


def _paired(a, b, windows):
    """ppl(a)/ppl(b) and its standard error on the first ``windows`` windows of both."""
    wa, wb = (a.get("eval") or {}).get("window_nll"), (b.get("eval") or {}).get("window_nll")
    if not wa or not wb or len(wa) < windows or len(wb) < windows:
        return None
    d = [x - y for x, y in zip(wa[:windows], wb[:windows])]
    m = sum(d) / len(d)
    sd = math.sqrt(sum((x - m) ** 2 for x in d) / (len(d) - 1))
    r = math.exp(m)
    return r, r * sd / math.sqrt(len(d))


def _speed(folder: Path, reps: int = 3) -> dict:
    """Tokens/s of the loaded checkpoint (codes decoded per call, and cached) and of the float
    model, on the same 2 × 512 tokens, best of ``reps``, same process."""
    import torch

    from latticeq.nn.model import load_model
    from latticeq.nn.vqformat import load_vq_checkpoint

    ids = torch.randint(0, 1000, (2, 512), generator=torch.Generator().manual_seed(0))
    out = {}
    for label, make in (("float (dequantized Q4_1)", lambda: load_model("smollm2")),
                        ("latticeq-vq, codes decoded per call (cache=False)",
                         lambda: load_vq_checkpoint(folder, cache=False)),
                        ("latticeq-vq, folded once into dense weights (default)", lambda: load_vq_checkpoint(folder))):
        net = make()
        best = math.inf
        with torch.no_grad():
            net(ids[:, :16])  # warm up
            for _ in range(reps):
                t = time.perf_counter()
                net(ids)
                best = min(best, time.perf_counter() - t)
        out[label] = ids.numel() / best
        del net
    return out


def _time_cell(rec) -> str:
    ft = rec.get("finetune")
    return f"{rec['quant_time_s']:.0f}" + ("" if not ft else f" + {ft['time_s']:.0f} fine-tuning")


def _threads_cell(rec) -> str:
    """Threads while quantizing, and (fine-tuned rows) while fine-tuning, as the time cell reads."""
    ft = rec.get("finetune")
    return f"{rec.get('threads') or '—'}" + ("" if not ft else f" + {ft.get('threads') or '—'}")


def _finetune_section(vq) -> list:
    """Each fine-tuned row against the same run before fine-tuning, paired over windows."""
    from latticeq.nn.records import _codebook_run_label

    rows = []
    for r in sorted(vq, key=lambda r: (r["bits"], r["bits_per_weight"])):
        if not r.get("finetune"):
            continue
        base = next((b for b in vq if not b.get("finetune") and b["codebook"] == r["codebook"]
                     and b["method"] == r["method"] and b["bits"] == r["bits"]), None)
        ft = r["finetune"]
        cells = []
        for ref, w in ((ft.get("start"), PREFIX), (ft.get("start"), 327), (base, PREFIX), (base, 327)):
            pr = _paired(r, ref, w) if ref is not None else None
            cells.append("—" if pr is None else f"{pr[0]:.3f} ± {pr[1]:.3f}")
        start = ft.get("start") or {}
        s_pp = _ppl(start, PREFIX) if start.get("eval") else None
        kl = ft["heldout_kl"]
        rows.append(f"| {_codebook_run_label(r)} | {r['bits']} | {ft['trainable']} | {ft['epochs']} × "
                    f"{-(-ft['calibration']['nsamples'] // ft['batch_size'])} steps, lr {ft['lr']:g} | "
                    f"{kl[0]:.4f} → {kl[ft['best_epoch']]:.4f} (epoch {ft['best_epoch']}) | "
                    f"{'—' if s_pp is None else f'{s_pp:.2f}'} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} | "
                    f"{ft['time_s']:.0f} | {ft.get('threads') or '—'} |")
    if not rows:
        return []
    return ["## Fine-tuning (`latticeq finetune`)", "",
            "The codes stay as quantized; the row scales (stored in float16) and the normalization weights are "
            "trained by Adam to minimize the per-token KL divergence from the float model on the calibration "
            "windows (`trainable` parameters; rows `with input scales` also train one new float16 scale per input "
            "column of every lattice-coded layer, `latticeq finetune --train scales,norms,in_scales`, whose 16 bits "
            "per column the bits per weight count). Held-out KL: on 16 calibration-corpus windows that share no token "
            "with the training windows, before training → after the epoch kept (the best one). `start` = the "
            "fine-tuned checkpoint itself before training (where this machine lacked the recorded run's checkpoint, "
            "it was quantized again and scored on the prefix only); `recorded run` = the committed record of the "
            "same configuration in the table above. Ratios: perplexity ÷ the reference's, ± the paired standard "
            "error over windows. Two quantization runs of one configuration differ by about 1 % in perplexity "
            "(thread counts and float summation order move codes at decision boundaries).", "",
            "| codebook | bits | trainable | schedule | held-out KL (nats/token) | start ppl (prefix) | vs start "
            "(prefix) | vs start (book) | vs recorded run (prefix) | vs recorded run (book) | time (s) | threads |",
            "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|", *rows, ""]


def _finetune_row(base: Path, path: Path, args) -> None:
    """Fine-tune the checkpoint ``base`` for ``args.epochs`` into the folder of the record ``path``
    (resumable) and record it there."""
    from latticeq.nn.finetune import finetune_checkpoint
    from latticeq.nn.pipeline import RECORD_NAME
    from latticeq.nn.records import write_record

    if path.exists() and not args.redo:
        return
    out = _checkpoint_dir(path)
    if (out / "config.json").exists() and not args.redo:
        rec = json.loads((out / RECORD_NAME).read_text())
    else:
        resume = (out / ".latticeq-state" / "run.json").is_file() and not args.redo
        print(f"fine-tuning: {base.name} -> {out}", flush=True)
        rec = finetune_checkpoint(base, out, epochs=args.epochs, lr=args.lr, params=args.train,
                                  eval_text="default", resume=resume,
                                  force=out.exists() and not resume, progress=True)
    write_record(rec, path)
    ft = rec["finetune"]
    print(f"{path.name}: ppl {rec['perplexity']:.3f}, held-out KL {ft['heldout_kl'][0]:.5f} -> "
          f"{ft['heldout_kl'][ft['best_epoch']]:.5f}, fine-tuned in {ft['time_s']:.0f} s", flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default=",".join(DEFAULT_RUNS), help="comma-separated codebook:bits entries")
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--speed", action=argparse.BooleanOptionalAction, default=True,
                    help="measure tokens/s and the checkpoint's size (best run with no other job on the machine)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--method", default="gptq", choices=("gptq", "gptq+refine"),
                    help="block Babai, or block Babai + block coordinate descent (records named …-refine-…)")
    ap.add_argument("--finetune", action="store_true",
                    help="also fine-tune each run's checkpoint (latticeq finetune: row scales and norms, KL to the "
                         "float model, --epochs/--lr) and score it (records named …-ft-eE-…)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train", default=",".join(DEFAULT_FINETUNE_PARAMS),
                    help="what fine-tuning trains (latticeq finetune --train); with in_scales, records are named "
                         "…-ft-eE-in-…")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--redo", action="store_true",
                    help="quantize the --runs again from scratch although their records exist (after a pipeline "
                         "or format change); each record is replaced when its new run finishes")
    args = ap.parse_args(argv)
    args.train = tuple(p.strip() for p in args.train.split(",") if p.strip())
    import torch

    from latticeq.io import atomic_write_text
    from latticeq.nn.pipeline import RECORD_NAME, quantize_to_checkpoint
    from latticeq.nn.records import read_records, write_record

    torch.set_num_threads(args.threads)
    runs = [_split(r) for r in args.runs.split(",") if r]
    if not args.table_only:
        for cb, bits in runs:
            path = _record_path(cb, bits, args.method)
            out = _checkpoint_dir(path)
            CACHE.mkdir(parents=True, exist_ok=True)  # a fresh machine has no cache yet
            if path.exists() and not args.redo:
                if args.finetune:
                    if not (out / "config.json").exists():  # a fresh machine: rebuild the checkpoint, keep the record
                        resume = (out / ".latticeq-state").is_dir()
                        print(f"quantizing again to fine-tune: {cb} at {bits} bits -> {out}", flush=True)
                        again = quantize_to_checkpoint("smollm2", out, bits=bits, codebook=cb, method=args.method,
                                                       act_order=True, nsamples=128, seqlen=512, seed=0,
                                                       eval_text="default", eval_windows=PREFIX, resume=resume,
                                                       force=not resume and out.exists(), progress=True)
                        old = json.loads(path.read_text())
                        print(f"prefix perplexity {again['perplexity']:.3f}, recorded {_ppl(old, PREFIX):.3f} "
                              f"(threads {again['threads']}, recorded {old.get('threads')})", flush=True)
                    _finetune_row(out, _record_path(cb, bits, args.method, epochs=args.epochs, train=args.train), args)
                continue
            if args.redo and out.exists():
                shutil.rmtree(out)  # from scratch: an earlier checkpoint or state may predate the change
            resume = (out / ".latticeq-state").is_dir() and not (out / "config.json").exists()
            if (out / "config.json").exists():
                rec = json.loads((out / RECORD_NAME).read_text())
            else:
                print(f"quantizing: {cb} at {bits} bits -> {out}", flush=True)
                rec = quantize_to_checkpoint("smollm2", out, bits=bits, codebook=cb, method=args.method,
                                             act_order=True, nsamples=128,
                                             seqlen=512, seed=0, eval_text="default", resume=resume,
                                             force=not resume and out.exists(), progress=True)
            write_record(rec, path)
            print(f"{path.name}: ppl {rec['perplexity']:.3f}, {rec['bits_per_weight']:.3f} bits/weight, "
                  f"quant {rec['quant_time_s']:.0f} s", flush=True)
            if args.finetune:
                _finetune_row(out, _record_path(cb, bits, args.method, epochs=args.epochs, train=args.train), args)
        # the speed section: the first 2-bit e8p checkpoint this machine has
        first = next((f for f in (CACHE / "smollm2-2b-e8p", CACHE / "smollm2-2b-e8p-refine")
                      if (f / "config.json").exists()), None)
        if first is not None and args.speed:
            speeds = _speed(first)
            size = (first / "model.safetensors").stat().st_size
            from latticeq.nn.model import load_model

            base = load_model("smollm2")
            n_all = sum(p.numel() for p in base.parameters())
            atomic_write_text(SPEED_FILE, json.dumps({
                "checkpoint": first.name, "tokens_per_s": speeds, "checkpoint_bytes": size,
                "float_fp16_bytes": 2 * n_all, "threads": args.threads,
                "time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, indent=1) + "\n")
            del base
        shutil.rmtree(CACHE / "tmp", ignore_errors=True)

    recs = read_records(sorted(RESULTS.glob("smollm2-*.json")))
    recs = [r for r in recs if r["model"] == "smollm2"]
    vq = [r for r in recs if r.get("codebook")]
    scalar = [r for r in recs if not r.get("codebook") and r["bits"] is not None]
    floats = {(r.get("eval") or {}).get("windows"): r for r in recs if r["method"] == "none"}
    lines = ["# SmolLM2-135M with lattice codebooks, end to end (benchmarks/vq_models.py)", "",
             "Block Babai (BlockLDLQ) with one fp16 scale per row, randomized Hadamard incoherence, act-order, "
             "128 × 512 calibration tokens (Austen except *Pride and Prejudice*, seed 0); quantized, saved as a "
             "`latticeq-vq` checkpoint, scored by latticeq's perplexity code on *Pride and Prejudice* (512-token "
             "windows; `prefix` = the first 16, `book` = all 327). `bits/weight` counts every stored bit of the "
             "quantized layers (codes, scales, permutations, transform signs; scalar rows: codes, scales, zeros, "
             "g_idx); embeddings and the head are not quantized and not counted. `vs scalar` = perplexity ÷ the "
             "best scalar record at the same or more bits per weight with per-window scores on the same windows, "
             "± its paired standard error. `threads`: CPU threads torch used while quantizing (and, after `+`, "
             "while fine-tuning; — : not "
             "recorded; records before the key existed); times taken beside another job on the 2-core machine "
             "are slower than alone. `+ block descent` = `--method gptq+refine`. Float (dequantized Q4_1): prefix "
             f"{_ppl(floats[16]) if 16 in floats else float('nan'):.2f}, book "
             f"{_ppl(floats[327]) if 327 in floats else float('nan'):.2f}.", "",
             "| codebook | bits | bits/weight | ppl prefix | ppl book | vs scalar (prefix) | vs scalar (book) | "
             "scalar reference | quant time (s) | threads | peak memory (GiB) |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    from latticeq.nn.records import _codebook_run_label

    for r in sorted(vq, key=lambda r: (r["bits"], r["bits_per_weight"], bool(r.get("finetune")))):
        bpw = r["bits_per_weight"]
        cands = [s for s in scalar if _bpw_scalar(s) >= bpw - 1e-9 and (s.get("eval") or {}).get("window_nll")]
        ref = min(cands, key=lambda s: _ppl(s, 327) or _ppl(s, PREFIX) or math.inf, default=None)
        pp, pb = _ppl(r, PREFIX), _ppl(r, 327)
        cells = []
        for w in (PREFIX, 327):
            pr = _paired(r, ref, w) if ref is not None else None
            cells.append("—" if pr is None else f"{pr[0]:.3f} ± {pr[1]:.3f}")
        ref_label = "—" if ref is None else (f"{ref['bits']}-bit {'g' + str(ref['group_size']) if ref.get('group_size') else 'per-channel'} "
                                             f"{ref['method']}{' mse' if ref.get('mse') else ''} ({_bpw_scalar(ref):.2f} bpw, "
                                             f"book {_ppl(ref, 327) or float('nan'):.2f})")
        lines.append(f"| {_codebook_run_label(r)} | {r['bits']} | {bpw:.3f} | "
                     f"{'—' if pp is None else f'{pp:.2f}'} | {'—' if pb is None else f'{pb:.2f}'} | {cells[0]} | "
                     f"{cells[1]} | {ref_label} | {_time_cell(r)} | {_threads_cell(r)} | "
                     f"{r['peak_memory_bytes'] / 2**30:.1f} |")
    lines.append("")
    lines += _finetune_section(vq)
    if SPEED_FILE.exists():
        sp = json.loads(SPEED_FILE.read_text())
        f16 = sp["float_fp16_bytes"]
        lines += [f"Checkpoint `{sp['checkpoint']}`: {sp['checkpoint_bytes'] / 2**20:.1f} MiB on disk against "
                  f"{f16 / 2**20:.1f} MiB for the float model in fp16 ({sp['checkpoint_bytes'] / f16:.2f}×; the "
                  "embeddings, tied with the head, stay in float and are most of what remains).", "",
                  f"CPU speed, {sp['threads']} thread(s), 2 × 512 tokens, best of three, same run ({sp['time']}):", "",
                  "| model | tokens/s | ÷ float |", "|---|---:|---:|"]
        base = sp["tokens_per_s"]["float (dequantized Q4_1)"]
        for k, v in sp["tokens_per_s"].items():
            lines.append(f"| {k} | {v:.0f} | {v / base:.2f}× |")
        lines.append("")
    atomic_write_text(ROOT / "benchmarks" / "vq_models.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
