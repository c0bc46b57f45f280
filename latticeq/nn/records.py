"""Run records of model quantization: one JSON file per run, tables and plots over many.

Every run writes a record with exactly the keys of :data:`RECORD_KEYS` (other tools, e.g.
:mod:`latticeq.draw`, read them)::

    model, method, bits, group_size, group_refresh, sym, mse, act_order,
    calibration {source, nsamples, seqlen}, seed,
    perplexity, eval {text, seqlen, windows[, window_nll]},
    wall_time_s, quant_time_s, peak_memory_bytes, threads,
    layers [{name, error, relative_error, time_s[, error_metric]}],
    codebook, bits_per_weight, transforms, finetune,
    latticeq_version, created

``codebook`` is the vector codebook's spec (:meth:`~latticeq.lattice.codebook.Codebook.spec`;
``None`` for the scalar grid), ``bits_per_weight`` every stored bit of the quantized layers
(codes, scales, zeros, g_idx, permutations, transform signs) over their weights — embeddings,
norms and the output head are not quantized and not counted — and ``transforms`` the
incoherence transforms (kind and seeds; ``None`` without). Records written before these keys
existed lack them (scalar runs). ``threads`` is the number of CPU threads torch used while
quantizing (the times depend on it); records written before the key existed lack it.
``finetune`` is ``None``, or what ``latticeq finetune`` did to the checkpoint after quantizing
(:mod:`latticeq.nn.finetune`: trained parameters, epochs, learning rate, teacher, calibration,
held-out KL per epoch, time, threads, and ``start``: the checkpoint's own perplexity and eval
before fine-tuning, if its record had one); ``quant_time_s`` stays the quantization's own time.

A layer's ``error`` is ``tr((W − Q) H (W − Q)ᵀ)`` with the calibration Hessian
(``error_metric = "hessian"``, the default when the key is absent) or, for plain RTN, which
reads no calibration, the weight-space ``‖W − Q‖²`` (``error_metric = "weight"``).

``eval.window_nll`` (optional) lists each window's mean NLL; two runs that have it and were
scored on the same windows get a paired standard error on their perplexity ratio
(:func:`paired_ratio`).

``mse`` marks grids whose ranges came from the MSE clipping search (records written before
the key existed read as ``False``). ``group_refresh`` says where dynamic groups took their
parameters from (``"published"``: GPTQ's block view of the weights; ``"updated"``: the fully
error-updated weights; ``None`` without dynamic groups). Records written before the key
existed lack it: they used the fully updated weights, and widths that a group size does not
divide were zero-padded (which raised the damping slightly). The unquantized baseline is recorded with ``method = "none"``, ``bits = None`` and no layers.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from latticeq.nn.evaluate import mean_and_stderr

__all__ = ["RECORD_KEYS", "make_record", "write_record", "read_records", "paired_ratio", "markdown_table",
           "plot_records"]

RECORD_KEYS = (
    "model", "method", "bits", "group_size", "group_refresh", "sym", "mse", "act_order", "calibration", "seed",
    "perplexity", "eval", "wall_time_s", "quant_time_s", "peak_memory_bytes", "threads", "layers",
    "codebook", "bits_per_weight", "transforms", "finetune",
    "latticeq_version", "created",
)

_LAYER_KEYS = {"name", "error", "relative_error", "time_s", "error_metric"}


def make_record(
    *,
    model: str,
    method: str,
    bits: int | None,
    group_size: int | None,
    sym: bool,
    act_order: bool,
    calibration: dict | None,
    seed: int | None,
    perplexity: float | None,
    eval: dict | None,
    wall_time_s: float,
    quant_time_s: float | None,
    peak_memory_bytes: int | None,
    layers: list,
    mse: bool = False,
    group_refresh: str | None = None,
    codebook: dict | None = None,
    bits_per_weight: float | None = None,
    transforms: dict | None = None,
    threads: int | None = None,
    finetune: dict | None = None,
) -> dict:
    """A run record with exactly :data:`RECORD_KEYS` (validated)."""
    from latticeq import __version__

    if calibration is not None and set(calibration) != {"source", "nsamples", "seqlen"}:
        raise ValueError(f"calibration must have keys source, nsamples, seqlen; got {sorted(calibration)}")
    if eval is not None and not {"text", "seqlen", "windows"} <= set(eval) <= {"text", "seqlen", "windows", "window_nll"}:
        raise ValueError(f"eval must have keys text, seqlen, windows (and optionally window_nll); got {sorted(eval)}")
    if eval is not None and "window_nll" in eval:
        w = eval["window_nll"]
        if not isinstance(w, (list, tuple)) or len(w) != eval["windows"] or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in w):
            raise ValueError(f"eval.window_nll must list one number per scored window ({eval['windows']})")
        eval = {**eval, "window_nll": [float(x) for x in w]}
    for rec in layers:
        if not {"name", "error", "relative_error", "time_s"} <= set(rec) <= _LAYER_KEYS:
            raise ValueError(f"each layer entry needs keys name, error, relative_error, time_s "
                             f"(and optionally error_metric); got {sorted(rec)}")
        if rec.get("error_metric", "hessian") not in ("hessian", "weight"):
            raise ValueError(f"error_metric must be 'hessian' or 'weight', got {rec['error_metric']!r}")
    if group_refresh not in (None, "published", "updated"):
        raise ValueError(f"group_refresh must be None, 'published' or 'updated', got {group_refresh!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    if finetune is not None and not isinstance(finetune, dict):
        raise ValueError(f"finetune must be a dict or None, got {finetune!r}")
    if perplexity is not None and not math.isfinite(perplexity):
        perplexity = None if math.isnan(perplexity) else float("inf")
    return {
        "model": str(model), "method": str(method), "bits": bits, "group_size": group_size,
        "group_refresh": group_refresh, "sym": bool(sym), "mse": bool(mse), "act_order": bool(act_order), "calibration": calibration,
        "seed": seed, "perplexity": perplexity, "eval": eval,
        "wall_time_s": float(wall_time_s),
        "quant_time_s": None if quant_time_s is None else float(quant_time_s),
        "peak_memory_bytes": None if peak_memory_bytes is None else int(peak_memory_bytes),
        "threads": threads, "layers": list(layers),
        "codebook": codebook, "bits_per_weight": None if bits_per_weight is None else float(bits_per_weight),
        "transforms": transforms, "finetune": finetune, "latticeq_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_record(record: dict, path) -> Path:
    """Write a record atomically (temp file + rename)."""
    missing = set(RECORD_KEYS) ^ set(record)
    if missing:
        raise ValueError(f"record keys differ from RECORD_KEYS: {sorted(missing)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_records(paths) -> list[dict]:
    """Records from JSON files and folders (``*.json`` inside, and ``latticeq_record.json``)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files += sorted(f for f in p.glob("*.json") if f.name not in ("config.json", "quantize_config.json",
                                                                             "generation_config.json", "tokenizer_config.json",
                                                                             "tokenizer.json", "special_tokens_map.json"))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"no record file or folder {str(p)!r}")
    out = []
    for f in files:
        try:
            rec = json.loads(f.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"{str(f)!r} is not valid JSON: {exc}") from exc
        if not isinstance(rec, dict) or not {"model", "method", "bits", "perplexity"} <= set(rec):
            raise ValueError(f"{str(f)!r} is not a latticeq run record (keys {RECORD_KEYS})")
        problem = _record_problem(rec)
        if problem:
            raise ValueError(f"{str(f)!r} is not a valid latticeq run record: {problem}")
        rec = dict(rec)
        rec["_path"] = str(f)
        out.append(rec)
    if not out:
        raise ValueError("no run records found")
    return out


def _record_problem(rec: dict) -> str | None:
    """What is wrong with a record read from a file (types of every field the tables and plots
    use), or None."""
    def num(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    def num_or_none(v):
        return v is None or num(v)

    if not isinstance(rec["model"], str) or not isinstance(rec["method"], str):
        return "model and method must be strings"
    if rec["bits"] is not None and (isinstance(rec["bits"], bool) or not isinstance(rec["bits"], int)):
        return f"bits must be an integer or null, got {rec['bits']!r}"
    gs = rec.get("group_size")
    if gs is not None and (isinstance(gs, bool) or not isinstance(gs, int)):
        return f"group_size must be an integer or null, got {gs!r}"
    for key in ("perplexity", "wall_time_s", "quant_time_s", "peak_memory_bytes", "bits_per_weight"):
        if not num_or_none(rec.get(key)):
            return f"{key} must be a number or null, got {rec.get(key)!r}"
    th = rec.get("threads")
    if th is not None and (isinstance(th, bool) or not isinstance(th, int) or th < 1):
        return f"threads must be a positive integer or null, got {th!r}"
    for key in ("sym", "mse", "act_order"):
        if key in rec and not isinstance(rec[key], bool):
            return f"{key} must be true or false, got {rec[key]!r}"
    for key in ("codebook", "transforms", "finetune"):
        if rec.get(key) is not None and not isinstance(rec[key], dict):
            return f"{key} must be an object or null, got {rec[key]!r}"
    ev = rec.get("eval")
    if ev is not None:
        if not isinstance(ev, dict) or isinstance(ev.get("windows"), bool) or not isinstance(ev.get("windows"), int):
            return "eval must be an object with an integer 'windows'"
        w = ev.get("window_nll")
        if w is not None and (not isinstance(w, list) or len(w) != ev["windows"] or not all(num(x) for x in w)):
            return "eval.window_nll must list one number per window"
    layers = rec.get("layers", [])
    if not isinstance(layers, list) or not all(isinstance(x, dict) and num(x.get("error")) and
                                               num(x.get("relative_error")) for x in layers):
        return "layers must be a list of objects with numeric error and relative_error"
    return None


def _method_label(rec: dict) -> str:
    m = rec["method"]
    if rec.get("codebook"):
        m = f"block babai, {_codebook_run_label(rec)}" + ("" if rec.get("transforms") else ", no incoherence")
    if rec.get("act_order") and m not in ("rtn", "none", "minpivot"):
        m += " act-order"
    if rec.get("mse"):
        m += ", mse grid"
    return m


def _codebook_run_label(rec: dict) -> str:
    """A lattice-coded run's codebook, ``+ block descent`` where its method added it
    (``gptq+refine``) and ``+ E-epoch fine-tuning`` (``with input scales`` where it trained
    them) where ``latticeq finetune`` ran on it, so runs of one codebook, and its fine-tuning
    schedules, stay apart in tables and plots."""
    ft = rec.get("finetune")
    return (_codebook_label(rec["codebook"]) + (" + block descent" if rec["method"] == "gptq+refine" else "")
            + (f" + {ft['epochs']}-epoch fine-tuning" if ft else "")
            + (" with input scales" if ft and "in_scales" in (ft.get("params") or ()) else ""))


def _codebook_label(spec: dict) -> str:
    kind = spec.get("kind")
    if kind == "voronoi":
        lat = spec.get("lattice") or {}
        return f"voronoi {lat.get('catalog') or lat.get('name') or 'lattice'}/{spec.get('q')}"
    if kind == "residual":
        return f"{_codebook_label(spec['first'])} + {_codebook_label(spec['second'])}"
    return str(kind)


def _gs(rec) -> str:
    return "—" if rec.get("bits") is None else ("per-channel" if rec.get("group_size") in (None, -1) else f"g{rec['group_size']}")


def paired_ratio(record: dict, baseline: dict) -> tuple[float, float] | None:
    """Perplexity ratio ``record / baseline`` and its standard error from paired windows.

    With ``d_i`` = the difference of the two runs' mean NLLs on window ``i`` (all windows score
    the same number of tokens), the ratio is ``exp(mean d)`` exactly and its standard error is
    ``ratio · sd(d) / √W`` (delta method). ``None`` unless both records carry
    ``eval.window_nll`` for the same text, window length and windows.
    """
    ea, eb = record.get("eval") or {}, baseline.get("eval") or {}
    a, b = ea.get("window_nll"), eb.get("window_nll")
    if not a or not b or len(a) != len(b) or len(a) < 2 or any(ea.get(k) != eb.get(k) for k in ("text", "seqlen")):
        return None
    m, se = mean_and_stderr([x - y for x, y in zip(a, b)])
    ratio = math.exp(m)
    return ratio, ratio * se


def markdown_table(records: list[dict], baseline_method: str = "gptq", extra: dict | None = None) -> str:
    """Markdown table: one row per record, sorted by bits (desc), grouping, perplexity.

    The ``vs GPTQ`` column is the perplexity ratio to the GPTQ (act-order if present, min–max grid) run of the
    same model, bits, grouping, calibration size and evaluation windows in the same set of records
    (like is compared with like only); a run without calibration (plain RTN) is compared with the
    GPTQ run of its setting that used the most calibration windows. Where both runs recorded
    per-window NLLs the ratio carries its paired standard error (:func:`paired_ratio`), as
    ``0.750 ± 0.004``. ``extra`` adds columns:
    ``{header: {record["_path"]: cell}}``.
    """
    extra = extra or {}
    def setting(r):
        cal, ev = r.get("calibration") or {}, r.get("eval") or {}
        return (r["model"], r["bits"], _gs(r), cal.get("nsamples"), cal.get("seqlen"), ev.get("windows"), ev.get("seqlen"))

    def key(r):
        cal = r.get("calibration") or {}
        return (r["model"], -(r["bits"] or 99), _gs(r), cal.get("nsamples") or 0,
                r["perplexity"] if r["perplexity"] is not None else float("inf"))

    base, most = {}, {}
    for r in records:
        if r["method"] == baseline_method and r["perplexity"] is not None and not r.get("mse"):
            k = setting(r)
            if k not in base or r.get("act_order"):
                base[k] = r
    for k, b in base.items():  # baselines for calibration-free runs: most calibration windows
        k0 = k[:3] + (None, None) + k[5:]
        if k0 not in most or (k[3] or 0) > most[k0][0]:
            most[k0] = (k[3] or 0, b)
    base.update({k0: b for k0, (_, b) in most.items() if k0 not in base})
    lines = [
        "| model | bits | grouping | method | perplexity | vs GPTQ | eval windows | calibration | quant time (s) | wall time (s) | peak memory (MiB) |"
        + "".join(f" {h} |" for h in extra),
        "|---|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(extra),
    ]
    for r in sorted(records, key=key):
        ppl = "—" if r["perplexity"] is None else f"{r['perplexity']:.3f}"
        b = base.get(setting(r))
        x = None if (b is None or r["perplexity"] is None) else r["perplexity"] / b["perplexity"]
        ratio = "—" if x is None else (f"{x:.3f}" if x >= 0.01 else f"{x:.2e}")
        pr = None if (x is None or b is r) else paired_ratio(r, b)
        if pr is not None:
            ratio += f" ± {pr[1]:.3f}" if x >= 0.01 else f" ± {pr[1]:.1e}"
        ev = r.get("eval") or {}
        ew = "—" if not ev else f"{ev.get('windows')} × {ev.get('seqlen')}"
        cal = r.get("calibration") or {}
        cs = "—" if not cal else f"{cal.get('nsamples')} × {cal.get('seqlen')}"
        qt = "—" if r.get("quant_time_s") is None else f"{r['quant_time_s']:.0f}"
        wt = "—" if r.get("wall_time_s") is None else f"{r['wall_time_s']:.0f}"
        pm = "—" if r.get("peak_memory_bytes") is None else f"{r['peak_memory_bytes'] / 2**20:.0f}"
        lines.append(f"| {r['model']} | {r['bits'] if r['bits'] is not None else 'float'} | {_gs(r)} | "
                     f"{_method_label(r)} | {ppl} | {ratio} | {ew} | {cs} | {qt} | {wt} | {pm} |"
                     + "".join(f" {col.get(r.get('_path'), '—')} |" for col in extra.values()))
    return "\n".join(lines) + "\n"


def plot_records(records: list[dict], path) -> Path:
    """Perplexity against bits, one line per method and grouping (log scale); baseline dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    series: dict = {}
    for r in records:
        if r["perplexity"] is None:
            continue
        if r["bits"] is None:
            ax.axhline(r["perplexity"], ls="--", color="gray", lw=1, label=f"unquantized ({r['model']})")
            continue
        series.setdefault(f"{_method_label(r)}, {_gs(r)}", []).append((r["bits"], r["perplexity"]))
    for label, pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.set_xlabel("bits per weight")
    ax.set_ylabel("perplexity")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path
