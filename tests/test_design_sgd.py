import itertools

import numpy as np
import pytest

from latticeq.design import _kernels as K
from latticeq.design.search import estimate_nsm_mc
from latticeq.design.sgd import SGDState, random_reduced_generator, sgd, sgd_advance, sgd_start
from latticeq.lattice.decode.sphere import closest_coords


def test_decoder_matches_brute_force():
    rng = np.random.default_rng(3)
    for n in (2, 3, 4):
        B = random_reduced_generator(n, seed=n)
        X = (3 * rng.random((300, n)) - 1) @ B  # around the fundamental cell
        U, d2, ex = closest_coords(B, X)
        assert ex.all()
        grid = np.array(list(itertools.product(range(-6, 7), repeat=n)), dtype=float)
        D = ((X[:, None, :] - (grid @ B)[None]) ** 2).sum(-1)
        np.testing.assert_allclose(d2, D.min(1), atol=1e-10)
        np.testing.assert_allclose(((X - U @ B) ** 2).sum(1), d2, atol=1e-10)


def test_retriangularize_keeps_the_lattice():
    from latticeq.lattice import Lattice

    rng = np.random.default_rng(0)
    B0 = rng.standard_normal((6, 6))
    B = B0.copy()
    K.retriangularize(B)
    assert np.allclose(np.triu(B, 1), 0) and np.all(np.diag(B) > 0)
    assert np.prod(np.diag(B)) == pytest.approx(1.0)
    # same lattice up to rotation once scaled to unit volume: equal theta series
    A = Lattice(B0).normalized()
    T = Lattice(B)
    r2 = 2.5 * A.minimum_norm()
    ta, tb = A.theta_series(r2, rtol=1e-8), T.theta_series(r2, rtol=1e-8)
    np.testing.assert_array_equal(ta.counts, tb.counts)
    np.testing.assert_allclose(ta.norms, tb.norms, rtol=1e-9)


def test_lll_float_is_unimodular_and_lovasz():
    rng = np.random.default_rng(1)
    B0 = rng.integers(-20, 21, size=(7, 7)).astype(float)
    while abs(np.linalg.det(B0)) < 1:
        B0 = rng.integers(-20, 21, size=(7, 7)).astype(float)
    B = B0.copy()
    K.lll_float(B, 0.99)
    U = B @ np.linalg.inv(B0)
    np.testing.assert_allclose(U, np.rint(U), atol=1e-8)
    assert abs(round(np.linalg.det(np.rint(U)))) == 1
    # Lovász condition with Gram–Schmidt
    Q, R = np.linalg.qr(B.T)
    r = np.abs(np.diag(R))
    for k in range(1, 7):
        mu = R[k - 1, k] / R[k - 1, k - 1]
        assert r[k] ** 2 >= (0.99 - mu**2) * r[k - 1] ** 2 - 1e-9


def test_sgd_n2_finds_the_hexagonal_lattice():
    st = sgd(2, steps=100_000, mu0=0.02, nu=200, seed=0, progress=False)
    B = st.generator
    assert np.allclose(np.triu(B, 1), 0) and np.prod(np.diag(B)) == pytest.approx(1.0)
    g, se = estimate_nsm_mc(B, 200_000, seed=5)
    assert abs(g - 5 / (36 * np.sqrt(3))) < max(4 * se, 2e-4)
    # hexagonal: the two shortest vectors have equal norm and a 60-degree angle
    G = B @ B.T
    assert G[0, 0] == pytest.approx(G[1, 1], rel=0.02)
    assert abs(G[0, 1]) / G[0, 0] == pytest.approx(0.5, abs=0.02)


def test_sgd_is_seeded_and_resumes_exactly():
    a = sgd(5, steps=4000, seed=7, chunk=1000, progress=False)
    b = sgd(5, steps=4000, seed=7, chunk=1000, progress=False)
    np.testing.assert_array_equal(a.generator, b.generator)
    s = sgd_start(5, steps=4000, seed=7)
    sgd_advance(s, 1000)
    sgd_advance(s, 1000)
    s2 = SGDState.from_dict(s.to_dict())      # as if loaded from a checkpoint
    c = sgd(5, state=s2, chunk=1000, progress=False)
    np.testing.assert_array_equal(a.generator, c.generator)
    d = sgd(5, steps=4000, seed=8, chunk=1000, progress=False)
    assert not np.array_equal(a.generator, d.generator)


def test_minibatch_variant_reaches_a3_star():
    st = sgd(3, steps=20_000, mu0=0.02, nu=100, batch=8, seed=2, progress=False)
    g, se = estimate_nsm_mc(st.generator, 200_000, seed=3)
    assert g < 0.0785433 * 1.01  # A3* (bcc), the best 3-dimensional lattice quantizer


def test_sgd_bad_input():
    with pytest.raises(ValueError, match="2..64"):
        sgd(1, progress=False)
    with pytest.raises(ValueError, match="2..64"):
        sgd_start(65)
    with pytest.raises(ValueError, match="unknown preset 'turbo'"):
        sgd_start(4, preset="turbo")
    with pytest.raises(ValueError, match="batch"):
        sgd_start(4, batch=0)
    with pytest.raises(ValueError, match="expected 4"):
        sgd_start(4, init=np.eye(3))


def test_nsm_moments_uses_the_core_decoder():
    # the kernel draws z with numba's np.random (same Mersenne Twister stream as numpy's legacy
    # generator), so the core's batched closest_coords on the same points must give the same sums
    B = random_reduced_generator(6, seed=4)
    m, seed = 3000, 11
    s1, s2 = K.nsm_moments(B, m, seed)
    Z = np.random.RandomState(seed).random_sample((m, 6))
    _, d2, ex = closest_coords(B, Z @ B)
    assert ex.all()
    d = d2 / 6
    assert s1 == pytest.approx(d.sum(), rel=1e-9)
    assert s2 == pytest.approx((d * d).sum(), rel=1e-9)
