"""Schnorr–Euchner exact / box-constrained closest point and short vectors, against brute force."""

import itertools

import numba
import numpy as np
import pytest
from numba import njit

from latticeq.lattice.decode.sphere import (
    BOUND_NONE,
    _decode_free,
    closest_coords,
    decode_one,
    make_workspace,
    short_vectors,
)


def _random_triangular(rng, n):
    """A random lower-triangular generator with condition number < 6 (so brute force boxes suffice)."""
    while True:
        B = rng.normal(size=(n, n))
        if np.linalg.cond(B) < 6:
            B = B / abs(np.linalg.det(B)) ** (1.0 / n)
            return np.linalg.cholesky(B @ B.T)


def _brute(Lt, X, radius, lo=None, hi=None):
    """Exhaustive minimum over integer coordinates within ``radius`` of Babai rounding (and in a box).

    Returns (argmin coordinates, minimum, second smallest distance) per point.
    """
    n = Lt.shape[0]
    offs = np.array(list(itertools.product(range(-radius, radius + 1), repeat=n)), dtype=np.int64)
    Ub, db, d2 = [], [], []
    for x in X:
        u0 = np.floor(np.linalg.solve(Lt.T, x) + 0.5).astype(np.int64)
        if lo is not None:
            u0 = np.clip(u0, lo, hi)
        Z = u0 + offs
        if lo is not None:
            Z = Z[np.all((Z >= lo) & (Z <= hi), axis=1)]
        D = ((x - Z @ Lt) ** 2).sum(-1)
        i = np.argmin(D)
        s = np.sort(D)
        Ub.append(Z[i])
        db.append(s[0])
        d2.append(s[1] if len(s) > 1 else np.inf)
    return np.array(Ub), np.array(db), np.array(d2)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_exact_matches_brute_force(n):
    rng = np.random.default_rng(100 + n)
    radius = {1: 6, 2: 5, 3: 4, 4: 3, 5: 3, 6: 2}[n]
    for _ in range(3):
        Lt = _random_triangular(rng, n)
        X = rng.normal(size=(40, n)) * 0.8
        Ub, db, d2nd = _brute(Lt, X, radius)
        U, d2, exact = closest_coords(Lt, X)
        assert exact.all()
        np.testing.assert_allclose(d2, ((X - U @ Lt) ** 2).sum(1), rtol=1e-12, atol=1e-12)
        # the brute-force box contains every closest point here, so both minima agree
        assert np.all(d2 <= db + 1e-12)
        np.testing.assert_allclose(d2, db, rtol=1e-10, atol=1e-12)
        clear = d2nd - db > 1e-9  # ties excluded: then the coordinates are unique
        np.testing.assert_array_equal(U[clear], Ub[clear])


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_box_constrained_matches_brute_force(n):
    rng = np.random.default_rng(200 + n)
    for _ in range(4):
        Lt = _random_triangular(rng, n)
        lo = rng.integers(-3, 1, size=n)
        hi = lo + rng.integers(0, 4, size=n)
        X = rng.normal(size=(40, n)) * 4.0  # far outside the box too
        Ub, db, d2nd = _brute(Lt, X, 6 if n < 5 else 4, lo, hi)
        U, d2, exact = closest_coords(Lt, X, lo=lo, hi=hi)
        assert exact.all()
        assert np.all((U >= lo) & (U <= hi))
        np.testing.assert_allclose(d2, db, rtol=1e-10, atol=1e-12)
        clear = d2nd - db > 1e-9
        np.testing.assert_array_equal(U[clear], Ub[clear])


def test_box_per_point_bounds_and_one_sided():
    rng = np.random.default_rng(7)
    n, m = 3, 30
    Lt = _random_triangular(rng, n)
    lo = rng.integers(-2, 1, size=(m, n))
    hi = lo + rng.integers(0, 3, size=(m, n))
    X = rng.normal(size=(m, n)) * 3
    U, d2, ex = closest_coords(Lt, X, lo=lo, hi=hi)
    for i in range(m):
        _, db, _ = _brute(Lt, X[i:i + 1], 3, lo[i], hi[i])
        assert abs(d2[i] - db[0]) < 1e-10
    assert np.all((U >= lo) & (U <= hi))
    # one-sided: only an upper bound
    U1, d21, _ = closest_coords(Lt, X, hi=np.zeros(n, dtype=int))
    assert np.all(U1 <= 0)
    Z = np.array(list(itertools.product(range(-15, 1), repeat=n)))
    db1 = ((X[:, None, :] - (Z @ Lt)[None]) ** 2).sum(-1).min(1)
    assert np.all(U1 > -15)
    np.testing.assert_allclose(d21, db1, rtol=1e-10, atol=1e-12)


def test_unbounded_box_equals_exact():
    rng = np.random.default_rng(3)
    Lt = _random_triangular(rng, 5)
    X = rng.normal(size=(50, 5))
    U, d2, _ = closest_coords(Lt, X)
    U2, d22, _ = closest_coords(Lt, X, lo=np.full(5, -1000), hi=np.full(5, 1000))
    np.testing.assert_array_equal(U, U2)


def test_node_budget_returns_a_leaf_and_flags_inexact():
    rng = np.random.default_rng(4)
    n = 12
    B = rng.normal(size=(n, n))
    Lt = np.linalg.cholesky(B @ B.T)  # unreduced: the search needs many nodes
    X = rng.normal(size=(20, n)) * 5
    U, d2, ex = closest_coords(Lt, X)
    Ub, db, exb = closest_coords(Lt, X, max_nodes=1)  # just the first leaf: Babai nearest plane
    assert ex.all() and not exb.any()
    np.testing.assert_allclose(db, ((X - Ub @ Lt) ** 2).sum(1), rtol=1e-12)
    assert np.all(db >= d2 - 1e-12)
    assert np.any(db > d2 + 1e-9)
    # with a box and a budget, still a feasible leaf
    lo, hi = np.full(n, -1), np.full(n, 1)
    Uc, dc, exc = closest_coords(Lt, X, lo=lo, hi=hi, max_nodes=n)
    assert np.all((Uc >= lo) & (Uc <= hi))
    assert not exc.any()
    # a large budget completes and is exact
    Ue, de, exe = closest_coords(Lt, X, max_nodes=10**9)
    assert exe.all()
    np.testing.assert_allclose(de, d2)


def test_first_leaf_is_babai_nearest_plane():
    from latticeq.lattice.decode.babai import babai_nearest_plane

    rng = np.random.default_rng(5)
    n = 7
    Lt = _random_triangular(rng, n)
    X = rng.normal(size=(30, n)) * 3
    U, _, _ = closest_coords(Lt, X, max_nodes=1)
    # Babai processes basis vectors in Gram–Schmidt order; for a triangular Lt that is the same
    np.testing.assert_array_equal(U, babai_nearest_plane(Lt, X))


def test_threads_do_not_change_results():
    rng = np.random.default_rng(6)
    Lt = _random_triangular(rng, 6)
    X = rng.normal(size=(500, 6)) * 2
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        U1, d1, _ = closest_coords(Lt, X)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        U2, d2, _ = closest_coords(Lt, X)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(U1, U2)


def test_single_point_and_tie_rule():
    U, d2, ex = closest_coords(np.eye(2), np.array([0.4, 1.6]))
    assert U.tolist() == [0, 2] and bool(ex)
    # exact half-integers round half up in Z^n
    U, _, _ = closest_coords(np.eye(3), np.array([[0.5, -0.5, 2.5]]))
    assert U.tolist() == [[1, 0, 3]]


@njit(cache=True)
def _call_decode_one(Lt, X):
    n = Lt.shape[0]
    inv = 1.0 / np.diag(Lt)
    S, dist, ctr, iw = make_workspace(n)
    lo = np.full(n, -BOUND_NONE, dtype=np.int64)
    hi = np.full(n, BOUND_NONE, dtype=np.int64)
    U = np.zeros((X.shape[0], n), dtype=np.int64)
    D = np.zeros(X.shape[0])
    for i in range(X.shape[0]):
        d, ex, nodes = decode_one(Lt, inv, X[i], lo, hi, 0, S, dist, ctr, iw, U[i])
        D[i] = d
    return U, D


def test_decode_one_from_numba_matches_batch():
    rng = np.random.default_rng(8)
    Lt = _random_triangular(rng, 5)
    X = rng.normal(size=(25, 5))
    U, D = _call_decode_one(Lt, X)
    U2, D2, _ = closest_coords(Lt, X)
    np.testing.assert_array_equal(U, U2)
    np.testing.assert_allclose(D, D2)


def test_initial_radius_finds_the_same_point_or_reports_none_inside():
    """_decode_free with a finite starting radius: the closest point when it lies strictly inside
    (in fewer or as many nodes as from Babai's point), inf and untouched output when it does not."""
    rng = np.random.default_rng(9)
    n = 6
    Lt = _random_triangular(rng, n)
    X = rng.normal(size=(30, n))
    U, d2, _ = closest_coords(Lt, X)
    inv = 1.0 / np.diag(Lt)
    S, dist, ctr, iw = make_workspace(n)
    for x, u, d in zip(X, U, d2):
        ub = np.empty(n, dtype=np.int64)
        _, _, full_nodes = _decode_free(Lt, inv, x, 0, S, dist, ctr, iw, ub, np.inf)
        got, exact, nodes = _decode_free(Lt, inv, x, 0, S, dist, ctr, iw, ub, d * (1 + 1e-9))
        assert exact and got == pytest.approx(d, rel=1e-12) and nodes <= full_nodes
        np.testing.assert_array_equal(ub, u)
        ub[:] = 7
        got, _, _ = _decode_free(Lt, inv, x, 0, S, dist, ctr, iw, ub, d * (1 - 1e-6))
        assert got == np.inf and (ub == 7).all()


@pytest.mark.parametrize("kwargs, match", [
    (dict(Lt=np.array([[1.0, 1.0], [0.0, 1.0]])), "lower triangular"),
    (dict(Lt=np.array([[1.0, 0.0], [0.5, -1.0]])), "positive diagonal"),
    (dict(Lt=np.array([[1.0, 0.0], [np.nan, 1.0]])), "NaN"),
    (dict(Lt=np.ones((2, 3))), "square"),
    (dict(X=np.zeros((3, 3))), "shape"),
    (dict(X=np.array([[np.inf, 0.0]])), "NaN or infinite"),
    (dict(lo=np.array([0, 0, 0])), "lo must have shape"),
    (dict(lo=np.array([0.5, 0.0])), "integer"),
    (dict(lo=np.array([1, 1]), hi=np.array([0, 2])), "empty box"),
    (dict(max_nodes=-1), "max_nodes"),
    (dict(max_nodes=1.5), "max_nodes"),
])
def test_bad_input(kwargs, match):
    args = dict(Lt=np.eye(2), X=np.zeros((3, 2)))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        closest_coords(args.pop("Lt"), args.pop("X"), **args)


def test_short_vectors_match_brute_force():
    rng = np.random.default_rng(9)
    for n in (2, 3, 4):
        Lt = _random_triangular(rng, n)
        r2 = 3.0 * Lt[0, 0] ** 2
        U, norms = short_vectors(Lt, r2)
        Z = np.array(list(itertools.product(range(-8, 9), repeat=n)))
        N = ((Z @ Lt) ** 2).sum(1)
        keep = (N <= r2) & np.any(Z != 0, axis=1)
        assert len(U) == keep.sum()
        assert set(map(tuple, U)) == set(map(tuple, Z[keep]))
        np.testing.assert_allclose(np.sort(N[keep]), norms)
        assert np.all(np.diff(norms) >= 0)
        np.testing.assert_allclose(short_vectors(Lt, r2, coords=False), norms)


def test_short_vectors_e8_theta_and_limits():
    from latticeq.lattice import catalog

    B = catalog.get("E8").generator
    Lt = np.linalg.cholesky(B @ B.T)
    norms = short_vectors(Lt, 4.0, coords=False)
    # theta series of E8: 240 vectors of norm 2, 2160 of norm 4
    assert np.sum(np.isclose(norms, 2.0)) == 240
    assert np.sum(np.isclose(norms, 4.0)) == 2160
    with pytest.raises(ValueError, match="max_count"):
        short_vectors(Lt, 4.0, max_count=100)
    with pytest.raises(ValueError, match="radius2"):
        short_vectors(Lt, -1.0)
    with pytest.raises(ValueError, match="radius2"):
        short_vectors(Lt, "big")
