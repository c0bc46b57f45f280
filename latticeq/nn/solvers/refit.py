"""Grid refit: choose the lattice as well as the lattice point.

A grid fixes, per output row and column group ``g``, the scale ``s_g`` and integer zero ``z_g``
of the scaled integer lattice ``s_g (ℤ − z_g)`` in which the row is decoded (Birnick 2025,
arXiv 2508.01077, §2). GPTQ takes them from the weights' min–max range (or a clipping search),
which ignores the layer's metric ``H``. Given codes ``v``, the objective
``(w − q) H (w − q)ᵀ`` with ``q_j = a_{g(j)} v_j + c_{g(j)}`` is a linear least-squares problem in
the ``2G`` unknowns ``(a, c)`` of the row, solved exactly; the zero is then rounded to an integer
code ``z = clamp(round(−c/a), 0, 2^b − 1)`` (the GPTQ format stores integer zeros) and the
scales are re-solved with ``z`` fixed. The row is decoded again in the new lattice (same solver,
same column order, fixed grid) and refined if asked. Rows are independent, so each row keeps
whichever of its old and new solutions has the lower exact objective: the refit never makes a
row worse. Alternating (points ↔ lattice) repeats up to ``iters`` times or until no row improves.

Symmetric grids keep their fixed zero ``(2^b)/2`` and refit scales only.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import torch

from latticeq.nn.layer import LayerProblem
from latticeq.nn.solvers._base import Prepared, Solution

__all__ = ["refit", "fit_grid"]

def _group_products(U: torch.Tensor, H: torch.Tensor, cols: list[torch.Tensor]):
    """For every row: ``UᵍᵀH U^h`` (m, G, G), ``Uᵍᵀ H 1^h`` (m, G, G) where ``U^g`` is the row's
    vector ``U`` restricted to group g."""
    m, n = U.shape
    G = len(cols)
    Mask = torch.zeros(n, G, dtype=U.dtype, device=U.device)
    for g, c in enumerate(cols):
        Mask[c, g] = 1
    UU = torch.empty(m, G, G, dtype=U.dtype, device=U.device)
    U1 = torch.empty(m, G, G, dtype=U.dtype, device=U.device)
    for g, c in enumerate(cols):
        T = U[:, c] @ H[c, :]  # (m, n): U^g H
        UU[:, g, :] = (T * U) @ Mask
        U1[:, g, :] = T @ Mask
    return UU, U1, Mask


def fit_grid(problem: LayerProblem, codes: torch.Tensor, g_idx: torch.Tensor, zeros: torch.Tensor,
             maxq: int, *, fit_zero: bool = True, WH: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """H-weighted least-squares scales (and integer zeros) of every row and group for fixed codes.

    ``WH`` may pass the product ``W H`` (float64) when it is reused. Returns ``(scales, zeros)``
    of shape ``(m, G)`` (float64); entries that are not finite or not positive mark groups the
    caller must not use.
    """
    H = problem.H.to(torch.float64)
    W = problem.W.to(dtype=torch.float64, device=H.device)
    V = codes.to(dtype=torch.float64, device=H.device)
    gl = g_idx.long().to(H.device)
    G = int(zeros.shape[1])
    cols = [torch.nonzero(gl == g).flatten() for g in range(G)]
    m = W.shape[0]
    Z = zeros.to(dtype=torch.float64, device=H.device).clone()
    if WH is None:
        WH = W @ H
    ridge = 1e-12 * float(torch.diagonal(H).mean()) + 1e-300
    # Gram blocks of the row's design: V^gᵀ H V^h, V^gᵀ H 1^h, 1^gᵀ H 1^h (one product with H)
    VV, V1, Mask = _group_products(V, H, cols)
    One = Mask.T @ H @ Mask
    WV = (WH * V) @ Mask  # V^gᵀ H w
    W1 = WH @ Mask  # 1^gᵀ H w
    if fit_zero:
        A = torch.zeros(m, 2 * G, 2 * G, dtype=torch.float64, device=H.device)
        A[:, :G, :G] = VV
        A[:, :G, G:] = V1
        A[:, G:, :G] = V1.transpose(1, 2)
        A[:, G:, G:] = One
        rhs = torch.cat([WV, W1], dim=1)
        A = A + ridge * torch.eye(2 * G, dtype=A.dtype, device=A.device)
        x = torch.linalg.solve(A, rhs.unsqueeze(-1)).squeeze(-1)
        a, c = x[:, :G], x[:, G:]
        zc = -c / a
        ok = torch.isfinite(zc) & (a > 0)
        Z = torch.where(ok, torch.clamp(torch.round(zc), 0, maxq), Z)
    # with U^g = V^g − z_g 1^g: U^gᵀ H U^h = VV − z_h V1[g,h] − z_g V1[h,g] + z_g z_h One
    zg = Z[:, :, None]
    zh = Z[:, None, :]
    UU = VV - zh * V1 - zg * V1.transpose(1, 2) + zg * zh * One
    rhs = WV - Z * W1
    UU = UU + ridge * torch.eye(G, dtype=UU.dtype, device=UU.device)
    s = torch.linalg.solve(UU, rhs.unsqueeze(-1)).squeeze(-1)
    return s, Z


def refit(problem: LayerProblem, sol: Solution, prep: Prepared, decode: Callable[[Prepared], tuple],
          assemble: Callable[..., Solution], polish: Callable[[Solution], Solution] | None, maxq: int,
          *, sym: bool, iters: int = 4) -> Solution:
    """Alternate grid fitting and decoding (see the module docstring).

    ``decode(prep)`` returns processing-order codes, scales, zeros and stats on a fixed-grid
    ``prep``; ``assemble(prep, Vp, S, Z, stats)`` makes a :class:`Solution`; ``polish`` (e.g. ±1
    refinement) is applied to each new solution. Returns the row-wise best solution found.
    """
    if iters < 0:
        raise ValueError(f"refit_iters must be ≥ 0, got {iters}")
    t0 = time.perf_counter()
    best = sol
    best_rows = _rows(problem, best)
    history = [float(best_rows.sum())]
    perm = prep.perm
    gl = best.g_idx.long()
    WH = problem.W.to(torch.float64) @ problem.H.to(torch.float64) if iters else None  # fixed: W does not change
    rows_improved = 0
    for _ in range(iters):
        s, z = fit_grid(problem, best.codes, best.g_idx, best.zeros, maxq, fit_zero=not sym, WH=WH)
        s = s.to(best.scales.device)
        z = z.to(best.zeros.device)
        # degenerate groups (e.g. every code equal to the zero point) keep their parameters
        ok = torch.isfinite(s) & (s > 0)
        s = torch.where(ok, s, best.scales.to(s.dtype))
        z = torch.where(ok, z, best.zeros.to(z.dtype))
        Sc = s[:, gl][:, perm].to(prep.W).contiguous()
        Zc = z[:, gl][:, perm].to(prep.W).contiguous()
        fixed = dataclasses.replace(prep, S=Sc, Z=Zc, dynamic=False)
        Vp, S2, Z2, st = decode(fixed)
        new = assemble(fixed, Vp, S2, Z2, st)
        if polish is not None:
            new = polish(new)
        new_rows = _rows(problem, new)
        better = new_rows < best_rows * (1 - 1e-12)
        if not bool(better.any()):
            break
        rows_improved += int(better.sum())
        best_rows = torch.where(better.to(best_rows.device), new_rows, best_rows)
        best = _merge(problem, best, new, better, best_rows)
        history.append(float(best_rows.sum()))
    stats = dict(best.stats) if best is not sol else dict(sol.stats)
    stats["refit"] = {"iters": len(history) - 1, "objective_history": history, "rows_improved": rows_improved,
                      "error_before": sol.error, "seconds": time.perf_counter() - t0, "fit_zero": not sym}
    best.stats = stats
    best.method = sol.method + "+refit"
    return best


def _rows(problem: LayerProblem, sol: Solution) -> torch.Tensor:
    """The solution's per-row objectives (computed by the solver where it did)."""
    if sol.row_errors is not None:
        return sol.row_errors.to(torch.float64)
    return problem.row_objective(_dequant64(sol))


def _merge(problem: LayerProblem, old: Solution, new: Solution, take_new: torch.Tensor,
           rows: torch.Tensor) -> Solution:
    """Row-wise combination of two solutions on the same column order and groups; ``rows`` are
    the merged rows' objectives."""
    t = take_new.to(old.codes.device)[:, None]
    codes = torch.where(t, new.codes, old.codes)
    scales = torch.where(t, new.scales, old.scales)
    zeros = torch.where(t, new.zeros, old.zeros)
    dequant = torch.where(t, new.dequant, old.dequant)
    err = float(rows.sum())
    base = problem.baseline()
    return Solution(codes=codes, scales=scales, zeros=zeros, g_idx=old.g_idx, perm=old.perm,
                    dequant=dequant, error=err, relative_error=err / base if base > 0 else 0.0,
                    method=old.method, stats=dict(new.stats), row_errors=rows.clone())


def _dequant64(sol: Solution) -> torch.Tensor:
    """The solution's weights from its stored (float32) scales, in float64."""
    gl = sol.g_idx.long()
    return sol.scales.to(torch.float64)[:, gl] * (sol.codes.to(torch.float64) - sol.zeros.to(torch.float64)[:, gl])
