"""Solvers: GPTQ against the transcription of the reference implementation (latticeq.nn.solvers.reference), GPTQ ≡ Babai
code for code, Babai's bound, brute force for block-exact, refinement, list decoding, LLL."""

import itertools

import numpy as np
import pytest
import torch

from latticeq.nn.grid import Grid
from latticeq.nn.layer import LayerProblem
from latticeq.nn.solvers import METHODS, solve
from latticeq.nn.solvers.reference import reference_gptq


def _problem(m=24, n=64, seed=0, dead=()):
    g = torch.Generator().manual_seed(seed)
    k = 3 * n
    scales = torch.rand(n, generator=g, dtype=torch.float64) ** 3 + 0.05
    X = torch.randn(k, n, generator=g, dtype=torch.float64) * scales + 0.5 * torch.randn(k, 1, generator=g, dtype=torch.float64)
    H = 2 * X.T @ X / k
    for j in dead:
        H[j, :] = 0
        H[:, j] = 0
    W = 0.05 * torch.randn(m, n, generator=g, dtype=torch.float64)
    return LayerProblem(W, H)


@pytest.mark.parametrize("grid", [Grid(3), Grid(2), Grid(4, group_size=16), Grid(3, group_size=16, static_groups=True), Grid(3, sym=True), Grid(2, mse=True)])
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_matches_reference_implementation(grid, act_order):
    P = _problem(dead=(5,))
    Qref, cref = reference_gptq(P.W, P.H, bits=grid.bits, groupsize=grid.group_size or -1, sym=grid.sym,
                                actorder=act_order, static_groups=grid.static_groups, blocksize=16,
                                dtype=torch.float64, find_params=grid.find_params if grid.mse else None)
    sol = solve(P, grid, "gptq", act_order=act_order, blocksize=16)
    assert torch.equal(sol.codes.to(torch.float64), cref)
    assert torch.allclose(sol.dequant.to(torch.float64), Qref, atol=1e-6)
    assert sol.error == pytest.approx(P.objective(Qref), rel=1e-9)


# Symmetric grids with *dynamic* groups are left out on purpose: there the extreme weight of a
# group sits exactly on a rounding tie (x/s = maxq/2), and GPTQ's updated weight and Babai's
# residual coordinate differ in the last ulp, so either side of the tie is correct.
@pytest.mark.parametrize("grid", [Grid(8), Grid(3), Grid(2), Grid(3, group_size=16), Grid(2, group_size=32, static_groups=True),
                                  Grid(4, group_size=8), Grid(3, sym=True), Grid(4, group_size=8, sym=True, static_groups=True), Grid(2, mse=True, group_size=32)])
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_equals_babai_code_for_code(grid, act_order):
    P = _problem(m=40, n=96, seed=3, dead=(7, 50))
    a = solve(P, grid, "gptq", act_order=act_order, blocksize=32)
    b = solve(P, grid, "babai", act_order=act_order, blocksize=32)  # the block of GPTQ's group refresh
    assert int((a.codes != b.codes).sum()) == 0
    assert torch.equal(a.scales, b.scales) and torch.equal(a.zeros, b.zeros)
    assert a.error == pytest.approx(b.error, rel=1e-9)


def test_babai_bound_on_unclipped_rows_and_lattice_distance():
    m = 40
    P = _problem(m=m, n=32, seed=5)
    grid = Grid(4)
    sol = solve(P, grid, "babai", act_order=True, trace=True, trace_rows=range(m))
    bound = sol.stats["error_bound"]
    dist = sol.stats["lattice_distance2"]
    # the lattice residual is the damped objective
    Hd, lam = P.damped(0.01)
    E = P.W - sol.dequant.to(torch.float64)
    assert torch.allclose(dist, ((E @ Hd) * E).sum(1), rtol=1e-6)
    # rows whose nearest-plane centres never rounded outside the box were not clipped
    c = np.rint(sol.stats["trace"]["center"])
    unclipped = torch.from_numpy(((c >= 0) & (c <= grid.maxq)).all(axis=1))
    assert 5 < int(unclipped.sum()) < m
    assert (dist[unclipped] <= bound[unclipped] * (1 + 1e-9)).all()
    assert (dist / bound).max() < 10  # clipped rows may exceed the bound, but not wildly


def test_traces_reproduce_the_codes():
    P = _problem(m=8, n=32, seed=2)
    grid = Grid(3, group_size=8)
    g = solve(P, grid, "gptq", act_order=True, trace=True, trace_rows=(1, 4))
    b = solve(P, grid, "babai", act_order=True, trace=True, trace_rows=(1, 4))
    perm = g.perm
    for t, r in enumerate((1, 4)):
        assert np.array_equal(g.stats["trace"]["codes"][t], g.codes[r, perm].numpy())
        assert np.array_equal(b.stats["trace"]["index"][t], b.codes[r, perm].numpy())
        # the first traced weights are the row itself (processing order)
        assert np.allclose(g.stats["trace"]["weights"][t, 0], P.W[r, perm].numpy())
        res = b.stats["trace"]["residual"][t, -1]
        assert res @ res == pytest.approx(b.stats["lattice_distance2"][r].item(), rel=1e-9)


def test_solution_format_act_order_dynamic_groups():
    P = _problem(m=10, n=64)
    grid = Grid(3, group_size=16)
    sol = solve(P, grid, "gptq", act_order=True)
    assert sol.codes.dtype == torch.int32 and sol.codes.shape == (10, 64)
    assert sol.scales.shape == (10, 4) and sol.zeros.shape == (10, 4)
    assert sol.g_idx.dtype == torch.int32
    assert sorted(sol.perm.tolist()) == list(range(64))
    # g_idx follows the processing order: position p of perm is in group p // 16
    assert torch.equal(sol.g_idx[sol.perm], (torch.arange(64) // 16).to(torch.int32))
    gi = sol.g_idx.long()
    assert torch.allclose(sol.dequant, sol.scales[:, gi] * (sol.codes - sol.zeros[:, gi]))
    assert int(sol.codes.min()) >= 0 and int(sol.codes.max()) <= 7
    assert torch.equal(sol.zeros, torch.round(sol.zeros))


def test_block_exact_with_one_block_is_the_brute_force_optimum():
    n, m = 6, 5
    P = _problem(m=m, n=n, seed=11)
    grid = Grid(2)
    sol = solve(P, grid, "block", block=n, max_nodes=0, blocksize=n)
    Hd, _ = P.damped(0.01)
    s = sol.scales[:, 0].to(torch.float64)
    z = sol.zeros[:, 0].to(torch.float64)
    allv = torch.tensor(list(itertools.product(range(4), repeat=n)), dtype=torch.float64)
    for r in range(m):
        Qs = s[r] * (allv - z[r])
        E = P.W[r] - Qs
        obj = ((E @ Hd) * E).sum(1)
        best = obj.min()
        e = P.W[r] - sol.dequant[r].to(torch.float64)
        assert (e @ Hd @ e).item() == pytest.approx(best.item(), rel=1e-9)
    assert sol.stats["rows_exact"] == 1.0


def test_block_exact_not_worse_than_gptq_blockwise():
    P = _problem(m=30, n=64, seed=4)
    for grid in (Grid(2), Grid(3, group_size=16)):
        g = solve(P, grid, "gptq", act_order=True)
        b = solve(P, grid, "block", act_order=True, block=16, max_nodes=0)
        assert b.error <= g.error * 1.02  # greedy across blocks, exact inside
        assert int(b.codes.min()) >= 0 and int(b.codes.max()) <= grid.maxq


def test_block_exact_with_one_node_budget_is_gptq_code_for_code():
    # the core decoder's first leaf is box-clamped Babai = GPTQ's rounding; budget 1 stops there
    P = _problem(m=24, n=64, seed=5)
    for grid in (Grid(2), Grid(3, group_size=16)):
        g = solve(P, grid, "gptq", act_order=True, blocksize=32)
        b = solve(P, grid, "block", act_order=True, blocksize=32, block=8, max_nodes=1)
        assert torch.equal(b.codes, g.codes)
        assert b.stats["rows_exact"] == 0.0


def test_refine_is_monotone_and_a_local_minimum():
    P = _problem(m=12, n=32, seed=6)
    grid = Grid(2, group_size=16)
    for base in ("rtn", "gptq"):
        a = solve(P, grid, base, act_order=True)
        r = solve(P, grid, base + "+refine", act_order=True)
        assert r.method == base + "+refine"
        # refine scores the float32 dequantized weights, GPTQ its float64 recursion: a change of
        # ~1e-7 relative (float32 rounding of the weights) is no move at all
        assert r.error <= a.error * (1 + 1e-7)
        assert torch.equal(r.scales, a.scales)
    # no single ±1 move improves the refined solution
    gi = r.g_idx.long()
    S = r.scales.to(torch.float64)[:, gi]
    base_rows = P.row_objective(r.dequant.to(torch.float64))
    for i in range(12):
        for j in range(32):
            for d in (-1, 1):
                c = r.codes[i, j].item() + d
                if 0 <= c <= grid.maxq:
                    Q = r.dequant.to(torch.float64).clone()
                    Q[i, j] += d * S[i, j]
                    assert P.row_objective(Q)[i] >= base_rows[i] - 1e-12


def test_kbest_and_lll_never_worse_than_gptq_per_row():
    P = _problem(m=30, n=48, seed=8)
    grid = Grid(2)
    g = solve(P, grid, "gptq", act_order=True)
    for meth, opts in (("kbest", {"k": 4}), ("lll", {})):
        s = solve(P, grid, meth, act_order=True, seed=1, **opts)
        assert (P.row_objective(s.dequant.double()) <= P.row_objective(g.dequant.double()) * (1 + 1e-5) + 1e-9).all()
        assert int(s.codes.min()) >= 0 and int(s.codes.max()) <= grid.maxq
    k1 = solve(P, grid, "kbest", act_order=True, seed=5, k=4)
    k2 = solve(P, grid, "kbest", act_order=True, seed=5, k=4)
    assert torch.equal(k1.codes, k2.codes)  # same seed, same result


def test_minpivot_on_diagonal_hessian_is_descending_diagonal():
    from latticeq.nn.solvers import min_pivot_order

    d = torch.tensor([3.0, 1.0, 5.0, 2.0, 4.0], dtype=torch.float64)
    assert min_pivot_order(torch.diag(d)).tolist() == [2, 4, 0, 3, 1]
    P = _problem(m=10, n=40, seed=9)
    s = solve(P, Grid(3), "minpivot")
    assert sorted(s.perm.tolist()) == list(range(40))
    assert s.stats["order"] == "minpivot"


def test_solve_bad_input():
    P = _problem(m=4, n=30)
    with pytest.raises(ValueError, match="unknown method 'optq'"):
        solve(P, Grid(3), "optq")
    with pytest.raises(ValueError, match="unknown method 'gptq\\+polish'"):
        solve(P, Grid(3), "gptq+polish")
    with pytest.raises(ValueError, match="exceeds the number of columns 30"):
        solve(P, Grid(3, group_size=32), "gptq")
    with pytest.raises(ValueError, match="unknown option"):
        solve(P, Grid(3), "gptq", blocksise=4)
    with pytest.raises(ValueError, match="per-channel grid"):
        solve(_problem(m=4, n=32), Grid(3, group_size=16), "lll")
    with pytest.raises(ValueError, match="problem must be a LayerProblem"):
        solve((P.W, P.H), Grid(3))
    assert set(METHODS) == {"rtn", "gptq", "babai", "minpivot", "lll", "block", "kbest"}


def test_block_descent_refine_with_one_block_reaches_the_optimum():
    n, m = 6, 6
    P = _problem(m=m, n=n, seed=12)
    grid = Grid(2)
    g = solve(P, grid, "gptq")
    sol = solve(P, grid, "gptq+refine", refine_block=n, max_nodes=0)
    assert sol.error <= g.error
    s = sol.scales[:, 0].to(torch.float64)
    z = sol.zeros[:, 0].to(torch.float64)
    allv = torch.tensor(list(itertools.product(range(4), repeat=n)), dtype=torch.float64)
    for r in range(m):
        E = P.W[r] - s[r] * (allv - z[r])
        best = ((E @ P.H) * E).sum(1).min()
        assert P.row_objective(sol.dequant.double())[r].item() == pytest.approx(best.item(), rel=1e-6)


def test_block_descent_refine_is_monotone_for_groups_and_static_groups():
    P = _problem(m=16, n=64, seed=13)
    for grid in (Grid(3, group_size=16), Grid(2, group_size=16, static_groups=True)):
        a = solve(P, grid, "gptq+refine", act_order=True)
        b = solve(P, grid, "gptq+refine", act_order=True, refine_block=8)
        assert (P.row_objective(b.dequant.double()) <= P.row_objective(a.dequant.double()) * (1 + 1e-6)).all()
        assert b.stats["refine"]["block_moves"] > 0


def test_torch_column_loop_used_on_cuda_matches_compiled_kernel():
    from latticeq.nn.solvers._kernels import gptq_segment
    from latticeq.nn.solvers.gptq import _torch_segment

    g = torch.Generator().manual_seed(3)
    m, cb = 7, 12
    A = torch.randn(3 * cb, cb, generator=g, dtype=torch.float64)
    R = torch.linalg.cholesky(torch.linalg.inv(A.T @ A), upper=True)
    W = torch.randn(m, cb, generator=g, dtype=torch.float64)
    S = torch.full((m, cb), 0.3, dtype=torch.float64)
    Z = torch.full((m, cb), 2.0, dtype=torch.float64)
    out = []
    for fn in ("numba", "torch"):
        W1, Q1, E1 = W.clone(), torch.zeros(m, cb, dtype=torch.float64), torch.zeros(m, cb, dtype=torch.float64)
        if fn == "numba":
            gptq_segment(W1.numpy(), R.numpy(), S.numpy(), Z.numpy(), 3.0, 0, cb, Q1.numpy(), E1.numpy(), np.zeros((1, 1)), np.zeros(cb))
        else:
            _torch_segment(W1, R, S, Z, 3.0, 0, cb, Q1, E1, None, None)
        out.append((Q1, E1))
    assert torch.equal(out[0][0], out[1][0])
    assert torch.allclose(out[0][1], out[1][1])


def test_gptq_equals_babai_on_weights_with_exact_zero_point_ties():
    # weights already on a dyadic grid (like the packaged Q4_1 model) whose groups have
    # -min/scale = 3.5 exactly: GPTQ rounds the zero point half-to-even; Babai must see the
    # same untouched weights for the first group (not w B R, which is off by an ulp)
    g = torch.Generator().manual_seed(21)
    m, n, gs = 64, 64, 16
    W = (torch.randint(-7, 8, (m, n), generator=g).to(torch.float64)) * (0.125 / 2)
    W[:, 0], W[:, 1] = -0.4375, 0.4375  # min/max of every row: zero point exactly 3.5 at 3 bits
    X = torch.randn(3 * n, n, generator=g, dtype=torch.float64) * (torch.rand(n, generator=g, dtype=torch.float64) + 0.1)
    P = LayerProblem(W, 2 * X.T @ X / (3 * n))
    for act in (False, True):
        a = solve(P, Grid(3, group_size=gs), "gptq", act_order=act)
        b = solve(P, Grid(3, group_size=gs), "babai", act_order=act)
        assert int((a.codes != b.codes).sum()) == 0
        assert torch.equal(a.zeros, b.zeros)


def test_fit_grid_is_the_least_squares_optimum():
    from latticeq.nn.solvers.refit import fit_grid

    P = _problem(m=6, n=32, seed=31)
    grid = Grid(3, group_size=8)
    sol = solve(P, grid, "gptq", act_order=True)
    s, z = fit_grid(P, sol.codes, sol.g_idx, sol.zeros, grid.maxq, fit_zero=False)
    assert torch.equal(z, sol.zeros.to(torch.float64))
    gl = sol.g_idx.long()
    U = sol.codes.to(torch.float64) - z[:, gl]
    for r in range(6):
        # brute force: the objective is quadratic in the 4 group scales; solve it with numpy
        M = np.zeros((32, 4))
        M[np.arange(32), gl.numpy()] = U[r].numpy()
        Hn, w = P.H.numpy(), P.W[r].numpy()
        opt = np.linalg.solve(M.T @ Hn @ M, M.T @ Hn @ w)
        np.testing.assert_allclose(s[r].numpy(), opt, rtol=1e-7)
    # with the zero fitted too, every row's objective is at most the zero-fixed optimum's
    s2, z2 = fit_grid(P, sol.codes, sol.g_idx, sol.zeros, grid.maxq, fit_zero=True)
    assert torch.equal(z2, torch.round(z2)) and int(z2.min()) >= 0 and int(z2.max()) <= grid.maxq


@pytest.mark.parametrize("grid", [Grid(2), Grid(3, group_size=16), Grid(3, group_size=16, static_groups=True),
                                  Grid(4, sym=True), Grid(2, mse=True)])
def test_refit_never_worsens_a_row_and_improves_the_layer(grid):
    P = _problem(m=24, n=64, seed=32)
    for base in ("gptq", "gptq+refine"):
        a = solve(P, grid, base, act_order=True)
        b = solve(P, grid, base + "+refit", act_order=True)
        assert b.method == base + "+refit"
        ra, rb = P.row_objective(a.dequant.double()), P.row_objective(b.dequant.double())
        assert (rb <= ra * (1 + 1e-6) + 1e-12).all()
        assert b.error < a.error
        assert b.stats["refit"]["rows_improved"] > 0
        assert int(b.codes.min()) >= 0 and int(b.codes.max()) <= grid.maxq
        assert torch.equal(b.zeros, torch.round(b.zeros))
        if grid.sym:
            assert torch.equal(b.zeros, a.zeros)
        # the stored parameters reproduce the dequantized weights
        gl = b.g_idx.long()
        deq = b.scales[:, gl] * (b.codes.float() - b.zeros[:, gl])
        assert torch.allclose(deq, b.dequant, atol=1e-7)


def test_refit_method_grammar():
    P = _problem(m=4, n=32)
    with pytest.raises(ValueError, match="unknown method 'gptq\\+refit\\+refine'"):
        solve(P, Grid(3), "gptq+refit+refine")
    with pytest.raises(ValueError, match="refit_iters must be ≥ 0"):
        solve(P, Grid(3), "gptq+refit", refit_iters=-1)
    s = solve(P, Grid(3), "gptq+refit", refit_iters=0)
    assert s.error == solve(P, Grid(3), "gptq").error
