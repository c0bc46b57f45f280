"""Normalized second moment (NSM) of a lattice quantizer.

For a lattice Λ ⊂ Rⁿ with volume V and Voronoi cell Ω, the NSM is

    G(Λ) = (1 / (n V^{1 + 2/n})) ∫_Ω ‖x‖² dx  =  E ‖x − Q_Λ(x)‖² / (n V^{2/n}),

the expectation over x uniform in any fundamental region (we use the fundamental parallelepiped
{z B : z ∈ [0,1)ⁿ}), Q_Λ the closest-point map (Conway & Sloane, SPLAG ch. 2 and 21; Agrell &
Allen, "On the best lattice quantizers", IEEE Trans. IT 2023).

The Monte Carlo estimate's standard error is computed by batch means: the sample is cut into
batches, and the spread of the batch means gives the error of their average.

Long estimates (10⁷ points take hours above 24 dimensions) checkpoint: with ``state=PATH`` the
running sums, batch means and the random generator's state are written atomically to PATH every
``checkpoint_every`` seconds, and a later call with the same lattice and settings continues from
there and returns exactly what an uninterrupted run would have. :func:`reestimate` uses this to
re-estimate a saved search result on fresh points and record the new estimate in its file.

The normalized second-moment *tensor* is U = E[e eᵀ] / V^{2/n} (e = x − Q(x)); for a locally optimal
lattice it is a multiple of the identity, G·I (Zamir & Feder; Agrell & Allen, Theorem 2).

Examples
--------
>>> from latticeq.lattice import catalog
>>> from latticeq.design.nsm import estimate_nsm
>>> r = estimate_nsm(catalog.get("Z3"), samples=20_000, seed=1, progress=False)
>>> abs(r.nsm - 1 / 12) < 4 * r.stderr
True
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

__all__ = ["NSMResult", "SearchPaused", "estimate_nsm", "reestimate", "sphere_bound", "STATE_FORMAT"]

#: format tag of an estimate's checkpoint file
STATE_FORMAT = "latticeq.nsm-state/1"


class SearchPaused(RuntimeError):
    """A search or NSM estimate stopped at its deadline after checkpointing; resuming it (the
    search's ``resume=True``, or the same estimate again) continues where it stopped."""


def _would_overrun(deadline: float | None, next_seconds: float) -> bool:
    """Whether work taking ``next_seconds`` (the last chunk's time), started now, would end at or
    past ``deadline`` (a ``time.time()``; ``None``: no deadline). Long jobs check this between
    chunks, so they pause at the last checkpoint that fits the budget instead of one chunk after
    it (a fusion chunk takes minutes at n = 32). The first chunk of each leg always runs, so
    every leg makes progress."""
    return deadline is not None and time.time() + next_seconds >= deadline


def sphere_bound(n: int) -> float:
    """NSM of the n-ball, Γ(n/2 + 1)^{2/n} / ((n + 2) π): a lower bound for every lattice (Zador)."""
    if int(n) != n or n < 1:
        raise ValueError(f"dimension must be a positive integer, got {n}")
    n = int(n)
    return math.exp(2.0 / n * math.lgamma(n / 2 + 1)) / ((n + 2) * math.pi)


@dataclass
class NSMResult:
    """A Monte Carlo NSM estimate.

    Attributes
    ----------
    nsm, stderr : float
        The estimate and its standard error (batch means).
    samples, dim, seed : int
    tensor : (n, n) array
        Normalized second-moment tensor E[e eᵀ] / V^{2/n}; ``trace(tensor) / n == nsm``.
    tensor_deviation : float
        ‖U − (tr U / n) I‖_F / (tr U / n): zero for a lattice whose error is white.
    wall_time_s : float
    """

    nsm: float
    stderr: float
    samples: int
    dim: int
    seed: int | None
    tensor: np.ndarray = field(repr=False)
    tensor_deviation: float = float("nan")
    wall_time_s: float = 0.0

    def sigmas_from(self, reference: float) -> float:
        """(nsm − reference) / stderr: the deviation from a reference value in standard errors."""
        return (self.nsm - reference) / self.stderr if self.stderr > 0 else float("inf")

    def to_dict(self) -> dict:
        return {"nsm": self.nsm, "stderr": self.stderr, "samples": self.samples, "dim": self.dim,
                "seed": self.seed, "tensor_deviation": self.tensor_deviation, "wall_time_s": self.wall_time_s}


def _generator_digest(lattice) -> str:
    """SHA-256 of the generator (float64, row-major) of a Lattice or of a generator matrix."""
    B = np.ascontiguousarray(np.asarray(getattr(lattice, "generator", lattice), dtype=np.float64))
    return hashlib.sha256(B.tobytes()).hexdigest()


def _load_state(path: Path, settings: dict):
    """The checkpoint at ``path`` if it exists; refuses one made with other settings."""
    if not path.exists():
        return None
    try:
        st = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"unreadable NSM checkpoint {path}: {exc}; delete it to start over") from None
    if not isinstance(st, dict) or st.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not an NSM checkpoint ({STATE_FORMAT}); delete it to start over")
    diff = [f"{k}: checkpoint {st['settings'].get(k)!r}, now {v!r}"
            for k, v in settings.items() if st["settings"].get(k) != v]
    if diff:
        raise ValueError(f"the NSM checkpoint {path} was made with other settings ({'; '.join(diff)}); "
                         "use the same ones, or delete it to start over")
    return st


def estimate_nsm(lattice, samples: int = 1_000_000, seed: int | None = 0, *, target_stderr: float | None = None,
                 batch: int | None = None, progress: bool = True, decoder: str = "latticeq",
                 state=None, checkpoint_every: float = 60.0, deadline: float | None = None) -> NSMResult:
    """Monte Carlo estimate of the NSM G(Λ) with its standard error.

    Parameters
    ----------
    lattice : Lattice
    samples : int
        Number of uniform points (the maximum when ``target_stderr`` is given).
    seed : int or None
        Seed of the uniform points; the same seed gives the same estimate.
    target_stderr : float, optional
        Stop early once the standard error is at or below this (after at least 10 batches).
    batch : int, optional
        Points per batch (one closest-point call); default min(2¹⁴, samples / 32), so that the
        batch-means error rests on ≥ 32 batches.
    progress : bool
        Show a progress bar with the running estimate.
    decoder : {"latticeq", "fpylll"}
        The exact closest-point decoder: latticeq's own (catalog decoders or Schnorr–Euchner), or
        fpylll's ``CVP.closest_vector`` — an independent implementation, for cross-checks (slow).
    state : path, optional
        Checkpoint file (JSON): written atomically every ``checkpoint_every`` seconds and at the
        end; if it exists, the estimate continues from it (same lattice and settings, else a
        ValueError names the difference). Needs an integer ``seed``. The caller deletes it
        once the result is safely stored.
    deadline : float, optional
        A ``time.time()``: a batch predicted (by the last one's time) to end at or past it is not
        started; the estimate saves ``state`` and raises :class:`SearchPaused` instead, and the
        same call again continues it. Needs ``state``. Each call runs at least one batch.
    """
    from latticeq.lattice import Lattice

    if not isinstance(lattice, Lattice):
        raise ValueError(f"estimate_nsm needs a Lattice, got {type(lattice).__name__}")
    if int(samples) != samples or samples < 100:
        raise ValueError(f"samples must be an integer ≥ 100, got {samples}")
    samples = int(samples)
    if target_stderr is not None and not (target_stderr > 0):
        raise ValueError(f"target_stderr must be positive, got {target_stderr}")
    if batch is None:
        batch = max(10, min(1 << 14, samples // 32))
    if int(batch) != batch or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch}")
    batch = int(batch)
    if decoder == "latticeq":
        closest = lattice.closest_point
    elif decoder == "fpylll":
        from latticeq.lattice.reduce import fpylll_closest

        def closest(X):
            return fpylll_closest(lattice.generator, X)[0]
    else:
        raise ValueError(f"unknown decoder {decoder!r}; allowed: latticeq, fpylll")
    if deadline is not None and state is None:
        raise ValueError("a deadline needs a state file to pause into")

    n = lattice.dim
    B = lattice.generator
    norm = 1.0 / (n * lattice.volume ** (2.0 / n))
    rng = np.random.default_rng(seed)
    means: list[float] = []
    weights: list[int] = []
    S = np.zeros((n, n))
    done = 0
    elapsed = 0.0  # seconds spent in earlier (checkpointed) calls
    if state is not None:
        from latticeq.io import atomic_write_json

        if seed is None or int(seed) != seed:
            raise ValueError("a checkpointed estimate needs an integer seed")
        state = Path(state)
        settings = {"generator_sha256": _generator_digest(lattice), "dim": n, "samples": samples,
                    "seed": int(seed), "batch": batch, "decoder": decoder, "target_stderr": target_stderr}
        st = _load_state(state, settings)
        if st is not None:
            means, weights, done = list(st["means"]), list(st["weights"]), int(st["done"])
            S = np.asarray(st["S"], dtype=np.float64).reshape(n, n)
            rng.bit_generator.state = st["rng"]
            elapsed = float(st.get("elapsed", 0.0))

        def save():
            atomic_write_json(state, {"format": STATE_FORMAT, "settings": settings, "done": done,
                                      "means": means, "weights": weights, "S": S.tolist(),
                                      "rng": rng.bit_generator.state,
                                      "elapsed": elapsed + time.perf_counter() - t0,
                                      "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")},
                              indent=None, mkdir=True)
    t0 = time.perf_counter()
    last_save = t0

    def stats():
        m = np.asarray(means)
        w = np.asarray(weights, dtype=float)
        mean = float(np.sum(m * w) / np.sum(w))
        if len(m) < 2:
            return mean, float("inf")
        # variance of the batch means (weighted: the last batch may be short), then of their average
        k = len(m)
        var = float(np.sum(w * (m - mean) ** 2) / np.sum(w)) * k / (k - 1)
        return mean, math.sqrt(var / k)

    from latticeq.progress import make_progress

    label = lattice.name or f"n={n}"
    with make_progress(progress, transient=True) as bar:
        task = bar.add_task(f"NSM {label}", total=samples, completed=done)
        while done < samples:
            if target_stderr is not None and len(means) >= 10 and stats()[1] <= target_stderr:
                break
            m = min(batch, samples - done)
            t_batch = time.perf_counter()
            X = rng.random((m, n)) @ B
            E = X - closest(X)
            S += E.T @ E
            means.append(float(np.mean(np.sum(E * E, axis=1))) * norm)
            weights.append(m)
            done += m
            if progress:
                est, se = stats()
                bar.update(task, completed=done, description=f"NSM {label} {est:.7f} ± {se:.1e}")
            if state is not None and done < samples:
                if _would_overrun(deadline, time.perf_counter() - t_batch):
                    save()
                    raise SearchPaused(f"NSM estimate paused at {done}/{samples} points (budget reached); "
                                       "the same command continues it")
                if time.perf_counter() - last_save >= checkpoint_every:
                    save()
                    last_save = time.perf_counter()
    if state is not None:
        save()
    nsm, se = stats()
    U = S / done / lattice.volume ** (2.0 / n)
    g = np.trace(U) / n
    dev = float(np.linalg.norm(U - g * np.eye(n)) / g)
    return NSMResult(nsm=nsm, stderr=se, samples=done, dim=n, seed=seed, tensor=U, tensor_deviation=dev,
                     wall_time_s=elapsed + time.perf_counter() - t0)


def pooled_estimate(parts) -> tuple[float, float]:
    """Pool independent Monte Carlo estimates ``(mean, stderr, samples)`` of one quantity: the
    sample-weighted mean Σ Nᵢ mᵢ / N and its standard error √(Σ (Nᵢ/N)² sᵢ²)."""
    parts = [(float(m), float(s), int(k)) for m, s, k in parts]
    if not parts or any(k <= 0 for _, _, k in parts):
        raise ValueError("pooling needs at least one estimate, each on a positive number of samples")
    total = sum(k for _, _, k in parts)
    mean = sum(k * m for m, _, k in parts) / total
    return mean, math.sqrt(sum((k / total) ** 2 * s * s for _, s, k in parts))


def _pool_parts(d: dict, digest: str, path, seed: int) -> list[dict]:
    """The estimates already pooled in a lattice file's record (one, if it was never pooled);
    refuses a record that cannot be pooled with fresh points on ``seed``."""
    prov = d.get("provenance") or {}
    if "nsm_parts" in prov:
        parts = [dict(p) for p in prov["nsm_parts"]]
    else:
        est, first = prov.get("nsm_estimator") or "", prov.get("nsm_seed")
        if not est.startswith("latticeq.design.nsm.estimate_nsm") or not isinstance(first, int):
            raise ValueError(f"{path}'s estimate does not come from a re-estimate on a recorded seed (a search's "
                             f"own estimate cannot be shown independent of new points): re-estimate it first "
                             f"(latticeq nsm {path} --samples N --seed S --update), then pool")
        parts = [{"nsm": prov["nsm"], "stderr": prov["nsm_stderr"], "samples": prov["nsm_samples"], "seed": first,
                  "seconds": prov.get("nsm_seconds"), "time": prov.get("nsm_time"), "estimator": est,
                  "generator_sha256": digest}]
    for p in parts:
        if p.get("generator_sha256") != digest:
            raise ValueError(f"{path}'s generator changed since its pooled estimates were made: re-estimate "
                             f"without pooling")
    if seed in [p["seed"] for p in parts]:
        raise ValueError(f"{path}'s estimate already uses seed {seed}: pooling needs fresh points, pick another seed")
    return parts


def reestimate(path, samples: int = 10**7, seed: int = 2026, *, decoder: str = "latticeq", pool: bool = False,
               state_dir=None, checkpoint_every: float = 60.0, progress: bool = True,
               deadline: float | None = None) -> NSMResult:
    """Re-estimate the NSM of a saved lattice (``latticeq.lattice`` JSON) on fresh points and
    record it in the file.

    With latticeq's decoder, the file's ``nsm`` and the provenance fields ``nsm``,
    ``nsm_stderr``, ``nsm_samples`` are replaced by the new estimate (with ``nsm_seed``,
    ``nsm_estimator``, ``nsm_time``), and the earlier estimate is kept under
    ``provenance.previous_nsm``. With ``decoder="fpylll"`` (an independent exact decoder) the
    estimate is a cross-check: it goes to ``provenance.crosscheck`` (with the generator's
    SHA-256, so a later change of the generator shows) and the file's own estimate stays.
    With ``pool=True`` the new estimate is added to the file's instead of replacing it: the
    recorded NSM becomes the sample-weighted mean of the pooled estimates, with the standard
    error of that mean (``pooled_estimate``), ``nsm_samples`` their total and ``nsm_seed`` the
    list of their seeds; each estimate is kept under ``provenance.nsm_parts``. Pooling needs
    independent points, so it is refused unless the file's estimate was made by this function
    on a recorded seed (not by a search) and the new seed is not among the pooled ones.
    The file keeps its generator and is rewritten atomically, only if the generator did not
    change while the estimate ran.
    The estimate checkpoints to ``state_dir/<file stem>-s<seed>-n<samples>.json`` (default
    ``.nsm-state`` beside the file), so an interrupted re-estimate resumes; the checkpoint is
    removed once the file is written. Use a seed other than the search's, so the points are
    fresh. ``deadline`` (a ``time.time()``): pause there as :func:`estimate_nsm` does, leaving the
    file as it was; the same call again continues the estimate.
    """
    from latticeq import __version__
    from latticeq.io import atomic_write_json
    from latticeq.lattice import Lattice

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no lattice file at {path}")

    def read():
        try:
            d = json.loads(path.read_text())
            return d, Lattice.from_dict(d)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path} is not a readable lattice file: {exc}") from None

    d, L = read()
    if pool:
        if decoder != "latticeq":
            raise ValueError("pooling adds to the file's own estimate; a fpylll estimate is a cross-check, "
                             "recorded apart")
        _pool_parts(d, _generator_digest(L), path, seed)  # refuse before the long estimate, not after
    state_dir = Path(state_dir) if state_dir is not None else path.parent / ".nsm-state"
    tag = "" if decoder == "latticeq" else f"-{decoder}"
    state = state_dir / f"{path.stem}-s{seed}-n{samples}{tag}.json"
    r = estimate_nsm(L, samples=samples, seed=seed, progress=progress, state=state, decoder=decoder,
                     checkpoint_every=checkpoint_every, deadline=deadline)
    d, L2 = read()
    digest = _generator_digest(L)
    if _generator_digest(L2) != digest:
        raise ValueError(f"{path} changed while its NSM was being estimated; the estimate is left in {state}")
    prov = d.setdefault("provenance", {})
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    estimator = f"latticeq.design.nsm.estimate_nsm (latticeq {__version__})"
    if decoder != "latticeq":
        prov["crosscheck"] = {"decoder": decoder, "nsm": r.nsm, "stderr": r.stderr, "samples": r.samples,
                              "seed": seed, "generator_sha256": digest, "seconds": round(r.wall_time_s, 1),
                              "estimator": estimator, "time": now}
    elif pool:
        parts = _pool_parts(d, digest, path, seed) + [
            {"nsm": r.nsm, "stderr": r.stderr, "samples": r.samples, "seed": int(seed),
             "seconds": round(r.wall_time_s, 1), "time": now, "estimator": estimator, "generator_sha256": digest}]
        nsm, se = pooled_estimate([(p["nsm"], p["stderr"], p["samples"]) for p in parts])
        prov.update({"nsm": nsm, "nsm_stderr": se, "nsm_samples": sum(p["samples"] for p in parts),
                     "nsm_seed": [p["seed"] for p in parts], "nsm_estimator": f"pooled {estimator}",
                     "nsm_seconds": round(sum(p["seconds"] or 0.0 for p in parts), 1), "nsm_time": now,
                     "nsm_parts": parts})
        d["nsm"] = {"value": nsm, "stderr": se}
        r = replace(r, nsm=nsm, stderr=se, samples=prov["nsm_samples"])  # tensor: the new points
    else:
        prov["previous_nsm"] = {k: prov.get(k) for k in ("nsm", "nsm_stderr", "nsm_samples", "nsm_seed")}
        prov.pop("nsm_parts", None)
        prov.update({"nsm": r.nsm, "nsm_stderr": r.stderr, "nsm_samples": r.samples, "nsm_seed": seed,
                     "nsm_estimator": estimator, "nsm_seconds": round(r.wall_time_s, 1), "nsm_time": now})
        d["nsm"] = {"value": r.nsm, "stderr": r.stderr}
    atomic_write_json(path, d, indent=1)
    state.unlink(missing_ok=True)
    return r
