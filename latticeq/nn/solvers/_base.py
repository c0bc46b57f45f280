"""Shared machinery of the layer solvers: the solution record, preparation of the lattice
(damping, column order, Cholesky factors) and assembly of group parameters.

Notation (processing order, after the column permutation ``perm``):

* ``H_d = H + λI`` the damped Hessian, ``R`` the upper Cholesky factor of ``H_d⁻¹``
  (``Rᵀ R = H_d⁻¹``) — GPTQ's ``Hinv``;
* ``B = R⁻¹`` upper triangular with ``B Bᵀ = H_d``: the rows ``s_j B_j`` are the lattice basis
  of one output row; nearest-plane decodes column 0 first (Birnick 2025, Theorem 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from latticeq.nn.grid import Grid
from latticeq.nn.layer import LayerProblem

__all__ = ["Solution", "Prepared", "prepare", "assemble"]


@dataclass
class Solution:
    """Quantized layer.

    Attributes
    ----------
    codes : (m, n) int32 tensor, original column order, values in ``[0, maxq]``.
    scales, zeros : (m, n_groups) tensors (``zeros`` integer-valued).
    g_idx : (n,) int32 group of each column (original order), GPTQ's ``g_idx``.
    perm : (n,) int64 column order used (processing position → original column).
    dequant : (m, n) float32 ``scales[:, g_idx] * (codes - zeros[:, g_idx])``.
    error : float, ``tr((W − Q) H (W − Q)ᵀ)`` with the undamped ``H``.
    relative_error : float, error / ``tr(W H Wᵀ)``.
    method : str
    stats : dict of solver-specific data (times, damping, bounds, traces).
    row_errors : (m,) float64 tensor of the rows' objectives, when the solver computed them.
    """

    codes: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor
    g_idx: torch.Tensor
    perm: torch.Tensor
    dequant: torch.Tensor
    error: float
    relative_error: float
    method: str
    stats: dict = field(default_factory=dict)
    row_errors: torch.Tensor | None = None


@dataclass
class Prepared:
    """The lattice of a layer in processing order (float64 on CPU unless told otherwise)."""

    W: torch.Tensor  # (m, n) weights in processing order, dead columns zeroed
    Hd: torch.Tensor  # damped Hessian in processing order
    R: torch.Tensor | None  # upper Cholesky factor of Hd^{-1} (None: prepared with factor=False)
    B: torch.Tensor | None  # upper triangular, B Bᵀ = Hd, B = R⁻¹ (None likewise)
    perm: torch.Tensor
    lam: float
    S: torch.Tensor  # (m, n) per-column scale (processing order); filled later for dynamic groups
    Z: torch.Tensor
    dynamic: bool
    grid: Grid
    W0: torch.Tensor  # (m, n) original-order weights (dead zeroed)


def min_pivot_order(H: torch.Tensor) -> torch.Tensor:
    """Min-pivot column order (Chen et al. 2025, arXiv 2507.18553).

    Pivoted LDLᵀ of ``H`` that takes the smallest remaining pivot (Schur-complement diagonal)
    first. The first pivot is the Gram–Schmidt length² of the column decided *last* by GPTQ
    (``B_{n-1,n-1}² = H_jj``), so the processing order is the pick order reversed: like
    act-order (descending ``diag H``), columns with small conditional variance go last.
    """
    from latticeq.nn.solvers._kernels import pivoted_ldl_min

    order = pivoted_ldl_min(np.ascontiguousarray(H.detach().cpu().numpy().astype(np.float64)))
    return torch.from_numpy(order[::-1].copy()).to(H.device)


def prepare(problem: LayerProblem, grid: Grid, *, order: str = "natural", percdamp: float = 0.01, dtype=None,
            factor: bool = True) -> Prepared:
    """Damp, order, factor; compute static (per-channel or static-group) scales.

    ``factor=False`` skips the Cholesky factors (``R`` and ``B`` are then None): for solvers
    without error feedback (``rtn``), whose codes depend on the weights alone."""
    if not isinstance(problem, LayerProblem):
        raise ValueError(f"problem must be a LayerProblem, got {type(problem).__name__}")
    if not isinstance(grid, Grid):
        raise ValueError(f"grid must be a Grid, got {type(grid).__name__}")
    m, n = problem.W.shape
    grid.check_columns(n)
    device = problem.W.device
    if dtype is None:
        dtype = torch.float64 if device.type == "cpu" else torch.float32
    W = problem.W.to(dtype).clone()
    dead = problem.dead.to(device)
    W[:, dead] = 0
    if not percdamp >= 0:
        raise ValueError(f"percdamp must be ≥ 0, got {percdamp!r}")
    key = (order, float(percdamp), dtype, str(device), bool(factor))
    cached = problem._factors.get(key)
    if cached is not None:  # another layer with the same H (LayerProblem.with_weights)
        perm, Hp, lam, B, R = cached
    else:
        H = problem.H.to(device=device, dtype=dtype).clone()
        H[dead, dead] = 1
        perm, Hp, lam, B, R = _factor(H, order, percdamp, factor)
        problem._factors[key] = (perm, Hp, lam, B, R)
    Wp = W[:, perm].contiguous()
    dynamic = grid.group_size is not None and not grid.static_groups
    S = torch.zeros(m, n, dtype=dtype, device=device)
    Z = torch.zeros(m, n, dtype=dtype, device=device)
    if not dynamic:
        # as published: per-channel parameters from the weights before dead columns are
        # zeroed, static groups after (GPTQ.fasterquant)
        s, z = grid.static_params(problem.W.to(dtype) if grid.group_size is None else W)
        gidx = torch.zeros(n, dtype=torch.long, device=device) if grid.group_size is None else torch.arange(n, device=device) // grid.group_size
        S = s[:, gidx][:, perm].contiguous()
        Z = z[:, gidx][:, perm].contiguous()
    return Prepared(W=Wp, Hd=Hp, R=R, B=B, perm=perm, lam=lam, S=S, Z=Z, dynamic=dynamic, grid=grid, W0=W)


def _factor(H, order: str, percdamp: float, factor: bool):
    """Column order, damped ``H`` in that order, ``λ``, and (if ``factor``) ``B`` and ``R``."""
    n, dtype, device = H.shape[0], H.dtype, H.device
    if order == "natural":
        perm = torch.arange(n, device=device)
    elif order == "act":
        perm = torch.argsort(torch.diagonal(H), descending=True, stable=True)
    elif order == "minpivot":
        lam0 = float(percdamp * torch.diagonal(H).mean())
        perm = min_pivot_order(H + lam0 * torch.eye(n, dtype=dtype, device=device))
    else:
        raise ValueError(f"unknown column order {order!r}; allowed: natural, act, minpivot")
    Hp = H[perm][:, perm]
    # B upper triangular with B Bᵀ = Hp + λI: Cholesky of the reversed matrix, reversed back.
    # Then R = B⁻¹ is the upper Cholesky factor of (Hp + λI)⁻¹ (GPTQ's Hinv).
    mean_diag = float(torch.diagonal(Hp).mean())
    eye = torch.eye(n, dtype=dtype, device=device)
    lam, B, R = percdamp * mean_diag, None, None
    if factor:
        Hrev = Hp.flip(0, 1)
        p = percdamp
        for _ in range(8):
            lam = p * mean_diag
            Lrev, info = torch.linalg.cholesky_ex(Hrev + lam * eye)
            if info.item() == 0:
                break
            p = max(p * 10, 1e-6)
        else:
            raise ValueError(f"Cholesky of the damped Hessian failed up to percdamp = {p / 10:g}; H is numerically singular")
        B = Lrev.flip(0, 1)
        R = _upper_inverse(B)
    return perm, Hp + lam * eye, lam, B, R


def _upper_inverse(B: torch.Tensor) -> torch.Tensor:
    """Inverse of an upper-triangular matrix: LAPACK ``trtri`` on CPU (n³/3 flops, about 3× a
    triangular solve against the identity), ``solve_triangular`` elsewhere."""
    if B.device.type == "cpu" and B.dtype in (torch.float32, torch.float64):
        from scipy.linalg.lapack import dtrtri, strtri

        trtri = dtrtri if B.dtype == torch.float64 else strtri
        # the C-ordered upper B is the Fortran-ordered lower Bᵀ: invert that, transpose back
        Rt, info = trtri(B.numpy().T, lower=1)
        if info == 0:
            return torch.from_numpy(np.ascontiguousarray(Rt.T))
    eye = torch.eye(B.shape[0], dtype=B.dtype, device=B.device)
    return torch.linalg.solve_triangular(B, eye, upper=True)


def assemble(problem: LayerProblem, prep: Prepared, codes_p: torch.Tensor, S: torch.Tensor, Z: torch.Tensor, method: str, stats: dict,
             damped_rows: torch.Tensor | None = None) -> Solution:
    """Turn processing-order codes and per-column parameters into a :class:`Solution`.

    ``damped_rows`` (optional): each row's damped objective ``(w − q)(H + λI)(w − q)ᵀ`` as the
    error-feedback recursion accumulates it; then the error is that minus ``λ‖w − q‖²`` (O(mn))
    instead of a product with ``H`` (O(mn²))."""
    m, n = codes_p.shape
    grid = prep.grid
    perm = prep.perm
    invperm = torch.argsort(perm)
    codes = codes_p[:, invperm]
    dev = codes_p.device
    if grid.group_size is None:
        g_idx = torch.zeros(n, dtype=torch.int32, device=dev)
        scales, zeros = S[:, :1], Z[:, :1]
    elif grid.static_groups:
        g_idx = (torch.arange(n, device=dev) // grid.group_size).to(torch.int32)
        invp = torch.argsort(perm)
        scales, zeros = S[:, invp][:, :: grid.group_size], Z[:, invp][:, :: grid.group_size]
    else:
        g = grid.group_size
        g_idx = torch.empty(n, dtype=torch.int32, device=dev)
        g_idx[perm] = (torch.arange(n, device=dev) // g).to(torch.int32)
        scales, zeros = S[:, ::g].contiguous(), Z[:, ::g].contiguous()
    gl = g_idx.long()
    deq64 = scales[:, gl] * (codes.to(scales.dtype) - zeros[:, gl])
    if damped_rows is not None:
        Ep = prep.W - S * (codes_p.to(S.dtype) - Z)  # processing order, dead columns zeroed
        rows = damped_rows.to(torch.float64) - prep.lam * (Ep.to(torch.float64) ** 2).sum(dim=1)
    else:
        rows = problem.row_objective(deq64)
    err = float(rows.sum())
    base = problem.baseline()
    return Solution(
        codes=codes.to(torch.int32),
        scales=scales.to(torch.float32),
        zeros=zeros.to(torch.float32),
        g_idx=g_idx,
        perm=perm.to(torch.int64),
        dequant=deq64.to(torch.float32),
        error=err,
        relative_error=err / base if base > 0 else 0.0,
        method=method,
        stats=stats,
        row_errors=rows,
    )


def gptq_blocksize(grid: Grid, blocksize: int) -> int:
    """The lazy-update block size GPTQ runs with.

    As published (``group_refresh="published"``) it is ``blocksize`` itself: dynamic groups
    then take their parameters from the block's view of the weights, which depends on it.
    With ``group_refresh="updated"`` the block is aligned so that dynamic groups never
    straddle a block; results then do not depend on the block size in exact arithmetic.
    """
    if isinstance(blocksize, bool) or not isinstance(blocksize, int) or blocksize < 1:
        raise ValueError(f"blocksize must be a positive integer, got {blocksize!r}")
    g = grid.group_size
    if g is None or grid.static_groups or grid.group_refresh == "published":
        return blocksize
    if g <= blocksize:
        return g * (blocksize // g)
    for b in range(blocksize, 0, -1):
        if g % b == 0:
            return b
    return 1
