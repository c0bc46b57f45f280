"""The search runner: restarts (local processes or Ray tasks), checkpoints, resume, results.

``run_search(dim, method)`` runs ``restarts`` independent optimizations of one method
(``sgd``: Agrell–Allen from a random reduced basis or from ``init``; ``householder``,
``matrix-exp``, ``matrix-exp-free``: fusion of the best splice; ``triangular``: Agrell–Allen's
triangular modification of the best splice, the baseline for fusion; ``splice``: the best
orthogonal splice itself), picks the restart with the lowest NSM on a quick estimate,
re-estimates its NSM on ``final_samples`` (≥ 10^7 by default) fresh points with its standard
error and saves ``{out}/n{N}-{method}.json`` (generator, method, seed, steps, NSM ± stderr,
wall time, provenance).

Checkpoints: ``{out}/.checkpoints/n{N}-{method}/`` holds ``manifest.json`` (the
configuration) and one ``r{i}.json`` per restart (its full optimizer state while running, its
result when done), each written atomically (temp file + ``os.replace``) every
``checkpoint_every`` seconds. After Ctrl-C or a kill, ``resume=True`` keeps every finished
restart and continues the others from their last state; ``final-nsm.json`` holds the running
sums of the final estimate (an hour or more above 28 dimensions), so it resumes too. The
checkpoint directory is removed once the result file is written.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import datetime as _dt
import functools
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latticeq.design import _kernels as K
from latticeq.design.nsm import SearchPaused, _would_overrun
from latticeq.io import atomic_write_json
from latticeq.progress import format_duration

METHODS = ("sgd", "splice", "householder", "matrix-exp", "matrix-exp-free", "triangular")
PRESETS = ("fast", "medium", "slow")
CHECKPOINT_FORMAT = "latticeq.search-checkpoint"

#: fusion budgets per preset: optimizer steps, points per step, initial step size, annealing
FUSION_PRESETS = {
    "fast": {"steps": 600, "batch": 1024, "lr0": 3e-3, "anneal": 30.0},
    "medium": {"steps": 2500, "batch": 2048, "lr0": 3e-3, "anneal": 100.0},
    "slow": {"steps": 10000, "batch": 4096, "lr0": 3e-3, "anneal": 300.0},
}


@dataclass
class SearchResult:
    path: Path
    dim: int
    method: str
    nsm: float
    stderr: float
    samples: int
    restart_nsms: list
    wall_time: float
    generator: np.ndarray


# ----------------------------------------------------------------------------- helpers
def _atomic_write_json(path: Path, obj) -> None:
    atomic_write_json(path, obj, indent=None, mkdir=True)


def _read_json(path: Path, what: str) -> dict:
    try:
        d = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"corrupt {what} {path}: not valid JSON ({exc}); delete it to start "
                         "afresh (finished results in other files are kept)") from None
    if not isinstance(d, dict):
        raise ValueError(f"corrupt {what} {path}: expected a JSON object")
    return d


def _seed_for(seed: int, *keys) -> int:
    return int(np.random.SeedSequence([int(seed), *map(int, keys)]).generate_state(1)[0]
               % (2**31 - 1))


@contextlib.contextmanager
def _display(bar, progress: bool):
    """The shared display ``bar`` when given (left open), else a new transient one."""
    if bar is not None:
        yield bar
        return
    from latticeq.progress import make_progress

    with make_progress(progress, transient=True) as own:
        yield own


def _drop(bar, task) -> None:
    """Take a finished row off a display (rich bars only; plain lines have nothing to remove)."""
    remove = getattr(bar, "remove_task", None)
    if remove is not None:
        remove(task)


def estimate_nsm_mc(generator, samples: int = 10**7, seed: int = 0, progress: bool = False,
                    chunk: int = 10**5, bar=None, state=None, checkpoint_every: float = 60.0,
                    deadline: float | None = None, threads: int = 1) -> tuple[float, float]:
    """Monte Carlo NSM ``E||e||^2 / (n V^(2/n))`` with its standard error.

    Points ``z B`` with ``z ~ U[0,1)^n`` are uniform modulo the lattice; the exact closest point
    comes from the core's compiled Schnorr–Euchner decoder (``decode_one``, inside
    ``_kernels.nsm_moments``) on the LLL-reduced triangular form. The
    standard error is the sample standard deviation of ``||e||^2/n`` over ``sqrt(samples)``.
    Points are drawn in chunks of ``chunk`` (each with its own seed derived from ``seed``), and
    the progress display updates after each (10⁶ points take ~10 minutes above 25 dimensions).
    ``bar``: a display already on screen (from :func:`latticeq.progress.make_progress`) to add
    this estimate's row to, instead of opening one (``progress`` is then ignored).
    ``state``: a checkpoint file (JSON), written atomically after a chunk once ``checkpoint_every``
    seconds have passed; if it exists, the estimate continues from it (same generator and
    settings, else a ValueError names the difference), so an interrupted estimate resumes with the
    result it would have had. ``deadline``: a ``time.time()`` after which the estimate saves
    ``state`` and raises :class:`SearchPaused`. The caller deletes ``state`` once the result is
    stored; until then its ``elapsed`` holds the estimate's seconds over all legs.
    ``threads``: chunks decoded at once (the kernel releases the GIL). Their sums are added in
    chunk order, so the result does not depend on ``threads``, bit for bit.
    """
    B = np.array(generator, dtype=np.float64, copy=True)
    if B.ndim != 2 or B.shape[0] != B.shape[1]:
        raise ValueError(f"generator must be square, got shape {B.shape}")
    if samples < 2:
        raise ValueError(f"samples must be >= 2, got {samples}")
    if int(threads) != threads or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    if deadline is not None and state is None:
        raise ValueError("a deadline needs a state file to pause into")
    s1 = s2 = 0.0
    done = i = 0
    elapsed = 0.0  # seconds spent in earlier legs; None when an older state did not count them
    if state is not None:
        from latticeq.design.nsm import STATE_FORMAT, _generator_digest, _load_state

        state = Path(state)
        settings = {"generator_sha256": _generator_digest(B),
                    "dim": int(B.shape[0]), "samples": int(samples), "seed": int(seed), "chunk": int(chunk),
                    "estimator": "estimate_nsm_mc"}
        st = _load_state(state, settings)
        if st is not None:
            s1, s2, done, i = float(st["s1"]), float(st["s2"]), int(st["done"]), int(st["chunks"])
            elapsed = st.get("elapsed")

        def save():
            _atomic_write_json(state, {"format": STATE_FORMAT, "settings": settings, "done": done,
                                       "chunks": i, "s1": s1, "s2": s2,
                                       "elapsed": None if elapsed is None else elapsed + time.monotonic() - t0,
                                       "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
    t0 = time.monotonic()
    K.retriangularize(B)  # reduced, lower triangular, unit volume (NSM is invariant)
    last_save = time.monotonic()
    with _display(bar, progress) as bar, cf.ThreadPoolExecutor(max_workers=int(threads)) as ex:
        task = bar.add_task(f"NSM n={B.shape[0]}", total=samples, completed=done)
        while done < samples:
            sizes = []  # the next wave: one chunk per thread
            while len(sizes) < threads and done + sum(sizes) < samples:
                sizes.append(min(chunk, samples - done - sum(sizes)))
            t_wave = time.monotonic()
            wave = [ex.submit(K.nsm_moments, B, m, _seed_for(seed, i + k)) for k, m in enumerate(sizes)]
            for f, m in zip(wave, sizes):
                a, b = f.result()
                s1 += a
                s2 += b
                done += m
                i += 1
            bar.update(task, completed=done, description=f"NSM n={B.shape[0]} ≈{s1 / done:.7f}")
            if state is not None and done < samples:
                if _would_overrun(deadline, time.monotonic() - t_wave):
                    save()
                    raise SearchPaused(f"NSM estimate paused at {done}/{samples} points (budget "
                                       "reached); --resume continues it")
                if time.monotonic() - last_save >= checkpoint_every:
                    save()
                    last_save = time.monotonic()
        _drop(bar, task)
    if state is not None:
        save()
    mean = s1 / samples
    var = max(s2 / samples - mean * mean, 0.0) * samples / (samples - 1)
    return mean, math.sqrt(var / samples)


def single_lattice_splice(dim: int) -> str | None:
    """The best splice of ``dim`` when it is one lattice, not a product (n = 15, 16, 24 …): there is
    nothing for the ``triangular`` method to modify. None when it is a product."""
    from latticeq.design.splice import best_splice

    comps = best_splice(dim).components
    return comps[0] if len(comps) < 2 else None


def validate(dim, method, preset, restarts=1):
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not 2 <= dim <= 64:
        raise ValueError(f"dimension must be an integer in 2..64, got {dim!r}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; allowed: {', '.join(PRESETS)}")
    if not isinstance(restarts, (int, np.integer)) or restarts < 1:
        raise ValueError(f"restarts must be a positive integer, got {restarts!r}")


#: settings a resumed search must share with its checkpoint (the rest is derived)
RESUME_KEYS = ("dim", "method", "preset", "seed", "restarts", "init", "init_splice", "fusion_overrides",
               "sgd_overrides", "select_samples")


def _initial_state(cfg: dict, rseed: int):
    """The starting optimizer state of one restart (validates every setting on the way)."""
    n = cfg["dim"]
    if cfg["method"] == "sgd":
        from latticeq.design import sgd as S

        init = None if cfg.get("init") is None else np.asarray(cfg["init"])
        return S.sgd_start(n, preset=cfg["preset"], seed=rseed, init=init,
                           **(cfg.get("sgd_overrides") or {}))
    from latticeq.design import fusion as F
    from latticeq.design.splice import best_splice

    kw = dict(FUSION_PRESETS[cfg["preset"]])
    kw.update(cfg.get("fusion_overrides") or {})
    if cfg.get("init_splice"):  # fusion from a given splice instead of the best one
        from latticeq.lattice import Lattice

        start = Lattice(np.asarray(cfg["init"]), provenance=dict(cfg["init_splice"]))
    else:
        start = best_splice(n).lattice()
    return F.fusion_start(start, method=cfg["method"], seed=rseed, **kw)


# ----------------------------------------------------------------------------- one restart
def _restart_task(cfg: dict, index: int, ckpt_path: str) -> dict:
    """Run (or continue) restart ``index``; checkpoint to ``ckpt_path``; return its record."""
    from latticeq.design import fusion as F
    from latticeq.design import sgd as S

    path = Path(ckpt_path)
    rec = _read_json(path, "restart checkpoint") if path.exists() else None
    if rec is not None and rec.get("status") == "done":
        return rec
    rseed = _seed_for(cfg["seed"], index)
    method, n = cfg["method"], cfg["dim"]
    last = [time.monotonic()]

    def save(state, status="running"):
        _atomic_write_json(path, {"status": status, "index": index, "seed": rseed,
                                  "state": state.to_dict(),
                                  "running_nsm": state.history[-1][1] if state.history else None,
                                  "step": state.step, "steps": state.steps})

    def on_chunk(state):
        now = time.monotonic()
        took, last_chunk[0] = now - last_chunk[0], now
        if now - last[0] >= cfg["checkpoint_every"]:
            save(state)
            last[0] = now
            if cfg.get("log_lines"):
                nsm = state.history[-1][1] if state.history else float("nan")
                rate = (state.step - first[1]) / max(now - first[0], 1e-9)  # this process's steps/s
                eta = f", ETA {format_duration((state.steps - state.step) / rate)}" if rate > 0 else ""
                print(f"n={n} {method} restart {index}: step {state.step}/{state.steps} "
                      f"({100 * state.step / state.steps:.1f}%), running NSM {nsm:.6f}, "
                      f"{state.wall_time:.0f} s, {rate:,.0f} steps/s{eta}", flush=True)
        if cfg.get("parent_pid") is not None and os.getppid() != cfg["parent_pid"]:
            save(state)  # the search that started this worker is gone: stop, resumable
            os._exit(3)
        if _would_overrun(cfg.get("deadline"), took):
            save(state)
            raise SearchPaused(f"n={n} {method} restart {index} paused at step {state.step} "
                               f"of {state.steps} (budget reached); --resume continues it")

    sgd = method == "sgd"
    if rec is not None:
        state = (S.SGDState if sgd else F.FusionState).from_dict(rec["state"])
    else:
        state = _initial_state(cfg, rseed)
    first = (time.monotonic(), state.step)  # for the rate and ETA of the log lines
    last_chunk = [first[0]]  # when the last chunk ended, to predict the next one's time
    save(state)
    run = functools.partial(S.sgd, n) if sgd else functools.partial(F.fuse, None)
    state = run(state=state, progress=cfg["inner_progress"], on_chunk=on_chunk,
                chunk=cfg.get("chunk") or (20000 if sgd else 50))
    G = state.generator if sgd else F.fused_generator(state)
    nsm, se = estimate_nsm_mc(G, cfg["select_samples"], seed=_seed_for(rseed, 7))
    done = {"status": "done", "index": index, "seed": rseed, "generator": np.asarray(G).tolist(),
            "quick_nsm": nsm, "quick_stderr": se, "steps": state.steps,
            "wall_time": state.wall_time, "history": state.history[-20:]}
    _atomic_write_json(path, done)
    return done


# ----------------------------------------------------------------------------- the runner
def run_search(dim: int, method: str, *, preset: str = "fast", restarts: int = 1, seed: int = 0,
               out="results/lattices", resume: bool = False, ray: str | None = None,
               workers: int | None = None, final_samples: int = 10**7,
               select_samples: int = 200_000, checkpoint_every: float = 120.0,
               init=None, name: str | None = None, fusion_overrides: dict | None = None,
               sgd_overrides: dict | None = None, chunk: int | None = None,
               progress: bool = True, checkpoints=None, deadline: float | None = None,
               log_lines: bool | None = None, pool=None, bar=None) -> SearchResult:
    """Search for a good lattice quantizer in dimension ``dim`` with ``method``.

    Parameters
    ----------
    dim : 2..64.  method : one of ``METHODS``.  preset : "fast", "medium", "slow" (SGD: the
        Agrell–Allen presets; fusion: ``FUSION_PRESETS``).
    restarts : independent runs (different seeds); the best on a quick estimate is kept.
    out : directory of results; the result is ``{out}/n{dim}-{name or method}.json``.
    resume : continue from the checkpoint in ``{out}/.checkpoints``; without it an existing
        checkpoint is an error (so that nothing is silently overwritten).
    ray : None (local processes), ``"auto"`` or a Ray address: restarts become Ray tasks.
    workers : local processes (default ``min(restarts, cpu count)``; 1 runs in-process).
    final_samples : points for the final NSM estimate (default 10^7).
    init : starting generator for SGD (e.g. the best fused lattice; array or Lattice); for
        fusion, a splice (``latticeq splice --components …``: a Lattice whose provenance has
        the components, their dims and scales) to fuse instead of the best splice.
    chunk : steps between progress updates / checkpoint opportunities (default: SGD 20000,
        fusion 50).
    checkpoints : folder holding this search's checkpoint folder (default ``{out}/.checkpoints``;
        campaigns keep theirs in a folder that is committed, so another machine can resume).
    deadline : ``time.time()`` after which every restart checkpoints and the search raises
        :class:`SearchPaused` (``resume=True`` continues it).
    log_lines : print one plain line per checkpoint (default: when stdout is not a terminal,
        where a progress bar shows nothing).
    pool : a ``concurrent.futures`` process pool shared with other searches (campaigns pass one,
        so that the restarts of several dimensions queue for the same cores); ``workers`` is then
        ignored. The pool's processes must be started with ``spawn``. If it has a
        ``submitted()`` method, that is called once all restarts are submitted.
    bar : a display already on screen to add this search's rows to (see
        :func:`latticeq.progress.make_progress`), instead of opening one.

    Raises
    ------
    ValueError
        On any invalid setting, before anything is written; when resuming with settings that
        differ from the checkpoint's (naming each difference).
    """
    validate(dim, method, preset, restarts)
    if final_samples < 2 or select_samples < 2:
        raise ValueError("final_samples and select_samples must be >= 2")
    if method == "splice":  # nothing is optimised: refuse settings that would be silently ignored
        given = (["init"] if init is not None else []) + (["restarts"] if restarts != 1 else []) \
            + sorted({**(fusion_overrides or {}), **(sgd_overrides or {})})
        if given:
            raise ValueError(f"method splice saves the best product itself and takes no "
                             f"{', '.join(given)}")
    elif method == "sgd" and fusion_overrides:
        raise ValueError(f"fusion_overrides ({', '.join(sorted(fusion_overrides))}) apply to the fusion methods, not sgd")
    elif method != "sgd" and sgd_overrides:
        raise ValueError(f"sgd_overrides ({', '.join(sorted(sgd_overrides))}) apply to sgd, not {method}")
    init_splice = None
    if init is not None and method != "sgd":
        prov0 = getattr(init, "provenance", None) or {}
        if not all(k in prov0 for k in ("components", "dims", "scales")):
            raise ValueError("fusion starts from a splice: init must be a lattice saved by "
                             "'latticeq splice --components … --out FILE' (its provenance lists "
                             "components, dims and scales)")
        init_splice = {"components": list(prov0["components"]), "dims": list(prov0["dims"]),
                       "scales": list(prov0["scales"]), "nsm": prov0.get("nsm")}
    if method == "triangular" and init_splice is None and (single := single_lattice_splice(dim)):
        raise ValueError(f"the triangular modification needs a product of at least two lattices; the best "
                         f"splice in n = {dim} is a single lattice ({single})")
    init_name = getattr(init, "name", None)  # recorded in the result's provenance
    if init is not None:
        G0 = np.asarray(getattr(init, "generator", init), dtype=np.float64)
        if G0.shape != (dim, dim):
            raise ValueError(f"init generator has shape {G0.shape}, expected ({dim}, {dim})")
        init = G0.tolist()
    from latticeq import __version__

    out = Path(out)
    tag = f"n{dim}-{name or method}"
    result_path = out / f"{tag}.json"
    start = time.time()
    if method == "splice":
        return _save_splice(dim, result_path, __version__)

    ckdir = (out / ".checkpoints" if checkpoints is None else Path(checkpoints)) / tag
    manifest_path = ckdir / "manifest.json"
    if log_lines is None:
        log_lines = not sys.stdout.isatty()
    cfg = {"format": CHECKPOINT_FORMAT, "dim": int(dim), "method": method, "preset": preset,
           "seed": int(seed), "restarts": int(restarts), "select_samples": int(select_samples),
           "checkpoint_every": float(checkpoint_every), "init": init, "init_splice": init_splice,
           "fusion_overrides": fusion_overrides, "sgd_overrides": sgd_overrides,
           "chunk": chunk, "inner_progress": False}
    if not checkpoint_every >= 0:
        raise ValueError(f"checkpoint_every must be a number of seconds >= 0 (0: after every chunk), got {checkpoint_every!r}")
    _initial_state(cfg, 0)  # every setting validated before anything is written
    resumed = ckdir.exists() and any(ckdir.iterdir())
    if resumed:
        if not resume:
            raise FileExistsError(f"a checkpoint of this search exists at {ckdir}; pass "
                                  "--resume to continue it, or delete the directory to start over")
        if not manifest_path.exists():
            raise ValueError(f"corrupt checkpoint {ckdir}: manifest.json is missing")
        man = _read_json(manifest_path, "checkpoint manifest")
        if man.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"foreign checkpoint {manifest_path}: format is "
                             f"{man.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
        diff = [f"{k}: checkpoint {man.get(k)!r}, now {cfg[k]!r}" for k in RESUME_KEYS
                if man.get(k) != cfg[k]]
        if diff:
            raise ValueError(f"checkpoint {manifest_path} was made with other settings ("
                             + "; ".join(diff) + "); resume with the same settings, or delete "
                             "the folder to start over")
    elif resume:
        raise FileNotFoundError(f"nothing to resume: no checkpoint at {ckdir}")
    _atomic_write_json(manifest_path, cfg)
    cfg = dict(cfg, deadline=deadline, log_lines=bool(log_lines))

    paths = [str(ckdir / f"r{i}.json") for i in range(cfg["restarts"])]
    for p in paths:  # validate existing restart checkpoints before any work
        if Path(p).exists():
            rec = _read_json(Path(p), "restart checkpoint")
            if rec.get("status") not in ("running", "done"):
                raise ValueError(f"corrupt restart checkpoint {p}: no valid status")
    nw = workers if workers is not None else min(cfg["restarts"], os.cpu_count() or 1)
    records = _dispatch(cfg, paths, ray, nw, progress, pool=pool, bar=bar)

    best = min(records, key=lambda r: r["quick_nsm"])
    G = np.asarray(best["generator"])
    # the final estimate can take an hour at n ≥ 30: in a log (no terminal) it reports plain lines
    nsm, se = estimate_nsm_mc(G, final_samples, seed=_seed_for(seed, 10**6), progress=progress or log_lines,
                              bar=bar, state=ckdir / "final-nsm.json",
                              checkpoint_every=cfg["checkpoint_every"], deadline=deadline,
                              threads=nw if pool is None else 1)
    nsm_seconds = _read_json(ckdir / "final-nsm.json", "final estimate checkpoint").get("elapsed")
    from latticeq.lattice import Lattice

    prov = {"method": method, "dim": int(dim), "preset": preset, "seed": int(seed),
            "restarts": cfg["restarts"], "best_restart": best["index"],
            "restart_seed": best["seed"], "steps": best["steps"],
            "restart_nsms": [[r["quick_nsm"], r["quick_stderr"]] for r in records],
            "nsm": nsm, "nsm_stderr": se, "nsm_samples": int(final_samples),
            "wall_time": time.time() - start, "resumed": bool(resumed),
            "optimizer_time": [r.get("wall_time") for r in records],
            "nsm_seconds": None if nsm_seconds is None else round(nsm_seconds, 3),
            "fusion_overrides": cfg["fusion_overrides"], "sgd_overrides": cfg["sgd_overrides"],
            "init_from": (None if cfg["init"] is None
                          else "splice " + "×".join(cfg["init_splice"]["components"]) if cfg["init_splice"]
                          else f"lattice {init_name}" if init_name else "given generator"),
            "latticeq": __version__,
            "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    if cfg["init_splice"]:
        prov.update({"components": cfg["init_splice"]["components"], "splice_nsm": cfg["init_splice"]["nsm"]})
    elif method != "sgd":
        from latticeq.design.splice import best_splice
        sp = best_splice(dim)
        prov.update({"components": list(sp.components), "splice_nsm": sp.nsm})
    L = Lattice(G, name=tag, provenance=prov, nsm=(nsm, se))
    final_path = _keep_best(result_path, nsm)
    L.to_json(final_path)
    shutil.rmtree(ckdir, ignore_errors=True)
    return SearchResult(final_path, dim, method, nsm, se, int(final_samples),
                        prov["restart_nsms"], prov["wall_time"], G)


def _keep_best(path: Path, nsm: float) -> Path:
    """Never overwrite a better earlier result, nor one that cannot be read (it is kept, with a
    warning): write beside it instead."""
    if path.exists():
        try:
            from latticeq.lattice import Lattice

            old = Lattice.from_json(path).nsm
            old = None if old is None else old[0]
            unreadable = old is None
        except (ValueError, OSError):
            old, unreadable = None, True
        if unreadable:
            import warnings

            warnings.warn(f"{path} is not a readable lattice result with an NSM; it is kept and the new "
                          "result is written beside it", stacklevel=2)
        if unreadable or old < nsm:
            k = 1
            while path.with_name(f"{path.stem}.{k}.json").exists():
                k += 1
            return path.with_name(f"{path.stem}.{k}.json")
    return path


def _save_splice(dim, result_path, version) -> SearchResult:
    from latticeq.design.splice import best_splice

    sp = best_splice(dim)
    L = sp.lattice()
    L.name = f"n{dim}-splice"
    L.provenance.update({"dim": dim, "nsm_samples": 0, "wall_time": 0.0, "steps": 0, "seed": None,
                         "note": "NSM is exact: prod G_k^(n_k/n) of the components' reference NSMs",
                         "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                         "latticeq": version})
    L.nsm = (sp.nsm, 0.0)
    L.to_json(result_path)
    return SearchResult(Path(result_path), dim, "splice", sp.nsm, 0.0, 0, [], 0.0,
                        np.asarray(L.generator))


def _dispatch(cfg, paths, ray_address, workers, progress, pool=None, bar=None) -> list[dict]:
    """Run the restarts in-process, in local processes (a pool of ``workers``, or the shared
    ``pool``) or as Ray tasks; poll their checkpoints for progress."""
    n_total = len(paths)
    if pool is None and ray_address is None and workers <= 1:
        cfg = dict(cfg, inner_progress=progress and bar is None)
        return [_restart_task(cfg, i, p) for i, p in enumerate(paths)]

    def poll():
        steps = total = 0
        nsms = []
        for p in paths:
            try:
                rec = json.loads(Path(p).read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if rec.get("status") == "done":
                nsms.append(rec["quick_nsm"])
                steps += 1
                total += 1
            elif rec.get("steps"):
                steps += rec["step"] / rec["steps"]
                total += 1
                if rec.get("running_nsm") is not None:
                    nsms.append(rec["running_nsm"])
        return steps, (min(nsms) if nsms else float("nan"))

    def show(bar, task):
        s, best = poll()
        bar.update(task, completed=s, description=f"{cfg['method']} n={cfg['dim']} NSM≈{best:.6f}")

    with _display(bar, progress) as bar:
        task = bar.add_task(f"{cfg['method']} n={cfg['dim']}", total=n_total)
        try:
            if ray_address is not None:
                import ray

                if not ray.is_initialized():
                    ray.init(address=ray_address, ignore_reinit_error=True, log_to_driver=False)
                remote = ray.remote(num_cpus=1)(_restart_task)
                refs = [remote.remote(cfg, i, p) for i, p in enumerate(paths)]
                records = {}
                while refs:
                    ready, refs = ray.wait(refs, num_returns=1, timeout=2.0)
                    for r in ready:
                        rec = ray.get(r)
                        records[rec["index"]] = rec
                    show(bar, task)
                return [records[i] for i in sorted(records)]
            import multiprocessing as mp

            cfg = dict(cfg, parent_pid=os.getpid())  # workers stop when this process dies
            with contextlib.ExitStack() as stack:
                ex = pool if pool is not None else stack.enter_context(
                    cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")))
                futs = [ex.submit(_restart_task, cfg, i, p) for i, p in enumerate(paths)]
                if hasattr(ex, "submitted"):  # a campaign's shared pool: let the next task queue
                    ex.submitted()
                while True:
                    _, notdone = cf.wait(futs, timeout=2.0)
                    show(bar, task)
                    if not notdone:
                        break
                return [f.result() for f in futs]
        finally:
            _drop(bar, task)
