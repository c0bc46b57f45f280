"""GPTQ ≡ Babai code for code on real SmolLM2 layers (needs `latticeq record-hessians`)."""

import pytest
import torch

from latticeq.nn.grid import Grid
from latticeq.nn.layer import LayerProblem
from latticeq.nn.solvers import solve


def _layers():
    from latticeq.nn.hessians import load_layers

    try:
        return list(load_layers(names={"b00.q", "b15.up", "b29.down"}))
    except FileNotFoundError:
        return []


@pytest.mark.slow
def test_gptq_equals_babai_on_real_layers():
    layers = _layers()
    if not layers:
        pytest.skip("no recorded Hessians; run `latticeq record-hessians` first")
    for name, W, H in layers:
        P = LayerProblem(torch.from_numpy(W).double(), torch.from_numpy(H))
        for grid in (Grid(2), Grid(3, group_size=64)):  # 128 does not divide 576
            a = solve(P, grid, "gptq", act_order=True)
            b = solve(P, grid, "babai", act_order=True)
            # With dynamic groups a row can meet a floating-point rounding tie (a code or a group's
            # zero point exactly at .5 up to ulps) that GPTQ's updated weight and Babai's residual
            # coordinate break differently; that row then continues on an equally valid path.
            # Observed: one row of b15.up at 3-bit g64. Everything else must be identical.
            rows = (a.codes != b.codes).any(dim=1)
            assert int(rows.sum()) <= (1 if grid.group_size else 0), (name, grid, int(rows.sum()))
            assert b.error == pytest.approx(a.error, rel=1e-3)
            r = solve(P, grid, "gptq+refine", act_order=True)
            assert r.error <= a.error
