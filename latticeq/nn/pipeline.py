"""Sequential quantization of a whole model, block by block, as in GPTQ's reference code.

Algorithm (Frantar et al., arXiv 2210.17323, ``llama.py``/``opt.py`` ``*_sequential``):

1. Run the calibration windows through the model up to the first decoder block and keep that
   block's inputs — hidden states and every keyword argument the model passes to its blocks
   (attention mask, ``position_ids``, and in transformers 5.x the rotary
   ``position_embeddings`` computed once in the model).
2. For each decoder block ``ℓ`` (only this block on the device):

   a. the block's linear layers (``nn.Linear`` and GPT-2's ``Conv1D``) are grouped by the
      tensor they read — for Llama ``{q, k, v}``, ``{o}``, ``{gate, up}``, ``{down}``; for GPT-2
      ``{c_attn}``, ``{attn.c_proj}``, ``{c_fc}``, ``{mlp.c_proj}`` — found by one traced
      forward, so no per-architecture table is needed;
   b. *true-sequential*: for each group in execution order, run the block on the calibration
      inputs (stopping as soon as the group's input is known) with the earlier groups already
      quantized, accumulate ``H = (2/N) Σ x xᵀ`` for the group's shared input, solve every
      layer of the group (:func:`latticeq.nn.solvers.solve`) and replace its weight by the
      dequantized codes (scales rounded to float16, as the checkpoint stores them);
   c. recompute the block's outputs with quantized weights: the next block's inputs.

   Results of the block's frozen parts (its already-quantized layers, and submodules such as
   attention that use only those) are kept between 2b's and 2c's forwards instead of computed
   again (:mod:`latticeq.nn.reuse`): the same numbers, a third of the work.

Embeddings and ``lm_head`` are never touched. After every block the state (quantized layers
of the block, the next block's inputs) is written atomically under ``state_dir`` so that an
interrupted run resumes after the last finished block.

Plain round-to-nearest (``rtn``, no ``+refine``/``+refit``) needs no Hessian, so it skips steps
1, 2b's forwards and 2c: no calibration text is read, and each layer's reported error is the
weight-space ``‖W − Q‖²`` (``H = I``).
"""

from __future__ import annotations

import json
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from latticeq.io import atomic_torch_save, atomic_write_json
from latticeq.nn.reuse import OutputReuse, trace_block

__all__ = [
    "QuantizeOptions",
    "QuantizationResult",
    "find_blocks",
    "find_linears",
    "capture_block_inputs",
    "linear_groups",
    "quantize_model",
    "solve_layer",
]


@dataclass(frozen=True)
class QuantizeOptions:
    """What to quantize and how (everything a run's result depends on, except the model/data)."""

    bits: int
    group_size: int | None = None
    sym: bool = False
    act_order: bool = False
    method: str = "gptq"
    percdamp: float = 0.01
    true_sequential: bool = True
    seed: int = 0
    mse: bool = False
    solver_options: dict = field(default_factory=dict)
    group_refresh: str = "published"
    codebook: str = "scalar"
    incoherence: bool = True

    @property
    def vector(self) -> bool:
        """Whether a vector codebook (e8p, a Voronoi code) replaces the scalar grid."""
        return self.codebook != "scalar"

    def make_codebook(self):
        """The codebook these options name (None for the scalar grid); see
        :func:`latticeq.lattice.codebook.parse_codebook`."""
        from latticeq.lattice.codebook import parse_codebook

        return parse_codebook(self.codebook, self.bits)

    @property
    def grid(self):
        """The :class:`~latticeq.nn.grid.Grid` these options describe (validates them)."""
        from latticeq.nn.grid import Grid

        return Grid(self.bits, group_size=self.group_size, sym=self.sym, mse=self.mse,
                    group_refresh=self.group_refresh)

    def validate(self) -> None:
        from latticeq.nn.solvers import parse_method

        self.grid  # validates bits, group size and group refresh
        parse_method(self.method)
        if self.vector:
            from latticeq.nn.solvers.vq import vq_refine_passes

            self.make_codebook()
            vq_refine_passes(self.method, self.solver_options)  # names a method or option codebooks lack
            bad = [f for f, v in (("group_size", self.group_size is not None), ("sym", self.sym), ("mse", self.mse))
                   if v]
            if bad:
                raise ValueError(f"with a vector codebook each row has one least-squares scale: "
                                 f"{', '.join(bad)} cannot be set (no group size, sym, mse)")
        if not (isinstance(self.percdamp, (int, float)) and self.percdamp >= 0):
            raise ValueError(f"percdamp must be a number ≥ 0, got {self.percdamp!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        if not self.vector:  # scalar runs keep the keys they always had (resume compatibility)
            d.pop("codebook")
            d.pop("incoherence")
        return d

    @property
    def needs_calibration(self) -> bool:
        """False for plain round-to-nearest (``rtn``, on either grid): its codes depend on the
        weights alone, so the pipeline skips the calibration forwards entirely."""
        from latticeq.nn.solvers import parse_method

        base, suffixes = parse_method(self.method)
        return not (base == "rtn" and not suffixes)


@dataclass
class QuantizationResult:
    """Output of :func:`quantize_model`.

    Attributes
    ----------
    layers : dict name → QuantizedLayer (checkpoint form)
    layer_stats : list of {name, error, relative_error, time_s}
    quant_time_s : float
        Wall time of the quantization (capture + all blocks) in this process; on resume the
        earlier part is added from the saved state.
    peak_memory_bytes : int
        Peak device memory (CUDA max allocated) or, on CPU, the process's peak resident set.
    """

    layers: dict
    layer_stats: list
    quant_time_s: float
    peak_memory_bytes: int
    blocks: int


# ---------------------------------------------------------------------------------- structure
def _is_linear(module) -> bool:
    import torch

    return isinstance(module, torch.nn.Linear) or (type(module).__name__ == "Conv1D" and hasattr(module, "nf"))


def find_linears(module) -> dict:
    """Linear layers (``nn.Linear``, transformers ``Conv1D``) inside ``module`` by qualified name."""
    return {name: m for name, m in module.named_modules() if name and _is_linear(m)}


def find_blocks(model):
    """The decoder blocks: ``(qualified name, nn.ModuleList)``.

    The largest ``ModuleList`` whose entries all contain linear layers (``model.layers`` of
    Llama/Gemma/Mistral, ``transformer.h`` of GPT-2, ``model.decoder.layers`` of OPT).
    """
    import torch

    best = None
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) > 0:
            if all(find_linears(b) for b in mod):
                if best is None or len(mod) > len(best[1]):
                    best = (name, mod)
    if best is None:
        raise ValueError(
            "the model has no decoder blocks with linear layers (no nn.ModuleList of blocks "
            "containing nn.Linear/Conv1D); nothing to quantize"
        )
    return best


def _move_outside_blocks(model, blocks_name: str, device) -> None:
    """Move every parameter and buffer not inside the decoder blocks to ``device``."""
    prefix = blocks_name + "."
    for name, mod in model.named_modules():
        if name == blocks_name or name.startswith(prefix):
            continue
        for pname, p in list(mod.named_parameters(recurse=False)):
            if p.device != device:
                p.data = p.data.to(device)
        for bname, b in list(mod.named_buffers(recurse=False)):
            if b is not None and b.device != device:
                mod._buffers[bname] = b.to(device)


class _Stop(Exception):
    pass


def _to(obj, device):
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, tuple):
        return tuple(_to(o, device) for o in obj)
    if isinstance(obj, list):
        return [_to(o, device) for o in obj]
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj


BLOCK_STATE_FORMAT = "latticeq.block-state/1"


def _save_block_state(path, layers: dict, stats: list) -> None:
    """One finished block of a run: its layers' codes (uint8), fp16 scales, zeros and g_idx in
    safetensors (lattice-coded layers: their ``latticeq-vq`` tensors), everything else (bits,
    layout, codebook, per-layer stats) as JSON in the header. Nothing in it is executable."""
    import numpy as np
    import torch
    from safetensors.torch import save as st_save

    from latticeq.io import atomic_write_bytes
    from latticeq.nn.vqformat import VQLayer, _pack

    tensors, meta = {}, {}
    for name, q in layers.items():
        if isinstance(q, VQLayer):
            for k, v in _pack(q).items():
                tensors[f"{name}.{k}"] = v
            meta[name] = {"codebook": q.codebook.spec(), "incoherence": q.signs_out is not None,
                          "transposed": bool(q.transposed)}
            continue
        tensors[f"{name}.codes"] = torch.from_numpy(np.ascontiguousarray(q.codes, dtype=np.uint8))
        tensors[f"{name}.scales"] = torch.from_numpy(np.ascontiguousarray(q.scales, dtype=np.float16))
        tensors[f"{name}.zeros"] = torch.from_numpy(np.ascontiguousarray(q.zeros, dtype=np.uint8))
        tensors[f"{name}.g_idx"] = torch.from_numpy(np.ascontiguousarray(q.g_idx, dtype=np.int32))
        meta[name] = {"bits": int(q.bits), "transposed": bool(q.transposed)}
    header = {"format": BLOCK_STATE_FORMAT, "layers": json.dumps(meta), "stats": json.dumps(stats)}
    atomic_write_bytes(path, st_save(tensors, metadata=header))


def _load_block_state(path, mods: dict):
    """Inverse of :func:`_save_block_state`, checked against the block's modules (names and
    shapes); a clear ValueError on anything else."""
    import numpy as np
    from safetensors import safe_open
    from safetensors.torch import load_file

    from latticeq.lattice.codebook import codebook_from_spec
    from latticeq.nn.checkpoint import QuantizedLayer
    from latticeq.nn.vqformat import _unpack

    bad = f"cannot resume: block state {str(path)!r}"
    try:
        with safe_open(str(path), framework="np") as f:
            header = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}
        if header.get("format") != BLOCK_STATE_FORMAT:
            raise ValueError(f"format {header.get('format')!r}, expected {BLOCK_STATE_FORMAT!r}")
        meta, stats = json.loads(header["layers"]), json.loads(header["stats"])
    except FileNotFoundError:
        raise ValueError(f"{bad} is missing; start again with --force") from None
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{bad} is unreadable ({exc}); start again with --force") from None
    if set(meta) != set(mods):
        raise ValueError(f"{bad} holds layers {sorted(meta)}, the model's block has {sorted(mods)}")
    layers = {}
    for name, info in meta.items():
        w = _get_weight(mods[name])
        if "codebook" in info:  # a lattice-coded layer
            try:
                cb = codebook_from_spec(info["codebook"])
                layers[name] = _unpack(load_file(str(path)), name + ".", cb, int(w.shape[0]), int(w.shape[1]),
                                       bool(info["incoherence"]), bool(info["transposed"]), bad)
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{bad}: {exc}; start again with --force") from None
            continue
        q = QuantizedLayer(arrays[f"{name}.codes"].astype(np.int64), arrays[f"{name}.scales"],
                           arrays[f"{name}.zeros"].astype(np.int64), arrays[f"{name}.g_idx"],
                           int(info["bits"]), bool(info["transposed"]))
        if tuple(q.codes.shape) != tuple(w.shape):
            raise ValueError(f"{bad}: layer {name} has codes {tuple(q.codes.shape)}, the model's weight "
                             f"is {tuple(w.shape)}")
        layers[name] = q
    return layers, stats


def _install(block, name: str, mod, q) -> None:
    """Put a quantized layer into the in-memory model: a lattice-coded layer becomes a
    :class:`~latticeq.nn.vqformat.VQLinear` (the module a checkpoint loads into, so both give
    identical logits); a scalar one sets the dequantized weight."""
    from latticeq.nn.vqformat import VQLayer, VQLinear, _set_module

    if isinstance(q, VQLayer):  # decoded per call while later blocks calibrate (codes-only memory)
        _set_module(block, name, VQLinear(q, getattr(mod, "bias", None), cache=False,
                                          dtype=mod.weight.dtype).to(mod.weight.device))
    else:
        _set_weight(mod, q.dequant())


def _load_state_file(path):
    """``torch.load`` of a run's ``inputs.pt`` with ``weights_only=True``: tensors, numbers,
    strings and containers only — a crafted file cannot run code."""
    import pickle

    import torch

    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"cannot resume: {str(path)!r} is not a plain tensor state ({first}); "
                         "start again with --force") from None


def capture_block_inputs(model, windows, device="cpu", batch_size: int = 8):
    """Inputs of the first decoder block for each batch of calibration windows.

    Returns ``(hidden, calls)``: ``hidden`` a list of tensors ``(b, L, d)``; ``calls`` a list of
    ``(args, kwargs)`` — everything else the model passed to the block (positional after the
    hidden states, and keyword), per batch.
    """
    import torch

    blocks_name, blocks = find_blocks(model)
    dev = torch.device(device)
    first = blocks[0]
    hidden, calls = [], []

    class Catcher(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def __getattr__(self, name):
            try:
                return super().__getattr__(name)
            except AttributeError:
                return getattr(self.inner, name)

        def forward(self, hidden_states, *args, **kwargs):
            hidden.append(hidden_states.detach())
            calls.append((args, {k: v for k, v in kwargs.items()}))
            raise _Stop

    _move_outside_blocks(model, blocks_name, dev)
    first.to(dev)
    blocks[0] = Catcher(first)
    try:
        with torch.no_grad():
            for start in range(0, windows.shape[0], batch_size):
                try:
                    model(windows[start : start + batch_size].to(dev), use_cache=False)
                except _Stop:
                    pass
    finally:
        blocks[0] = first
    for i, (args, kw) in enumerate(calls):
        kw.pop("past_key_values", None)
        kw.pop("past_key_value", None)
        kw.pop("layer_past", None)
        kw["use_cache"] = False
        calls[i] = (args, kw)
    return hidden, calls


def _block_forward(block, h, call):
    args, kwargs = call
    out = block(h, *args, **kwargs)
    if isinstance(out, (tuple, list)):
        out = out[0]
    return out


def linear_groups(block, hidden, calls) -> list[list[str]]:
    """Linear layers of ``block`` grouped by shared input tensor, in execution order.

    One traced forward on the first calibration batch (:func:`latticeq.nn.reuse.trace_block`);
    layers whose inputs are the same tensor form a group (Llama: q/k/v, o, gate/up, down).
    """
    return _trace(block, find_linears(block), hidden[0], calls[0]).groups


def _trace(block, linears, h, call):
    """:func:`~latticeq.nn.reuse.trace_block` on the batch's first window (what a forward calls
    does not depend on the batch size), or on the whole batch if the block's arguments cannot
    be cut to one window."""
    import torch

    b = h.shape[0]

    def first(x):
        if isinstance(x, torch.Tensor):
            return x[:1] if x.ndim >= 2 and x.shape[0] == b else x
        if isinstance(x, (tuple, list)):
            return type(x)(first(v) for v in x)
        if isinstance(x, dict):
            return {k: first(v) for k, v in x.items()}
        return x

    if b > 1:
        try:
            return trace_block(block, linears, lambda: _block_forward(block, h[:1], first(call)))
        except Exception:  # noqa: BLE001 — an argument with another meaning of dim 0: use the batch
            pass
    return trace_block(block, linears, lambda: _block_forward(block, h, call))


def _peak_memory(device) -> int:
    import torch

    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def quantize_model(
    model,
    windows,
    options: QuantizeOptions,
    *,
    device: str = "cpu",
    batch_size: int = 8,
    state_dir=None,
    resume: bool = False,
    progress: bool = True,
    run_info: dict | None = None,
    reuse_outputs: bool = True,
) -> QuantizationResult:
    """Quantize every linear layer of the decoder blocks, sequentially (GPTQ's pipeline).

    Parameters
    ----------
    model : transformers causal LM (float, on CPU)
        Modified in place: quantized layers get their dequantized weights.
    windows : LongTensor (N, L) or None
        Calibration windows (:func:`latticeq.nn.calib.calibration_windows`). Ignored (may be
        ``None``) when ``options.needs_calibration`` is false — plain RTN: then no forward pass
        runs and each layer's reported error is the weight-space one, ``H = I``
        (``error_metric`` ``"weight"`` in the layer stats instead of ``"hessian"``).
    options : QuantizeOptions
    device : str
        Where each block is quantized (``cpu`` or ``cuda``); only one block lives there at a time.
    batch_size : int
        Calibration windows per forward pass.
    state_dir : path, optional
        Folder for per-block resumable state (written atomically after each block).
    resume : bool
        Continue from the state in ``state_dir`` (its options must match).
    progress : bool
    reuse_outputs : bool
        Keep the outputs of a block's frozen parts between its forwards
        (:mod:`latticeq.nn.reuse`): same results, about a third of the linear products, at the
        cost of holding some of the block's activations for all calibration batches at once.

    Returns
    -------
    QuantizationResult
    """
    import torch

    from latticeq.nn.checkpoint import quantized_layer
    from latticeq.progress import make_progress

    options.validate()
    calibrated = options.needs_calibration
    if not calibrated:
        windows = None
    elif windows is None or not isinstance(windows, torch.Tensor) or windows.ndim != 2 or windows.dtype != torch.long:
        got = None if windows is None else f"{getattr(windows, 'dtype', type(windows).__name__)} {tuple(getattr(windows, 'shape', ()))}"
        raise ValueError(f"windows must be a LongTensor (N, L) of calibration tokens, got {got}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but CUDA is not available")
        torch.cuda.reset_peak_memory_stats(dev)
    blocks_name, blocks = check_model(model, options)
    grid = options.grid
    codebook = options.make_codebook() if options.vector else None  # one object: its caches serve every layer
    state = Path(state_dir) if state_dir is not None else None
    fingerprint = {"options": options.to_dict(),
                   "windows": list(windows.shape) if calibrated else None,
                   "windows_sum": int(windows.sum()) if calibrated else None,
                   "blocks": len(blocks), **(run_info or {})}
    t0 = time.perf_counter()
    prior_time = 0.0
    layers: dict = {}
    stats: list = []
    start_block = 0
    hidden = calls = None
    use_cache = getattr(model.config, "use_cache", None)
    model.config.use_cache = False

    if state is not None:
        state.mkdir(parents=True, exist_ok=True)
        run_file = state / "run.json"
        if resume and (state / "inputs.pt").is_file():
            check_resume_settings(run_file, fingerprint)
            ck = _load_state_file(state / "inputs.pt")
            if not (isinstance(ck, dict) and isinstance(ck.get("next_block"), int)
                    and 0 <= ck["next_block"] <= len(blocks)):
                raise ValueError(f"cannot resume: {str(state / 'inputs.pt')!r} is not a latticeq run state; "
                                 "start again with --force")
            start_block = ck["next_block"]
            prior_time = float(ck["elapsed"])
            hidden = _to(ck["hidden"], dev)
            calls = _to(ck["calls"], dev)
            for bi in range(start_block):
                mods = find_linears(blocks[bi])
                saved_layers, saved_stats = _load_block_state(state / f"block_{bi:04d}.safetensors", mods)
                for name, q in saved_layers.items():
                    full = f"{blocks_name}.{bi}.{name}"
                    layers[full] = q
                    _install(blocks[bi], name, mods[name], q)
                stats.extend(saved_stats)
        else:
            for f in [*state.glob("block_*.pt"), *state.glob("block_*.safetensors")]:
                f.unlink()
            if (state / "inputs.pt").exists():
                (state / "inputs.pt").unlink()
            atomic_write_json(run_file, json.loads(json.dumps(fingerprint, default=str)), default=str)

    try:
        if not calibrated:
            pass
        elif hidden is None:
            hidden, calls = capture_block_inputs(model, windows, device=dev, batch_size=batch_size)
        else:
            _move_outside_blocks(model, blocks_name, dev)
        n_layers_total = sum(len(find_linears(b)) for b in blocks)
        with make_progress(progress) as bar:
            task = bar.add_task("quantizing", total=n_layers_total)
            bar.update(task, completed=sum(len(find_linears(b)) for b in blocks[:start_block]))
            for bi in range(start_block, len(blocks)):
                block = blocks[bi].to(dev)
                mods = find_linears(block)
                trace = None
                if not calibrated:
                    groups = [[name] for name in mods]
                else:
                    trace = _trace(block, mods, hidden[0], calls[0])
                    groups = trace.groups if options.true_sequential else [list(mods)]
                block_layers, block_stats = {}, []
                reuse = OutputReuse(block, mods, trace, enabled=calibrated and reuse_outputs)
                with reuse:
                    for group in groups:
                        if calibrated:
                            H = _group_hessian(block, mods[group[0]], hidden, calls, reuse)
                        else:  # weight-space error: H = I (LayerProblem's identity)
                            H = None
                        shared = None  # the group's LayerProblem: one H, checked and factored once
                        for name in group:
                            mod = mods[name]
                            bar.update(task, description=f"block {bi + 1}/{len(blocks)} {name}")
                            tl = time.perf_counter()
                            W = _get_weight(mod).to(torch.float32)
                            if codebook is None:
                                shared = shared.with_weights(W) if shared is not None else _layer_problem(W, H)[0]
                                sol, codes, g_idx = solve_layer(W, H, grid, options, problem=shared)
                                q = quantized_layer(codes, sol.scales, sol.zeros, g_idx, options.bits,
                                                    transposed=_is_conv1d(mod))
                            else:
                                sol, q = solve_vq_layer(W, H, codebook, options, transposed=_is_conv1d(mod))
                            _install(block, name, mod, q)
                            reuse.freeze(name)
                            full = f"{blocks_name}.{bi}.{name}"
                            rec = {"name": full, "error": float(sol.error),
                                   "relative_error": float(sol.relative_error),
                                   "error_metric": "hessian" if calibrated else "weight",
                                   "time_s": time.perf_counter() - tl}
                            block_layers[name] = q
                            block_stats.append(rec)
                            layers[full] = q
                            bar.update(task, advance=1, description=(
                                f"block {bi + 1}/{len(blocks)} {name}: rel. err {rec['relative_error']:.3g}"))
                        del H
                    # outputs of the quantized block are the next block's inputs
                    if calibrated:
                        outputs = []
                        with torch.no_grad():
                            for i, (h, c) in enumerate(zip(hidden, calls)):
                                reuse.start(i)
                                outputs.append(_block_forward(block, h, c))
                        hidden = outputs
                stats.extend(block_stats)
                elapsed = time.perf_counter() - t0
                done_here = bi + 1 - start_block
                rel = [r["relative_error"] for r in block_stats]
                bar.note(f"block {bi + 1}/{len(blocks)}: {len(block_stats)} layers, relative error "
                         f"mean {sum(rel) / len(rel):.4g} max {max(rel):.4g}; elapsed {elapsed:.0f} s, "
                         f"ETA {elapsed / done_here * (len(blocks) - bi - 1):.0f} s")
                blocks[bi] = block.to("cpu") if dev.type != "cpu" else block
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
                if state is not None:
                    _save_block_state(state / f"block_{bi:04d}.safetensors", block_layers, block_stats)
                    atomic_torch_save(state / "inputs.pt",
                                      {"next_block": bi + 1, "hidden": _to(hidden, "cpu"),
                                       "calls": _to(calls, "cpu"),
                                       "elapsed": prior_time + time.perf_counter() - t0})
    finally:
        if use_cache is not None:
            model.config.use_cache = use_cache
    peak = _peak_memory(dev)
    _move_outside_blocks(model, blocks_name, torch.device("cpu"))
    if options.vector:  # quantized: each lattice-coded layer folded once, as a loaded checkpoint has it
        from latticeq.nn.vqformat import set_vq_cache

        set_vq_cache(model, True)
    return QuantizationResult(layers=layers, layer_stats=stats,
                              quant_time_s=prior_time + time.perf_counter() - t0,
                              peak_memory_bytes=peak, blocks=len(blocks))


def check_model(model, options: QuantizeOptions):
    """Validate that ``model`` has decoder blocks whose layers fit the grid; returns the blocks."""
    blocks_name, blocks = find_blocks(model)
    options.grid  # validates
    gs = options.group_size
    if gs is not None:
        widths = {(mod.weight.shape[0] if _is_conv1d(mod) else mod.weight.shape[1])
                  for block in blocks for mod in find_linears(block).values()}
        if gs > max(widths):
            raise ValueError(f"group_size {gs} exceeds every layer's input width (at most {max(widths)}); "
                             f"use None (per-channel) or a group size ≤ {max(widths)}")
    if options.vector:
        from latticeq.nn.incoherence import _hadamard_plan

        d = options.make_codebook().dim
        for block in blocks:
            for name, mod in find_linears(block).items():
                m, n = _get_weight(mod).shape
                if n % d:
                    raise ValueError(f"layer {name} has {n} inputs, not a multiple of the codebook dimension {d}")
                for w in (m, n) if options.incoherence else ():
                    if _hadamard_plan(int(w)) is None:
                        raise ValueError(f"layer {name}: no Hadamard matrix of order {w} is constructed here, and "
                                         "latticeq-vq checkpoints store randomized Hadamard transforms only; "
                                         "quantize without incoherence (--no-incoherence)")
    return blocks_name, blocks


def solve_layer(W, H, grid, options, *, problem=None):
    """Solve one layer; a group size that does not divide ``n`` works as in GPTQ (⌈n/g⌉ groups,
    the last one smaller), handled by the grid and the solvers themselves. ``problem``: the
    layer's :class:`~latticeq.nn.layer.LayerProblem` if the caller has it (made by
    ``with_weights`` from an earlier layer of the same group, sharing H's factorizations)."""
    from latticeq.nn.solvers import solve

    if problem is None:
        problem, _ = _layer_problem(W, H)
    kw = dict(method=options.method, act_order=options.act_order, percdamp=options.percdamp,
              seed=options.seed, **options.solver_options)
    try:
        sol = solve(problem, grid, **kw)
    except ValueError as exc:
        # CPU fallback for solvers without a GPU path (e.g. the numba block-exact rule)
        if W.device.type == "cpu" or "CPU" not in str(exc):
            raise
        problem, _ = _layer_problem(W.cpu(), None if H is None else H.cpu())
        sol = solve(problem, grid, **kw)
    return sol, sol.codes, sol.g_idx


def solve_vq_layer(W, H, codebook, options, *, transposed: bool = False):
    """Solve one layer with a vector codebook (:func:`~latticeq.nn.solvers.vq.vq_solve`):
    ``(solution, VQLayer)``. The transforms' seeds are ``options.seed`` (outputs) and
    ``options.seed + 1`` (inputs) for every layer."""
    from latticeq.nn.solvers.vq import vq_refine_passes, vq_solve
    from latticeq.nn.vqformat import vq_layer_from_solution

    problem, _ = _layer_problem(W.cpu().double(), None if H is None else H.cpu().double())
    sol = vq_solve(problem, codebook, act_order=options.act_order, percdamp=options.percdamp,
                   seed=options.seed, incoherence=options.incoherence, fallback=False,
                   refine_passes=vq_refine_passes(options.method, options.solver_options))
    return sol, vq_layer_from_solution(sol, codebook, seed=options.seed, incoherence=options.incoherence,
                                       transposed=transposed)


def _layer_problem(W, H):
    """``LayerProblem(W, H)``; if float round-off makes a singular ``H`` fail the PSD check,
    add ``ε · mean(diag H) · I`` with ε = 1e-6, 1e-5, 1e-4 (far below the solver's damping)."""
    from latticeq.nn.layer import LayerProblem

    try:
        return LayerProblem(W, H), 0.0
    except ValueError as exc:
        if "positive semidefinite" not in str(exc):
            raise
        last = exc
    import torch

    mean_diag = torch.diagonal(H).mean()
    eye = torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    for eps in (1e-6, 1e-5, 1e-4):
        try:
            return LayerProblem(W, H + eps * mean_diag * eye), eps
        except ValueError as exc:
            last = exc
    raise last


def _is_conv1d(mod) -> bool:
    return type(mod).__name__ == "Conv1D" and hasattr(mod, "nf")


def _get_weight(mod):
    """Weight as (out, in)."""
    return mod.weight.detach().T if _is_conv1d(mod) else mod.weight.detach()


def _set_weight(mod, W) -> None:
    W = W.T if _is_conv1d(mod) else W
    mod.weight.data = W.to(device=mod.weight.device, dtype=mod.weight.dtype).contiguous()


def _group_hessian(block, first_layer, hidden, calls, reuse=None):
    """``H = (2/N) Σ x xᵀ`` of the input of ``first_layer`` over all calibration batches.

    The block runs only until that input is known (a pre-hook stops the forward); ``reuse``
    (an entered :class:`~latticeq.nn.reuse.OutputReuse`) hands back results of frozen layers.
    """
    import torch

    from latticeq.nn.layer import HessianAccumulator

    n = first_layer.weight.shape[0] if _is_conv1d(first_layer) else first_layer.weight.shape[1]
    acc = HessianAccumulator(n, device=hidden[0].device)

    def hook(mod, inputs):
        acc.add_batch(inputs[0].detach())
        raise _Stop

    handle = first_layer.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            for i, (h, c) in enumerate(zip(hidden, calls)):
                if reuse is not None:
                    reuse.start(i)
                try:
                    _block_forward(block, h, c)
                except _Stop:
                    pass
    finally:
        handle.remove()
    return acc.hessian


STATE_DIR = ".latticeq-state"
RECORD_NAME = "latticeq_record.json"


def check_resume_settings(run_file: Path, settings: dict) -> None:
    """Refuse to resume a run whose settings, saved as JSON in ``run_file``, differ from
    ``settings`` (compared as JSON: what cannot be written is compared as its ``str``)."""
    saved = json.loads(run_file.read_text(encoding="utf-8"))
    if saved != json.loads(json.dumps(settings, default=str)):
        raise ValueError(f"cannot resume: the saved run in {str(run_file.parent)!r} used different settings "
                         f"({saved}); start again with --force")


def is_run_folder(folder) -> bool:
    """Whether ``folder`` was written by ``latticeq quantize`` (a finished checkpoint with its run
    record, or an unfinished run's state): the only folders ``--force`` may replace."""
    folder = Path(folder)
    return (folder / RECORD_NAME).is_file() or (folder / STATE_DIR / "run.json").is_file()


def check_run_folder(out, *, resume: bool, force: bool) -> Path:
    """The output folder of a quantization run, validated before any work (absolute path).

    Refused: a file; the current folder or one above it; a non-empty folder, unless it holds
    an unfinished run and ``resume`` is set, or ``force`` is set and latticeq wrote it
    (:func:`is_run_folder`) — ``--force`` never deletes anything else. An empty folder is
    fine. The parent must be writable.
    """
    from latticeq.io import check_output

    out = Path(out).absolute()
    cwd = Path.cwd().absolute()
    if out == cwd or out in cwd.parents:
        raise ValueError(f"--out {str(out)!r} is the current folder or one above it; name a new folder")
    unfinished = (out / STATE_DIR / "run.json").is_file()
    if out.is_dir() and any(out.iterdir()) and not force and not (resume and unfinished):
        hint = ("an unfinished run: pass --resume to continue it (or --force to start over)"
                if unfinished else "files; pass --force to replace a latticeq checkpoint, or choose another folder")
        raise FileExistsError(f"output folder {str(out)!r} exists and holds {hint}")
    if resume and unfinished:
        return out
    return check_output(out, folder=True, force=force, owned=is_run_folder, what="--out")


def quantize_to_checkpoint(
    model: str,
    out,
    *,
    bits: int,
    method: str = "gptq",
    group_size: int | None = None,
    sym: bool = False,
    mse: bool = False,
    act_order: bool = False,
    calib=None,
    nsamples: int = 128,
    seqlen: int = 512,
    seed: int = 0,
    device: str = "cpu",
    eval_text=None,
    eval_windows: int | None = None,
    percdamp: float = 0.01,
    true_sequential: bool = True,
    checkpoint_format: str = "gptq",
    batch_size: int = 8,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    solver_options: dict | None = None,
    group_refresh: str = "published",
    codebook: str = "scalar",
    incoherence: bool = True,
    reuse_outputs: bool = True,
) -> dict:
    """Load a model, quantize it sequentially, optionally evaluate, save a GPTQ checkpoint
    (scalar grid) or a ``latticeq-vq`` checkpoint (vector ``codebook``: ``e8p``,
    ``voronoi:NAME``, ``voronoi:PATH.json``; see :mod:`latticeq.nn.vqformat`).

    Everything is validated (options, model, calibration text length, output folder) before
    anything is written. The run's state lives in ``out/.latticeq-state`` while it runs
    (``resume=True`` continues after the last finished block); the checkpoint replaces ``out``
    atomically at the end, with the run record in ``out/latticeq_record.json``.

    ``eval_text``: ``None`` = no evaluation (perplexity ``None``); ``"default"`` = *Pride and
    Prejudice*; else a UTF-8 file. ``eval_windows`` limits evaluation to the first windows.

    Returns the run record (see :mod:`latticeq.nn.records`).
    """
    import torch

    from latticeq.nn.calib import calibration_windows, describe_calibration
    from latticeq.nn.checkpoint import CHECKPOINT_FORMATS, save_checkpoint
    from latticeq.nn.evaluate import eval_windows as eval_windows_of
    from latticeq.nn.evaluate import perplexity
    from latticeq.nn.model import load_model, load_tokenizer, resolve_model
    from latticeq.nn.records import make_record

    t_start = time.perf_counter()
    options = QuantizeOptions(bits=bits, group_size=group_size, sym=sym, mse=mse, act_order=act_order,
                              method=method, percdamp=percdamp, true_sequential=true_sequential,
                              seed=seed, solver_options=dict(solver_options or {}),
                              group_refresh=group_refresh, codebook=codebook, incoherence=incoherence)
    options.validate()
    if checkpoint_format not in CHECKPOINT_FORMATS:
        raise ValueError(f"checkpoint_format must be one of {CHECKPOINT_FORMATS}, got {checkpoint_format!r}")
    if eval_windows is not None and (isinstance(eval_windows, bool) or not isinstance(eval_windows, int)
                                     or eval_windows < 1):
        raise ValueError(f"eval_windows (--eval-windows) must be a positive integer, got {eval_windows!r}")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r} (--device): {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested (--device) but CUDA is not available")
    out = check_run_folder(out, resume=resume, force=force)
    state_dir = out / STATE_DIR
    source = resolve_model(model)
    tokenizer = load_tokenizer(model)
    ev_windows = None
    if eval_text is not None:  # read, decode and window the text now, not after quantizing
        ev_windows, _ = eval_windows_of(tokenizer, None if eval_text == "default" else eval_text, seqlen)
    windows = None
    if options.needs_calibration:
        windows = calibration_windows(tokenizer, texts=calib, nsamples=nsamples, seqlen=seqlen, seed=seed)
    net = load_model(model, device="cpu")
    check_model(net, options)  # no blocks / group size not dividing a layer: error, nothing written
    out.mkdir(parents=True, exist_ok=True)
    info = {"model": source.name, "calibration": describe_calibration(calib)}
    result = quantize_model(net, windows, options, device=device, batch_size=batch_size,
                            state_dir=state_dir, resume=resume, progress=progress, run_info=info,
                            reuse_outputs=reuse_outputs)
    ppl = ev = None
    if eval_text is not None:
        text = None if eval_text == "default" else eval_text
        net.to(device)
        pr = perplexity(net, tokenizer, text=text, seqlen=seqlen, max_windows=eval_windows,
                        progress=progress, windows=ev_windows)
        net.to("cpu")
        ppl, ev = pr.perplexity, pr.eval_info()
    record = make_record(
        model=source.name, method=method, bits=bits, group_size=group_size, sym=sym, mse=mse,
        act_order=act_order,
        calibration=({"source": info["calibration"], "nsamples": nsamples, "seqlen": seqlen}
                     if options.needs_calibration else None),
        seed=seed, perplexity=ppl, eval=ev, wall_time_s=time.perf_counter() - t_start,
        quant_time_s=result.quant_time_s, peak_memory_bytes=result.peak_memory_bytes,
        layers=result.layer_stats,
        group_refresh=group_refresh if group_size is not None and not options.vector else None,
        codebook=options.make_codebook().spec() if options.vector else None,
        bits_per_weight=bits_per_weight(result.layers),
        transforms=({"kind": "randomized-hadamard", "seed_out": seed, "seed_in": seed + 1}
                    if options.vector and incoherence else None),
        threads=torch.get_num_threads(),
    )
    if options.vector:
        from latticeq.nn.vqformat import save_vq_checkpoint

        save_vq_checkpoint(net, result.layers, out, bits=bits, incoherence=incoherence, desc_act=act_order,
                           damp_percent=percdamp, tokenizer=tokenizer, extra_files={RECORD_NAME: record},
                           force=True)
        return record
    save_checkpoint(net, result.layers, out, bits=bits, group_size=group_size, sym=sym,
                    desc_act=act_order, damp_percent=percdamp, true_sequential=true_sequential,
                    checkpoint_format=checkpoint_format, tokenizer=tokenizer,
                    extra_files={RECORD_NAME: record}, force=True)
    return record


def bits_per_weight(layers: dict) -> float:
    """Every stored bit of the quantized layers over their number of weights (see each layer's
    ``stored_bits``); embeddings, norms and the head are not quantized and not counted."""
    total = sum(q.stored_bits() for q in layers.values())
    weights = sum(q.shape[0] * q.shape[1] for q in layers.values())
    return total / weights
