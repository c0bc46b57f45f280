"""Vector quantization of a layer with a lattice codebook: block Babai (BlockLDLQ).

GPTQ ≡ Babai decides one column at a time. Here ``d`` consecutive columns (processing order)
are decided at once, each row's block to the nearest codeword of its error-fed target, and the
error is propagated through the block-triangular factor of the damped Hessian — QuIP#'s
BlockLDLQ (Tseng et al., arXiv 2402.04396), on GPTQ's lazy-update driver. With ``R`` the upper
Cholesky factor of ``(H + λI)⁻¹`` (GPTQ's ``Hinv``) and a block ``b = [a, a + d)``:

.. math::  t_b = w_b / s,\\quad c_b = \\operatorname{encode}(t_b),\\quad q_b = s\\,\\operatorname{decode}(c_b),
           \\quad E_b = (w_b - q_b) R_{bb}^{-1},\\quad w_{>b} \\mathrel{-}= E_b R_{b,>b}.

``Σ_b ‖E_b‖²`` per row is the damped objective ``(w − q)(H + λI)(w − q)ᵀ`` for any decisions.
With ``d = 1`` and the scalar code (:class:`~latticeq.lattice.codebook.ScalarCode`, target
``w/s + z``) this is GPTQ column for column. The decision within a block is the Euclidean
nearest codeword (as QuIP#), exact for every code the core encodes exactly.

Scales: one per row, from an RMS guess, then refitted by H-weighted least squares for the
codes found (``s = w H pᵀ / p H pᵀ`` with ``p`` the decoded codewords), re-decoding with the new
scale; each row keeps its best.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["VQ_METHODS", "block_feedback", "block_descent", "VQSolution", "vq_refine_passes", "vq_solve"]

#: the methods a vector codebook runs: block Babai (GPTQ's recursion on blocks), optionally
#: followed by block coordinate descent (:func:`block_descent`)
VQ_METHODS = ("gptq", "gptq+refine")


def vq_refine_passes(method: str, solver_options: dict | None = None) -> int:
    """Passes of :func:`block_descent` that ``method`` asks for with a vector codebook: 0 for
    ``gptq``; ``solver_options["refine_passes"]`` (default 20, stopping early once a pass moves
    nothing) for ``gptq+refine``. ValueError naming what is allowed otherwise."""
    opts = dict(solver_options or {})
    if method not in VQ_METHODS:
        raise ValueError(f"with a vector codebook the method is one of {', '.join(VQ_METHODS)} (block Babai, "
                         f"optionally + block coordinate descent); got {method!r}")
    passes = opts.pop("refine_passes", 20 if method == "gptq+refine" else 0)
    if opts or (passes and method != "gptq+refine"):
        bad = sorted(opts) or ["refine_passes"]
        raise ValueError(f"with a vector codebook and method {method!r} the solver options {bad} cannot be set "
                         "(only refine_passes, with gptq+refine)")
    if isinstance(passes, bool) or not isinstance(passes, int) or passes < 0:
        raise ValueError(f"refine_passes must be an integer >= 0, got {passes!r}")
    return passes


def block_feedback(prep, codebook, scales, zeros=None, *, blocksize: int = 128, feedback: bool = True):
    """The block recursion on a prepared layer (:func:`latticeq.nn.solvers._base.prepare`).

    ``scales`` (m,) per row; ``zeros`` (m,) added to the targets in code units (the scalar
    grid's zero point; None = 0). ``feedback=False`` is the ablation without error feedback
    (each block rounded to its nearest codeword on its own). Returns ``(codes (m, n/d) int64,
    Q (m, n) processing order, damped (m,))``.
    """
    d = codebook.dim
    W = prep.W.clone()
    R = prep.R
    m, n = W.shape
    if n % d:
        raise ValueError(f"the layer's {n} columns are not a multiple of the codebook dimension {d}")
    if blocksize % d:
        blocksize = d * max(1, blocksize // d)
    s = scales.to(W).reshape(m, 1)
    z = None if zeros is None else zeros.to(W).reshape(m, 1)
    codes = np.zeros((m, n // d), dtype=np.int64)
    Q = torch.zeros_like(W)
    damped = torch.zeros(m, dtype=W.dtype)
    for i1 in range(0, n, blocksize):
        i2 = min(i1 + blocksize, n)
        W1 = W[:, i1:i2].clone()
        E1 = torch.zeros_like(W1)
        R1 = R[i1:i2, i1:i2]
        for a in range(0, i2 - i1, d):
            t = W1[:, a:a + d] / s
            if z is not None:
                t = t + z
            c = codebook.encode(t.cpu().numpy())
            p = torch.from_numpy(codebook.decode(c)).to(W)
            if z is not None:
                p = p - z
            q = s * p
            codes[:, (i1 + a) // d] = c
            Q[:, i1 + a:i1 + a + d] = q
            if d == 1:
                E = (W1[:, a:a + 1] - q) / R1[a, a]
            else:
                E = torch.linalg.solve_triangular(R1[a:a + d, a:a + d], W1[:, a:a + d] - q, upper=True, left=False)
            E1[:, a:a + d] = E
            if feedback:
                W1[:, a + d:] -= E @ R1[a:a + d, a + d:]
        damped += (E1 * E1).sum(dim=1)
        if feedback:
            W[:, i2:] -= E1 @ R[i1:i2, i2:]
    return codes, Q, damped


def block_descent(W, H, codebook, scales, codes, Q, *, passes: int = 2):
    """Block coordinate descent on the codes of a decoding (``+refine`` for codebooks).

    Each pass visits the blocks of ``d`` columns in order. With every other block fixed, the
    best unconstrained change of block ``b`` is ``δ* = g_b H_bb⁻¹`` (``g = (W − Q) H``, the
    undamped ``H``); each row's block is re-encoded at ``q_b + δ*`` and the new codeword kept
    where it lowers the exact row objective ``(w − q) H (w − q)ᵀ`` — by
    ``2 δ·g_b − δ H_bb δᵀ`` for ``δ = q_b' − q_b``. So the objective never increases. Stops
    early when a pass moves nothing. Works in place on ``codes`` (m, n/d) and ``Q`` (m, n);
    returns ``(moves, gain)`` (per-row objective decrease, a tensor).
    """
    d = codebook.dim
    m, n = W.shape
    s = scales.to(W).reshape(m, 1)
    G = (W - Q) @ H
    gain = torch.zeros(m, dtype=W.dtype)
    moves = 0
    eps = 1e-9 * float(torch.diagonal(H).mean()) + 1e-300
    eye = torch.eye(d, dtype=W.dtype)
    for _ in range(passes):
        moved = 0
        for a in range(0, n, d):
            Hbb = H[a:a + d, a:a + d]
            g = G[:, a:a + d]
            target = Q[:, a:a + d] + torch.linalg.solve(Hbb + eps * eye, g.T).T
            c = codebook.encode((target / s).numpy())
            q = s * torch.from_numpy(codebook.decode(c)).to(W)
            delta = q - Q[:, a:a + d]
            dg = 2 * (delta * g).sum(dim=1) - ((delta @ Hbb) * delta).sum(dim=1)
            ok = dg > 1e-12 * (1 + dg.abs())
            if not bool(ok.any()):
                continue
            rows = torch.nonzero(ok).flatten()
            Q[rows, a:a + d] = q[rows]
            codes[rows.numpy(), a // d] = c[rows.numpy()]
            G[rows] -= delta[rows] @ H[a:a + d]
            gain[rows] += dg[rows]
            moved += int(rows.numel())
        moves += moved
        if not moved:
            break
    return moves, gain


@dataclass
class VQSolution:
    """A layer quantized with a codebook.

    Attributes
    ----------
    codes : (m, n/d) int64 — codeword indices of each row's blocks (transformed basis,
        processing order).
    scales : (m,) float32 — one scale per row (stored as fp16).
    dequant : (m, n) float32 — the weights in the original basis and column order.
    error, relative_error : the layer objective ``tr((W − Q) H (W − Q)ᵀ)`` and its ratio to
        ``tr(W H Wᵀ)``, with the undamped ``H``.
    bits_per_weight : codes + scales (fp16 per row), divided by ``m·n``.
    perm : (n,) processing order of the (transformed) columns.
    transforms : the output and input transforms' descriptions (None when not used).
    stats : refit history, times, overload rate.
    """

    codes: np.ndarray
    scales: torch.Tensor
    dequant: torch.Tensor
    error: float
    relative_error: float
    bits_per_weight: float
    perm: torch.Tensor
    transforms: dict | None
    stats: dict = field(default_factory=dict)


def vq_solve(problem, codebook, *, act_order: bool = True, percdamp: float = 0.01, blocksize: int = 128,
             incoherence: bool = True, seed: int = 0, refit_iters: int = 2, fallback: bool = True,
             loads=None, feedback: bool = True, refine_passes: int = 0) -> VQSolution:
    """Quantize ``problem`` (a :class:`~latticeq.nn.layer.LayerProblem`) with ``codebook``.

    ``incoherence``: randomized Hadamard transforms of both dimensions first (seeded; the dense
    random orthogonal fallback where no Hadamard matrix is constructed, unless ``fallback`` is
    False). ``loads``: multiples of the RMS-matched scale (1 = the codebook's RMS matches the
    row's) tried as starting scales; each row starts from the one with the lowest objective
    (larger scales overload less); default: the codebook's ``default_loads``.
    ``refit_iters`` least-squares scale refits, each followed
    by a new decoding.
    ``feedback=False``: the ablation without error feedback.
    ``refine_passes``: passes of :func:`block_descent` on the best decoding (0: none), each row's
    scale refitted once more for the refined codes.
    """
    import time

    from latticeq.nn.grid import Grid
    from latticeq.nn.layer import LayerProblem
    from latticeq.nn.solvers._base import prepare

    if not isinstance(problem, LayerProblem):
        raise ValueError(f"problem must be a LayerProblem, got {type(problem).__name__}")
    if isinstance(refit_iters, bool) or not isinstance(refit_iters, int) or refit_iters < 0:
        raise ValueError(f"refit_iters must be an integer >= 0, got {refit_iters!r}")
    if isinstance(refine_passes, bool) or not isinstance(refine_passes, int) or refine_passes < 0:
        raise ValueError(f"refine_passes must be an integer >= 0, got {refine_passes!r}")
    loads = tuple(float(x) for x in np.atleast_1d(codebook.default_loads if loads is None else loads))
    if not loads or not all(x > 0 for x in loads):
        raise ValueError(f"loads must be positive numbers, got {loads!r}")
    t0 = time.perf_counter()
    W0 = problem.W.to(torch.float64)
    H0 = problem.H.to(torch.float64)
    m, n = W0.shape
    if n % codebook.dim:
        raise ValueError(f"the layer's {n} columns are not a multiple of the codebook dimension {codebook.dim}")
    U = V = None
    if incoherence:
        from latticeq.nn.incoherence import random_orthogonal

        U = random_orthogonal(m, seed, fallback=fallback)
        V = random_orthogonal(n, seed + 1, fallback=fallback)
        Wt = U.forward(V.forward(W0).T).T  # U W Vᵀ
        Ht = V.forward(V.forward(H0).T)  # V H Vᵀ
        Ht = (Ht + Ht.T) / 2
        P = LayerProblem(Wt, Ht)
    else:
        P = problem
    # the grid is unused here (prepare also computes scalar-grid parameters the recursion ignores)
    prep = prepare(P, Grid(8), order="act" if act_order else "natural", percdamp=percdamp, dtype=torch.float64)
    s0 = prep.W.pow(2).mean(dim=1).sqrt().clamp_min(1e-12) / codebook.rms()
    Hp = P.H.to(torch.float64)[prep.perm][:, prep.perm]
    # prep.Hd = Hp + diag(δ) (damping λ; dead columns' diagonal set to 1), so the undamped row
    # objective of a decoding is its damped one (Σ‖E‖², from the recursion) less Σ δ·e²
    delta = torch.diagonal(prep.Hd) - torch.diagonal(Hp)

    def decoded(scales):
        c, Q, damped = block_feedback(prep, codebook, scales, blocksize=blocksize, feedback=feedback)
        return damped - ((prep.W - Q) ** 2 * delta).sum(dim=1), c, Q

    state = None  # per row: (objective, scale, codes, decoded weights) of the best solution so far

    def keep_better(cand):
        """Row by row, the better of the current best and the candidate ``(obj, s, codes, Q)``."""
        nonlocal state
        if state is None:
            state = cand
            return
        better = cand[0] < state[0]
        state = (torch.minimum(cand[0], state[0]), torch.where(better, cand[1], state[1]),
                 np.where(better.numpy()[:, None], cand[2], state[2]),
                 torch.where(better[:, None], cand[3], state[3]))

    for load in loads:  # per row, the best starting scale
        obj, c1, Q1 = decoded(load * s0)
        keep_better((obj, load * s0, c1, Q1))
    history = [float(state[0].sum())]
    WH = prep.W @ Hp
    wHw = (WH * prep.W).sum(dim=1)

    def refit_scales():
        """Each row's least-squares scale for its codes (objective w H wᵀ − 2 s·num + s²·den)
        as a candidate; returns the new scales."""
        _, s, codes, Q = state
        Pn = Q / s[:, None]  # decoded codewords in code units
        num = (WH * Pn).sum(dim=1)
        den = ((Pn @ Hp) * Pn).sum(dim=1)
        s_new = torch.where(den > 0, num / den.clamp_min(1e-300), s).clamp_min(1e-12)
        keep_better((wHw - 2 * s_new * num + s_new ** 2 * den, s_new, codes, Pn * s_new[:, None]))
        return s_new

    for _ in range(refit_iters):  # the refitted scale with the old codes, then a new decoding with it
        s_new = refit_scales()
        obj, c2, Q2 = decoded(s_new)
        keep_better((obj, s_new, c2, Q2))
        history.append(float(state[0].sum()))
    refine_stats = None
    if refine_passes:
        obj, s, codes, Q = state
        codes, Q = codes.copy(), Q.clone()
        moves, gain = block_descent(prep.W, Hp, codebook, s, codes, Q, passes=refine_passes)
        state = (obj - gain, s, codes, Q)
        refit_scales()
        history.append(float(state[0].sum()))
        refine_stats = {"passes": refine_passes, "moves": moves}
    _, s, codes, Q = state
    # the scales are stored in fp16: dequantize with exactly those, then back to the original
    # basis and column order
    s16 = s.to(torch.float16)
    Qt = (Q * (s16.to(torch.float64) / s)[:, None])[:, torch.argsort(prep.perm)]
    deq = U.inverse(V.inverse(Qt).T).T if incoherence else Qt  # Uᵀ Q' V
    err = problem.objective(deq)
    base = problem.baseline()
    bpw = (codes.size * codebook.bits + 16 * m) / (m * n)
    transforms = None if not incoherence else {"output": U.describe(), "input": V.describe()}
    return VQSolution(codes=codes, scales=s16.to(torch.float32), dequant=deq.to(torch.float32), error=err,
                      relative_error=err / base if base > 0 else 0.0, bits_per_weight=bpw, perm=prep.perm,
                      transforms=transforms,
                      stats={"refit_history": history, "seconds": time.perf_counter() - t0, "loads": loads,
                             "codebook": codebook.spec(), "damping": prep.lam, "refine": refine_stats})
