"""Recording the layer problems ``(W, H)`` of a real model.

Forward hooks on the chosen linear layers feed their inputs to a
:class:`~latticeq.nn.layer.HessianAccumulator` (``H = (2/N) Σ x xᵀ``, accumulated in float64)
while the model runs on GPTQ-style calibration windows (:func:`latticeq.nn.calib.calibration_windows`,
Austen novels, *Pride and Prejudice* held out). Each layer is saved as ``NAME.W.npy`` (float32,
m × n) and ``NAME.H.npy`` (float64, n × n), written atomically, with a ``manifest.json``
carrying provenance. Inputs of the full-precision model are used for every layer (no
sequential quantization), so the Hessians are independent of any solver.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from latticeq import __version__
from latticeq.io import CACHE_ROOT, atomic_save_npy, atomic_write_json

__all__ = ["DEFAULT_DIR", "LAYER_KINDS", "record_hessians", "load_layers"]

#: Cache folder (outside git).
DEFAULT_DIR = CACHE_ROOT / "hessians"
#: Linear layers of a Llama-style block, by short name → attribute path inside the block.
LAYER_KINDS = {
    "q": "self_attn.q_proj",
    "k": "self_attn.k_proj",
    "v": "self_attn.v_proj",
    "o": "self_attn.o_proj",
    "gate": "mlp.gate_proj",
    "up": "mlp.up_proj",
    "down": "mlp.down_proj",
}


def record_hessians(
    model: str = "smollm2",
    *,
    blocks=(0, 15, 29),
    kinds=tuple(LAYER_KINDS),
    nsamples: int = 64,
    seqlen: int = 512,
    seed: int = 0,
    texts=None,
    out_dir=None,
    progress: bool = True,
) -> Path:
    """Record ``(W, H)`` of linear layers ``kinds`` in ``blocks`` of ``model``.

    Returns the output folder. If it already holds a manifest with the same parameters, nothing
    is recomputed (resume).

    Raises
    ------
    ValueError
        Unknown layer kind, block out of range, bad sample counts.
    """
    import torch

    from latticeq.progress import make_progress
    from latticeq.nn.calib import calibration_windows, describe_calibration
    from latticeq.nn.layer import HessianAccumulator
    from latticeq.nn.model import load_model, load_tokenizer

    bad = [k for k in kinds if k not in LAYER_KINDS]
    if bad:
        raise ValueError(f"unknown layer kind(s) {bad}; allowed: {list(LAYER_KINDS)}")
    blocks = [int(b) for b in blocks]
    out = Path(out_dir) if out_dir is not None else DEFAULT_DIR / f"{Path(str(model)).stem}-n{nsamples}-l{seqlen}-s{seed}"
    params = {"model": str(model), "blocks": blocks, "kinds": list(kinds), "nsamples": nsamples, "seqlen": seqlen,
              "seed": seed, "texts": describe_calibration(texts)}
    man_path = out / "manifest.json"
    if man_path.exists():
        man = json.loads(man_path.read_text())
        if man.get("params") == params and all((out / l["W"]).exists() and (out / l["H"]).exists() for l in man["layers"]):
            return out
    out.mkdir(parents=True, exist_ok=True)
    tok = load_tokenizer(model)
    net = load_model(model)
    layers = net.model.layers
    for b in blocks:
        if not 0 <= b < len(layers):
            raise ValueError(f"block {b} out of range: the model has blocks 0..{len(layers) - 1}")
    windows = calibration_windows(tok, texts=texts, nsamples=nsamples, seqlen=seqlen, seed=seed)
    accs, mods, hooks = {}, {}, []
    for b in blocks:
        for k in kinds:
            mod = layers[b].get_submodule(LAYER_KINDS[k])
            name = f"b{b:02d}.{k}"
            accs[name] = HessianAccumulator(mod.in_features, dtype=torch.float64)
            mods[name] = mod

            def hook(module, inp, _name=name):
                accs[_name].add_batch(inp[0].detach())

            hooks.append(mod.register_forward_pre_hook(hook))
    t0 = time.time()
    try:
        with torch.no_grad(), make_progress(progress) as bar:
            task = bar.add_task("recording Hessians", total=len(windows))
            for w in windows:
                (net.model if hasattr(net, "model") else net)(w[None, :])  # the LM head is not needed
                bar.advance(task)
    finally:
        for h in hooks:
            h.remove()
    entries = []
    for name, acc in accs.items():
        W = mods[name].weight.detach().to(torch.float32).cpu().numpy()
        atomic_save_npy(out / f"{name}.W.npy", W)
        atomic_save_npy(out / f"{name}.H.npy", acc.hessian.cpu().numpy())
        entries.append({"name": name, "W": f"{name}.W.npy", "H": f"{name}.H.npy", "shape": list(W.shape), "nsamples": acc.nsamples})
    atomic_write_json(man_path, {"params": params, "layers": entries, "latticeq": __version__,
                                 "seconds": time.time() - t0,
                                 "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                      end="")
    return out


def load_layers(folder=None, names=None):
    """Yield ``(name, W, H)`` numpy arrays from a recorded folder (default: the newest under
    :data:`DEFAULT_DIR`)."""
    if folder is None:
        cands = sorted(DEFAULT_DIR.glob("*/manifest.json"), key=lambda p: p.stat().st_mtime)
        if not cands:
            raise FileNotFoundError(f"no recorded Hessians under {DEFAULT_DIR}; run `latticeq record-hessians` first")
        folder = cands[-1].parent
    folder = Path(folder)
    man_path = folder / "manifest.json"
    if not man_path.exists():
        raise FileNotFoundError(f"{man_path} not found; run `latticeq record-hessians` first")
    man = json.loads(man_path.read_text())
    for l in man["layers"]:
        if names is not None and l["name"] not in names:
            continue
        yield l["name"], np.load(folder / l["W"]), np.load(folder / l["H"])
