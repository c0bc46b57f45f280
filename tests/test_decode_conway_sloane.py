"""Conway–Sloane decoders: against brute force and against the sphere decoder on catalog lattices."""

import itertools
import zlib

import numpy as np
import pytest

from latticeq.lattice import catalog
from latticeq.lattice.decode.conway_sloane import (
    CosetDecoder,
    an_glue,
    decode_an,
    decode_bw16,
    decode_dn,
    decode_e8,
    decode_leech,
    decode_zn,
)
from latticeq.lattice.decode.sphere import closest_coords


def _assert_closest(L, X, P):
    """The decoded points P are points of L, each as close to its target in X as the exact
    sphere decoder's closest point (on L's triangular form)."""
    C = np.linalg.solve(L.generator.T, P.T).T
    assert np.allclose(C, np.round(C), atol=1e-8)
    Q, R = np.linalg.qr(L.generator.T)
    s = np.sign(np.diag(R))
    Lt = np.ascontiguousarray((R * s[:, None]).T)
    _, d2, ex = closest_coords(Lt, X @ (Q * s))
    assert ex.all()
    np.testing.assert_allclose(((X - P) ** 2).sum(1), d2, rtol=1e-9, atol=1e-9)


def _brute_members(members, X):
    D = ((X[:, None, :] - members[None]) ** 2).sum(-1)
    return members[np.argmin(D, axis=1)], D.min(1)


def test_zn_and_dn_brute_force():
    rng = np.random.default_rng(0)
    n = 4
    Z = np.array(list(itertools.product(range(-4, 5), repeat=n)), dtype=float)
    Dn = Z[Z.sum(1) % 2 == 0]
    X = rng.uniform(-2.5, 2.5, size=(300, n))
    _, d = _brute_members(Z, X)
    np.testing.assert_allclose(((X - decode_zn(X)) ** 2).sum(1), d)
    P = decode_dn(X)
    assert np.all(P.sum(1) % 2 == 0)
    _, d = _brute_members(Dn, X)
    np.testing.assert_allclose(((X - P) ** 2).sum(1), d, atol=1e-12)


def test_an_brute_force_and_projection():
    rng = np.random.default_rng(1)
    n = 3
    Z = np.array(list(itertools.product(range(-3, 4), repeat=n + 1)), dtype=float)
    An = Z[Z.sum(1) == 0]
    X = rng.uniform(-2, 2, size=(300, n + 1))
    X = X - X.mean(1, keepdims=True)
    P = decode_an(X)
    assert np.all(P.sum(1) == 0)
    _, d = _brute_members(An, X)
    np.testing.assert_allclose(((X - P) ** 2).sum(1), d, atol=1e-12)
    # off-hyperplane targets are projected first
    np.testing.assert_array_equal(decode_an(X + 0.37), P)


def test_e8_brute_force_and_membership():
    rng = np.random.default_rng(2)
    X = rng.uniform(-0.5, 0.5, size=(300, 8))  # |x| <= sqrt(2), covering radius 1: Q(x) has norm <= 5.83
    P = decode_e8(X)
    twice = 2 * P
    assert np.allclose(twice, np.round(twice))
    integral = np.all(np.isclose(P, np.round(P)), axis=1)
    half = np.all(np.isclose(P - 0.5, np.round(P - 0.5)), axis=1)
    assert np.all(integral | half)
    assert np.allclose(np.round(P.sum(1)) % 2, 0)
    # brute force over the points of D8 ∪ (D8 + ½) of norm <= 6
    Z = np.array(list(itertools.product(range(-2, 3), repeat=8)), dtype=float)
    D8 = Z[Z.sum(1) % 2 == 0]
    H = np.array(list(itertools.product([-1.5, -0.5, 0.5, 1.5], repeat=8)))
    H = H[np.isclose(H.sum(1) % 2, 0)]
    E8 = np.concatenate([D8, H])
    E8 = E8[(E8 ** 2).sum(1) <= 6.0]
    _, d = _brute_members(E8, X)
    np.testing.assert_allclose(((X - P) ** 2).sum(1), d, atol=1e-12)
    with pytest.raises(ValueError, match="8 coordinates"):
        decode_e8(np.zeros((1, 7)))


def test_an_glue_vectors():
    for n in (2, 3, 7):
        for i in range(n + 1):
            g = an_glue(n, i)
            assert sum(g) == 0 and len(g) == n + 1
            assert abs(sum(float(v) ** 2 for v in g) - i * (n + 1 - i) / (n + 1)) < 1e-12


NAMES = ["Z3", "A1", "A2", "A4", "A2*", "A3*", "A6*", "D2", "D3", "D4", "D5", "D4*", "D5*", "D7*",
         "D6+", "D10+", "E6", "E6*", "E7", "E7*", "E8"]


@pytest.mark.parametrize("name", NAMES)
def test_catalog_decoders_agree_with_sphere_decoder(name):
    L = catalog.get(name)
    assert L.decoder is not None
    rng = np.random.default_rng(zlib.crc32(name.encode()))  # str hash() is salted per process
    X = rng.normal(size=(500, L.dim)) * 2
    _assert_closest(L, X, L.decoder(X))


def test_coset_decoder_single_point_and_bad_base():
    dec = CosetDecoder("Z", np.array([[0.0, 0.0], [0.5, 0.5]]))
    np.testing.assert_allclose(dec(np.array([0.4, 0.6])), [0.5, 0.5])
    with pytest.raises(ValueError, match="base"):
        CosetDecoder("E", np.zeros((1, 2)))


def test_leech_decoder_agrees_with_sphere_decoder():
    L = catalog.get("Leech")
    rng = np.random.default_rng(24)
    # near the origin, at the scale of the lattice and far out: both cosets (m = 0, 1) and the
    # parity move of the second pass all decide some of these
    X = np.vstack([rng.uniform(-2, 2, size=(60, 24)), 0.2 * rng.normal(size=(60, 24)),
                   5 * rng.normal(size=(60, 24))])
    _assert_closest(L, X, decode_leech(X))
    # lattice points decode to themselves, also after a small perturbation
    U = rng.integers(-2, 3, size=(20, 24))
    V = U @ L.generator
    np.testing.assert_allclose(decode_leech(V + 0.05 * rng.normal(size=V.shape)), V, atol=1e-9)
    with pytest.raises(ValueError, match="24 coordinates"):
        decode_leech(np.zeros((1, 23)))


def test_bw16_decoder_agrees_with_sphere_decoder():
    L = catalog.get("BW16")
    rng = np.random.default_rng(16)
    X = rng.uniform(size=(2000, 16)) @ L.generator * 3
    _assert_closest(L, X, decode_bw16(X))
    with pytest.raises(ValueError, match="16 coordinates"):
        decode_bw16(np.zeros((1, 15)))
