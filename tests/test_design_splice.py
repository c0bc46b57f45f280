import itertools
import math

import numpy as np
import pytest

from latticeq.design.splice import best_splice, catalog_table, optimal_scales, product_nsm, splice
from latticeq.design.search import estimate_nsm_mc


@pytest.mark.parametrize("n, comps, nsm", [
    (13, ("K12", "Z1"), 0.0710346),
    (17, ("BW16", "Z1"), 0.0691040),
    (20, ("BW16", "D4"), 0.0698853),
    (24, ("Leech",), 0.0657532),
    (8, ("E8", "D8+"), 929 / 12960),
])
def test_best_splice_issue_examples(n, comps, nsm):
    sp = best_splice(n)
    if n == 8:  # D8+ is E8: either name may be chosen
        assert sp.components[0] in comps
    else:
        assert sp.components == comps
    assert sp.dim == n
    assert sp.nsm == pytest.approx(nsm, abs=6e-8)


def test_dp_equals_brute_force_over_compositions():
    table = {"a": (1, 0.0833), "b": (2, 0.0802), "c": (3, 0.0785), "d": (4, 0.0766), "e": (5, 0.0756)}
    best_of = {d: g for d, g in table.values()}
    for n in range(1, 12):
        brute = math.inf
        for k in range(1, n + 1):
            for comp in itertools.product(range(1, 6), repeat=k):
                if sum(comp) == n:
                    brute = min(brute, product_nsm([best_of[d] for d in comp], comp))
        assert best_splice(n, table).nsm == pytest.approx(brute, rel=1e-12)


def _product_nsm_any_scales(nsms, dims, vols, scales):
    nsms, dims, vols, scales = map(np.asarray, (nsms, dims, vols, scales))
    n = dims.sum()
    second = np.sum(dims * nsms * scales**2 * vols ** (2 / dims)) / n
    vol = np.prod(scales**dims * vols)
    return second / vol ** (2 / n)


def test_optimal_scales_minimize_product_nsm():
    nsms, dims, vols = [0.0700956, 1 / 12, 0.0766], [12, 1, 4], [3.0, 1.0, 2.0]
    s = optimal_scales(nsms, dims, vols)
    assert np.prod(s ** np.array(dims) * np.array(vols)) == pytest.approx(1.0)
    g_opt = _product_nsm_any_scales(nsms, dims, vols, s)
    assert g_opt == pytest.approx(product_nsm(nsms, dims), rel=1e-12)
    rng = np.random.default_rng(0)
    for _ in range(50):
        assert _product_nsm_any_scales(nsms, dims, vols, s * np.exp(0.1 * rng.standard_normal(3))) > g_opt


def test_spliced_lattice_has_predicted_nsm():
    L = splice(["D4", "Z1"], n=5)
    assert L.dim == 5 and L.volume == pytest.approx(1.0)
    g, se = estimate_nsm_mc(L.generator, 200_000, seed=1)
    assert abs(g - L.provenance["nsm"]) < 4 * se


def test_splice_carries_the_standard_error_of_estimated_components():
    from latticeq.lattice import Lattice, catalog
    assert splice(["D4", "Z1"]).nsm[1] == 0.0  # catalog values are exact
    d4 = catalog.get("D4")
    g, s = 0.0766, 2e-5
    est = Lattice(d4.generator, name="d4-estimate", nsm=(g, s))
    L = splice([est, "Z1"])
    # G = g^(4/5) (1/12)^(1/5): dG/G = (4/5) dg/g
    assert L.provenance["nsm"] == pytest.approx(g ** 0.8 * (1 / 12) ** 0.2)
    assert L.nsm[1] == pytest.approx(L.provenance["nsm"] * 0.8 * s / g)
    assert L.provenance["nsm_stderr"] == L.nsm[1]
    assert splice([est]).nsm == pytest.approx((g, s))  # one component: its own estimate


def test_splice_bad_input():
    with pytest.raises(ValueError, match="sum to 5, not n=6"):
        splice(["D4", "Z1"], n=6)
    with pytest.raises(ValueError, match="unknown lattice"):
        splice(["Nope7"])
    with pytest.raises(ValueError, match="1..64"):
        best_splice(0)
    with pytest.raises(ValueError, match="1..64"):
        best_splice(65)
    with pytest.raises(ValueError, match="same length"):
        product_nsm([0.08], [1, 2])


def test_catalog_table_has_the_splice_building_blocks():
    t = catalog_table()
    dims = {d for d, _ in t.values()}
    assert {1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 24} <= dims
