"""GPTQ as users know it: ``solve(..., "gptq")`` against the transcribed reference
(IST-DASLab ``gptq.py`` + ``quant.py``, :mod:`latticeq.nn.solvers.reference`) at the settings
users run — groups of 32, 64 and 128 with lazy-update blocks of 128, act-order on and off,
static groups, widths that are not multiples of the group or of the block — weight for
weight; ``babai`` equal to ``gptq`` code for code under both group refreshes."""

import pytest
import torch

from latticeq.nn.grid import Grid
from latticeq.nn.solvers import solve
from latticeq.nn.solvers.reference import reference_gptq
from test_layer_solvers import _problem


CASES = [  # (n, group size): n a multiple of both, of neither, of the group only
    (384, 32), (384, 64), (384, 128), (200, 32), (200, 64), (330, 128), (576, 128), (576, 64), (256, 96),
]


@pytest.mark.parametrize("n,g", CASES)
@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("static", [False, True])
def test_gptq_equals_the_reference_weight_for_weight(n, g, act_order, static):
    P = _problem(m=12, n=n, seed=n + g, dead=(3,))
    grid = Grid(3, group_size=g, static_groups=static)
    Qref, cref = reference_gptq(P.W, P.H, bits=3, groupsize=g, actorder=act_order, static_groups=static,
                                blocksize=128, dtype=torch.float64)
    sol = solve(P, grid, "gptq", act_order=act_order)
    assert int((sol.codes.to(torch.float64) != cref).sum()) == 0
    assert torch.allclose(sol.dequant.to(torch.float64), Qref, atol=1e-6)
    assert sol.scales.shape[1] == -(-n // g) and int(sol.g_idx.max()) == -(-n // g) - 1
    assert sol.error == pytest.approx(P.objective(Qref), rel=1e-9)


@pytest.mark.parametrize("bits,mse", [(2, False), (4, False), (3, True)])
def test_gptq_equals_the_reference_on_other_grids(bits, mse):
    P = _problem(m=16, n=330, seed=bits)
    grid = Grid(bits, group_size=64, mse=mse)
    _, cref = reference_gptq(P.W, P.H, bits=bits, groupsize=64, actorder=True, blocksize=128, dtype=torch.float64,
                             find_params=grid.find_params if mse else None)
    sol = solve(P, grid, "gptq", act_order=True)
    assert int((sol.codes.to(torch.float64) != cref).sum()) == 0


def test_refresh_rules_differ_only_where_a_group_starts_inside_a_block():
    P = _problem(m=16, n=384, seed=5)
    for g, same in ((128, True), (256, True), (64, False), (32, False)):
        a = solve(P, Grid(3, group_size=g), "gptq", act_order=True)
        b = solve(P, Grid(3, group_size=g, group_refresh="updated"), "gptq", act_order=True)
        assert torch.equal(a.codes, b.codes) == same, g


@pytest.mark.parametrize("refresh", ["published", "updated"])
@pytest.mark.parametrize("n,g", [(384, 32), (200, 64), (576, 128), (256, 96)])
@pytest.mark.parametrize("act_order", [False, True])
def test_babai_equals_gptq_under_both_refresh_rules(refresh, n, g, act_order):
    P = _problem(m=20, n=n, seed=7 * n + g, dead=(11,))
    grid = Grid(3, group_size=g, group_refresh=refresh)
    a = solve(P, grid, "gptq", act_order=act_order)
    b = solve(P, grid, "babai", act_order=act_order)
    assert int((a.codes != b.codes).sum()) == 0
    assert torch.equal(a.scales, b.scales) and torch.equal(a.zeros, b.zeros)


def test_updated_refresh_does_not_depend_on_the_block_size():
    P = _problem(m=10, n=192, seed=9)
    grid = Grid(3, group_size=32, group_refresh="updated")
    a = solve(P, grid, "gptq", act_order=True, blocksize=128)
    b = solve(P, grid, "gptq", act_order=True, blocksize=32)
    assert int((a.codes != b.codes).sum()) == 0


def test_group_size_bad_input():
    P = _problem(m=4, n=30, seed=1)
    with pytest.raises(ValueError, match="group_size 31 exceeds the number of columns 30"):
        solve(P, Grid(3, group_size=31), "gptq")
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="group_size must be None"):
            Grid(3, group_size=bad)
    with pytest.raises(ValueError, match="unknown group_refresh 'fresh'; allowed: published, updated"):
        Grid(3, group_size=8, group_refresh="fresh")
    sol = solve(P, Grid(3, group_size=30), "gptq")  # g = n: one group
    assert sol.scales.shape == (4, 1)
