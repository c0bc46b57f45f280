"""Catalog: every lattice identified by volume, minimum norm and kissing number; names; reference NSMs."""

import math

import numpy as np
import pytest

from latticeq.lattice import catalog

# name: (dim, volume, minimum norm, kissing number) in the catalog's scaling
KNOWN = {
    "Z5": (5, 1.0, 1.0, 10),
    "A2": (2, math.sqrt(3), 2.0, 6),
    "A3": (3, 2.0, 2.0, 12),
    "A5": (5, math.sqrt(6), 2.0, 30),
    "A2*": (2, 1 / math.sqrt(3), 2 / 3, 6),
    "A3*": (3, 0.5, 0.75, 8),
    "D3": (3, 2.0, 2.0, 12),
    "D4": (4, 2.0, 2.0, 24),
    "D5": (5, 2.0, 2.0, 40),
    "D4*": (4, 0.5, 1.0, 24),
    "D5*": (5, 0.5, 1.0, 10),
    "D6+": (6, 1.0, 1.5, 32),
    "D8+": (8, 1.0, 2.0, 240),
    "E6": (6, math.sqrt(3), 2.0, 72),
    "E6*": (6, 1 / math.sqrt(3), 4 / 3, 54),
    "E7": (7, math.sqrt(2), 2.0, 126),
    "E7*": (7, 1 / math.sqrt(2), 1.5, 56),
    "E8": (8, 1.0, 2.0, 240),
    "K12": (12, 27.0, 4.0, 756),
    "Lambda15": (15, math.sqrt(512), 4.0, 2340),
    "Lambda15*": (15, 1 / math.sqrt(512), 1.5, 280),
    "BW16": (16, 16.0, 4.0, 4320),
}


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_invariants(name):
    dim, vol, mn, kiss = KNOWN[name]
    L = catalog.get(name)
    assert L.dim == dim
    assert L.volume == pytest.approx(vol, rel=1e-9)
    assert L.minimum_norm() == pytest.approx(mn, rel=1e-9)
    assert L.kissing_number() == kiss


def test_leech():
    L = catalog.get("Leech")
    assert L.dim == 24
    assert L.volume == pytest.approx(1.0, rel=1e-9)
    assert L.minimum_norm() == pytest.approx(4.0, rel=1e-9)
    assert L.kissing_number() == 196560


def test_leech_quick():
    from latticeq.lattice.decode.sphere import short_vectors

    L = catalog.get("Leech")
    assert L.volume == pytest.approx(1.0, rel=1e-9)
    G = L.gram
    assert np.allclose(G, np.round(G)) and np.all(np.round(np.diag(G)) % 2 == 0)  # even unimodular
    Lt = np.linalg.cholesky(G)
    assert len(short_vectors(Lt, 3.9, coords=False)) == 0  # no roots: minimum norm 4


def test_aliases_and_case():
    for a in ("lambda24", "L24", "LEECH"):
        assert catalog.get(a).name == "Leech"
    for a in ("lambda16", "L16", "barnes-wall", "bw16"):
        assert catalog.get(a).name == "BW16"
    assert catalog.get("e8").name == "E8"
    assert catalog.get("a3*").is_similar(catalog.get("D3*"))
    assert catalog.get("D3").is_similar(catalog.get("A3"))
    assert catalog.get("D8+").is_similar(catalog.get("E8"))
    assert catalog.get("E6*").is_similar(catalog.get("E6").dual())
    assert catalog.get("E7*").is_similar(catalog.get("E7").dual())
    assert catalog.get("D5*").is_similar(catalog.get("D5").dual())
    assert catalog.get("A4*").is_similar(catalog.get("A4").dual())


def test_decoders_attached():
    for name in ("Z3", "A4", "A4*", "D6", "D6*", "D6+", "E6", "E6*", "E7", "E7*", "E8"):
        assert catalog.get(name).decoder is not None, name
    assert catalog.get("K12").decoder is None
    assert catalog.get("BW16").decoder is not None
    assert catalog.get("Leech").decoder is not None


def test_names_all_resolve():
    for name in catalog.names():
        L = catalog.get(name)
        assert L.dim >= 1


@pytest.mark.parametrize("bad, match", [
    ("E9", "E-family"),
    ("Q7", "known families"),
    ("D3+", "even n"),
    ("Z0", "n >= 1"),
    ("A0", "n >= 1"),
    ("D1", "n >= 2"),
    ("Z3*", "Z"),
    ("", "non-empty"),
    (None, "non-empty"),
    ("D100000", "limit"),
    ("E1,2+", "2 <= m"),
])
def test_unknown_names(bad, match):
    with pytest.raises(ValueError, match=match):
        catalog.get(bad)


def test_reference_nsm_values():
    r = catalog.reference_nsm
    assert r("Z7") == pytest.approx(1 / 12)
    assert r("A2") == pytest.approx(0.0801875, abs=1e-7)
    assert r("A2*") == r("A2")
    assert r("A3*") == pytest.approx(0.0785433, abs=1e-7)
    assert r("D3*") == r("A3*")
    assert r("A3") == pytest.approx(0.0787451, abs=1e-7)  # = D3, (n+1)^(-1/n)(1/12 + 1/(6(n+1)))
    assert r("D3") == r("A3")
    assert r("D4") == pytest.approx(0.0766032, abs=1e-7)
    assert r("D5") == pytest.approx(0.0757858, abs=1e-7)
    assert r("D5*") == pytest.approx(0.0756254, abs=1e-7)
    assert r("E6*") == pytest.approx(0.0742437, abs=1e-7)
    assert r("E7*") == pytest.approx(0.0731165, abs=1e-7)
    assert r("E8") == pytest.approx(0.0716821, abs=1e-7)
    assert r("K12") == pytest.approx(0.0700956)
    assert r("BW16") == pytest.approx(0.06830)
    assert r("Lambda15*") == pytest.approx(0.068872)
    assert r("Lambda24") == pytest.approx(0.0657532)  # measured; classical value kept apart
    assert catalog.CLASSICAL_NSM["LEECH"] == pytest.approx(0.065771)
    assert r("A1") == pytest.approx(1 / 12)
    assert r("E7") is None
    with pytest.raises(ValueError, match="known families"):
        r("nonsense")


def test_lambda15_star_is_the_dual_of_lambda15_and_a_section_of_lambda16():
    L15, D = catalog.get("L15").generator, catalog.get("Lambda15*").generator
    assert np.allclose(D @ L15.T, np.round(D @ L15.T), atol=1e-12)  # D ⊂ Λ15*
    assert abs(np.linalg.det(D) * np.linalg.det(L15)) == pytest.approx(1.0)  # and the whole of it
    # Λ15 sits in Λ16 (whose integer-coordinate form is √2·Λ16) as the vectors with x₀ = 0
    bw = catalog.get("BW16").generator * math.sqrt(2)
    emb = np.hstack([np.zeros((15, 1)), L15 * math.sqrt(2)])
    coeffs = np.linalg.solve(bw.T, emb.T)
    assert np.allclose(coeffs, np.round(coeffs), atol=1e-9)
    assert catalog.get("lambda15*").name == "Lambda15*" and catalog.get("L15").name == "Lambda15"


def test_lambda15_star_reference_nsm_against_monte_carlo():
    """The published Λ15* value (Agrell, Pook-Kolb & Allen) against our estimate with the sphere
    decoder."""
    from latticeq.design.nsm import estimate_nsm

    res = estimate_nsm(catalog.get("Lambda15*"), samples=100_000, seed=3, progress=False)
    assert abs(res.nsm - catalog.reference_nsm("L15*")) < 4 * res.stderr
    assert catalog.reference_nsm("Lambda15") is None


def _lyu_paper_generator(m):
    """𝓔ₘ,₂⁺ as Lyu et al.'s published recipe builds it: complex basis columns over Z[w], w = e^{iπ/3},
    and the real generator [[Re B, Re(wB)], [Im B, Im(wB)]] (columns = basis vectors), here as rows
    with coordinates ordered (Re z₁, Im z₁, …)."""
    w = complex(0.5, math.sqrt(3) / 2)
    Bc = np.eye(m, dtype=complex)
    Bc[m - 1, :] = w
    Bc[m - 1, m - 1] = 1 + w
    Bc[:, 0] = w
    Bc[m - 1, 0] = m + w
    Bc[:, 0] /= 2
    cols = np.hstack([Bc, w * Bc])
    return np.stack([cols.T.real, cols.T.imag], axis=-1).reshape(2 * m, 2 * m)


@pytest.mark.parametrize("m", [2, 3, 7, 9, 11])
def test_lyu_checkerboards_are_the_published_lattices(m):
    """E{m},2+ is the lattice of Lyu et al.'s recipe (a unimodular change of basis away), of
    determinant 3 (√3/2)^m / 4: 𝓔ᵐ's (√3/2)^m, index N(1 + w) = 3 for 𝓔ₘ, then halved in two
    complex directions by the glue (w, …, w, m + w)/2."""
    L = catalog.get(f"e{m},2+")
    assert L.name == f"E{m},2+" and L.dim == 2 * m
    assert L.volume == pytest.approx(3 * (math.sqrt(3) / 2) ** m / 4, rel=1e-12)
    U = _lyu_paper_generator(m) @ np.linalg.inv(L.generator)
    assert np.allclose(U, np.round(U), atol=1e-9)
    assert abs(np.linalg.det(np.round(U))) == pytest.approx(1.0)


def test_lyu_e72_reference_nsm_against_monte_carlo():
    """The published 14-dimensional value of 𝓔₇,₂⁺ (0.06952) against our estimate."""
    from latticeq.design.nsm import estimate_nsm

    res = estimate_nsm(catalog.get("E7,2+"), samples=100_000, seed=4, progress=False)
    assert abs(res.nsm - catalog.reference_nsm("E7,2+")) < 4 * res.stderr + 5e-6  # published to 5 digits


@pytest.mark.parametrize("name", ["A4", "D6", "E8"])
def test_nsm_closed_forms_against_monte_carlo(name):
    """Closed forms (A_n, D_n) and E8's exact value agree with a Monte Carlo estimate via the decoder."""
    L = catalog.get(name)
    n = L.dim
    rng = np.random.default_rng(0)
    m = 200_000
    X = rng.uniform(size=(m, n)) @ L.generator
    E = X - L.decoder(X)
    e2 = (E ** 2).sum(1) / (n * L.volume ** (2.0 / n))
    G, se = e2.mean(), e2.std() / math.sqrt(m)
    assert abs(G - catalog.reference_nsm(name)) < 4 * se


def _section(B, zero_cols, K=10**6):
    """Integer rows spanning {x in the row lattice of B : x[zero_cols] = 0}, and a completing basis.

    LLL on the rows of B with the zero_cols columns scaled by K puts a basis of that section (a
    primitive sublattice) first; the rows after it complete it to a basis of the whole lattice."""
    E = np.array(B, dtype=object)
    E[:, zero_cols] *= K
    R = catalog._int_basis(E)  # fpylll LLL of the scaled rows
    assert len(R) == len(B) and not any(v % K for v in R[:, zero_cols].ravel())
    R[:, zero_cols] //= K
    on = [i for i in range(len(R)) if not any(R[i, zero_cols])]
    assert on == list(range(len(on)))  # the section first, as LLL with a large K guarantees
    return R[: len(on)].astype(np.int64), R[len(on):].astype(np.int64)


def test_leech_is_lambda16_glued_to_e8_on_an_octad():
    """Λ24 lies in the triangular family of BW16 × E8 (README, n = 24): its vectors vanishing on an
    octad form Λ16 (volume 16, kissing number 4320), those on the octad √2E8 (volume 16, 240), and
    Λ24's projection onto the octad is E8/√2 (volume 1/16); so a basis of Λ24 is block-triangular
    with Λ16 and a scaled E8 on the diagonal, the 2⁸ glue classes below."""
    from latticeq.lattice.lattice import Lattice

    code = catalog._golay_code()
    words = (np.array([[(w >> i) & 1 for i in range(12)] for w in range(4096)]) @ code) % 2
    octad = np.flatnonzero(words[np.flatnonzero(words.sum(1) == 8)[0]])
    rest = np.setdiff1d(np.arange(24), octad)
    B = catalog._int_basis(catalog._leech_generators())  # √8·Λ24, integer rows
    off, glue = _section(B, octad)  # vectors vanishing on the octad, then 8 completing rows
    on, _ = _section(B, rest)
    assert off.shape == (16, 24) and on.shape == (8, 24)
    lam16 = Lattice(off[:, rest] / math.sqrt(8.0))
    e8 = Lattice(on[:, octad] / math.sqrt(8.0))
    proj = Lattice(glue[:, octad] / math.sqrt(8.0))  # the diagonal block below Λ16
    assert lam16.volume == pytest.approx(16.0) and lam16.minimum_norm() == pytest.approx(4.0)
    assert lam16.kissing_number() == 4320
    assert e8.volume == pytest.approx(16.0) and e8.minimum_norm() == pytest.approx(4.0)
    assert e8.kissing_number() == 240
    assert proj.volume == pytest.approx(1 / 16) and proj.minimum_norm() == pytest.approx(1.0)
    assert proj.kissing_number() == 240
    # [Λ24 : Λ16 ⊕ √2E8] = 16·16 / 1 = 2⁸, and the block-triangular basis generates all of Λ24
    assert lam16.volume * e8.volume == pytest.approx(2**8)
    full = np.vstack([off, glue])
    assert abs(round(np.linalg.det(full.astype(float)))) == abs(round(np.linalg.det(B.astype(float))))
