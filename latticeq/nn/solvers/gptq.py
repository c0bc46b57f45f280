"""GPTQ (Frantar, Ashkboos, Hoefler, Alistarh, "GPTQ: Accurate Post-Training Quantization for
Generative Pre-trained Transformers", ICLR 2023), as published in ``IST-DASLab/gptq``.

With ``R`` the upper Cholesky factor of ``(H + λI)⁻¹`` (columns in processing order), column i
is rounded on the grid and its error is propagated to the later columns:

.. math:: q_i = s(\\operatorname{clamp}(\\lfloor w_i/s \\rceil + z, 0, 2^b-1) - z),\\quad
          e_i = (w_i - q_i)/R_{ii},\\quad w_{j} \\mathrel{-}= e_i R_{ij}\\ (j > i).

Blocks of 128 columns take the in-block updates; later columns get one lazy update
``W[:, i2:] −= E @ R[i1:i2, i2:]`` per block. Act-order processes columns by descending
``diag H``; static groups fix all group parameters from the original weights; dynamic groups
refresh them at each group boundary from the error-updated weights — as published, from the
weights as the current lazy-update block has them (updated by the earlier blocks, not by the
earlier columns of the same block); ``Grid(group_refresh="updated")`` takes the fully updated
weights instead. A group size that does not divide ``n`` gives ``⌈n/g⌉`` groups, the last
one smaller, with no padding (the damping is the reference's). On CPU the in-block
column loop is one compiled kernel (rows in parallel); on CUDA it is a torch loop.

The same driver, with a different per-column rule, runs Klein's randomized rounding
(list decoding) and the block-exact variant (exact box-constrained decoding of ``b``
consecutive columns).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from latticeq.nn.solvers._base import Prepared, gptq_blocksize

__all__ = ["error_feedback", "gptq_trace"]


def _torch_segment(W1, R1, S, Z, maxq, a, b, Q1, E1, U, kappa):
    for i in range(a, b):
        d = R1[i, i]
        w = W1[:, i]
        x = w / S[:, i]
        if kappa is not None and float(kappa[i]) > 0:
            f = torch.floor(x)
            pc = torch.sigmoid(-float(kappa[i]) * (1 - 2 * (x - f)))
            c = torch.where(U[:, i] < pc, f + 1, f)
        else:
            c = torch.round(x)
        q = torch.clamp(c + Z[:, i], 0, maxq)
        Q1[:, i] = q
        e = (w - S[:, i] * (q - Z[:, i])) / d
        E1[:, i] = e
        W1[:, i + 1 :] -= e[:, None] * R1[i, i + 1 :][None, :]


def error_feedback(
    prep: Prepared,
    *,
    blocksize: int = 128,
    rule: str = "round",
    kappa: np.ndarray | None = None,
    seed: int = 0,
    block: int = 8,
    max_nodes: int = 2000,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """GPTQ's recursion with a per-column (``rule="round"``/``"klein"``) or per-block
    (``rule="block"``) decision. Returns codes, per-column scales and zeros (processing
    order) and stats (``damped_rows``: each row's damped objective). ``prep.S``/``prep.Z`` are not modified."""
    grid = prep.grid
    W = prep.W.clone()
    R = prep.R
    m, n = W.shape
    maxq = float(grid.maxq)
    S = prep.S.clone()
    Z = prep.Z.clone()
    Q = torch.zeros_like(W)
    bsz = gptq_blocksize(grid, blocksize)
    cpu = W.device.type == "cpu"
    if rule == "block" and not cpu:
        raise ValueError("the block-exact rule runs on CPU tensors only")
    g = grid.group_size
    rng = np.random.default_rng(seed)
    kap = np.zeros(n) if kappa is None else np.ascontiguousarray(kappa, dtype=np.float64)
    stats: dict = {"blocksize": bsz}
    nodes = np.zeros(m, dtype=np.int64)
    exact = np.ones(m, dtype=np.bool_)
    damped = torch.zeros(m, dtype=W.dtype, device=W.device)
    t0 = time.perf_counter()
    for i1 in range(0, n, bsz):
        i2 = min(i1 + bsz, n)
        cb = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        E1 = torch.zeros_like(W1)
        R1 = R[i1:i2, i1:i2].contiguous()
        # segments end at dynamic group boundaries
        bounds = [0, cb]
        if prep.dynamic:
            bounds = sorted(set([0, cb] + [p - i1 for p in range(((i1 + g - 1) // g) * g, i2, g)]))
        for a, b in zip(bounds[:-1], bounds[1:]):
            if prep.dynamic and (i1 + a) % g == 0:
                # published: the weights as the lazy-update block has them (W: updated by the
                # earlier blocks only); updated: every earlier column's update (W1 inside the
                # block; at a block start W is fully updated, also beyond the block when g > it)
                if grid.group_refresh == "published" or a == 0:
                    src = W[:, i1 + a : i1 + a + g]
                else:
                    src = W1[:, a : a + g]
                s, z = grid.find_params(src)
                S[:, i1 + a : i1 + a + g] = s[:, None]
                Z[:, i1 + a : i1 + a + g] = z[:, None]
            S1 = S[:, i1:i2].contiguous()
            Z1 = Z[:, i1:i2].contiguous()
            if rule in ("round", "klein"):
                U = rng.random((m, cb)) if rule == "klein" else np.zeros((1, 1))
                kb = kap[i1:i2] if rule == "klein" else np.zeros(cb)
                if cpu:
                    from latticeq.nn.solvers._kernels import gptq_segment

                    gptq_segment(W1.numpy(), R1.numpy(), S1.numpy(), Z1.numpy(), maxq, a, b, Q1.numpy(), E1.numpy(), U, np.ascontiguousarray(kb))
                else:
                    Ut = torch.from_numpy(U).to(W1) if rule == "klein" else None
                    _torch_segment(W1, R1, S1, Z1, maxq, a, b, Q1, E1, Ut, kb if rule == "klein" else None)
            elif rule == "block":
                from latticeq.nn.solvers._kernels import block_decode

                Wn, Rn, Qn, En = W1.numpy(), R1.numpy(), Q1.numpy(), E1.numpy()
                for i0 in range(a, b, block):
                    bs = min(block, b - i0)
                    Ginv = np.ascontiguousarray(np.linalg.inv(Rn[i0 : i0 + bs, i0 : i0 + bs]))
                    Ginv = np.triu(Ginv)
                    block_decode(Wn, Rn, Ginv, S1.numpy(), Z1.numpy(), maxq, i0, bs, max_nodes, Qn, En, nodes, exact)
            else:
                raise ValueError(f"unknown rule {rule!r}")
        Q[:, i1:i2] = Q1
        damped += (E1 * E1).sum(dim=1)
        W[:, i2:] -= E1 @ R[i1:i2, i2:]
    stats["loop_seconds"] = time.perf_counter() - t0
    # Σ_k e_k² per row is the damped objective (w − q)(H + λI)(w − q)ᵀ, for any decisions (the
    # recursion is an LDLᵀ of the quadratic form); assemble() uses it to skip a matrix product
    stats["damped_rows"] = damped
    if rule == "block":
        stats["nodes_mean_per_row"] = float(nodes.mean())
        stats["rows_exact"] = float(exact.mean())
    return Q, S, Z, stats


def gptq_trace(prep: Prepared, S: torch.Tensor, Z: torch.Tensor, rows=(0,)) -> dict:
    """Unblocked GPTQ for a few rows, recording every step.

    Returns ``{"rows": list, "weights": (r, n, n) array — row k of rows[i]: the error-updated
    weights (processing order) just before column k is rounded, "codes": (r, n) code chosen
    at column k, "perm": processing order}``. Uses the final per-column scales ``S``/``Z``.
    """
    R = prep.R.detach().cpu().numpy()
    Wp = prep.W.detach().cpu().numpy()
    Sn = S.detach().cpu().numpy()
    Zn = Z.detach().cpu().numpy()
    n = Wp.shape[1]
    maxq = prep.grid.maxq
    rows = [int(r) for r in rows]
    weights = np.zeros((len(rows), n, n))
    codes = np.zeros((len(rows), n))
    for t, r in enumerate(rows):
        w = Wp[r].copy()
        for k in range(n):
            weights[t, k] = w
            v = min(max(np.rint(w[k] / Sn[r, k]) + Zn[r, k], 0), maxq)
            codes[t, k] = v
            e = (w[k] - Sn[r, k] * (v - Zn[r, k])) / R[k, k]
            w[k:] -= e * R[k, k:]
    return {"rows": rows, "weights": weights, "codes": codes, "perm": prep.perm.cpu().numpy()}
