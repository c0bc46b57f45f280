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
from latticeq.nn.solvers.vq import block_descent, block_feedback, vq_refine_passes, vq_solve
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
    _, again, _ = C._fast(C.decode(codes))
    assert not again.any()
    assert (((far - C.decode(codes)) ** 2).sum(1) <= ((far - C.decode(np.zeros(50, np.int64))) ** 2).sum(1)).all()


def test_shrink_takes_the_nearest_in_region_candidate_of_all_factors():
    """The batched overload search equals the definition: of code 0 and the in-region codes of
    a·x for a = 0.95, 0.90, …, 0.05 (each found one factor at a time), the nearest, first on ties."""
    C = VoronoiCode(catalog.get("BW16"), 8)  # 2^48 codewords: the shrink path
    X = 3.0 * np.random.default_rng(5).standard_normal((300, 16))
    _, overload = C.encode(X, return_overload=True)
    assert overload.mean() > 0.5
    X = X[overload]
    cands = [(np.zeros(len(X), np.int64), np.zeros(len(X), bool))]
    for a in np.arange(0.95, 0.0, -0.05):
        c, over, _ = C._fast(a * X)
        cands.append((c, over))
    want = []
    for i, x in enumerate(X):
        best, bd = None, np.inf
        for c, over in cands:
            if over[i]:
                continue
            d = ((x - C.decode(c[i:i + 1])[0]) ** 2).sum()
            if d < bd:
                best, bd = c[i], d
        want.append(best)
    np.testing.assert_array_equal(C._shrink(X), want)


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


def test_block_descent_with_a_scalar_hessian_is_the_nearest_codeword_of_every_block():
    """With H = c·I the rows' objectives separate over blocks and every block's exact optimum
    is the Euclidean-nearest codeword of w_b / s: one pass from any start reaches it (brute
    force over all codewords), and a second pass moves nothing."""
    C = VoronoiCode(catalog.get("D4"), 2)
    g = torch.Generator().manual_seed(3)
    m, n = 7, 16
    W = torch.randn(m, n, generator=g, dtype=torch.float64)
    H = 2.5 * torch.eye(n, dtype=torch.float64)
    s = torch.rand(m, generator=g, dtype=torch.float64) + 0.5
    codes = np.random.default_rng(0).integers(0, C.size, size=(m, n // 4))
    Q = s[:, None] * torch.from_numpy(C.decode(codes).reshape(m, n))
    table = C.codewords()
    t = (W / s[:, None]).numpy().reshape(m, n // 4, 4)
    best = ((t[:, :, None, :] - table[None, None]) ** 2).sum(-1).argmin(axis=2)
    obj0 = (((W - Q) @ H) * (W - Q)).sum(dim=1)
    moves, gain = block_descent(W, H, C, s, codes, Q, passes=1)
    assert np.array_equal(codes, best)
    obj1 = (((W - Q) @ H) * (W - Q)).sum(dim=1)
    assert torch.allclose(obj0 - gain, obj1, rtol=1e-10)  # the gain is the exact decrease
    assert block_descent(W, H, C, s, codes, Q, passes=3) == (0, pytest.approx(torch.zeros(m)))


@pytest.mark.parametrize("name,q", [("D4", 2), ("E8", 2)])
def test_block_descent_never_increases_the_objective_and_stops_at_a_fixed_point(name, q):
    C = VoronoiCode(catalog.get(name), q)
    P = _problem(m=12, n=48, seed=9, dead=(3,))
    prep = prepare(P, Grid(8), order="act")
    s = prep.W.pow(2).mean(dim=1).sqrt() / C.rms()
    codes, Q, _ = block_feedback(prep, C, s)
    Hp = P.H[prep.perm][:, prep.perm]

    def objective(Q):
        E = prep.W - Q
        return ((E @ Hp) * E).sum(dim=1)

    before = objective(Q)
    moves, gain = block_descent(prep.W, Hp, C, s, codes, Q, passes=50)
    after = objective(Q)
    assert moves > 0 and bool((gain >= 0).all())
    assert torch.allclose(before - gain, after, rtol=1e-9, atol=1e-12)
    # the stored codes decode to Q, and one more pass moves nothing
    assert torch.allclose(Q, s[:, None] * torch.from_numpy(C.decode(codes).reshape(Q.shape)))
    assert block_descent(prep.W, Hp, C, s, codes, Q.clone(), passes=1)[0] == 0


def test_vq_solve_with_refinement_is_never_worse_and_the_method_is_checked():
    P = _problem(m=16, n=64, seed=7)
    C = VoronoiCode(catalog.get("E8"), 2)
    plain = vq_solve(P, C, seed=3)
    refined = vq_solve(P, C, seed=3, refine_passes=20)
    assert refined.error <= plain.error * (1 + 1e-9)
    assert refined.error == pytest.approx(P.objective(refined.dequant.double()), rel=1e-6)
    assert refined.stats["refine"]["moves"] > 0 and plain.stats["refine"] is None
    assert vq_refine_passes("gptq") == 0 and vq_refine_passes("gptq+refine") == 20
    assert vq_refine_passes("gptq+refine", {"refine_passes": 3}) == 3
    for method, opts, msg in (("rtn", None, "method is one of gptq, gptq[+]refine"),
                              ("gptq+refit", None, "method is one of"),
                              ("gptq", {"refine_passes": 2}, "cannot be set"),
                              ("gptq+refine", {"block": 8}, "cannot be set"),
                              ("gptq+refine", {"refine_passes": -1}, "integer >= 0")):
        with pytest.raises(ValueError, match=msg):
            vq_refine_passes(method, opts)
    with pytest.raises(ValueError, match="refine_passes"):
        vq_solve(P, C, refine_passes=-2)
