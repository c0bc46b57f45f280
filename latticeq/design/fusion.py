"""Fusion of lattice quantizers by learned transforms (Household and Matrix-Exp algorithms).

Zhang, Cao, Li, Yu, "Gradient Based Method for the Fusion of Lattice Quantizers",
arXiv 2502.06887. Starting from the best orthogonal splice ``diag(B_1, …, B_k)`` the generator

    B(θ) = M(θ) · diag(s_1 B_1, …, s_k B_k)          (rows = basis vectors)

is learned, with ``M`` acting on the left so that it mixes basis vectors (a right-multiplied
orthogonal matrix only rotates the lattice and cannot change its NSM):

* ``householder``:     M = H(v_1) ⋯ H(v_r),  H(v) = I − 2 v vᵀ / vᵀv  (exactly orthogonal);
* ``matrix-exp``:      M = exp(W − Wᵀ)  (orthogonal);
* ``matrix-exp-free``: M = exp(W)  (the paper's "deviation" variant, not orthogonal);
* ``triangular``:      M = exp(W ∘ T), T the strictly lower block-triangular mask of the components:
  M is unit lower block-triangular, so ``M · diag(s_k B_k)`` is the product with the basis vectors
  of each component shifted along the earlier components' span. This is Agrell & Allen's
  *triangular modification* of a product lattice ("On the best lattice quantizers", IEEE T-IT
  2023, arXiv 2202.09605): they prove that any lower- or upper-triangular modification of a product
  lattice's generator reduces its NSM, and build their improved lattices in 13–15, 17–23 and 25–48
  from products this way. Here it is optimized (with the scales) by the same gradient descent, as
  the baseline for the free methods.

The loss is the Monte Carlo NSM, scale invariant so the volume needs no constraint:

    G(B) = E_z ||(z − u(z)) B||² / (n |det B|^(2/n)),   z ~ U[0,1)^n,

with ``u(z)`` the exact closest integer coordinates of ``zB`` (found by the core's compiled
Schnorr–Euchner decoder :func:`latticeq.lattice.decode.sphere.closest_coords`, not
differentiated: at the closest point the assignment is locally constant) and the error
differentiated by torch autograd through ``B(θ)`` into ``θ`` and the log-scales ``log s_k``. The step size is annealed geometrically (Adam, ``lr0 → lr0/anneal``).
Initialization: the Householder vectors come in equal pairs (whose reflections cancel) plus
small noise, ``W`` is small noise, so ``M = I + O(noise)``.

Ablations (the seed paper's third open check) freeze parts of this: ``train_mixing=False``
keeps ``M(θ)`` at its start and learns the scales only, and ``mixing_fixed=M0`` puts a fixed
matrix in front, ``B = M(θ) · M0 · diag(s_k B_k)``. Scales only: ``matrix-exp`` with
``noise=0, train_mixing=False`` (``M = I``); a random orthogonal ``M0`` likewise
(``benchmarks/design_checks.py``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from latticeq.design import _kernels as K
from latticeq.lattice.decode.sphere import closest_coords

METHODS = ("householder", "matrix-exp", "matrix-exp-free", "triangular")


@dataclass
class FusionState:
    """Parameters and progress of one fusion run (restartable)."""

    method: str
    blocks: list            # unit-volume generators of the components (lists of lists)
    components: list
    theta: np.ndarray       # Householder vectors (r, n) or W (n, n)
    log_scales: np.ndarray  # (k,)
    step: int
    steps: int
    batch: int
    lr0: float
    anneal: float
    seed: int
    adam_m: np.ndarray | None = None
    adam_v: np.ndarray | None = None
    history: list = field(default_factory=list)
    wall_time: float = 0.0
    mixing_fixed: np.ndarray | None = None  # fixed M0 in B = M(θ) M0 diag(s_k B_k); None: I
    train_mixing: bool = True               # False: θ stays at its start (scales only)

    _ARRAYS = ("theta", "log_scales", "adam_m", "adam_v", "mixing_fixed")

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        for k in self._ARRAYS:
            d[k] = None if d[k] is None else np.asarray(d[k]).tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FusionState":
        d = dict(d)
        for k in cls._ARRAYS:
            if d.get(k) is not None:
                d[k] = np.asarray(d[k], dtype=np.float64)
        return cls(**d)


def _block_diag(blocks, log_scales):
    import torch

    n = sum(len(b) for b in blocks)
    D = torch.zeros((n, n), dtype=torch.float64)
    a = 0
    for b, ls in zip(blocks, log_scales):
        m = len(b)
        D[a:a + m, a:a + m] = torch.exp(ls) * torch.as_tensor(np.asarray(b, dtype=np.float64))
        a += m
    return D


def lower_block_mask(dims) -> np.ndarray:
    """The strictly lower block-triangular 0/1 mask of blocks of sizes ``dims`` (entry (i, j) is 1
    when row i's block comes after column j's)."""
    b = np.repeat(np.arange(len(dims)), dims)
    return (b[:, None] > b[None, :]).astype(np.float64)


def _mixing(method, theta, mask=None):
    """M(θ) of ``method``; ``mask`` (``triangular`` only) is :func:`lower_block_mask` of the blocks."""
    import torch

    n = theta.shape[1]
    if method == "householder":
        M = torch.eye(n, dtype=torch.float64)
        for v in theta:
            M = M - 2.0 * torch.outer(M @ v, v) / (v @ v)
        return M
    if method == "matrix-exp":
        return torch.linalg.matrix_exp(theta - theta.T)
    if method == "matrix-exp-free":
        return torch.linalg.matrix_exp(theta)
    if method == "triangular":
        return torch.linalg.matrix_exp(theta * torch.as_tensor(mask))
    raise ValueError(f"unknown fusion method {method!r}; allowed: {', '.join(METHODS)}")


def _generator(state: FusionState, theta, log_s):
    """``M(θ) · M0 · diag(s_k B_k)`` as a torch tensor (differentiable in θ and the log-scales)."""
    import torch

    D = _block_diag(state.blocks, log_s)
    if state.mixing_fixed is not None:
        D = torch.as_tensor(np.asarray(state.mixing_fixed, dtype=np.float64)) @ D
    mask = lower_block_mask([len(b) for b in state.blocks]) if state.method == "triangular" else None
    return _mixing(state.method, theta, mask) @ D


def fused_generator(state: FusionState) -> np.ndarray:
    """The current generator ``M(θ) M0 diag(s_k B_k)`` scaled to unit volume."""
    import torch

    with torch.no_grad():
        B = _generator(state, torch.as_tensor(state.theta), torch.as_tensor(state.log_scales)).numpy()
    _, logdet = np.linalg.slogdet(B)
    return B * math.exp(-logdet / B.shape[0])


def fusion_start(splice_lattice, *, method: str = "householder", steps: int = 1500,
                 batch: int = 1024, lr0: float = 2e-3, anneal: float = 30.0,
                 noise: float = 1e-2, reflections: int | None = None, seed: int = 0,
                 mixing_fixed=None, train_mixing: bool = True) -> FusionState:
    """Initial state from a spliced lattice (its provenance names components and scales).

    ``mixing_fixed`` (an n×n invertible matrix) and ``train_mixing=False`` are for ablations
    (see the module docstring).
    """
    if method not in METHODS:
        raise ValueError(f"unknown fusion method {method!r}; allowed: {', '.join(METHODS)}")
    for name, v in (("steps", steps), ("batch", batch)):
        if int(v) < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    if lr0 <= 0 or anneal < 1 or noise < 0:
        raise ValueError("need lr0 > 0, anneal >= 1, noise >= 0")
    prov = splice_lattice.provenance
    if "dims" not in prov or "scales" not in prov:
        raise ValueError("fusion starts from a splice (latticeq.design.splice.splice / "
                         "best_splice(n).lattice()), whose provenance lists dims and scales")
    dims, scales = list(prov["dims"]), np.asarray(prov["scales"], dtype=np.float64)
    G = np.asarray(splice_lattice.generator)
    blocks, a, log_scales = [], 0, []
    for d, s in zip(dims, scales):
        b = G[a:a + d, a:a + d] / s  # the component before scaling
        vol = abs(np.linalg.det(b))
        b = b / vol ** (1.0 / d)
        blocks.append(b.tolist())
        log_scales.append(math.log(s) + math.log(vol) / d)
        a += d
    n = a
    rng = np.random.default_rng(seed)
    if method == "householder":
        r = reflections if reflections is not None else 2 * ((n + 1) // 2)
        if r < 2 or r % 2:
            raise ValueError(f"reflections must be an even number >= 2, got {r}")
        base = rng.standard_normal((r // 2, n))
        theta = np.repeat(base, 2, axis=0) + noise * rng.standard_normal((r, n))
    else:
        theta = noise * rng.standard_normal((n, n))
    if method == "triangular":
        if len(dims) < 2:
            raise ValueError("the triangular modification needs a product of at least two lattices; "
                             f"the splice has one component ({', '.join(prov.get('components', [])) or '?'})")
        theta = theta * lower_block_mask(dims)
    if mixing_fixed is not None:
        mixing_fixed = np.asarray(mixing_fixed, dtype=np.float64)
        if mixing_fixed.shape != (n, n) or not np.all(np.isfinite(mixing_fixed)):
            raise ValueError(f"mixing_fixed must be a finite {n}×{n} matrix, got shape {mixing_fixed.shape}")
        if abs(np.linalg.det(mixing_fixed)) < 1e-12:
            raise ValueError("mixing_fixed must be invertible")
    return FusionState(method, blocks, list(prov.get("components", [])), theta,
                       np.asarray(log_scales), 0, int(steps), int(batch), float(lr0),
                       float(anneal), int(seed), mixing_fixed=mixing_fixed, train_mixing=bool(train_mixing))


def _reduction(B):
    """Unimodular U (int) with U B LLL-reduced, its inverse, and the triangular factor of U B."""
    R = B.copy()
    K.lll_float(R, 0.99)
    U = np.rint(R @ np.linalg.inv(B))
    Uinv = np.rint(np.linalg.inv(U))
    Lt = np.linalg.cholesky(R @ R.T)
    return U, Uinv, Lt


def fusion_advance(state: FusionState, max_steps: int) -> FusionState:
    """Run up to ``max_steps`` optimization steps in place."""
    import torch

    t_end = min(state.steps, state.step + max(int(max_steps), 1))
    if t_end <= state.step:
        return state
    start = time.perf_counter()
    torch.set_num_threads(1)  # tiny matrices: threads only contend (2 shared cores)
    torch.manual_seed(state.seed * 1_000_003 + state.step)
    theta = torch.tensor(state.theta, requires_grad=state.train_mixing)
    log_s = torch.tensor(state.log_scales, requires_grad=True)
    params = [theta, log_s] if state.train_mixing else [log_s]
    opt = torch.optim.Adam(params, lr=state.lr0)
    if state.adam_m is not None:  # restore Adam moments (flattened in the order of params)
        flat_m, flat_v = np.asarray(state.adam_m), np.asarray(state.adam_v)
        a = 0
        for p in params:
            k = p.numel()
            opt.state[p] = {"step": torch.tensor(float(state.step)),
                            "exp_avg": torch.tensor(flat_m[a:a + k].reshape(p.shape)),
                            "exp_avg_sq": torch.tensor(flat_v[a:a + k].reshape(p.shape))}
            a += k
    rng = np.random.default_rng([state.seed, state.step])
    n = theta.shape[1]
    acc, cnt = 0.0, 0
    U = Uinv = Lt = None
    for t in range(state.step, t_end):
        lr = state.lr0 * state.anneal ** (-t / max(state.steps - 1, 1))
        for g in opt.param_groups:
            g["lr"] = lr
        B = _generator(state, theta, log_s)
        Bn = B.detach().numpy()
        if U is None or (t - state.step) % 25 == 0:
            U, Uinv, Lt = _reduction(Bn)
        z = rng.random((state.batch, n))
        zr = z @ Uinv                      # coordinates in the reduced basis
        ur, _, _ = closest_coords(Lt, zr @ Lt)
        y = torch.as_tensor(z - ur @ U)    # z - u, u = closest coordinates in the basis B
        e = y @ B
        _, logdet = torch.linalg.slogdet(B)
        loss = (e * e).sum(1).mean() / n * torch.exp(-2.0 * logdet / n)
        opt.zero_grad()
        loss.backward()
        opt.step()
        acc += float(loss.detach())
        cnt += 1
    state.theta = theta.detach().numpy().copy()
    state.log_scales = log_s.detach().numpy().copy()
    state.adam_m = np.concatenate([opt.state[p]["exp_avg"].numpy().ravel() for p in params])
    state.adam_v = np.concatenate([opt.state[p]["exp_avg_sq"].numpy().ravel() for p in params])
    state.history.append([t_end, acc / cnt])
    state.step = t_end
    state.wall_time += time.perf_counter() - start
    return state


def fuse(splice_lattice, *, method: str = "householder", steps: int = 1500, batch: int = 1024,
         lr0: float = 2e-3, anneal: float = 30.0, noise: float = 1e-2,
         reflections: int | None = None, seed: int = 0, chunk: int = 50,
         progress: bool = True, state: FusionState | None = None, on_chunk=None) -> FusionState:
    """Learn a fused lattice from ``splice_lattice`` (see the module docstring).

    Returns the final :class:`FusionState`; :func:`fused_generator` gives the unit-volume
    generator and ``state.history`` the running NSM per chunk.
    """
    if state is None:
        state = fusion_start(splice_lattice, method=method, steps=steps, batch=batch, lr0=lr0,
                             anneal=anneal, noise=noise, reflections=reflections, seed=seed)
    n = sum(len(b) for b in state.blocks)
    from latticeq.progress import make_progress

    with make_progress(progress, transient=True) as bar:
        task = bar.add_task(f"{state.method} n={n}", total=state.steps, completed=state.step)
        while state.step < state.steps:
            fusion_advance(state, chunk)
            bar.update(task, completed=state.step, description=f"{state.method} n={n} NSM≈{state.history[-1][1]:.6f}")
            if on_chunk is not None:
                on_chunk(state)
    return state
