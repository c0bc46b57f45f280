"""Lattice-coded layers: the checkpoint form, the inference module, and the ``latticeq-vq`` format.

A layer quantized with a codebook (:func:`latticeq.nn.solvers.vq.vq_solve`) is stored as

================  ===============================  ==============================================
tensor            shape, dtype                     content
================  ===============================  ==============================================
``vq_codes``      (⌈m·(n/d)·b/8⌉,) uint8           codeword indices of each row's blocks of ``d``
                                                   columns (transformed basis, processing order),
                                                   row by row, ``b = ⌈log2 size⌉`` bits each,
                                                   one little-endian bit stream
``vq_scales``     (m,) float16                     one scale per row
``vq_perm``       (n,) int16 (int32 if n ≥ 2^15)   processing order of the transformed columns
``vq_signs``      (⌈(m+n)/8⌉,) uint8               the randomized Hadamard transforms' signs,
                                                   output's then input's, ``np.packbits(s < 0)``
                                                   (absent without incoherence)
``vq_in_scales``  (n,) float16, optional           one scale per input column (original basis),
                                                   trained by ``latticeq finetune --train
                                                   …,in_scales`` (format version 3)
``bias``          (m,) optional                    unchanged
================  ===============================  ==============================================

and decodes to ``W = Uᵀ · Q[:, perm⁻¹] · V · diag(in_scales)`` (no last factor without input
scales) with ``Q = diag(scales) · decode(codes)`` (rows of
``m × n/d`` codewords of dimension ``d`` laid side by side), ``U = H_m diag(s_out)/√m`` and
``V = H_n diag(s_in)/√n`` (:mod:`latticeq.nn.incoherence`; the Hadamard matrices are rebuilt
from the width by the same construction, whose factors ``config.json`` records and the loader
checks). ``config.json``'s ``quantization_config``::

    {"quant_method": "latticeq-vq", "checkpoint_format": "latticeq-vq", "format_version": 3,
     "bits": B, "index_bits": b, "codebook": <Codebook.spec(): catalog name or the generator itself>,
     "incoherence": true, "transform_factors": {"576": [72, 2, 2, 2], ...},
     "desc_act": true, "damp_percent": 0.01, "modules": [...]}

:class:`VQLinear` replaces ``nn.Linear`` (or GPT-2's ``Conv1D``) for such a layer: it holds the
codes, scales, permutation and signs — never a float weight — and computes
``y = U(Q · V(x)[perm])``-style products: the input transform, the product with the weight
decoded from the codes, the output transform. The same module runs in the pipeline's
in-memory model and in a loaded checkpoint, so both give identical logits.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["VQ_FORMAT", "VQ_FORMAT_VERSION", "VQLayer", "VQLinear", "vq_layer_from_solution",
           "install_vq_layers", "save_vq_checkpoint", "load_vq_checkpoint", "is_vq_checkpoint"]

VQ_FORMAT = "latticeq-vq"
VQ_FORMAT_VERSION = 3
#: versions this latticeq reads: 1 stored each index in ⌈b/8⌉ whole bytes, ``(m, n/d, B)``;
#: 2 packed them into one bit stream; 3 added the optional input scales
READABLE_VERSIONS = (1, 2, 3)
WEIGHTS_NAME = "model.safetensors"
#: codebooks with at most this many codewords decode by table lookup in the forward pass
TABLE_LIMIT = 2**16


# ---------------------------------------------------------------------------- checkpoint form
@dataclass
class VQLayer:
    """One lattice-coded layer (see the module docstring).

    codes (m, n/d) int64; scales (m,) float16; perm (n,) int64; signs_out (m,) / signs_in (n,)
    of ±1.0, or None without incoherence; codebook; transposed (GPT-2 ``Conv1D``); in_scales
    (n,) float16 or None (see the module docstring).
    """

    codes: np.ndarray
    scales: np.ndarray
    perm: np.ndarray
    signs_out: np.ndarray | None
    signs_in: np.ndarray | None
    codebook: object
    transposed: bool = False
    in_scales: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.codes.shape[0]), int(self.codes.shape[1] * self.codebook.dim)

    def stored_bits(self) -> int:
        """Every bit this layer's tensors take in a checkpoint (bias excluded)."""
        m, n = self.shape
        bits = 8 * math.ceil(self.codes.size * self.codebook.index_bits / 8) + 16 * m + (16 if n < 2**15 else 32) * n
        if self.signs_out is not None:
            bits += 8 * math.ceil((m + n) / 8)
        if self.in_scales is not None:
            bits += 16 * n
        return bits

    def transforms(self):
        """``(U, V)`` (:class:`~latticeq.nn.incoherence.RandomOrthogonal`) or ``(None, None)``."""
        if self.signs_out is None:
            return None, None
        return _hadamard_transform(self.signs_out), _hadamard_transform(self.signs_in)

    def dequant(self):
        """The float32 weight ``(m, n)`` as a torch tensor (for inspection and tests; the
        inference module never forms it in the original basis)."""
        import torch

        m, n = self.shape
        Q = self.codebook.decode(self.codes.reshape(-1)).reshape(m, n) * self.scales.astype(np.float64)[:, None]
        Qt = Q[:, np.argsort(self.perm)]
        U, V = self.transforms()
        W = Qt if U is None else U.inverse(V.inverse(Qt).T).T
        if self.in_scales is not None:
            W = W * self.in_scales.astype(np.float64)[None, :]
        return torch.from_numpy(np.ascontiguousarray(W, dtype=np.float32))


def _hadamard_transform(signs):
    from latticeq.nn.incoherence import RandomOrthogonal, _blocks, _hadamard_plan

    n = len(signs)
    plan = _hadamard_plan(n)
    if plan is None:
        raise ValueError(f"no Hadamard matrix of order {n} is constructed; latticeq-vq v1 stores randomized "
                         "Hadamard transforms only")
    return RandomOrthogonal(n, -1, "hadamard", plan, _blocks(n, plan), np.asarray(signs, dtype=np.float64),
                            1 / math.sqrt(n))


def vq_layer_from_solution(sol, codebook, *, seed: int, incoherence: bool, transposed: bool = False) -> VQLayer:
    """The checkpoint form of a :class:`~latticeq.nn.solvers.vq.VQSolution` (its transforms are
    rebuilt from ``seed`` as :func:`~latticeq.nn.solvers.vq.vq_solve` built them)."""
    from latticeq.nn.incoherence import random_orthogonal

    m = sol.codes.shape[0]
    n = sol.codes.shape[1] * codebook.dim
    so = si = None
    if incoherence:
        U, V = random_orthogonal(m, seed, fallback=False), random_orthogonal(n, seed + 1, fallback=False)
        so, si = U.signs.copy(), V.signs.copy()
    return VQLayer(np.asarray(sol.codes, dtype=np.int64), sol.scales.numpy().astype(np.float16),
                   sol.perm.numpy().astype(np.int64), so, si, codebook, transposed)


# ---------------------------------------------------------------------------- inference module
def _tables(codebook):
    """Decoding by lookup: ``[(table, divisor, modulus, coefficient), …]`` with
    ``decode(c) = Σ coef · table[(c // divisor) % modulus]``, or None for codes too large."""
    from latticeq.lattice.codebook import ResidualCode

    if isinstance(codebook, ResidualCode):
        a, b = _tables(codebook.first), _tables(codebook.second)
        if a is None or b is None:
            return None
        s2 = codebook.second.size
        return [(t, dv * s2, md, cf) for t, dv, md, cf in a] + [(t, dv, md, cf * codebook.beta) for t, dv, md, cf in b]
    if codebook.size > TABLE_LIMIT:
        return None
    return [(codebook.codewords(), 1, codebook.size, 1.0)]


_TABLES: dict = {}


def _torch_module_base():
    import torch

    return torch.nn.Module


class VQLinear(_torch_module_base()):
    """A linear layer that holds lattice codes (see the module docstring).

    ``forward(x) = U(V(x ⊙ in_scales)[..., perm] · Qᵀ) + bias`` with ``Q = diag(scales) · decode(codes)``,
    ``V(x) = x Vᵀ`` and ``U(z) = z U`` the factored randomized Hadamard transforms. Two modes:

    * ``cache=False``: ``Q`` (transformed basis) is decoded from the codes by table lookup at
      every call and the two transforms are applied to the activations; the module's memory is
      the codes (2–4 bits per weight). Codebooks too large for a table (Voronoi codes with more
      than 2^16 codewords) decode once at construction.
    * ``cache=True``: the whole map is folded once, in float64, into one dense weight in the
      original basis (:meth:`dense_weight`), and the forward is a plain linear layer: float
      speed, float memory. The outputs differ from ``cache=False`` by float rounding only.

    :func:`load_vq_checkpoint` and the model :func:`~latticeq.nn.pipeline.quantize_model`
    returns use ``cache=True``, so both compute exactly the same logits.
    """

    def __init__(self, layer: VQLayer, bias=None, *, cache: bool = False, dtype=None):
        import torch

        super().__init__()
        dtype = dtype or torch.float32
        m, n = layer.shape
        self.in_features, self.out_features = n, m
        self.d = layer.codebook.dim
        self.codebook_spec = layer.codebook.spec()
        self.cache = bool(cache)
        # buffers are derived from the checkpoint's tensors, not saved in the state dict
        self.register_buffer("scales", torch.from_numpy(layer.scales.astype(np.float32)).to(dtype), persistent=False)
        self.register_buffer("perm", torch.from_numpy(layer.perm.astype(np.int64)), persistent=False)
        ins = None if layer.in_scales is None else torch.from_numpy(layer.in_scales.astype(np.float32)).to(dtype)
        self.register_buffer("in_scales", ins, persistent=False)
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().clone().to(dtype), requires_grad=False)
        self._U, self._V = layer.transforms()
        tables = _tables(layer.codebook)
        self.stages = 0
        if tables is None:  # decode once (large Voronoi codes)
            P = layer.codebook.decode(layer.codes.reshape(-1)).reshape(m, n)
            self.register_buffer("decoded", torch.from_numpy(P).to(dtype), persistent=False)
        else:  # per stage: int32 indices into a table of codewords (times the stage's coefficient)
            key = json.dumps(layer.codebook.spec(), sort_keys=True)
            for i, (t, dv, md, cf) in enumerate(tables):
                idx = (layer.codes // dv) % md
                self.register_buffer(f"index{i}", torch.from_numpy(idx.astype(np.int32)), persistent=False)
                # one table per codebook, stage and dtype, shared by every layer (e8p: 2 MB)
                tk = (key, i, str(dtype))
                if tk not in _TABLES:
                    _TABLES[tk] = torch.from_numpy(np.asarray(t) * cf).to(dtype)
                self.register_buffer(f"table{i}", _TABLES[tk], persistent=False)
            self.stages = len(tables)
        self._weight = None
        self.trainable = False
        self._image = None

    def decoded_weight(self):
        """``Q`` (m × n, transformed basis, processing order), decoded from the codes."""
        return self._unscaled() * self.scales[:, None]

    def _input_image(self, dtype):
        """``Aᵀ`` (n × m): the map from an input ``x`` (original basis) to the outputs before the
        row scales and the output transform, ``x ↦ V(x)[perm] · decode(codes)ᵀ``, as the image
        of the identity."""
        import torch

        eye = torch.eye(self.in_features, dtype=torch.float64, device=self.scales.device)
        h = eye if self._V is None else self._V.forward(eye)
        P = self._unscaled().to(torch.float64)
        return (h[:, self.perm] @ P.T).to(dtype)

    def _unscaled(self):
        """``decode(codes)`` (m × n, transformed basis, processing order), without the scales."""
        m, n = self.out_features, self.in_features
        if not self.stages:
            return self.decoded
        P = getattr(self, "table0")[getattr(self, "index0")]
        for i in range(1, self.stages):
            P = P + getattr(self, f"table{i}")[getattr(self, f"index{i}")]
        return P.reshape(m, n)

    def _fold(self, AT, scales, in_scales=None):
        """The dense weight (m × n, original basis) from :meth:`_input_image`, the row scales and
        the input scales (if any)."""
        y = AT * scales[None, :]
        if self._U is not None:
            y = self._U.inverse(y)
        return y.T if in_scales is None else y.T * in_scales[None, :]

    def dense_weight(self):
        """The layer's weight in the original basis (m × n): the map :meth:`forward` computes
        with ``cache=False``, applied to the identity in float64 and rounded once."""
        import torch

        ins = None if self.in_scales is None else self.in_scales.detach().to(torch.float64)
        W = self._fold(self._input_image(torch.float64), self.scales.detach().to(torch.float64), ins)
        return W.to(self.scales.dtype).contiguous()

    def set_cache(self, cache: bool) -> None:
        """Switch between the two modes (see the class docstring)."""
        self.cache = bool(cache)
        self._weight = None

    def set_trainable(self, trainable: bool, *, in_scales: bool = False) -> None:
        """Fine-tuning mode (:mod:`latticeq.nn.finetune`): the row scales — and with
        ``in_scales``, one scale per input column, starting at 1 where the layer has none yet —
        become parameters, and every call folds them into the dense weight
        (``U⁻¹(Aᵀ · diag(scales))ᵀ · diag(in_scales)``, with ``Aᵀ`` computed once), so gradients
        reach them while the codes stay fixed. Switching back rounds them to float16, as the
        checkpoint stores them."""
        import torch

        if bool(trainable) == self.trainable:
            return
        if trainable:
            names = ["scales"] + (["in_scales"] if in_scales else [])  # existing input scales stay fixed otherwise
        else:
            names = [nm for nm in ("scales", "in_scales") if isinstance(getattr(self, nm), torch.nn.Parameter)]
        for nm in names:
            t = getattr(self, nm)
            t = torch.ones(self.in_features, dtype=self.scales.dtype, device=self.scales.device) if t is None \
                else t.detach()
            delattr(self, nm)  # a buffer or a parameter
            if trainable:
                setattr(self, nm, torch.nn.Parameter(t.clone()))
            else:
                self.register_buffer(nm, t.half().to(t.dtype), persistent=False)
        self.trainable = bool(trainable)
        self._image = None
        self._weight = None

    def forward(self, x):
        import torch

        h = x.to(self.scales.dtype)
        if self.trainable:
            if self._image is None:
                self._image = self._input_image(self.scales.dtype)
            return torch.nn.functional.linear(h, self._fold(self._image, self.scales, self.in_scales),
                                              self.bias).to(x.dtype)
        if self.cache:
            if self._weight is None:
                self._weight = self.dense_weight()
            return torch.nn.functional.linear(h, self._weight, self.bias).to(x.dtype)
        if self.in_scales is not None:
            h = h * self.in_scales
        if self._V is not None:
            h = self._V.forward(h)
        h = h[..., self.perm]
        y = torch.nn.functional.linear(h, self.decoded_weight())
        if self._U is not None:
            y = self._U.inverse(y)
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype)

    def _apply(self, fn, *args, **kwargs):  # .to(device/dtype) drops the cached weights
        self._weight = self._image = None
        return super()._apply(fn, *args, **kwargs)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"codebook={self.codebook_spec.get('kind')}, d={self.d}, cache={self.cache}")


def _set_module(model, name: str, new) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def set_vq_cache(model, cache: bool) -> int:
    """Put every :class:`VQLinear` of ``model`` in one mode (see :class:`VQLinear`); returns
    how many there are."""
    mods = [m for m in model.modules() if isinstance(m, VQLinear)]
    for m in mods:
        m.set_cache(cache)
    return len(mods)


def install_vq_layers(model, layers: dict, *, cache: bool = True) -> None:
    """Replace each named linear (or ``Conv1D``) of ``model`` by a :class:`VQLinear`."""
    modules = dict(model.named_modules())
    for name, q in layers.items():
        mod = modules.get(name)
        if mod is None:
            raise ValueError(f"quantized layer {name!r} is not a module of the model")
        w = mod.weight
        shape = tuple(w.shape[::-1]) if q.transposed else tuple(w.shape)
        if shape != q.shape:
            raise ValueError(f"layer {name}: codes describe a {q.shape} weight, the model's is {shape}")
        new = VQLinear(q, getattr(mod, "bias", None), cache=cache, dtype=w.dtype).to(w.device)
        _set_module(model, name, new)


# ---------------------------------------------------------------------------- the file format
def pack_indices(codes: np.ndarray, b: int) -> np.ndarray:
    """Non-negative integers (< 2^b) as one little-endian bit stream of ``b`` bits each, uint8."""
    c = np.asarray(codes).reshape(-1)
    if not 1 <= b <= 63:
        raise ValueError(f"index width must be 1 to 63 bits, got {b!r}")
    if c.size and (c.min() < 0 or int(c.max()) >> b):
        raise ValueError(f"codeword indices must lie in [0, 2^{b}); got {int(c.min())} … {int(c.max())}")
    c = np.ascontiguousarray(c, dtype=np.uint64)
    bits = ((c[:, None] >> np.arange(b, dtype=np.uint64)) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bits.reshape(-1), bitorder="little")


def unpack_indices(stream: np.ndarray, count: int, b: int) -> np.ndarray:
    """Inverse of :func:`pack_indices`: ``count`` integers (int64)."""
    bits = np.unpackbits(stream, count=count * b, bitorder="little").reshape(count, b)
    out = np.zeros(count, dtype=np.uint64)
    for j in range(b):  # b ≤ 63 columns: vectorised over the codes
        out |= bits[:, j].astype(np.uint64) << np.uint64(j)
    return out.astype(np.int64)


def _pack(q: VQLayer) -> dict:
    import torch

    out = {"vq_codes": torch.from_numpy(pack_indices(q.codes, q.codebook.index_bits)),
           "vq_scales": torch.from_numpy(np.ascontiguousarray(q.scales.astype(np.float16))),
           "vq_perm": torch.from_numpy(q.perm.astype(np.int16 if q.shape[1] < 2**15 else np.int32))}
    if q.signs_out is not None:
        out["vq_signs"] = torch.from_numpy(np.packbits(np.concatenate([q.signs_out, q.signs_in]) < 0))
    if q.in_scales is not None:
        out["vq_in_scales"] = torch.from_numpy(np.ascontiguousarray(q.in_scales.astype(np.float16)))
    return out


def _unpack(t: dict, prefix: str, codebook, m: int, n: int, incoherence: bool, transposed: bool, path,
            version: int = VQ_FORMAT_VERSION) -> VQLayer:
    def need(key):
        if prefix + key not in t:
            raise ValueError(f"{path}: layer {prefix[:-1]!r} lacks its {key} tensor")
        return t[prefix + key].numpy()

    d = codebook.dim
    stored = need("vq_codes")
    if version == 1:  # whole little-endian bytes per index
        nb = math.ceil(codebook.bits / 8)
        expected = (m, n // d, nb)
    else:
        b = codebook.index_bits
        expected = (math.ceil(m * (n // d) * b / 8),)
    if n % d or stored.dtype != np.uint8 or stored.shape != expected:
        raise ValueError(f"{path}: layer {prefix[:-1]!r} has codes {stored.dtype} {tuple(stored.shape)}, expected uint8 "
                         f"{expected} for a {m}×{n} weight and {codebook.bits:g}-bit codewords of dimension {d} "
                         f"(format version {version})")
    if version == 1:
        full = np.zeros((m, n // d, 8), dtype=np.uint8)
        full[..., :nb] = stored
        codes = full.view("<u8").reshape(m, n // d).astype(np.int64)
    else:
        codes = unpack_indices(stored, m * (n // d), b).reshape(m, n // d)
    if codes.size and codes.max() >= codebook.size:
        raise ValueError(f"{path}: layer {prefix[:-1]!r} has codes beyond the codebook's {codebook.size} codewords")
    scales = need("vq_scales")
    perm = need("vq_perm").astype(np.int64)
    if scales.shape != (m,) or scales.dtype != np.float16:
        raise ValueError(f"{path}: layer {prefix[:-1]!r} has scales {scales.dtype} {scales.shape}, expected float16 ({m},)")
    if perm.shape != (n,) or not np.array_equal(np.sort(perm), np.arange(n)):
        raise ValueError(f"{path}: layer {prefix[:-1]!r}: vq_perm is not a permutation of {n} columns")
    so = si = None
    if incoherence:
        bits = np.unpackbits(need("vq_signs"))
        if len(bits) != 8 * math.ceil((m + n) / 8):
            raise ValueError(f"{path}: layer {prefix[:-1]!r} has {len(bits)} sign bits, expected {m + n} (padded)")
        s = np.where(bits[:m + n] == 1, -1.0, 1.0)
        so, si = s[:m], s[m:]
    ins = None
    if prefix + "vq_in_scales" in t:
        ins = need("vq_in_scales")
        if version < 3:
            raise ValueError(f"{path}: layer {prefix[:-1]!r} has input scales, which format version {version} "
                             "does not define (3 does)")
        if ins.shape != (n,) or ins.dtype != np.float16 or not np.isfinite(ins).all():
            raise ValueError(f"{path}: layer {prefix[:-1]!r} has input scales {ins.dtype} {ins.shape}, expected "
                             f"finite float16 ({n},)")
    return VQLayer(codes, scales, perm, so, si, codebook, transposed, ins)


def is_vq_checkpoint(folder) -> bool:
    try:
        cfg = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    qc = cfg.get("quantization_config") or {}
    return isinstance(qc, dict) and str(qc.get("quant_method", "")).lower() == VQ_FORMAT


def save_vq_checkpoint(model, layers: dict, out, *, bits: int, incoherence: bool, desc_act: bool,
                       damp_percent: float, tokenizer=None, extra_files: dict | None = None,
                       force: bool = False, replace_partial: bool = False) -> Path:
    """Write a ``latticeq-vq`` checkpoint atomically (temporary sibling folder, renamed; an
    existing ``out`` only with ``force``, or ``replace_partial`` for an unfinished run's folder).
    ``model`` holds :class:`VQLinear` modules (or the original layers) for ``layers``; every
    other tensor is saved as it is."""
    from latticeq.nn.checkpoint import _dedupe_state, write_model_folder

    if not layers:
        raise ValueError("no quantized layers given")
    specs = {json.dumps(q.codebook.spec(), sort_keys=True) for q in layers.values()}
    if len(specs) != 1:
        raise ValueError("all layers of a latticeq-vq checkpoint share one codebook")
    out = Path(out)
    if out.exists() and not force:
        if not (replace_partial and not (out / "config.json").exists()):
            raise FileExistsError(f"output folder {str(out)!r} exists; pass force=True (--force) to replace it")
    state = _dedupe_state(model)
    tensors = {}
    factors = {}
    for name, q in layers.items():
        for k in list(state):
            if k.startswith(name + ".") and k != f"{name}.bias":
                state.pop(k)
        for k, v in _pack(q).items():
            tensors[f"{name}.{k}"] = v.contiguous()
        if q.signs_out is not None:
            U, V = q.transforms()
            factors[str(U.n)], factors[str(V.n)] = list(U.factors), list(V.factors)
    for k, v in state.items():
        tensors[k] = v.detach().to("cpu").contiguous()
    qconfig = {"quant_method": VQ_FORMAT, "checkpoint_format": VQ_FORMAT, "format_version": VQ_FORMAT_VERSION,
               "bits": int(bits), "index_bits": next(iter(layers.values())).codebook.index_bits,
               "codebook": next(iter(layers.values())).codebook.spec(),
               "incoherence": bool(incoherence), "transform_factors": factors, "desc_act": bool(desc_act),
               "damp_percent": float(damp_percent), "modules": sorted(layers),
               "transposed": sorted(k for k, q in layers.items() if q.transposed)}
    cfg = model.config.to_dict()
    cfg["quantization_config"] = qconfig
    return write_model_folder(out, tensors, cfg, model=model, tokenizer=tokenizer, extra_files=extra_files)


def _read_vq_config(folder: Path) -> dict:
    from latticeq.lattice.codebook import codebook_from_spec
    from latticeq.nn.checkpoint import _read_json_file
    from latticeq.nn.incoherence import _hadamard_plan

    cfg_path = folder / "config.json"
    qc = _read_json_file(cfg_path).get("quantization_config")
    if not isinstance(qc, dict) or qc.get("quant_method") != VQ_FORMAT:
        raise ValueError(f"{str(cfg_path)!r} does not describe a {VQ_FORMAT} checkpoint")
    if qc.get("format_version") not in READABLE_VERSIONS:
        raise ValueError(f"{str(cfg_path)!r}: {VQ_FORMAT} format version {qc.get('format_version')!r} is not known "
                         f"to this latticeq (known: {', '.join(map(str, READABLE_VERSIONS))})")
    for key in ("bits", "codebook", "incoherence", "modules"):
        if key not in qc:
            raise ValueError(f"{str(cfg_path)!r}: quantization_config lacks {key!r}")
    try:
        codebook = codebook_from_spec(qc["codebook"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{str(cfg_path)!r}: unknown or invalid codebook ({exc})") from None
    if "index_bits" in qc and qc["index_bits"] != codebook.index_bits:
        raise ValueError(f"{str(cfg_path)!r}: index_bits {qc['index_bits']!r} does not match the codebook's "
                         f"{codebook.index_bits} ({codebook.size} codewords)")
    for width, fac in (qc.get("transform_factors") or {}).items():
        if list(_hadamard_plan(int(width)) or ()) != list(fac):
            raise ValueError(f"{str(cfg_path)!r}: the Hadamard matrix of order {width} was built from factors {fac}, "
                             f"this latticeq builds {list(_hadamard_plan(int(width)) or ())}")
    return {**qc, "codebook_obj": codebook}


def read_vq_layers(folder, model, tensors=None) -> dict:
    """``{name: VQLayer}`` of a checkpoint, every tensor checked against ``model``'s shapes."""
    from latticeq.nn.checkpoint import _is_conv1d, _load_weights

    folder = Path(folder)
    qc = _read_vq_config(folder)
    tensors = _load_weights(folder) if tensors is None else tensors
    modules = dict(model.named_modules())
    out = {}
    for name in qc["modules"]:
        mod = modules.get(name)
        if mod is None or not hasattr(mod, "weight"):
            raise ValueError(f"{str(folder)!r}: quantized layer {name!r} is not a linear module of the model")
        transposed = _is_conv1d(mod)
        m, n = mod.weight.shape[::-1] if transposed else mod.weight.shape
        out[name] = _unpack(tensors, name + ".", qc["codebook_obj"], int(m), int(n), bool(qc["incoherence"]),
                            transposed, str(folder / WEIGHTS_NAME), version=int(qc["format_version"]))
    return out


def load_vq_checkpoint(folder, device: str = "cpu", dtype=None, *, cache: bool = True):
    """Load a ``latticeq-vq`` checkpoint: the transformers model with :class:`VQLinear` layers.
    ``model.latticeq_quantized`` holds the :class:`VQLayer` s. ``cache=True`` (default): each
    layer folded once into a dense float weight (float speed and memory; the logits equal those
    of the model the pipeline returns); ``cache=False``: only the codes are kept and decoded at
    every call (2–4 bits per weight in memory, slower)."""
    import torch

    from latticeq.nn.checkpoint import _build_model, _finish_load, _load_weights

    folder = Path(folder)
    if not (folder / "config.json").is_file() or not (folder / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"{str(folder)!r} is not a complete checkpoint (config.json and {WEIGHTS_NAME} needed)")
    dtype = dtype or torch.float32
    _read_vq_config(folder)
    model = _build_model(folder, dtype)
    tensors = _load_weights(folder)
    layers = read_vq_layers(folder, model, tensors)
    install_vq_layers(model, layers, cache=cache)
    state = {k: v for k, v in tensors.items() if not k.rsplit(".", 1)[-1].startswith("vq_")}
    _finish_load(model, state, device, dtype)
    model.latticeq_quantized = layers
    return model
