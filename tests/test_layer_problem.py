"""Grid, HessianAccumulator and LayerProblem: known values and bad input."""

import pytest
import torch

from latticeq.nn.grid import Grid
from latticeq.nn.layer import HessianAccumulator, LayerProblem


def test_grid_minmax_known_values():
    g = Grid(bits=3)
    x = torch.tensor([[-1.0, 0.0, 2.5]], dtype=torch.float64)
    s, z = g.find_params(x)
    assert s.item() == pytest.approx(3.5 / 7)
    assert z.item() == 2.0  # round(1 / 0.5)
    assert g.quantize(x, s, z).tolist() == [[0.0, 2.0, 7.0]]
    assert g.maxq == 7


def test_grid_sym_and_zero_rows():
    g = Grid(bits=4, sym=True)
    s, z = g.find_params(torch.tensor([[-2.0, 1.0], [0.0, 0.0]]))
    assert z.tolist() == [8.0, 8.0]
    assert s[0].item() == pytest.approx(4.0 / 15)
    assert s[1].item() == pytest.approx(2.0 / 15)  # all-zero row gets range [-1, 1]


def test_grid_quantize_clamps_and_mse_helps():
    g = Grid(bits=2)
    s = torch.tensor([[1.0]])
    z = torch.tensor([[1.0]])
    assert g.quantize(torch.tensor([[-5.0, 0.2, 9.0]]), s, z).tolist() == [[0.0, 1.0, 3.0]]
    torch.manual_seed(0)
    x = torch.randn(50, 256, dtype=torch.float64) ** 3  # heavy tails: clipping pays
    err = []
    for mse in (False, True):
        gg = Grid(bits=3, mse=mse)
        s, z = gg.find_params(x)
        q = gg.dequantize(gg.quantize(x, s[:, None], z[:, None]), s[:, None], z[:, None])
        err.append(((q - x).abs() ** 2.4).sum().item())
    assert err[1] < 0.9 * err[0]


@pytest.mark.parametrize("bits,sym", [(2, False), (3, False), (4, True)])
def test_grid_mse_compiled_search_matches_the_reference_loop(bits, sym):
    torch.manual_seed(bits)
    x = torch.randn(60, 200, dtype=torch.float64) ** 3
    x[0] = 0  # all-zero row
    x[1] = x[1].abs()  # no negative weights
    g = Grid(bits=bits, sym=sym, mse=True)
    s, z = g.find_params(x)  # compiled (CPU float64)
    zt = torch.zeros(60, dtype=torch.float64)
    xmin, xmax = torch.minimum(x.min(1).values, zt), torch.maximum(x.max(1).values, zt)
    s0, z0 = g._minmax_params(xmin, xmax)
    sr, zr = g._mse_search_torch(x, xmin, xmax, s0, z0)
    assert torch.allclose(s, sr, rtol=1e-12) and torch.equal(z, zr)


def test_grid_static_params_groups():
    W = torch.arange(24, dtype=torch.float64).reshape(2, 12)
    s, z = Grid(bits=4, group_size=4).static_params(W)
    assert s.shape == (2, 3) and z.shape == (2, 3)
    s1, z1 = Grid(bits=4).find_params(W[:, 4:8])
    assert torch.allclose(s[:, 1], s1) and torch.equal(z[:, 1], z1)


@pytest.mark.parametrize("bits", [1, 9, 0, 2.5, True])
def test_grid_bad_bits(bits):
    with pytest.raises(ValueError, match="bits must be an integer from 2 to 8"):
        Grid(bits=bits)


def test_grid_group_size_at_most_the_width_and_ragged_groups():
    with pytest.raises(ValueError, match="group_size 11 exceeds the number of columns 10"):
        Grid(bits=3, group_size=11).check_columns(10)
    assert Grid(bits=3, group_size=4).n_groups(10) == 3  # ⌈10/4⌉, the last one 2 wide
    s, z = Grid(bits=3, group_size=4).static_params(torch.arange(20.0).reshape(2, 10))
    assert s.shape == (2, 3)
    with pytest.raises(ValueError, match="group_size must be None"):
        Grid(bits=3, group_size=0)


def test_hessian_accumulator_matches_formula():
    torch.manual_seed(1)
    acc = HessianAccumulator(5, dtype=torch.float64)
    xs = [torch.randn(3, 7, 5, dtype=torch.float64), torch.randn(2, 4, 5, dtype=torch.float64)]
    for x in xs:
        acc.add_batch(x)
    assert acc.nsamples == 5
    allx = torch.cat([x.reshape(-1, 5) for x in xs])
    assert torch.allclose(acc.hessian, 2.0 / 5 * allx.T @ allx)
    acc.add_batch(torch.randn(6, 5, dtype=torch.float64))  # 2-D = one sample
    assert acc.nsamples == 6
    with pytest.raises(ValueError, match="expected n = 5"):
        acc.add_batch(torch.randn(2, 4))
    assert torch.equal(acc.hessian, acc.hessian.T)
    # float32 (GPTQ's precision) agrees with the float64 formula; bad inputs are caught on reading
    acc32 = HessianAccumulator(5)
    for x in xs:
        acc32.add_batch(x.float())
    assert torch.allclose(acc32.hessian.double(), 2.0 / 5 * allx.T @ allx, rtol=1e-5, atol=1e-6)
    acc32.add_batch(torch.tensor([[float("nan")] * 5]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        acc32.hessian


def _spd(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(4 * n, n, generator=g, dtype=torch.float64)
    return X.T @ X / n


def test_layer_problem_objective_and_dead_columns():
    H = _spd(6)
    H[2, :] = 0
    H[:, 2] = 0
    W = torch.randn(3, 6, dtype=torch.float64)
    P = LayerProblem(W, H)
    assert P.dead.tolist() == [False, False, True, False, False, False]
    Q = torch.randn(3, 6, dtype=torch.float64)
    E = W - Q
    assert P.objective(Q) == pytest.approx(torch.trace(E @ H @ E.T).item())
    assert P.relative_error(torch.zeros_like(W)) == pytest.approx(1.0)
    Hd, lam = P.damped(0.01)
    assert Hd[2, 2].item() == pytest.approx(1 + lam)


def test_layer_problem_bad_input():
    H = _spd(4)
    W = torch.randn(3, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="shape mismatch"):
        LayerProblem(torch.randn(3, 5, dtype=torch.float64), H)
    with pytest.raises(ValueError, match="square"):
        LayerProblem(W, torch.randn(4, 3, dtype=torch.float64))
    Hn = H.clone()
    Hn[0, 1] = float("nan")
    with pytest.raises(ValueError, match="H contains NaN"):
        LayerProblem(W, Hn)
    Ha = H.clone()
    Ha[0, 1] += 1.0
    with pytest.raises(ValueError, match="not symmetric"):
        LayerProblem(W, Ha)
    with pytest.raises(ValueError, match="not positive semidefinite"):
        LayerProblem(W, H - 10 * H.norm() * torch.eye(4, dtype=torch.float64))
    Wn = W.clone()
    Wn[0, 0] = float("inf")
    with pytest.raises(ValueError, match="W contains NaN"):
        LayerProblem(Wn, H)
    with pytest.raises(ValueError, match="percdamp must be"):
        LayerProblem(W, H).damped(-1)


def test_weight_space_problem_is_the_identity_hessian():
    from latticeq.nn.solvers import solve

    W = torch.randn(6, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a, b = LayerProblem(W, None), LayerProblem(W, torch.eye(40, dtype=torch.float64))
    assert a.identity and not b.identity
    Q = W + 0.01
    assert torch.allclose(a.row_objective(Q), b.row_objective(Q)) and a.baseline() == pytest.approx(b.baseline())
    for grid in (Grid(3), Grid(4, group_size=16)):
        sa, sb = solve(a, grid, "rtn"), solve(b, grid, "rtn")
        assert torch.equal(sa.codes, sb.codes) and sa.error == pytest.approx(sb.error)
    with pytest.raises(ValueError, match="NaN"):
        LayerProblem(torch.full((2, 3), float("nan")), None)


@pytest.mark.parametrize("method, grid, act", [("gptq", Grid(3, group_size=32), True), ("gptq", Grid(4), False),
                                               ("babai", Grid(3, group_size=32), True),
                                               ("gptq+refine+refit", Grid(3, group_size=32, mse=True), True)])
def test_layers_sharing_one_hessian_solve_exactly_as_alone(method, grid, act):
    """with_weights shares H's checks and factorizations between layers of one group: every
    layer's solution equals the one of its own, freshly built problem, whichever comes first."""
    from latticeq.nn.solvers import solve

    g = torch.Generator().manual_seed(3)
    X = torch.randn(300, 80, generator=g, dtype=torch.float64)
    X[:, 5] = 0  # a dead column
    H = 2 * X.T @ X / 300
    Ws = [torch.randn(m, 80, generator=g, dtype=torch.float64) for m in (24, 8, 40)]
    first = LayerProblem(Ws[0], H)
    shared = [first] + [first.with_weights(W) for W in Ws[1:]]
    for P, W in zip(shared, Ws):
        a = solve(P, grid, method, act_order=act)
        b = solve(LayerProblem(W, H), grid, method, act_order=act)
        assert torch.equal(a.codes, b.codes) and a.error == b.error
    assert len(first._factors) == 1 and shared[2]._factors is first._factors  # factored once
    with pytest.raises(ValueError, match="m × 80"):
        first.with_weights(torch.zeros(4, 79, dtype=torch.float64))
    with pytest.raises(ValueError, match="NaN"):
        first.with_weights(torch.full((4, 80), float("nan"), dtype=torch.float64))
