"""Stochastic gradient descent for lattice quantizers (Agrell–Allen Algorithm 1).

E. Agrell, D. Pook-Kolb and B. Allen, "Optimization and identification of lattice quantizers",
arXiv 2401.01799 (Algorithm 1); E. Agrell and B. Allen, "On the best lattice quantizers",
IEEE Trans. IT 69 (2023).

The generator ``B`` is lower triangular with positive diagonal and unit volume. One step draws
``z ~ U[0,1)^n``, finds the closest integer coordinates ``u`` of ``zB`` (exact), sets
``y = z - u`` and ``e = yB`` and updates

    B_ij -= mu * y_i e_j                                  (j < i)
    B_ii -= mu * (y_i e_i - ||e||^2 / (n B_ii))

with ``mu = mu0 * nu^(-t/(T-1))``. Every ``Tr = 100`` steps the basis is LLL-reduced,
re-triangularized (Cholesky factor of the Gram matrix) and rescaled to unit volume. The update is
the stochastic gradient of the NSM ``G = E||e||^2 / (n V^(2/n))`` with respect to the triangular
entries. The whole inner loop (sampling, exact closest point, update, reduction) runs in one
compiled numba kernel; the Python driver only slices the run into chunks for progress and
checkpoints.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from latticeq.design import _kernels as K
from latticeq.lattice.decode.sphere import BOUND_NONE, decode_one, make_workspace


class SGDDiverged(ValueError):
    """The SGD iteration left the region of sane lattices (step size too large)."""


@dataclass(frozen=True)
class SGDPreset:
    """Step budget ``T`` and annealing ``mu = mu0 * nu^(-t/(T-1))``."""

    steps: int
    mu0: float
    nu: float


PRESETS: dict[str, SGDPreset] = {
    "fast": SGDPreset(10**6, 0.005, 200.0),
    "medium": SGDPreset(10**7, 0.001, 500.0),
    "slow": SGDPreset(10**8, 0.0005, 1000.0),
}


@dataclass
class SGDState:
    """Everything needed to continue a run exactly where it stopped."""

    generator: np.ndarray
    step: int
    steps: int
    mu0: float
    nu: float
    batch: int
    reduce_every: int
    seed: int
    err_sum: float = 0.0
    err_count: int = 0
    wall_time: float = 0.0
    history: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "generator": self.generator.tolist(), "step": self.step, "steps": self.steps,
            "mu0": self.mu0, "nu": self.nu, "batch": self.batch,
            "reduce_every": self.reduce_every, "seed": self.seed, "err_sum": self.err_sum,
            "err_count": self.err_count, "wall_time": self.wall_time, "history": self.history,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "SGDState":
        d = dict(d)
        d["generator"] = np.asarray(d["generator"], dtype=np.float64)
        return cls(**d)


def random_reduced_generator(n: int, seed: int = 0) -> np.ndarray:
    """LLL-reduced Gaussian random basis, lower triangular with positive diagonal, unit volume."""
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"dimension must be a positive integer, got {n!r}")
    rng = np.random.default_rng(seed)
    B = rng.standard_normal((n, n))
    K.retriangularize(B)
    return B


def triangularize(generator: np.ndarray) -> np.ndarray:
    """Reduced, lower-triangular, unit-volume generator of the same lattice (up to rotation)."""
    B = np.array(generator, dtype=np.float64, copy=True)
    if B.ndim != 2 or B.shape[0] != B.shape[1]:
        raise ValueError(f"generator must be a square matrix, got shape {B.shape}")
    if not np.all(np.isfinite(B)) or abs(np.linalg.det(B)) < 1e-300:
        raise ValueError("generator must be finite and of full rank")
    K.retriangularize(B)
    return B


def _chunk_seed(seed: int, t: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(t)]).generate_state(1)[0] % (2**31 - 1))


def sgd_start(n: int, *, preset: str = "fast", steps: int | None = None,
              mu0: float | None = None, nu: float | None = None, batch: int = 1,
              reduce_every: int = 100, seed: int = 0,
              init: np.ndarray | None = None) -> SGDState:
    """Initial state of an SGD run (random reduced basis, or ``init`` re-triangularized)."""
    if not isinstance(n, (int, np.integer)) or not 2 <= n <= 64:
        raise ValueError(f"dimension must be an integer in 2..64, got {n!r}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; allowed: {', '.join(PRESETS)}")
    p = PRESETS[preset]
    steps = p.steps if steps is None else int(steps)
    mu0 = p.mu0 if mu0 is None else float(mu0)
    nu = p.nu if nu is None else float(nu)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if reduce_every < 1:
        raise ValueError(f"reduce_every must be >= 1, got {reduce_every}")
    for name, v in (("mu0", mu0), ("nu", nu)):
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a positive finite number, got {v!r}")
    if init is None:
        B = random_reduced_generator(n, seed)
    else:
        B = triangularize(init)
        if B.shape[0] != n:
            raise ValueError(f"init has dimension {B.shape[0]}, expected {n}")
    return SGDState(B, 0, steps, mu0, nu, int(batch), int(reduce_every), int(seed))


def sgd_advance(state: SGDState, max_steps: int) -> SGDState:
    """Run up to ``max_steps`` more steps in place (rounded to whole reduction periods)."""
    t0 = state.step
    t1 = min(state.steps, t0 + max(int(max_steps), 1))
    if t1 < state.steps:  # keep chunk boundaries on reduction periods
        t1 = max(t0 + state.reduce_every, (t1 // state.reduce_every) * state.reduce_every)
        t1 = min(t1, state.steps)
    if t1 <= t0:
        return state
    start = time.perf_counter()
    acc = K.sgd_chunk(state.generator, t0, t1, state.steps, state.mu0, state.nu,
                      state.reduce_every, state.batch, _chunk_seed(state.seed, t0))
    if not math.isfinite(acc):
        raise SGDDiverged(f"SGD diverged between steps {t0} and {t1} (mu0={state.mu0:g}); "
                          "use a smaller --mu0 (the presets use 0.0005–0.005)")
    state.wall_time += time.perf_counter() - start
    m = (t1 - t0) * state.batch
    state.err_sum += acc
    state.err_count += m
    state.history.append([t1, acc / m])
    state.step = t1
    if state.step == state.steps:
        K.retriangularize(state.generator)
    return state


def sgd(n: int, *, preset: str = "fast", steps: int | None = None, mu0: float | None = None,
        nu: float | None = None, batch: int = 1, reduce_every: int = 100, seed: int = 0,
        init: np.ndarray | None = None, chunk: int = 20000, progress: bool = True,
        state: SGDState | None = None, on_chunk=None) -> SGDState:
    """Agrell–Allen Algorithm 1 (or its mini-batch variant with ``batch > 1``).

    Parameters
    ----------
    n : dimension, 2..64.
    preset : "fast" (T=1e6, mu0=0.005, nu=200), "medium" (1e7, 0.001, 500),
        "slow" (1e8, 0.0005, 1000); ``steps``, ``mu0``, ``nu`` override it.
    batch : points per step; 1 is Algorithm 1 exactly, larger averages the gradient.
    init : optional starting generator (e.g. the best fused lattice); default a random
        LLL-reduced Gaussian basis.
    chunk : steps per compiled call; between chunks the progress bar shows the running NSM and
        ``on_chunk(state)`` may checkpoint.
    state : continue this state instead of starting afresh.

    Returns
    -------
    SGDState with ``generator`` (lower triangular, unit volume), ``step`` and the running NSM
    history ``[(step, mean ||e||^2/n over the chunk)]``.
    """
    if state is None:
        state = sgd_start(n, preset=preset, steps=steps, mu0=mu0, nu=nu, batch=batch,
                          reduce_every=reduce_every, seed=seed, init=init)
    from latticeq.progress import make_progress

    with make_progress(progress, transient=True) as bar:
        task = bar.add_task(f"SGD n={n}", total=state.steps, completed=state.step)
        while state.step < state.steps:
            sgd_advance(state, chunk)
            bar.update(task, completed=state.step, description=f"SGD n={n} NSM≈{state.history[-1][1]:.6f}")
            if on_chunk is not None:
                on_chunk(state)
    return state


def sgd_python_step_reference(B: np.ndarray, steps: int, mu: float, seed: int = 0) -> np.ndarray:
    """Algorithm 1 with a Python loop per step (baseline for the benchmark; not for real use).

    The closest point of each point is still found by the compiled core decoder
    (:func:`latticeq.lattice.decode.sphere.decode_one`, workspace allocated once), so the
    difference to :func:`sgd` is exactly the cost of driving the inner loop from Python.
    """
    B = np.array(B, dtype=np.float64, copy=True)
    n = B.shape[0]
    rng = np.random.default_rng(seed)
    tril = np.tril_indices(n, -1)
    lo = np.full(n, -BOUND_NONE, dtype=np.int64)
    hi = np.full(n, BOUND_NONE, dtype=np.int64)
    S, dist, ctr, iw = make_workspace(n)
    u = np.empty(n, dtype=np.int64)
    for t in range(steps):
        z = rng.random(n)
        decode_one(B, 1.0 / np.diag(B), z @ B, lo, hi, 0, S, dist, ctr, iw, u)
        y = z - u
        e = y @ B
        e2 = e @ e
        d = np.diag(B).copy()
        B[tril] -= mu * np.outer(y, e)[tril]
        B[np.arange(n), np.arange(n)] -= mu * (y * e - e2 / (n * d))
        if (t + 1) % 100 == 0:
            K.retriangularize(B)
    return B
