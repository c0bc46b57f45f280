"""The e8p ball codebook: every codeword is a point of E8 + ¼·1, the ball is complete up to its
last shell and made of whole permutation orbits, the symmetric encoder is exactly the
brute-force nearest codeword (also far outside the ball), and residual codes decode what they
encode; the block recursion with e8p decides each block as brute force does."""

import numpy as np
import pytest

from latticeq.lattice import catalog
from latticeq.lattice.codebook import (E8PCode, ResidualCode, VoronoiCode, codebook_from_spec,
                                       parse_codebook)
from latticeq.nn.grid import Grid
from latticeq.nn.solvers._base import prepare
from latticeq.nn.solvers.vq import block_feedback, vq_solve
from test_codebook import _naive_blocks
from test_layer_solvers import _problem


@pytest.fixture(scope="module")
def e8p():
    return E8PCode()


def test_e8p_is_a_centred_ball_of_e8_plus_a_quarter(e8p):
    T = e8p.codewords()
    assert e8p.size == 2**16 - 4 and e8p.bits == 16 and e8p.rate == 2.0
    assert len(np.unique(T, axis=0)) == e8p.size
    # every codeword is in E8 + ¼: x − ¼ is its own closest E8 point
    E8 = catalog.get("E8")
    assert np.allclose(E8.closest_point(T - 0.25), T - 0.25)
    norm2 = (T ** 2).sum(axis=1)
    # eleven complete shells, counted independently by brute force over a box that holds every
    # point of E8 + ¼ with ‖x‖² ≤ 11.5 (|x_i| ≤ 3.4: y = x − ¼ in {−3 … 3} or {−3.5 … 2.5})
    grid = np.stack(np.meshgrid(*[np.arange(-3, 4, dtype=np.int8)] * 8, indexing="ij"), -1).reshape(-1, 8)
    shells = np.zeros(12, dtype=np.int64)
    for y in (grid.astype(np.float64), grid - 0.5):
        y = y[np.mod(np.rint(y.sum(axis=1)), 2) == 0]  # E8: even coordinate sum
        n2 = ((y + 0.25) ** 2).sum(axis=1)
        n2 = n2[n2 <= 11.5 + 1e-9]
        shells += np.bincount(np.rint(n2 - 0.5).astype(np.int64), minlength=12)
    counts = [int(np.isclose(norm2, k + 0.5).sum()) for k in range(12)]
    assert counts[:11] == list(shells[:11])
    assert np.isclose(norm2.max(), 11.5) and counts[11] == 2**16 - 4 - shells[:11].sum() < shells[11]
    # whole permutation orbits: sorting each codeword's coordinates gives a representative whose
    # every ordering is a codeword (checked on the orbits of 200 codewords)
    keys = {tuple(r) for r in T}
    rng = np.random.default_rng(0)
    for i in rng.choice(e8p.size, 200, replace=False):
        x = T[i].copy()
        for _ in range(5):
            rng.shuffle(x)
            assert tuple(x) in keys
    assert abs(T.mean()) < 1e-4  # centred as the shift allows


@pytest.mark.parametrize("spread", [0.3, 1.0, 4.0])
def test_e8p_encoder_is_the_brute_force_nearest_codeword(e8p, spread):
    from scipy.spatial import cKDTree

    T = e8p.codewords()
    X = np.random.default_rng(int(spread * 10)).standard_normal((3000, 8)) * spread
    codes, overload = e8p.encode(X, return_overload=True)
    _, bf = cKDTree(T).query(X)
    assert np.allclose(((X - e8p.decode(codes)) ** 2).sum(1), ((X - T[bf]) ** 2).sum(1), rtol=0, atol=1e-12)
    assert np.array_equal(e8p.encode(T), np.arange(e8p.size))
    if spread == 4.0:
        assert overload.any()


def test_e8p_distortion_on_a_gaussian_source(e8p):
    # the best-scaled MSE per dimension on a unit Gaussian: about 0.091 (QuIP# reports ~0.089 for
    # its E8P; the rate-distortion bound at 2 bits is 0.0625); the scalar 2-bit Lloyd-Max
    # quantizer has 0.1175
    X = np.random.default_rng(3).standard_normal((100000, 8))
    mse = min(((X - s * e8p.decode(e8p.encode(X / s))) ** 2).mean() for s in (0.9, 0.95, 1.0))
    assert 0.085 < mse < 0.095


def test_residual_codes_round_trip_and_specs(e8p):
    C = ResidualCode(e8p, VoronoiCode(catalog.get("E8"), 2))
    assert C.bits == 24 and C.rate == 3.0 and C.size == e8p.size * 256
    rng = np.random.default_rng(4)
    codes = rng.integers(0, C.size, 500)
    P = C.decode(codes)
    assert np.allclose(P, e8p.decode(codes // 256) + C.beta * C.second.decode(codes % 256))
    # greedy encoding by definition: the nearest first codeword (e8p's encoder is exact, tested
    # above), then the brute-force nearest second codeword of the scaled residual
    X = rng.standard_normal((2000, 8))
    T1, T2 = e8p.codewords(), C.second.codewords()
    c1 = e8p.encode(X)
    r = (X - T1[c1]) / C.beta
    c2 = ((r[:, None, :] - T2[None]) ** 2).sum(-1).argmin(1)
    assert np.array_equal(C.encode(X), c1 * 256 + c2)
    c1 = e8p.encode(X)
    # the second stage can only help: never worse than the first stage alone
    assert (((X - C.decode(C.encode(X))) ** 2).sum(1) <= ((X - e8p.decode(c1)) ** 2).sum(1) + 1e-12).all()
    C2 = codebook_from_spec(C.spec())
    assert C2.beta == C.beta and np.array_equal(C2.decode(codes), P)
    assert parse_codebook("e8p", 4).bits == 32 and parse_codebook("e8p", 3).bits == 24
    assert isinstance(parse_codebook("e8p", 2), E8PCode)


def test_e8p_bad_input(e8p):
    with pytest.raises(ValueError, match="e8p provides 2, 3 or 4 bits"):
        parse_codebook("e8p", 5)
    with pytest.raises(ValueError, match="version"):
        codebook_from_spec({"kind": "e8p", "version": 9})
    with pytest.raises(ValueError, match="does not match"):
        codebook_from_spec({"kind": "e8p", "size": 65536})
    with pytest.raises(ValueError, match="needs 'beta'"):
        codebook_from_spec({"kind": "residual", "first": e8p.spec(), "second": e8p.spec()})
    with pytest.raises(ValueError, match="stage dimensions differ"):
        ResidualCode(e8p, VoronoiCode(catalog.get("D4"), 2))
    with pytest.raises(ValueError, match="codes must lie"):
        e8p.decode([e8p.size])
    with pytest.raises(ValueError, match="NaN"):
        e8p.encode(np.full((1, 8), np.nan))


def test_block_recursion_with_e8p_equals_brute_force(e8p):
    P = _problem(m=6, n=32, seed=5)
    prep = prepare(P, Grid(8), order="act")
    s = prep.W.pow(2).mean(dim=1).sqrt() / e8p.rms()
    ref = _naive_blocks(prep, e8p, s.numpy())
    codes, _, _ = block_feedback(prep, e8p, s, blocksize=16)
    assert np.array_equal(codes, ref)


def test_vq_solve_with_e8p_counts_its_bits():
    P = _problem(m=16, n=64, seed=8)
    sol = vq_solve(P, parse_codebook("e8p", 2), seed=1)
    assert sol.bits_per_weight == pytest.approx(2.0 + 16 / 64)
    assert sol.relative_error < vq_solve(P, parse_codebook("e8p", 2), seed=1, feedback=False).relative_error * 1.5
    sol4 = vq_solve(P, parse_codebook("e8p", 4), seed=1)
    assert sol4.bits_per_weight == pytest.approx(4.0 + 16 / 64)
    assert sol4.relative_error < sol.relative_error
