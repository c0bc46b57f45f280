"""Fine-tuning a lattice-coded model's float parameters by distillation from the float model.

After quantization, every layer's codes are fixed lattice points. What stays continuous in a
``latticeq-vq`` checkpoint is each row's scale (:class:`~latticeq.nn.vqformat.VQLinear`) and
the model's normalization weights. :func:`finetune` adjusts them so that the quantized model's
next-token distributions ``q_t`` move toward the float model's ``p_t``, minimizing the mean
per-token Kullback–Leibler divergence on the calibration windows

    L = (1/T) Σ_t Σ_v p_t(v) (log p_t(v) − log q_t(v)),

with Adam. This is the end-to-end stage of QuIP# (Tseng et al., arXiv 2402.04396, §5) and
AQLM's global fine-tuning (Egiazarian et al., arXiv 2401.06118), restricted to the parameters
the checkpoint already stores in float: the codes never change, so the bits per weight do not
either (the scales are rounded back to float16 at the end, as stored). Optionally
(``in_scales``) each lattice-coded layer also gains one trained float16 scale per input column,
``W ↦ W · diag(c)`` — QuIP#'s fine-tuned sign vectors, made real — for 16 bits per column
(about 0.02 bits per weight on SmolLM2), counted in the record's bits per weight.

* **Steps are relative.** Each tensor's learning rate is ``lr`` times its RMS value at the
  start: row scales differ by orders of magnitude between layers, and Adam's step is about
  its learning rate whatever the gradient's size. The rates decay to zero over all steps on a
  cosine (``lr · (1 + cos(π t/T)) / 2`` at step ``t`` of ``T``).
* **Held-out windows decide what is kept.** The KL divergence is measured on held-out windows
  of the calibration corpus (:func:`~latticeq.nn.calib.heldout_split`: no token shared with a
  training window) before training and after each epoch; the parameters of the best epoch are
  kept, and the model is left as it was if no epoch improved on it.
* **Resumable.** With ``state_path``, the trainable tensors, the optimizer and the history
  are saved atomically every ``save_every`` steps and at each epoch's end; a rerun with the
  same arguments continues from there and gives the same result as an uninterrupted run.
  The state file holds tensors only and is read with ``weights_only=True``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["FINETUNE_PARAMS", "DEFAULT_FINETUNE_PARAMS", "FinetuneResult", "trainable_tensors", "finetune",
           "mean_kl"]

#: what :func:`finetune` can train: VQLinear row scales, normalization weights (and biases),
#: and VQLinear input-column scales (new float16 tensors in the checkpoint)
FINETUNE_PARAMS = ("scales", "norms", "in_scales")
#: what it trains by default: only what the checkpoint already stores in float
DEFAULT_FINETUNE_PARAMS = ("scales", "norms")


@dataclass
class FinetuneResult:
    """What a fine-tuning run did (the ``finetune`` entry of a run record, with the caller's
    provenance added). ``heldout_kl[0]`` is before training, ``heldout_kl[e]`` after epoch
    ``e``; ``best_epoch`` is the epoch whose parameters were kept (0: none improved)."""

    params: list
    trainable: int
    epochs: int
    steps: int
    lr: float
    batch_size: int
    seed: int
    train_kl: list = field(default_factory=list)
    heldout_kl: list = field(default_factory=list)
    best_epoch: int = 0
    time_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _is_norm(module) -> bool:
    name = type(module).__name__.lower()
    w = getattr(module, "weight", None)
    return ("norm" in name) and w is not None and getattr(w, "ndim", 0) == 1


def trainable_tensors(model, params=DEFAULT_FINETUNE_PARAMS) -> dict:
    """``{name: tensor}`` that :func:`finetune` trains: the ``scales`` and/or ``in_scales`` of
    every :class:`~latticeq.nn.vqformat.VQLinear` (put in trainable mode) and/or the weight and
    bias of every normalization layer (modules whose class name contains ``Norm``)."""
    from latticeq.nn.vqformat import VQLinear

    bad = [p for p in params if p not in FINETUNE_PARAMS]
    if bad or not params:
        raise ValueError(f"fine-tuning trains some of {FINETUNE_PARAMS}; got {list(params)!r}")
    out = {}
    for name, mod in model.named_modules():
        if isinstance(mod, VQLinear) and ("scales" in params or "in_scales" in params):
            mod.set_trainable(True, in_scales="in_scales" in params)
            for pn in ("scales", "in_scales"):
                t = getattr(mod, pn)
                if pn in params:
                    out[f"{name}.{pn}"] = t
                elif t is not None:
                    t.requires_grad_(False)  # fixed, though folded in every call
        elif _is_norm(mod) and "norms" in params:
            for pn in ("weight", "bias"):
                p = getattr(mod, pn, None)
                if p is not None:
                    out[f"{name}.{pn}"] = p
    if {"scales", "in_scales"} & set(params) and not any(k.endswith("scales") for k in out):
        raise ValueError("the model has no lattice-coded (VQLinear) layers whose scales could be trained")
    if not out:
        raise ValueError(f"the model has nothing to fine-tune among {list(params)}")
    return out


def _log_probs(model, ids):
    import torch

    logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
    return torch.log_softmax(logits, dim=-1)


def _kl_sum(student_logp, teacher_logp):
    """Σ over tokens of KL(p ‖ q), from log-probabilities (teacher p, student q)."""
    return (teacher_logp.exp() * (teacher_logp - student_logp)).sum()


def mean_kl(student, teacher, windows, *, batch_size: int = 1) -> float:
    """Mean per-token KL(teacher ‖ student) over the next-token predictions of ``windows``."""
    import torch

    total, tokens = 0.0, 0
    with torch.no_grad():
        for i in range(0, windows.shape[0], batch_size):
            ids = windows[i:i + batch_size]
            total += float(_kl_sum(_log_probs(student, ids), _log_probs(teacher, ids)))
            tokens += ids.shape[0] * (ids.shape[1] - 1)
    return total / tokens


def finetune(student, teacher, windows, heldout, *, epochs: int = 2, lr: float = 3e-3, batch_size: int = 4,
             params=DEFAULT_FINETUNE_PARAMS, seed: int = 0, state_path=None, save_every: int = 8,
             progress: bool = True) -> FinetuneResult:
    """Fine-tune ``student``'s row scales and normalization weights toward ``teacher``
    (see the module docstring). Both models must be on the same device; the teacher is not
    changed. ``windows`` (N, L) and ``heldout`` (H, L) are token ids.

    Each epoch visits the windows in an order drawn from ``seed`` and the epoch number, in
    batches of ``batch_size`` windows (one forward pass and one Adam step per batch). Afterwards the student's VQLinear layers are back in inference mode, with
    float16-rounded scales. Returns a :class:`FinetuneResult`.
    """
    import numpy as np
    import torch

    from latticeq.io import atomic_torch_save
    from latticeq.progress import make_progress

    for nm, v in (("epochs", epochs), ("batch_size", batch_size), ("save_every", save_every)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{nm} must be a positive integer, got {v!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (0 < lr < 1):
        raise ValueError(f"lr must be a number in (0, 1), got {lr!r}")
    for nm, w in (("windows", windows), ("heldout", heldout)):
        if getattr(w, "ndim", 0) != 2 or w.shape[0] < 1 or w.shape[1] < 2:
            raise ValueError(f"{nm} must be token ids of shape (count ≥ 1, length ≥ 2), got "
                             f"{tuple(getattr(w, 'shape', ()))}")
    if windows.shape[1] != heldout.shape[1]:
        raise ValueError(f"windows and heldout differ in length ({windows.shape[1]} and {heldout.shape[1]})")
    t0 = time.perf_counter()
    for p in list(student.parameters()) + list(teacher.parameters()):
        p.requires_grad_(False)
    student.eval()
    teacher.eval()
    tensors = trainable_tensors(student, params)
    for p in tensors.values():
        p.requires_grad_(True)
    groups = []
    for name, p in tensors.items():
        rms = float(p.detach().pow(2).mean().sqrt())
        rate = lr * (rms if rms > 0 else 1.0)
        groups.append({"params": [p], "lr": rate, "initial_lr": rate, "name": name})
    opt = torch.optim.Adam(groups, betas=(0.9, 0.99))
    n = windows.shape[0]
    per_epoch = math.ceil(n / batch_size)
    result = FinetuneResult(params=list(params), trainable=sum(p.numel() for p in tensors.values()),
                            epochs=epochs, steps=0, lr=float(lr), batch_size=batch_size, seed=seed)
    state = {"epoch": 0, "step": 0, "loss_sum": 0.0, "tokens": 0}
    best = {k: v.detach().clone() for k, v in tensors.items()}  # the tensors of the best epoch so far (0: the start)
    state_path = None if state_path is None else Path(state_path)
    if state_path is not None and state_path.is_file():
        saved = torch.load(state_path, weights_only=True)
        if sorted(saved["tensors"]) != sorted(tensors) or saved["settings"] != [epochs, lr, batch_size, seed, n]:
            raise ValueError(f"{str(state_path)!r} holds a fine-tuning run of another model or with other settings")
        with torch.no_grad():
            for k, v in saved["tensors"].items():
                tensors[k].copy_(v)
        opt.load_state_dict(saved["optimizer"])
        state = {k: (float(v) if k == "loss_sum" else int(v)) for k, v in saved["state"].items()}
        result.train_kl = [float(x) for x in saved["train_kl"]]
        result.heldout_kl = [float(x) for x in saved["heldout_kl"]]
        result.best_epoch = int(saved["best_epoch"])
        best = saved["best"]
        result.time_s = float(saved["time_s"])
        t0 -= result.time_s

    def save():
        if state_path is None:
            return
        result.time_s = time.perf_counter() - t0
        atomic_torch_save(state_path, {"tensors": {k: v.detach().clone() for k, v in tensors.items()},
                      "optimizer": opt.state_dict(), "settings": [epochs, lr, batch_size, seed, n],
                      "state": {k: torch.tensor(v, dtype=torch.float64) for k, v in state.items()},
                      "train_kl": torch.tensor(result.train_kl, dtype=torch.float64),
                      "heldout_kl": torch.tensor(result.heldout_kl, dtype=torch.float64),
                      "best_epoch": torch.tensor(result.best_epoch), "best": best,
                      "time_s": torch.tensor(result.time_s, dtype=torch.float64)})

    with make_progress(progress) as bar:
        if not result.heldout_kl:
            result.heldout_kl.append(mean_kl(student, teacher, heldout))
            bar.note(f"fine-tuning {result.trainable} parameters ({', '.join(params)}): held-out KL before "
                     f"{result.heldout_kl[0]:.5f} nats/token")
            save()
        task = bar.add_task("fine-tuning", total=epochs * per_epoch, completed=state["epoch"] * per_epoch + state["step"])
        while state["epoch"] < epochs:
            e = state["epoch"]
            order = np.random.default_rng([int(seed), e]).permutation(n)
            while state["step"] < per_epoch:
                batch = order[state["step"] * batch_size:(state["step"] + 1) * batch_size]
                t = e * per_epoch + state["step"]  # cosine decay of every group's rate over all steps
                for g in opt.param_groups:
                    g["lr"] = g["initial_lr"] * 0.5 * (1 + math.cos(math.pi * t / (epochs * per_epoch)))
                opt.zero_grad(set_to_none=True)
                ids = windows[torch.from_numpy(np.sort(batch))]
                count = ids.shape[0] * (ids.shape[1] - 1)
                with torch.no_grad():
                    target = _log_probs(teacher, ids)
                loss = _kl_sum(_log_probs(student, ids), target) / count
                loss.backward()
                del target
                state["loss_sum"] += float(loss.detach()) * count
                opt.step()
                state["tokens"] += count
                state["step"] += 1
                bar.advance(task)
                if state["step"] % save_every == 0 and state["step"] < per_epoch:
                    save()
            result.train_kl.append(state["loss_sum"] / state["tokens"])
            kl = mean_kl(student, teacher, heldout)
            result.heldout_kl.append(kl)
            if kl < min(result.heldout_kl[:-1]):
                result.best_epoch = e + 1
                best = {k: v.detach().clone() for k, v in tensors.items()}
            bar.note(f"epoch {e + 1}/{epochs}: training KL {result.train_kl[-1]:.5f}, held-out KL {kl:.5f} "
                     f"nats/token (before: {result.heldout_kl[0]:.5f})")
            state = {"epoch": e + 1, "step": 0, "loss_sum": 0.0, "tokens": 0}
            save()
    result.steps = epochs * per_epoch
    with torch.no_grad():  # keep the best epoch's tensors, or the starting ones
        for k, v in best.items():
            tensors[k].copy_(v)
    for p in tensors.values():
        p.requires_grad_(False)
    _finish(student)
    result.time_s = time.perf_counter() - t0
    return result


def _finish(model) -> None:
    from latticeq.nn.vqformat import VQLinear

    for mod in model.modules():
        if isinstance(mod, VQLinear):
            mod.set_trainable(False)


def finetune_checkpoint(checkpoint, out, *, teacher: str | None = None, epochs: int = 2, lr: float = 3e-3,
                        batch_size: int = 4, params=DEFAULT_FINETUNE_PARAMS, calib=None, nsamples: int | None = None,
                        seqlen: int | None = None, seed: int | None = None, heldout: int = 16, eval_text=None,
                        eval_windows: int | None = None, resume: bool = False, force: bool = False,
                        progress: bool = True) -> dict:
    """``latticeq finetune``: load a ``latticeq-vq`` checkpoint and its float model (``teacher``,
    default: the model its run record names), fine-tune (:func:`finetune`) on the calibration
    windows (default: the run's own — its ``nsamples``, ``seqlen`` and ``seed`` on the shipped
    novels), optionally evaluate, and write a new checkpoint to ``out`` atomically, with the
    run record extended by a ``finetune`` entry. The run's state lives in
    ``out/.latticeq-state`` (``resume=True`` continues it). Returns the new record."""
    import json

    import numpy as np
    import torch

    from latticeq.nn.calib import describe_calibration, heldout_split
    from latticeq.nn.evaluate import eval_windows as eval_windows_of
    from latticeq.nn.evaluate import perplexity
    from latticeq.nn.model import load_model, load_tokenizer, resolve_model
    from latticeq.io import atomic_write_json
    from latticeq.nn.pipeline import RECORD_NAME, STATE_DIR, bits_per_weight, check_resume_settings, check_run_folder
    from latticeq.nn.records import RECORD_KEYS, make_record
    from latticeq.nn.vqformat import _read_vq_config, is_vq_checkpoint, load_vq_checkpoint, save_vq_checkpoint

    t_start = time.perf_counter()
    folder = Path(checkpoint)
    if not folder.is_dir():
        raise FileNotFoundError(f"no checkpoint folder {str(folder)!r}")
    if not is_vq_checkpoint(folder):
        raise ValueError(f"{str(folder)!r} is not a latticeq-vq checkpoint: fine-tuning trains the row scales of "
                         "lattice-coded layers (latticeq quantize --codebook …)")
    qc = _read_vq_config(folder)
    rec_path = folder / RECORD_NAME
    rec = json.loads(rec_path.read_text(encoding="utf-8")) if rec_path.is_file() else None
    if teacher is None:
        if rec is None:
            raise ValueError(f"{str(folder)!r} has no {RECORD_NAME} naming its float model; pass --teacher MODEL")
        teacher = rec["model"]
    cal = (rec or {}).get("calibration") or {}
    nsamples = int(cal.get("nsamples", 128)) if nsamples is None else nsamples
    seqlen = int(cal.get("seqlen", 512)) if seqlen is None else seqlen
    seed = int((rec or {}).get("seed") or 0) if seed is None else seed
    if isinstance(heldout, bool) or not isinstance(heldout, int) or heldout < 1:
        raise ValueError(f"heldout (--heldout) must be a positive integer, got {heldout!r}")
    settings = {"checkpoint": str(folder.absolute()), "teacher": str(teacher), "epochs": epochs, "lr": lr,
                "batch_size": batch_size, "params": list(params), "calibration": describe_calibration(calib),
                "nsamples": nsamples, "seqlen": seqlen, "seed": seed, "heldout": heldout}
    out = check_run_folder(out, resume=resume, force=force)
    if out == folder.absolute():
        raise ValueError("--out must differ from the checkpoint being fine-tuned")
    state_dir = out / STATE_DIR
    run_file = state_dir / "run.json"
    if resume and run_file.is_file():
        check_resume_settings(run_file, settings)
    source = resolve_model(teacher)
    tokenizer = load_tokenizer(str(folder))
    ev_windows = None
    if eval_text is not None:
        ev_windows, _ = eval_windows_of(tokenizer, None if eval_text == "default" else eval_text, seqlen)
    train, held = heldout_split(tokenizer, calib, nsamples=nsamples, seqlen=seqlen, seed=seed, heldout=heldout)
    student = load_vq_checkpoint(folder)
    teacher_net = load_model(teacher)
    vs, vt = student.config.vocab_size, teacher_net.config.vocab_size
    if vs != vt or type(student).__name__ != type(teacher_net).__name__:
        raise ValueError(f"teacher {teacher!r} ({type(teacher_net).__name__}, vocabulary {vt}) is not the float "
                         f"model of {str(folder)!r} ({type(student).__name__}, vocabulary {vs})")
    atomic_write_json(run_file, settings, mkdir=True)
    res = finetune(student, teacher_net, train, held, epochs=epochs, lr=lr, batch_size=batch_size, params=params,
                   seed=seed, state_path=state_dir / "finetune.pt", progress=progress)
    del teacher_net
    layers = student.latticeq_quantized
    for name, q in layers.items():  # the trained scales, float16 as stored
        mod = student.get_submodule(name)
        q.scales = mod.scales.detach().cpu().numpy().astype(np.float16)
        if mod.in_scales is not None:
            q.in_scales = mod.in_scales.detach().cpu().numpy().astype(np.float16)
    ppl = ev = None
    if eval_text is not None:
        pr = perplexity(student, tokenizer, text=None if eval_text == "default" else eval_text, seqlen=seqlen,
                        max_windows=eval_windows, progress=progress, windows=ev_windows)
        ppl, ev = pr.perplexity, pr.eval_info()
    start = None if rec is None or rec.get("perplexity") is None else {"perplexity": rec["perplexity"],
                                                                      "eval": rec.get("eval")}
    entry = {**res.to_dict(), "teacher": source.name, "start": start,
             "calibration": {"source": settings["calibration"], "nsamples": nsamples, "seqlen": seqlen},
             "heldout": heldout, "threads": torch.get_num_threads()}
    base = {k: (rec or {}).get(k) for k in RECORD_KEYS}
    record = make_record(
        model=base["model"] or source.name, method=base["method"] or "gptq", bits=base["bits"] or int(qc["bits"]),
        group_size=base["group_size"], sym=bool(base["sym"]), mse=bool(base["mse"]),
        act_order=bool(base["act_order"] if rec else qc.get("desc_act")), calibration=base["calibration"],
        seed=base["seed"], perplexity=ppl, eval=ev, wall_time_s=time.perf_counter() - t_start,
        quant_time_s=base["quant_time_s"], peak_memory_bytes=base["peak_memory_bytes"], layers=base["layers"] or [],
        group_refresh=base["group_refresh"], codebook=base["codebook"] or qc["codebook"],
        bits_per_weight=bits_per_weight(layers), transforms=base["transforms"], threads=base["threads"],
        finetune=entry)
    save_vq_checkpoint(student, layers, out, bits=int(qc["bits"]), incoherence=bool(qc["incoherence"]),
                       desc_act=bool(qc.get("desc_act")), damp_percent=float(qc.get("damp_percent", 0.01)),
                       tokenizer=tokenizer, extra_files={RECORD_NAME: record}, force=True)
    return record
