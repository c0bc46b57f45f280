"""Layer solvers behind one interface: ``solve(problem, grid, method, ...)``.

Methods (any of them may take the suffix ``+refine`` for ±1 local refinement, and then
``+refit`` for alternating H-weighted grid fitting and re-decoding, :mod:`.refit`):

``rtn``       round to nearest on the grid (no error feedback).
``gptq``      GPTQ as published (blocks of 128, lazy batch updates, act-order, groups).
``babai``     Babai's nearest plane in explicit lattice form; identical codes to ``gptq``.
``minpivot``  GPTQ/Babai with the min-pivot column order (pivoted LDLᵀ, smallest pivot first).
``lll``       LLL-reduced basis + Babai, box repair against GPTQ (per-channel grids).
``block``     block-exact GPTQ: b consecutive columns decoded exactly (box-constrained
              Schnorr–Euchner, node budget) inside GPTQ's error feedback.
``kbest``     list decoding: GPTQ plus K−1 Klein-randomized runs, best of K per row.

References: Frantar et al. 2023 (GPTQ); Birnick 2025, arXiv 2508.01077 and Chen et al. 2025,
arXiv 2507.18553 (GPTQ ≡ Babai, min-pivot); Klein 2000; OJBKQ, arXiv 2602.08376.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from latticeq.nn.grid import Grid
from latticeq.nn.layer import LayerProblem
from latticeq.nn.solvers._base import Solution, assemble, min_pivot_order, prepare

__all__ = ["METHODS", "SUFFIXES", "Solution", "solve", "parse_method", "min_pivot_order"]

METHODS: tuple[str, ...] = ("rtn", "gptq", "babai", "minpivot", "lll", "block", "kbest")

#: allowed suffix chains after the base method
SUFFIXES: tuple[tuple[str, ...], ...] = ((), ("refine",), ("refit",), ("refine", "refit"))
METHODS_HELP = ", ".join(METHODS) + "; each optionally followed by +refine, +refit or +refine+refit"


def parse_method(method) -> tuple[str, tuple[str, ...]]:
    """``"gptq+refine+refit"`` → ``("gptq", ("refine", "refit"))``; ValueError naming the problem."""
    if not isinstance(method, str):
        raise ValueError(f"method must be a string: {METHODS_HELP}")
    base, *suffixes = method.split("+")
    if base not in METHODS or tuple(suffixes) not in SUFFIXES:
        raise ValueError(f"unknown method {method!r}; allowed: {METHODS_HELP}")
    return base, tuple(suffixes)


_OPTIONS = {
    "blocksize", "trace", "trace_rows", "block", "max_nodes", "k", "beta", "refine_passes", "refine_block", "refit_iters", "dtype", "delta", "reduction_cache",
}


def _row_objective(prep, Hp_true, Vp, S, Z) -> torch.Tensor:
    E = prep.W - S * (Vp - Z)
    return ((E @ Hp_true) * E).sum(dim=1)


def solve(
    problem: LayerProblem,
    grid: Grid,
    method: str = "gptq",
    *,
    act_order: bool = False,
    percdamp: float = 0.01,
    seed: int = 0,
    **options,
) -> Solution:
    """Quantize a layer.

    Parameters
    ----------
    problem : LayerProblem
    grid : Grid
    method : str
        One of :data:`METHODS`, optionally followed by ``+refine``, ``+refit`` or ``+refine+refit``.
    act_order : bool
        Process columns by descending ``diag H`` (ignored by ``minpivot`` and ``rtn``).
    percdamp : float
        Damping ``λ = percdamp · mean(diag H)`` (raised ×10 automatically if Cholesky fails).
    seed : int
        Randomness of ``kbest``.
    **options
        ``blocksize`` (128) lazy-update block; ``trace`` (False) and ``trace_rows`` ((0,)) for
        ``gptq``/``babai`` step records in ``stats["trace"]`` (see
        :func:`latticeq.nn.solvers.gptq.gptq_trace`, :func:`latticeq.nn.solvers.babai.babai_trace`);
        ``block`` (8) and ``max_nodes`` (2000) for ``block``; ``k`` (4) and ``beta`` (48.0)
        for ``kbest`` (Klein-style randomized rounding ``P(v) ∝ exp(−β (c − v)²)`` between
        ⌊c⌋ and ⌈c⌉, c the GPTQ/Babai centre in code units); ``delta`` (0.99) and ``reduction_cache`` (a dict you own, reused across grids) for ``lll``;
        ``refine_passes`` (20) and ``refine_block`` (0 = ±1 moves only; b > 1 adds exact block
        coordinate descent over b columns) for ``+refine``; ``refit_iters`` (4) for ``+refit``; ``dtype`` (float64 on CPU, float32 on CUDA).

    Returns
    -------
    Solution
    """
    base_method, suffixes = parse_method(method)
    unknown = set(options) - _OPTIONS
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)}; allowed: {sorted(_OPTIONS)}")
    if not isinstance(problem, LayerProblem):
        raise ValueError(f"problem must be a LayerProblem, got {type(problem).__name__}")
    if not isinstance(grid, Grid):
        raise ValueError(f"grid must be a Grid, got {type(grid).__name__}")
    grid.check_columns(problem.W.shape[1])
    t0 = time.perf_counter()
    order = "minpivot" if base_method == "minpivot" else ("act" if act_order and base_method != "rtn" else "natural")
    # round-to-nearest (also under refine/refit, which re-decode with rtn) needs no factors
    prep = prepare(problem, grid, order=order, percdamp=percdamp, dtype=options.get("dtype"),
                   factor=base_method != "rtn")
    stats: dict = {"damping": prep.lam, "order": order, "percdamp": percdamp, "seed": seed}
    blocksize = int(options.get("blocksize", 128))
    trace = bool(options.get("trace", False))
    trace_rows = options.get("trace_rows", (0,))

    Vp, S, Z = _decode(base_method, problem, grid, prep, options, stats, seed=seed, blocksize=blocksize,
                       trace=trace, trace_rows=trace_rows)
    stats["solve_seconds"] = time.perf_counter() - t0
    damped_rows = stats.pop("damped_rows", None)
    sol = assemble(problem, prep, Vp, S, Z, base_method + (" act-order" if order == "act" else ""), stats,
                   damped_rows=damped_rows)
    sol.method = base_method
    polish = None
    if "refine" in suffixes:
        from latticeq.nn.solvers.refine import refine

        def polish(s: Solution) -> Solution:
            return refine(problem, s, grid.maxq, max_passes=int(options.get("refine_passes", 20)),
                          block=int(options.get("refine_block", 0)), max_nodes=int(options.get("max_nodes", 2000)))

        sol = polish(sol)
    if "refit" in suffixes:
        from latticeq.nn.solvers.refit import refit

        def decode(p):
            st: dict = {}
            Vp, S, Z = _decode(base_method, problem, grid, p, options, st, seed=seed + 1, blocksize=blocksize)
            return Vp, S, Z, st

        def reassemble(p, Vp, S, Z, st):
            return assemble(problem, p, Vp, S, Z, base_method, {}, damped_rows=st.get("damped_rows"))

        sol = refit(problem, sol, prep, decode, reassemble, polish, grid.maxq, sym=grid.sym,
                    iters=int(options.get("refit_iters", 4)))
    sol.stats["seconds"] = time.perf_counter() - t0
    return sol


def _decode(base_method, problem, grid, prep, options, stats, *, seed, blocksize, trace=False, trace_rows=(0,)):
    """Codes (processing order) and per-column scales/zeros of ``base_method`` on ``prep``."""
    from latticeq.nn.solvers import babai as _babai
    from latticeq.nn.solvers import gptq as _gptq

    if base_method == "rtn":
        S, Z = prep.S, prep.Z
        if prep.dynamic:  # no error feedback: the groups of the original weights
            s, z = grid.static_params(prep.W0)
            gidx = (torch.arange(prep.W.shape[1]) // grid.group_size).to(s.device)
            S, Z = s[:, gidx].contiguous(), z[:, gidx].contiguous()
        Vp = grid.quantize(prep.W, S, Z)
    elif base_method in ("gptq", "minpivot"):
        Vp, S, Z, st = _gptq.error_feedback(prep, blocksize=blocksize)
        stats.update(st)
        if trace:
            stats["trace"] = _gptq.gptq_trace(prep, S, Z, trace_rows)
    elif base_method == "babai":
        Vp, S, Z, st = _babai.nearest_plane_codes(prep, blocksize=blocksize)
        B = st.pop("B")
        stats["lattice_distance2"] = st["lattice_distance2"]
        stats["error_bound"] = _babai.babai_bound(B, S).cpu()
        if trace:
            stats["trace"] = _babai.babai_trace(prep, B, S, Z, trace_rows)
    elif base_method == "block":
        b = int(options.get("block", 8))
        if not 1 <= b <= 64:
            raise ValueError(f"block must be between 1 and 64 columns, got {b}")
        max_nodes = int(options.get("max_nodes", 2000))
        if max_nodes < 0:
            raise ValueError(f"max_nodes must be ≥ 0 (0 = unlimited), got {max_nodes}")
        Vp, S, Z, st = _gptq.error_feedback(prep, blocksize=blocksize, rule="block", block=b, max_nodes=max_nodes)
        stats.update(st)
        stats.update({"block": b, "max_nodes": max_nodes})
    elif base_method == "kbest":
        k = int(options.get("k", 4))
        beta = float(options.get("beta", 48.0))
        if k < 1:
            raise ValueError(f"k must be ≥ 1, got {k}")
        if not beta > 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        # uniform sharpness in code units; weighting by Gram–Schmidt lengths (Klein's
        # original choice) measured worse on real layers (b15.k 2-bit: 0 vs 2.4% gain at K=4)
        kappa = np.full(prep.W.shape[1], beta)
        Hp_true = problem.H.to(prep.W)[prep.perm][:, prep.perm]
        Vp, S, Z, st = _gptq.error_feedback(prep, blocksize=blocksize)
        best = _row_objective(prep, Hp_true, Vp, S, Z)
        wins = 0
        for t in range(1, k):
            V2, S2, Z2, _ = _gptq.error_feedback(prep, blocksize=blocksize, rule="klein", kappa=kappa, seed=seed * 1000003 + t)
            obj = _row_objective(prep, Hp_true, V2, S2, Z2)
            better = obj < best
            wins += int(better.sum())
            Vp = torch.where(better[:, None], V2, Vp)
            S = torch.where(better[:, None], S2, S)
            Z = torch.where(better[:, None], Z2, Z)
            best = torch.where(better, obj, best)
        stats.update({"k": k, "beta": beta, "rows_improved_by_sampling": wins})
    elif base_method == "lll":
        from latticeq.nn.solvers.lll import lll_babai_codes

        Vl, st = lll_babai_codes(prep, delta=float(options.get("delta", 0.99)), cache=options.get("reduction_cache"))
        stats.update(st)
        maxq = grid.maxq
        out_box = ((Vl < 0) | (Vl > maxq)).any(axis=1)
        Vl = torch.from_numpy(np.clip(Vl, 0, maxq)).to(prep.W)
        Vg, S, Z, _ = _gptq.error_feedback(prep, blocksize=blocksize)
        Hp_true = problem.H.to(prep.W)[prep.perm][:, prep.perm]
        ol = _row_objective(prep, Hp_true, Vl, S, Z)
        og = _row_objective(prep, Hp_true, Vg, S, Z)
        use_l = ol < og
        Vp = torch.where(use_l[:, None], Vl, Vg)
        stats.update({"rows_out_of_box": float(out_box.mean()), "rows_lll_better": float(use_l.float().mean().item())})
    else:  # pragma: no cover - guarded above
        raise AssertionError(base_method)

    return Vp, S, Z
