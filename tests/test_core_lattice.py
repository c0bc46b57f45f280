"""The Lattice object: validation, invariants, forms, persistence, closest point against brute force."""

import itertools
import json

import numpy as np
import pytest

from latticeq.lattice import Lattice, as_lattice, load
from latticeq.lattice.reduce import lll

HEX = [[1.0, 0.0], [0.5, np.sqrt(3) / 2]]


@pytest.mark.parametrize("bad, match", [
    ([[1.0, 2.0, 3.0]], "square"),
    ([1.0, 2.0], "2-D"),
    ([[1.0, 2.0], [2.0, 4.0]], "singular"),
    ([[1.0, 0.0], [0.0, 1e-14]], "numerically singular"),
    ([[np.nan, 0.0], [0.0, 1.0]], "NaN"),
    ([[np.inf, 0.0], [0.0, 1.0]], "infinite"),
    ([["a", "b"], ["c", "d"]], "real"),
    ([[1.0, 0.0], [1.0]], "n×n"),
    ([[1 + 1j, 0], [0, 1]], "real"),
    (np.zeros((0, 0)), "empty"),
])
def test_bad_generators_are_rejected(bad, match):
    with pytest.raises(ValueError, match=match):
        Lattice(bad)


def test_generator_is_read_only_and_float64():
    L = Lattice([[2, 0], [1, 3]])
    assert L.generator.dtype == np.float64
    with pytest.raises(ValueError):
        L.generator[0, 0] = 5.0


def test_volume_gram_determinant():
    L = Lattice(HEX)
    assert L.volume == pytest.approx(np.sqrt(3) / 2)
    assert L.determinant == pytest.approx(0.75)
    np.testing.assert_allclose(L.gram, [[1.0, 0.5], [0.5, 1.0]])
    assert L.normalized().volume == pytest.approx(1.0)
    assert L.scaled(3.0).volume == pytest.approx(9 * np.sqrt(3) / 2)
    with pytest.raises(ValueError, match="positive"):
        L.scaled(-1.0)


def test_triangular_form_is_canonical():
    rng = np.random.default_rng(1)
    B = rng.normal(size=(6, 6))
    T = Lattice(B).triangular()
    G = T.generator
    assert np.allclose(np.triu(G, 1), 0.0)
    assert np.all(np.diag(G) > 0)
    np.testing.assert_allclose(T.gram, B @ B.T, atol=1e-10)
    # rotating the input does not change the canonical form
    Q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    np.testing.assert_allclose(Lattice(B @ Q).triangular().generator, G, atol=1e-9)


@pytest.mark.parametrize("use_fpylll", [True, False])
def test_lll_is_unimodular_and_reduces(use_fpylll):
    rng = np.random.default_rng(2)
    B = np.tril(rng.normal(size=(8, 8))) + 3 * np.eye(8)
    B[7] += 40 * B[0] + 17 * B[3]  # a long, badly reduced vector
    R, U = lll(B, use_fpylll=use_fpylll)
    assert abs(round(np.linalg.det(U))) == 1
    np.testing.assert_allclose(U @ B, R, atol=1e-9)
    assert np.linalg.norm(R, axis=1).max() < np.linalg.norm(B, axis=1).max()
    with pytest.raises(ValueError, match="delta"):
        lll(B, delta=0.2)


def test_dual_of_dual_and_dual_gram():
    rng = np.random.default_rng(3)
    L = Lattice(rng.normal(size=(5, 5)))
    D = L.dual()
    np.testing.assert_allclose(D.gram, np.linalg.inv(L.gram), atol=1e-9)
    np.testing.assert_allclose(D.dual().generator, L.generator, atol=1e-9)
    assert L.volume * D.volume == pytest.approx(1.0)


def test_product_is_block_diagonal_with_scales():
    A = Lattice(HEX, name="hex")
    Z = Lattice([[1.0]], name="Z")
    P = Lattice.product([A, Z], scales=[2.0, 3.0])
    assert P.dim == 3
    assert P.volume == pytest.approx(4 * np.sqrt(3) / 2 * 3)
    np.testing.assert_allclose(P.generator[:2, 2], 0.0)
    with pytest.raises(ValueError, match="scales"):
        Lattice.product([A, Z], scales=[1.0])
    with pytest.raises(ValueError, match="at least one"):
        Lattice.product([])


def test_json_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(4)
    L = Lattice(rng.normal(size=(7, 7)), name="random7", provenance={"seed": 4}, nsm=(0.0801, 1e-5))
    path = L.to_json(tmp_path / "sub" / "l.json")
    M = Lattice.from_json(path)
    assert np.array_equal(M.generator, L.generator)  # bit for bit
    assert M.name == "random7" and M.provenance == {"seed": 4} and M.nsm == (0.0801, 1e-5)
    assert not list(path.parent.glob("*.tmp"))
    with pytest.raises(FileExistsError):
        L.to_json(path, overwrite=False)
    assert np.array_equal(load(str(path)).generator, L.generator)
    # as_lattice: a Lattice as it is; a path (str or Path) or catalog name loaded; a matrix wrapped
    assert as_lattice(L) is L
    for spec in (path, str(path)):
        assert np.array_equal(as_lattice(spec).generator, L.generator)
    assert as_lattice("E8").name == load("E8").name
    assert np.array_equal(as_lattice(L.generator.tolist()).generator, L.generator)


def test_json_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        Lattice.from_json(tmp_path / "missing.json")
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        Lattice.from_json(p)
    p.write_text(json.dumps({"foo": 1}))
    with pytest.raises(ValueError, match="generator"):
        Lattice.from_json(p)


def _brute_force_closest(B, x, r=3):
    n = B.shape[0]
    best, best_d = None, np.inf
    for u in itertools.product(range(-r, r + 1), repeat=n):
        p = np.array(u, float) @ B
        d = np.sum((x - p) ** 2)
        if d < best_d:
            best, best_d = p, d
    return best, best_d


@pytest.mark.parametrize("n", [2, 3, 4])
def test_closest_point_matches_brute_force(n):
    rng = np.random.default_rng(10 + n)
    B, _ = lll(rng.normal(size=(n, n)))
    L = Lattice(B)
    X = rng.random((40, n)) @ B
    P = L.closest_point(X)
    for x, p in zip(X, P):
        _, d = _brute_force_closest(B, x)
        assert np.sum((x - p) ** 2) == pytest.approx(d, abs=1e-12)
    U = L.closest_coords(X)
    assert U.dtype == np.int64
    np.testing.assert_allclose(U @ B, P, atol=1e-9)
    # a single point gives a single answer; lattice points are their own closest points
    np.testing.assert_allclose(L.closest_point(P[0]), P[0], atol=1e-12)


def test_closest_point_bad_points():
    L = Lattice(HEX)
    with pytest.raises(ValueError, match=r"shape \(m, 2\)"):
        L.closest_point(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        L.closest_point([[np.nan, 0.0]])


def test_similarity_up_to_rotation_and_scale():
    rng = np.random.default_rng(5)
    L = Lattice(rng.normal(size=(4, 4)))
    Q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    U = np.array([[1, 2, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 1]])  # unimodular
    M = Lattice(2.5 * (U @ L.generator) @ Q)
    assert L.is_similar(M)
    assert not L.is_similar(Lattice(np.eye(4)))
    assert not L.is_similar(Lattice(np.eye(3)))
    assert Lattice(HEX).is_similar(Lattice([[2.0, 0.0], [-1.0, np.sqrt(3)]]))
