"""Babai rounding and nearest plane on general (non-triangular) bases."""

import numpy as np
import pytest

from latticeq.lattice.decode.babai import babai_nearest_plane, babai_rounding


def test_rounding_recovers_coordinates_and_is_rotation_invariant():
    rng = np.random.default_rng(0)
    n = 6
    B = rng.normal(size=(n, n)) + 3 * np.eye(n)
    U0 = rng.integers(-5, 6, size=(50, n))
    X = U0 @ B
    np.testing.assert_array_equal(babai_rounding(B, X), U0)
    np.testing.assert_array_equal(babai_nearest_plane(B, X), U0)
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    Xn = X + 1e-3 * rng.normal(size=X.shape)
    np.testing.assert_array_equal(babai_nearest_plane(B @ Q, Xn @ Q), babai_nearest_plane(B, Xn))


def test_nearest_plane_matches_explicit_gram_schmidt():
    rng = np.random.default_rng(1)
    n = 5
    B = rng.normal(size=(n, n))
    X = rng.normal(size=(40, n)) * 3
    # textbook Babai: b*_i Gram–Schmidt of the rows in order; for i = n-1..0 project the residual
    Bs = np.zeros_like(B)
    for i in range(n):
        v = B[i].copy()
        for j in range(i):
            v -= (B[i] @ Bs[j]) / (Bs[j] @ Bs[j]) * Bs[j]
        Bs[i] = v
    for x, u in zip(X, babai_nearest_plane(B, X)):
        r = x.copy()
        ref = np.zeros(n, dtype=int)
        for i in range(n - 1, -1, -1):
            c = (r @ Bs[i]) / (Bs[i] @ Bs[i])
            ref[i] = int(np.floor(c + 0.5))
            r = r - ref[i] * B[i]
        np.testing.assert_array_equal(u, ref)


def test_nearest_plane_error_in_fundamental_box_and_rounding_in_parallelepiped():
    rng = np.random.default_rng(2)
    n = 4
    B = rng.normal(size=(n, n))
    X = rng.normal(size=(200, n)) * 10
    Q, R = np.linalg.qr(B.T)
    E = (X - babai_nearest_plane(B, X) @ B) @ Q  # error in Gram–Schmidt coordinates
    assert np.all(np.abs(E) <= 0.5 * np.abs(np.diag(R)) + 1e-9)
    T = np.linalg.solve(B.T, (X - babai_rounding(B, X) @ B).T).T
    assert np.all(np.abs(T) <= 0.5 + 1e-9)


def test_rank_deficient_rectangular_basis():
    B = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    X = np.array([[0.4, 2.9, 7.0], [-1.6, -1.1, 0.0]])
    np.testing.assert_array_equal(babai_nearest_plane(B, X), [[0, 1], [-2, -1]])
    np.testing.assert_array_equal(babai_rounding(B, X), [[0, 1], [-2, -1]])
    assert babai_rounding(B, X[0]).shape == (2,)


@pytest.mark.parametrize("B, X, match", [
    (np.ones((3, 2)), np.zeros((1, 2)), "k×n"),
    (np.array([[1.0, 2.0], [2.0, 4.0]]), np.zeros((1, 2)), "rank deficient"),
    (np.array([[np.nan, 0.0], [0.0, 1.0]]), np.zeros((1, 2)), "NaN"),
    (np.eye(2), np.zeros((1, 3)), "shape"),
    (np.eye(2), np.array([[np.nan, 0.0]]), "NaN"),
])
def test_bad_input(B, X, match):
    for f in (babai_rounding, babai_nearest_plane):
        with pytest.raises(ValueError, match=match):
            f(B, X)
