"""Babai's nearest-plane algorithm in explicit lattice form (Babai 1986).

Per output row with column scales ``s_j`` and zeros ``z_j`` (processing order), the layer
objective with damped ``H_d = B Bᵀ`` (``B = R⁻¹`` upper triangular, the Cholesky factor of
``H_d`` taken in reverse order) is

.. math:: (w - q) H_d (w - q)^\\top = \\lVert w B - \\textstyle\\sum_j q_j B_j \\rVert^2,
          \\qquad q_j = s_j (v_j - z_j),

a closest-vector problem in the (shifted) lattice with basis rows ``s_j B_j`` and target
``t = w B``. Because ``B`` is upper triangular, coordinate k of the residual is fixed once
levels ``0..k`` are decided, so nearest-plane decides ``v_0`` first:
``c_k = x_k / B_kk``, ``v_k = clamp(round(c_k/s_k) + z_k, 0, 2^b − 1)``, ``x −= q_k B_k``.
Birnick (arXiv 2508.01077) and Chen et al. (arXiv 2507.18553) prove this is GPTQ step by step;
the tests check it code for code, with and without clipping.

Unclipped, the error of each row obeys Babai's bound
``‖x_final‖² ≤ ¼ Σ_k ‖b*_k‖² = ¼ Σ_k s_k² B_kk²`` (Gram–Schmidt lengths ``|s_k B_kk|``).

Dynamic groups: at a group boundary k the error-updated weights are the coordinates of the
residual in the remaining basis, ``w' = x[k:] B[k:, k:]⁻¹ = x[k:] R[k:, k:]``; the group's grid
parameters are computed from them, exactly as GPTQ computes them from its updated weights
(as published, counting only the decisions before the current lazy-update block)
(computed as ``w + D R`` with ``D`` the decided part of the residual, so that it is exactly
``w`` where no decision has reached; see :func:`latticeq.nn.solvers._kernels.nearest_plane`).
"""

from __future__ import annotations

import numpy as np
import torch

from latticeq.nn.solvers._base import Prepared

__all__ = ["nearest_plane_codes", "babai_trace", "babai_bound"]


def nearest_plane_codes(prep: Prepared, blocksize: int = 128) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """Nearest-plane codes (processing order), per-column scales and zeros, stats with the
    final lattice residual norms² per row (= damped row objective) and ``B``.

    ``blocksize`` matters only for dynamic groups refreshed as published
    (``grid.group_refresh == "published"``), whose parameters GPTQ computes from the weights
    updated by the decisions before the current lazy-update block: the residual's coordinates
    in the basis from the block start ``i1``, ``w' = w[a:e] + D_{<i1}[i1:] R[i1:, a:e]``."""
    from latticeq.nn.solvers._base import gptq_blocksize

    grid = prep.grid
    B = prep.B
    W = prep.W
    m, n = W.shape
    S = prep.S.clone()
    Z = prep.Z.clone()
    D = torch.zeros_like(W)  # Σ_decided (w_j − q_j) B_j; residual x = D + Σ_undecided w_j B_j
    V = torch.zeros_like(W)
    maxq = float(grid.maxq)
    g = grid.group_size
    bsz = gptq_blocksize(grid, blocksize)
    published = prep.dynamic and grid.group_refresh == "published"
    cuts = {0, n}
    if prep.dynamic:
        cuts.update(range(0, n, g))
    if published:
        cuts.update(range(0, n, bsz))
    cuts = sorted(cuts)
    cpu = W.device.type == "cpu"
    D_block = D
    for a, b in zip(cuts[:-1], cuts[1:]):
        if published and a % bsz == 0:
            D_block = D.clone()  # the decisions GPTQ's lazy updates have applied at this block
        if prep.dynamic and a % g == 0:
            e = min(a + g, n)
            # coordinates of the residual in the remaining basis: w' = x[a:] R[a:, a:e]
            # = w[a:e] + D[a:] R[a:, a:e] (exactly w before any decision touches the group);
            # as published, only the decisions before the block start i1 count
            i1 = a - a % bsz if published else a
            Dsrc = D_block if published else D
            wprime = W[:, a:e] + Dsrc[:, i1:] @ prep.R[i1:, a:e]
            s, z = grid.find_params(wprime)
            S[:, a:e] = s[:, None]
            Z[:, a:e] = z[:, None]
        if cpu:
            from latticeq.nn.solvers._kernels import nearest_plane

            nearest_plane(W.contiguous().numpy(), D.numpy(), B.numpy(), S.numpy(), Z.numpy(), maxq, a, b, V.numpy())
        else:
            for k in range(a, b):
                c = W[:, k] + D[:, k] / B[k, k]
                v = torch.clamp(torch.round(c / S[:, k]) + Z[:, k], 0, maxq)
                V[:, k] = v
                D[:, k:] += (W[:, k] - S[:, k] * (v - Z[:, k]))[:, None] * B[k, k:][None, :]
    X = D
    stats = {"lattice_distance2": (X * X).sum(dim=1).cpu(), "B": B}
    return V, S, Z, stats


def babai_bound(B: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    """Per-row bound ``¼ Σ_k s_k² B_kk²`` on the damped error of unclipped nearest-plane."""
    return 0.25 * ((S * torch.diagonal(B)[None, :]) ** 2).sum(dim=1)


def babai_trace(prep: Prepared, B: torch.Tensor, S: torch.Tensor, Z: torch.Tensor, rows=(0,)) -> dict:
    """Nearest-plane steps of a few rows.

    The data space (span of the calibration inputs, ``R^k``) is represented isometrically by
    ``R^n`` through ``x ↦ x B`` (``B Bᵀ = H_d``). Returns ``{"rows", "target": (r, n) initial
    target w B, "before": (r, n, n) residual target before level k, "center": (r, n)
    continuous index c_k/s_k + z_k (the nearest plane's position), "index": (r, n) index
    chosen, "residual": (r, n, n) residual after level k, "perm"}``.
    """
    Bn = B.detach().cpu().numpy()
    Wp = prep.W.detach().cpu().numpy()
    Sn, Zn = S.detach().cpu().numpy(), Z.detach().cpu().numpy()
    n = Wp.shape[1]
    maxq = prep.grid.maxq
    rows = [int(r) for r in rows]
    before = np.zeros((len(rows), n, n))
    after = np.zeros((len(rows), n, n))
    center = np.zeros((len(rows), n))
    index = np.zeros((len(rows), n))
    target = np.zeros((len(rows), n))
    for t, r in enumerate(rows):
        x = Wp[r] @ Bn
        target[t] = x
        D = np.zeros(n)  # decided part of the residual, as in the kernel
        for k in range(n):
            before[t, k] = x
            c = (Wp[r, k] + D[k] / Bn[k, k]) / Sn[r, k] + Zn[r, k]
            v = min(max(np.rint(c - Zn[r, k]) + Zn[r, k], 0), maxq)
            center[t, k] = c
            index[t, k] = v
            q = Sn[r, k] * (v - Zn[r, k])
            x = x - q * Bn[k]
            D += (Wp[r, k] - q) * Bn[k]
            after[t, k] = x
    return {"rows": rows, "target": target, "before": before, "center": center, "index": index, "residual": after, "perm": prep.perm.cpu().numpy()}
