"""Lattice codebooks and block Babai: Voronoi codes round-trip and are exact under overload,
the block recursion with d = 1 is GPTQ code for code, every block decision is the brute-force
nearest codeword of its error-fed target, and the lazy-update blocking changes nothing."""

import numpy as np
import pytest
import torch

from latticeq.lattice import Lattice, catalog
from latticeq.lattice.codebook import ScalarCode, VoronoiCode, codebook_from_spec
from latticeq.nn.grid import Grid
from latticeq.nn.solvers import solve
from latticeq.nn.solvers._base import prepare
from latticeq.nn.solvers.vq import block_feedback, vq_solve
from test_layer_solvers import _problem


@pytest.mark.parametrize("name,q", [("Z2", 8), ("D4", 4), ("E8", 2), ("A2", 5)])
def test_voronoi_code_round_trip_and_cosets(name, q):
    L = catalog.get(name)
    C = VoronoiCode(L, q)
    assert C.size == q ** L.dim and C.rate == pytest.approx(np.log2(q))
    W = C.codewords()
    assert len(np.unique(np.round(W, 9), axis=0)) == C.size  # distinct points
    assert np.array_equal(C.encode(W), np.arange(C.size))  # each codeword is its own nearest
    # a lattice point and its codeword differ by a point of qΛ
    rng = np.random.default_rng(1)
    u = rng.integers(-20, 20, (50, L.dim))
    x = u @ L.generator
    diff = (x - C.decode(C._index(u))) / q
    assert np.allclose(L.closest_point(diff), diff, atol=1e-9)
    C2 = codebook_from_spec(C.spec())
    assert np.array_equal(C2.decode(np.arange(C.size)), W)


@pytest.mark.parametrize("name,q", [("E8", 2), ("D4", 4)])
def test_overloaded_targets_get_their_nearest_codeword(name, q):
    C = VoronoiCode(catalog.get(name), q)
    W = C.codewords()
    X = np.random.default_rng(0).standard_normal((400, C.dim)) * 3 * q  # mostly outside the region
    codes, overload = C.encode(X, return_overload=True)
    assert overload.mean() > 0.5
    best = ((X[:, None, :] - W[None]) ** 2).sum(-1).min(axis=1)
    assert np.allclose(((X - C.decode(codes)) ** 2).sum(1), best)


def test_large_codes_use_the_fast_encoder_and_flag_overload():
    C = VoronoiCode(catalog.get("E8"), 8)  # 2^24 codewords: above the exact limit
    rng = np.random.default_rng(2)
    inside = C.decode(rng.integers(0, C.size, 200)) + 1e-3 * rng.standard_normal((200, 8))
    codes, overload = C.encode(inside, return_overload=True)
    assert not overload.any()
    assert np.allclose(C.decode(codes), inside, atol=0.05)
    far = 100 * rng.standard_normal((50, 8))
    codes, overload = C.encode(far, return_overload=True)
    assert overload.all()
    # overloaded targets get an in-region codeword (shrunk target), no farther than the origin's
    _, again = C._fast(C.decode(codes))
    assert not again.any()
    assert (((far - C.decode(codes)) ** 2).sum(1) <= ((far - C.decode(np.zeros(50, np.int64))) ** 2).sum(1)).all()


def test_codebook_bad_input():
    with pytest.raises(ValueError, match="q must be an integer >= 2"):
        VoronoiCode(catalog.get("E8"), 1)
    with pytest.raises(ValueError, match="must be a latticeq Lattice"):
        VoronoiCode(np.eye(2), 4)
    C = VoronoiCode(catalog.get("D4"), 2)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        C.encode(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="codes must lie"):
        C.decode([16])
    with pytest.raises(ValueError, match="unknown codebook kind"):
        codebook_from_spec({"kind": "nope"})
    # a saved (non-catalog) lattice travels inside the spec
    L = Lattice(catalog.get("D4").generator @ np.diag([1, 1, 1, 1.01]), name="n4-mine")
    spec = VoronoiCode(L, 2).spec()
    assert "generator" in spec["lattice"] and codebook_from_spec(spec).size == 16


@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_block_recursion_with_the_scalar_code_is_gptq(act_order, bits):
    P = _problem(m=24, n=96, seed=bits, dead=(5,))
    g = solve(P, Grid(bits), "gptq", act_order=act_order, blocksize=32)
    prep = prepare(P, Grid(bits), order="act" if act_order else "natural")
    codes, Q, damped = block_feedback(prep, ScalarCode(bits), prep.S[:, 0], prep.Z[:, 0], blocksize=32)
    inv = torch.argsort(prep.perm).numpy()
    assert np.array_equal(codes[:, inv], g.codes.numpy())


def _naive_blocks(prep, C, s):
    """Unblocked reference: after each block every later column is updated at once; the block
    decision is the brute-force nearest codeword of the target."""
    W = prep.W.clone().numpy()
    R = prep.R.numpy()
    table = C.codewords()
    d = C.dim
    codes = []
    for a in range(0, W.shape[1], d):
        t = W[:, a:a + d] / s[:, None]
        c = ((t[:, None, :] - table[None]) ** 2).sum(-1).argmin(axis=1)
        q = s[:, None] * table[c]
        E = np.linalg.solve(R[a:a + d, a:a + d].T, (W[:, a:a + d] - q).T).T
        W[:, a + d:] -= E @ R[a:a + d, a + d:]
        codes.append(c)
    return np.stack(codes, axis=1)


@pytest.mark.parametrize("name,q", [("D4", 2), ("E8", 2), ("A2", 3)])
def test_block_decisions_equal_brute_force_and_blocking_changes_nothing(name, q):
    C = VoronoiCode(catalog.get(name), q)
    P = _problem(m=10, n=48, seed=4)
    prep = prepare(P, Grid(8), order="act")
    s = prep.W.pow(2).mean(dim=1).sqrt()
    ref = _naive_blocks(prep, C, s.numpy())
    for bs in (C.dim * 2, 24, 128):
        codes, Q, damped = block_feedback(prep, C, s, blocksize=bs)
        assert np.array_equal(codes, ref), bs
    # Σ‖E‖² is the damped objective of the decisions
    E = prep.W - Q
    assert torch.allclose(damped, ((E @ prep.Hd) * E).sum(dim=1), rtol=1e-8)


def test_vq_solve_reports_a_consistent_solution():
    P = _problem(m=16, n=64, seed=7)
    C = VoronoiCode(catalog.get("E8"), 2)  # 1 bit per dimension
    for inc in (False, True):
        sol = vq_solve(P, C, incoherence=inc, seed=3)
        assert sol.error == pytest.approx(P.objective(sol.dequant.double()), rel=1e-6)
        assert sol.bits_per_weight == pytest.approx(1.0 + 16 / 64)
        h = sol.stats["refit_history"]
        assert all(b <= a * (1 + 1e-12) for a, b in zip(h, h[1:]))  # refits never hurt
        assert (sol.transforms is not None) == inc
    with pytest.raises(ValueError, match="not a multiple of the codebook dimension 8"):
        vq_solve(_problem(m=4, n=12, seed=1), C)
