"""GPTQ-format checkpoints: write, read back, dequantize.

The format is the one of the GPTQ reference code's ``QuantLinear.pack`` as read by
AutoGPTQ / GPTQModel, transformers' GPTQ integration and vLLM. For a linear layer with
``n`` inputs, ``m`` outputs, ``b`` bits and ``G`` groups (``G = 1`` per-channel):

==========  ==========================  =====================================================
tensor      shape, dtype                content
==========  ==========================  =====================================================
qweight     (n·b/32, m) int32           codes ``c[o, i]``, packed along the input dimension:
                                        for each output ``o`` the codes ``c[o, 0], c[o, 1], …``
                                        form a little-endian bit stream, code ``i`` at stream
                                        bits ``[i·b, (i+1)·b)``, 32 bits per word — for
                                        b ∈ {2, 4, 8} that is 32/b codes per word; for b = 3
                                        codes 10 and 21 straddle words (GPTQ's 3-bit layout).
qzeros      (G, m·b/32) int32           zero points packed the same way along the output
                                        dimension; stored **minus one** for
                                        ``checkpoint_format = "gptq"`` (the historical v1
                                        convention, modulo 2^b), as-is for ``"gptq_v2"``.
scales      (G, m) float16              per-group scales.
g_idx       (n,) int32                  group of each input column (act-order permutes it).
bias        (m,) optional               unchanged.
==========  ==========================  =====================================================

The dequantized weight is ``W[o, i] = scales[g, o] · (c[o, i] − z[g, o])`` with
``g = g_idx[i]``. :func:`dequantize` is the single implementation used both when latticeq
puts quantized weights into the in-memory model and when it loads a checkpoint, so a round
trip reproduces the logits bit for bit.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latticeq.io import default_permissions

__all__ = [
    "QuantizedLayer",
    "pack_codes",
    "unpack_codes",
    "dequantize",
    "quantized_layer",
    "save_checkpoint",
    "load_checkpoint",
    "is_gptq_checkpoint",
    "CHECKPOINT_FORMATS",
]

CHECKPOINT_FORMATS = ("gptq", "gptq_v2")
WEIGHTS_NAME = "model.safetensors"


# ------------------------------------------------------------------------------- bit packing
def pack_codes(codes, bits: int, axis: int = 0) -> np.ndarray:
    """Pack non-negative integer codes ``< 2**bits`` into int32 words along ``axis``.

    Along ``axis`` the codes form a little-endian bit stream (code ``i`` at bits
    ``[i·bits, (i+1)·bits)``), cut into 32-bit words; the stream is zero-padded to a whole
    word. This is GPTQ's layout for every bit width, including 3-bit codes straddling words.

    Returns an int32 array whose ``axis`` has ``ceil(len·bits/32)`` entries.
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 32:
        raise ValueError(f"bits must be an integer from 1 to 32, got {bits!r}")
    c = np.asarray(codes)
    if c.size and (c.min() < 0 or c.max() >= 2**bits):
        raise ValueError(f"codes must lie in [0, {2**bits - 1}] for {bits} bits")
    c = np.moveaxis(c.astype(np.uint64), axis, 0)
    k = c.shape[0]
    nwords = -(-k * bits // 32)
    out = np.zeros((nwords,) + c.shape[1:], dtype=np.uint64)
    for i in range(k):
        bit = i * bits
        w, off = divmod(bit, 32)
        out[w] |= (c[i] << np.uint64(off)) & np.uint64(0xFFFFFFFF)
        spill = off + bits - 32
        if spill > 0:
            out[w + 1] |= c[i] >> np.uint64(bits - spill)
    return np.ascontiguousarray(np.moveaxis(out.astype(np.uint32).view(np.int32), 0, axis))


def unpack_codes(packed, bits: int, count: int, axis: int = 0) -> np.ndarray:
    """Inverse of :func:`pack_codes`: the first ``count`` codes along ``axis`` (int64)."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 32:
        raise ValueError(f"bits must be an integer from 1 to 32, got {bits!r}")
    p = np.moveaxis(np.asarray(packed).view(np.uint32).astype(np.uint64), axis, 0)
    if p.shape[0] != -(-count * bits // 32):
        raise ValueError(f"{p.shape[0]} words along axis {axis} do not hold exactly {count} codes of {bits} bits "
                         f"({-(-count * bits // 32)} words): the data and the stated bit width disagree")
    mask = np.uint64(2**bits - 1)
    out = np.zeros((count,) + p.shape[1:], dtype=np.uint64)
    for i in range(count):
        w, off = divmod(i * bits, 32)
        v = p[w] >> np.uint64(off)
        spill = off + bits - 32
        if spill > 0:
            v = v | (p[w + 1] << np.uint64(bits - spill))
        out[i] = v & mask
    return np.moveaxis(out.astype(np.int64), 0, axis)


# ------------------------------------------------------------------------------- layers
@dataclass
class QuantizedLayer:
    """One quantized linear layer in checkpoint terms (all in original column order).

    Attributes
    ----------
    codes : (m, n) int64 in [0, 2^bits − 1]
    scales : (G, m) float16
    zeros : (G, m) int64 in [0, 2^bits − 1]
    g_idx : (n,) int32
    bits : int
    transposed : bool
        True for GPT-2's ``Conv1D`` (weight stored as (n, m)).
    """

    codes: np.ndarray
    scales: np.ndarray
    zeros: np.ndarray
    g_idx: np.ndarray
    bits: int
    transposed: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.codes.shape[0]), int(self.codes.shape[1])

    def stored_bits(self) -> int:
        """Bits this layer takes in a GPTQ checkpoint: codes, fp16 scales and ``bits``-bit zeros
        per group, int32 g_idx (bias excluded)."""
        m, n = self.shape
        groups = int(np.asarray(self.scales).shape[0])
        return m * n * int(self.bits) + groups * m * (16 + int(self.bits)) + 32 * n

    def dequant(self):
        """The float32 weight ``(m, n)`` as a torch tensor (see :func:`dequantize`)."""
        return dequantize(self.codes, self.scales, self.zeros, self.g_idx)


def dequantize(codes, scales, zeros, g_idx):
    """``W[o, i] = float32(scales[g_idx[i], o]) · (c[o, i] − z[g_idx[i], o])`` as float32 torch.

    ``scales`` are float16 (as stored); the product is computed in float32, in this order,
    everywhere in latticeq.
    """
    import torch

    c = torch.as_tensor(np.asarray(codes, dtype=np.int64))
    s = torch.as_tensor(np.asarray(scales, dtype=np.float16)).float()
    z = torch.as_tensor(np.asarray(zeros, dtype=np.int64))
    g = torch.as_tensor(np.asarray(g_idx, dtype=np.int64))
    # contiguous: a weight's memory layout picks the matmul kernel, and so the last bits of the
    # logits; the in-memory model and a loaded checkpoint must compute the same thing
    return (s[g, :].T * (c - z[g, :].T).float()).contiguous()


def quantized_layer(codes, scales, zeros, g_idx, bits: int, transposed: bool = False) -> QuantizedLayer:
    """Build a :class:`QuantizedLayer` from a solver's output.

    Parameters
    ----------
    codes : (m, n) integer-valued
    scales, zeros : (m, G) as solvers return them (transposed here to the GPTQ (G, m) layout);
        scales are rounded to float16, zeros to integers.
    g_idx : (n,)
    """
    to_np = lambda a: a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)  # noqa: E731
    c = to_np(codes)
    z = to_np(zeros)
    s = to_np(scales)
    g = to_np(g_idx)
    maxq = 2**bits - 1
    if c.ndim != 2:
        raise ValueError(f"codes must be (m, n), got shape {c.shape}")
    m, n = c.shape
    if s.ndim == 1:
        s, z = s[:, None], z[:, None]
    if s.shape[0] != m or z.shape != s.shape:
        raise ValueError(f"scales/zeros must be (m, G) with m = {m}, got {s.shape} and {z.shape}")
    if g.shape != (n,) or g.min() < 0 or g.max() >= s.shape[1]:
        raise ValueError(f"g_idx must be (n,) = ({n},) with values in [0, {s.shape[1]})")
    ci = np.rint(c).astype(np.int64)
    zi = np.rint(z).astype(np.int64)
    if np.abs(ci - c).max(initial=0) > 1e-6 or ci.min() < 0 or ci.max() > maxq:
        raise ValueError(f"codes must be integers in [0, {maxq}]")
    if np.abs(zi - z).max(initial=0) > 1e-6 or zi.min() < 0 or zi.max() > maxq:
        raise ValueError(f"zero points must be integers in [0, {maxq}]")
    with np.errstate(over="ignore"):
        s16 = s.astype(np.float16)
    if not np.isfinite(s16).all():
        raise ValueError("scales overflow float16")
    return QuantizedLayer(ci, np.ascontiguousarray(s16.T), np.ascontiguousarray(zi.T),
                          g.astype(np.int32), int(bits), bool(transposed))


def _layer_tensors(q: QuantizedLayer, checkpoint_format: str) -> dict:
    import torch

    maxq = 2**q.bits - 1
    zeros = q.zeros - 1 if checkpoint_format == "gptq" else q.zeros
    zeros = np.mod(zeros, maxq + 1)  # v1: zero 0 is stored as 2^b − 1 (wraps), as GPTQ does
    return {
        "qweight": torch.from_numpy(pack_codes(q.codes.T, q.bits, axis=0)),
        "qzeros": torch.from_numpy(pack_codes(zeros, q.bits, axis=1)),
        "scales": torch.from_numpy(q.scales.astype(np.float16)),
        "g_idx": torch.from_numpy(q.g_idx.astype(np.int32)),
    }


def _read_layer(tensors: dict, prefix: str, bits: int, m: int, n: int, checkpoint_format: str,
                transposed: bool) -> QuantizedLayer:
    try:
        qweight = tensors[prefix + "qweight"].numpy()
        qzeros = tensors[prefix + "qzeros"].numpy()
        scales = tensors[prefix + "scales"].numpy()
        g_idx = tensors[prefix + "g_idx"].numpy()
    except KeyError as exc:
        raise ValueError(f"layer {prefix[:-1]!r} lacks tensor {exc.args[0]!r}") from None
    G = scales.shape[0] if scales.ndim == 2 else -1
    if scales.ndim != 2 or scales.shape[1] != m or g_idx.shape != (n,) or qzeros.ndim != 2 \
            or qzeros.shape[0] != G or qweight.ndim != 2 or qweight.shape[1] != m:
        raise ValueError(f"layer {prefix[:-1]!r}: inconsistent shapes qweight {qweight.shape}, qzeros "
                         f"{qzeros.shape}, scales {scales.shape}, g_idx {g_idx.shape} for a {m}×{n} weight")
    if n and (g_idx.min() < 0 or g_idx.max() >= G):
        raise ValueError(f"layer {prefix[:-1]!r}: g_idx values outside [0, {G})")
    try:
        codes = unpack_codes(qweight, bits, n, axis=0).T
        zeros = unpack_codes(qzeros, bits, m, axis=1)
    except ValueError as exc:
        raise ValueError(f"layer {prefix[:-1]!r} ({bits}-bit by its config): {exc}") from None
    if checkpoint_format == "gptq":
        zeros = np.mod(zeros + 1, 2**bits)
    return QuantizedLayer(codes, scales, zeros, g_idx.astype(np.int32), bits, transposed)


# ------------------------------------------------------------------------------- files
def is_gptq_checkpoint(folder) -> bool:
    """Whether ``folder`` has a config.json whose quantization_config says quant_method gptq."""
    try:
        cfg = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    qc = cfg.get("quantization_config") or {}
    return isinstance(qc, dict) and str(qc.get("quant_method", "")).lower() == "gptq"


def _dedupe_state(model) -> dict:
    """State dict without tensors that share storage with an earlier key (tied weights)."""
    seen = {}
    out = {}
    for k, v in model.state_dict().items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
        if key in seen:
            continue
        seen[key] = k
        out[k] = v
    return out


def _is_conv1d(module) -> bool:
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def save_checkpoint(
    model,
    layers: dict,
    out,
    *,
    bits: int,
    group_size: int | None,
    sym: bool,
    desc_act: bool,
    damp_percent: float = 0.01,
    true_sequential: bool = True,
    checkpoint_format: str = "gptq",
    tokenizer=None,
    extra_files: dict | None = None,
    force: bool = False,
    replace_partial: bool = False,
) -> Path:
    """Write a GPTQ-format checkpoint atomically.

    Parameters
    ----------
    model : transformers PreTrainedModel
        The model whose non-quantized tensors (embeddings, norms, lm_head, biases) are saved.
    layers : dict name → QuantizedLayer
        Quantized linear layers by module name; their float weights are not saved.
    out : path
        Target folder. Files go to a temporary sibling folder that is renamed to ``out`` at the
        end, so an interrupted write never leaves a complete-looking checkpoint.
    bits, group_size, sym, desc_act, damp_percent, true_sequential, checkpoint_format
        Written to ``quantize_config.json`` and ``config.json``'s ``quantization_config``
        (``group_size = -1`` for per-channel). ``"gptq"`` (v1) stores zero points minus one, so
        a zero point of 0 wraps to ``2^bits − 1``; latticeq restores it, GPTQModel and vLLM do
        not (checked by ``tests/test_model_interop.py``), so a warning names such groups.
    tokenizer : optional
        Its files are saved beside the weights.
    extra_files : dict name → JSON-able, optional
        Extra JSON files (e.g. the run record).
    force : bool
        Replace an existing ``out``. Without it an existing ``out`` raises FileExistsError.
    replace_partial : bool
        Replace an existing ``out`` that holds only an unfinished run's state (used by the
        pipeline when it finishes a run into its own state folder).
    """
    if checkpoint_format not in CHECKPOINT_FORMATS:
        raise ValueError(f"checkpoint_format must be one of {CHECKPOINT_FORMATS}, got {checkpoint_format!r}")
    if not layers:
        raise ValueError("no quantized layers given")
    out = Path(out)
    if out.exists() and not force:
        partial = replace_partial and not (out / "config.json").exists()
        if not partial:
            raise FileExistsError(f"output folder {str(out)!r} exists; pass force=True (--force) to replace it")
    if checkpoint_format == "gptq":
        zero0 = sum(int((np.asarray(q.zeros) == 0).sum()) for q in layers.values())
        if zero0:
            import warnings

            warnings.warn(
                f"{zero0} group(s) have zero point 0, which the v1 'gptq' format stores as "
                f"2^bits - 1 (GPTQ's own quirk): latticeq reads them back exactly, but GPTQModel's "
                f"and vLLM's v1 readers do not; write checkpoint_format='gptq_v2' (--format gptq_v2) "
                f"for those loaders", stacklevel=2)
    modules = dict(model.named_modules())
    state = _dedupe_state(model)
    tensors = {}
    for name, q in layers.items():
        if name not in modules:
            raise ValueError(f"quantized layer {name!r} is not a module of the model")
        mod = modules[name]
        for suffix in ("weight",):
            state.pop(f"{name}.{suffix}", None)
        if getattr(mod, "bias", None) is not None:
            state[f"{name}.bias"] = mod.bias
        for k, v in _layer_tensors(q, checkpoint_format).items():
            tensors[f"{name}.{k}"] = v.contiguous()
    for k, v in state.items():
        tensors[k] = v.detach().to("cpu").contiguous()
    gs = -1 if group_size is None else int(group_size)
    qconfig = {
        "bits": int(bits), "group_size": gs, "desc_act": bool(desc_act), "sym": bool(sym),
        "damp_percent": float(damp_percent), "true_sequential": bool(true_sequential),
        "quant_method": "gptq", "checkpoint_format": checkpoint_format,
        "static_groups": False, "lm_head": False,
        "modules_in_block_to_quantize": None,
    }
    qconfig = {k: v for k, v in qconfig.items() if v is not None}

    cfg = model.config.to_dict()
    cfg["quantization_config"] = dict(qconfig)
    cfg["dtype"] = "float16"
    return write_model_folder(out, tensors, cfg, model=model, tokenizer=tokenizer,
                              extra_files={"quantize_config.json": qconfig, **(extra_files or {})})


def write_model_folder(out, tensors: dict, config: dict, *, model=None, tokenizer=None,
                       extra_files: dict | None = None) -> Path:
    """Write a model folder atomically: ``model.safetensors``, the model's generation config,
    the tokenizer files, ``extra_files`` (name → JSON-able) and ``config.json`` last (a folder
    without it is not a model), into a temporary sibling renamed to ``out`` at the end; an
    existing ``out`` is replaced only after the new folder is complete. Used by every
    checkpoint format (GPTQ here, latticeq-vq in :mod:`latticeq.nn.vqformat`)."""
    from safetensors.torch import save_file

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        os.chmod(tmp / WEIGHTS_NAME, default_permissions())  # safetensors creates 0600 files
        gen = getattr(model, "generation_config", None)
        if gen is not None:
            try:
                gen.save_pretrained(tmp)
            except Exception:  # generation config is optional
                pass
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        for fname, obj in (extra_files or {}).items():
            (tmp / fname).write_text(json.dumps(obj, indent=2) + "\n")
        # config.json last: a folder without it is not a model
        (tmp / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
        if out.exists():
            trash = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out, trash)
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _load_weights(folder: Path) -> dict:
    """The checkpoint's tensors; a clear error naming the file when it is truncated or corrupt."""
    from safetensors.torch import load_file

    path = folder / WEIGHTS_NAME
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise
    except Exception as exc:  # safetensors' own error type for a bad header or a short file
        raise ValueError(f"{str(path)!r} is truncated or not a safetensors file ({exc})") from None


def read_quantized_layers(folder, model=None) -> dict:
    """The quantized layers of a checkpoint as ``{name: QuantizedLayer}``.

    ``model`` (built from the checkpoint's config) tells the layer shapes and Conv1D layouts;
    without it shapes come from the tensors (``m`` from ``scales``, ``n`` from ``g_idx``).
    """
    folder = Path(folder)
    qc = _read_qconfig(folder)
    tensors = _load_weights(folder)
    modules = dict(model.named_modules()) if model is not None else {}
    out = {}
    for key in tensors:
        if not key.endswith(".qweight"):
            continue
        name = key[: -len("qweight")]
        mod = modules.get(name[:-1])
        transposed = mod is not None and _is_conv1d(mod)
        if mod is not None:  # the shape the model's config implies: every tensor is checked against it
            m, n = mod.weight.shape[::-1] if transposed else mod.weight.shape
        else:
            try:
                m, n = tensors[name + "scales"].shape[1], tensors[name + "g_idx"].shape[0]
            except (KeyError, IndexError):
                raise ValueError(f"layer {name[:-1]!r} lacks its scales or g_idx tensor") from None
        out[name[:-1]] = _read_layer(tensors, name, qc["bits"], m, n, qc["checkpoint_format"], transposed)
    return out


def _read_json_file(path: Path) -> dict:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{str(path)!r} is not valid JSON ({exc})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{str(path)!r} must hold a JSON object")
    return d


#: settings that config.json's quantization_config and quantize_config.json must agree on
_QCONFIG_KEYS = ("bits", "group_size", "sym", "desc_act", "checkpoint_format", "quant_method")


def _read_qconfig(folder: Path) -> dict:
    """The quantization settings; config.json's ``quantization_config`` (what transformers and
    GPTQModel read) and ``quantize_config.json`` (what older GPTQ tools read) must agree."""
    qc_path = folder / "quantize_config.json"
    cfg_path = folder / "config.json"
    in_cfg = _read_json_file(cfg_path).get("quantization_config") if cfg_path.is_file() else None
    if in_cfg is not None and not isinstance(in_cfg, dict):
        raise ValueError(f"{str(cfg_path)!r}: quantization_config must be a JSON object")
    if qc_path.is_file():
        qc = _read_json_file(qc_path)
        if in_cfg:
            diff = [f"{k}: {qc.get(k)!r} vs {in_cfg.get(k)!r}" for k in _QCONFIG_KEYS
                    if k in qc and k in in_cfg and qc[k] != in_cfg[k]]
            if diff:
                raise ValueError(f"{str(folder)!r}: quantize_config.json and config.json's quantization_config "
                                 f"disagree ({'; '.join(diff)}); refusing to guess which is right")
    else:
        qc = in_cfg or {}
    if str(qc.get("quant_method", "gptq")).lower() != "gptq":
        raise ValueError(f"{str(folder)!r} is not a GPTQ checkpoint (quant_method {qc.get('quant_method')!r})")
    fmt = qc.get("checkpoint_format", "gptq")
    if fmt not in CHECKPOINT_FORMATS:
        raise ValueError(f"unsupported checkpoint_format {fmt!r}; supported: {CHECKPOINT_FORMATS}")
    bits = qc.get("bits")
    if bits not in (2, 3, 4, 5, 6, 7, 8):
        raise ValueError(f"unsupported bits {bits!r} in {str(folder)!r}")
    return {**qc, "checkpoint_format": fmt}


def load_checkpoint(folder, device: str = "cpu", dtype=None):
    """Load a GPTQ-format checkpoint as a runnable float model (linear layers dequantized).

    The model is built from ``config.json`` (without its quantization_config, so no GPTQ
    kernel library is needed), non-quantized tensors are loaded as stored, and every layer
    with a ``qweight`` gets the weight :func:`dequantize` computes.

    Returns the model in eval mode, with ``model.latticeq_quantized`` = the quantized layers.
    """
    import torch

    folder = Path(folder)
    if not (folder / "config.json").is_file() or not (folder / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"{str(folder)!r} is not a complete checkpoint (config.json and {WEIGHTS_NAME} needed)")
    if dtype is None:
        dtype = torch.float32
    _read_qconfig(folder)
    model = _build_model(folder, dtype)
    layers = read_quantized_layers(folder, model)
    tensors = _load_weights(folder)
    state = {k: v for k, v in tensors.items()
             if not k.endswith((".qweight", ".qzeros", ".scales", ".g_idx"))}
    modules = dict(model.named_modules())
    for name, q in layers.items():
        if name not in modules:
            raise ValueError(f"checkpoint layer {name!r} is not a module of the {model.config.model_type} model")
        W = q.dequant()
        state[f"{name}.weight"] = W.T.contiguous() if q.transposed else W
    _finish_load(model, state, device, dtype)
    model.latticeq_quantized = layers
    return model


def _build_model(folder: Path, dtype):
    """The transformers model ``config.json`` describes (without its quantization_config, so no
    quantization library is needed), randomly initialised."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg_dict = _read_json_file(folder / "config.json")
    cfg_dict.pop("quantization_config", None)
    cfg_dict.pop("dtype", None)
    cfg_dict.pop("torch_dtype", None)
    model_type = cfg_dict.pop("model_type", None)
    if not isinstance(model_type, str):
        raise ValueError(f"{str(folder / 'config.json')!r} has no model_type")
    try:
        config = AutoConfig.for_model(model_type, **cfg_dict)
        return AutoModelForCausalLM.from_config(config, dtype=dtype)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{str(folder / 'config.json')!r} does not describe a model transformers can build "
                         f"({exc})") from None


def _finish_load(model, state: dict, device, dtype) -> None:
    """Load ``state`` (every tensor the model needs, apart from tied and non-persistent ones;
    nothing it does not have), tie weights, move, eval mode."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"checkpoint has tensors the model does not: {unexpected[:5]}")
    # tied weights (lm_head ↔ embeddings) are saved once
    model.tie_weights()
    missing = [k for k in missing if not _is_tied(model, k)]
    non_persistent = {f"{mn}.{b}" for mn, mod in model.named_modules() for b in getattr(mod, "_non_persistent_buffers_set", ())}
    missing = [k for k in missing if k not in non_persistent]
    if missing:
        raise ValueError(f"checkpoint lacks tensors the model needs: {missing[:5]}")
    model.to(device=device, dtype=dtype)
    model.eval()


def _is_tied(model, key: str) -> bool:
    try:
        t = model.get_parameter(key)
    except AttributeError:
        return False
    for k, v in model.named_parameters(remove_duplicate=False):
        if k != key and v is t:
            return True
    return False
