"""NSM estimation: exact values within standard errors, seeds, the sphere bound, bad input."""

import math

import numpy as np
import pytest

from latticeq.design.nsm import estimate_nsm, sphere_bound
from latticeq.lattice import Lattice, catalog


def test_sphere_bound_known_values():
    assert sphere_bound(1) == pytest.approx(1 / 12)
    assert sphere_bound(2) == pytest.approx(1 / (4 * math.pi))
    assert sphere_bound(3) == pytest.approx(math.gamma(2.5) ** (2 / 3) / (5 * math.pi))
    # decreasing towards 1/(2πe)
    vals = [sphere_bound(n) for n in range(1, 65)]
    assert all(a > b for a, b in zip(vals, vals[1:]))
    assert vals[-1] > 1 / (2 * math.pi * math.e)
    with pytest.raises(ValueError, match="positive integer"):
        sphere_bound(0)


def test_integer_lattice_is_one_twelfth_in_any_basis():
    # Z^3 in a skewed basis: the estimate does not depend on the basis
    B = np.array([[1.0, 0, 0], [3.0, 1, 0], [-2.0, 5, 1]])
    r = estimate_nsm(Lattice(B), samples=40_000, seed=3, progress=False)
    assert abs(r.sigmas_from(1 / 12)) < 4
    assert r.samples == 40_000 and r.dim == 3
    np.testing.assert_allclose(r.tensor, np.eye(3) / 12, atol=0.004)


def test_seed_gives_same_result_and_target_stderr_stops_early():
    L = catalog.get("A2")
    a = estimate_nsm(L, samples=20_000, seed=7, progress=False)
    b = estimate_nsm(L, samples=20_000, seed=7, progress=False)
    assert a.nsm == b.nsm and a.stderr == b.stderr
    c = estimate_nsm(L, samples=1_000_000, seed=7, target_stderr=2e-4, batch=1000, progress=False)
    assert c.samples < 1_000_000 and c.stderr <= 2e-4


@pytest.mark.parametrize("name", ["A2", "A3*", "D4", "D5*", "E6*", "E7*"])
def test_catalog_nsm_within_four_standard_errors(name):
    L = catalog.get(name)
    r = estimate_nsm(L, samples=100_000, seed=11, progress=False)
    assert abs(r.sigmas_from(catalog.reference_nsm(name))) < 4, r


def test_e8_nsm_at_a_million_samples():
    r = estimate_nsm(catalog.get("E8"), samples=1_000_000, seed=0, progress=False)
    assert abs(r.sigmas_from(929 / 12960)) < 3, r
    assert r.tensor_deviation < 0.02


@pytest.mark.slow
def test_leech_nsm_at_a_million_samples():
    # Λ24 through its Golay-code decoder against the catalog's measured value (pooled over
    # 1.5e7 samples, 0.0657532 ± 1.6e-6); the classical 0.065771 (Conway & Sloane) is kept
    # beside it and lies far above this estimate.
    r = estimate_nsm(catalog.get("Leech"), samples=1_000_000, seed=0, progress=False)
    assert r.stderr < 1e-5
    ref = catalog.reference_nsm("Leech")
    assert abs(r.nsm - ref) < 3 * math.hypot(r.stderr, catalog.LEECH_NSM_MEASUREMENT["stderr"]), r
    assert catalog.CLASSICAL_NSM["LEECH"] - r.nsm > 2 * r.stderr, r
    assert r.tensor_deviation < 0.05


def test_leech_decoder_and_sphere_decoder_give_the_same_estimate():
    leech = catalog.get("Leech")
    plain = Lattice(leech.generator)  # no fast decoder: Schnorr–Euchner on the reduced basis
    a = estimate_nsm(leech, samples=3000, seed=4, progress=False)
    b = estimate_nsm(plain, samples=3000, seed=4, progress=False)
    assert a.nsm == pytest.approx(b.nsm, rel=1e-12)


def test_bad_input():
    L = catalog.get("Z2")
    with pytest.raises(ValueError, match="Lattice"):
        estimate_nsm(np.eye(2))
    with pytest.raises(ValueError, match="samples"):
        estimate_nsm(L, samples=10)
    with pytest.raises(ValueError, match="target_stderr"):
        estimate_nsm(L, samples=1000, target_stderr=-1.0)


def test_standard_error_matches_the_exact_variance():
    # Z^1: e is uniform on [-1/2, 1/2], Var(e²) = 1/80 − 1/144 = 1/180, so stderr = sqrt(1/(180 N))
    N = 200_000
    r = estimate_nsm(Lattice([[1.0]]), samples=N, seed=5, progress=False)
    assert r.stderr == pytest.approx(math.sqrt(1 / (180 * N)), rel=0.35)
    assert abs(r.sigmas_from(1 / 12)) < 4


def test_fpylll_decoder_gives_the_same_estimate_as_ours():
    # an independent exact decoder (fpylll's CVP) on the same points: the same closest points
    for name in ("D4", "E8"):
        L = catalog.get(name)
        a = estimate_nsm(L, samples=2000, seed=9, progress=False)
        b = estimate_nsm(L, samples=2000, seed=9, progress=False, decoder="fpylll")
        assert b.nsm == pytest.approx(a.nsm, rel=1e-9)
    with pytest.raises(ValueError, match="unknown decoder"):
        estimate_nsm(catalog.get("D4"), samples=200, decoder="magic")


def test_checkpointed_estimate_resumes_to_the_uninterrupted_result(tmp_path):
    from latticeq.design import nsm as nsm_mod

    L = catalog.get("D4")
    full = estimate_nsm(L, samples=6000, seed=3, batch=500, progress=False)
    state = tmp_path / "st.json"
    # run 5 of 12 batches, "crash", then resume from the checkpoint
    calls = {"n": 0}
    real = L.closest_point

    def flaky(X):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return real(X)

    L2 = Lattice(L.generator, name="D4")
    L2.closest_point = flaky
    with pytest.raises(KeyboardInterrupt):
        estimate_nsm(L2, samples=6000, seed=3, batch=500, progress=False, state=state, checkpoint_every=0)
    st = __import__("json").loads(state.read_text())
    assert st["done"] == 2500 and st["format"] == nsm_mod.STATE_FORMAT
    resumed = estimate_nsm(L, samples=6000, seed=3, batch=500, progress=False, state=state)
    assert resumed.nsm == full.nsm and resumed.stderr == full.stderr
    np.testing.assert_array_equal(resumed.tensor, full.tensor)
    # other settings against the same checkpoint: refused, naming the difference
    with pytest.raises(ValueError, match="samples: checkpoint 6000, now 7000"):
        estimate_nsm(L, samples=7000, seed=3, batch=500, progress=False, state=state)
    with pytest.raises(ValueError, match="generator_sha256"):
        estimate_nsm(catalog.get("Z4"), samples=6000, seed=3, batch=500, progress=False, state=state)
    state.write_text("{not json")
    with pytest.raises(ValueError, match="unreadable NSM checkpoint"):
        estimate_nsm(L, samples=6000, seed=3, batch=500, progress=False, state=state)


def test_reestimate_records_the_new_estimate_and_keeps_the_old(tmp_path):
    import json

    from latticeq.design.nsm import reestimate

    L = Lattice(catalog.get("A2").generator, name="mine")
    path = tmp_path / "n2-x.json"
    d = L.to_dict()
    d["provenance"] = {"nsm": 0.0802, "nsm_stderr": 1e-4, "nsm_samples": 1000}
    path.write_text(json.dumps(d))
    r = reestimate(path, samples=4000, seed=9, progress=False)
    out = json.loads(path.read_text())
    assert out["nsm"]["value"] == r.nsm and out["provenance"]["nsm_samples"] == 4000
    assert out["provenance"]["nsm_seed"] == 9
    assert out["provenance"]["previous_nsm"]["nsm"] == 0.0802
    assert abs(r.nsm - 5 / (36 * math.sqrt(3))) < 4 * r.stderr  # G(A2)
    np.testing.assert_array_equal(Lattice.from_dict(out).generator, L.generator)
    assert not list((tmp_path / ".nsm-state").glob("*.json"))  # checkpoint removed once recorded
    with pytest.raises(ValueError, match="no lattice file"):
        reestimate(tmp_path / "missing.json", samples=1000)


def test_fpylll_reestimate_is_recorded_as_a_crosscheck(tmp_path):
    import json

    from latticeq.design.nsm import reestimate

    path = tmp_path / "n4-x.json"
    d = Lattice(catalog.get("D4").generator, name="mine").to_dict()
    d["nsm"] = {"value": 0.0766, "stderr": 1e-4}
    d["provenance"] = {"nsm": 0.0766, "nsm_stderr": 1e-4, "nsm_samples": 1000}
    path.write_text(json.dumps(d))
    r = reestimate(path, samples=500, seed=4, decoder="fpylll", progress=False)
    out = json.loads(path.read_text())
    assert out["nsm"] == d["nsm"] and "previous_nsm" not in out["provenance"]  # own estimate kept
    cc = out["provenance"]["crosscheck"]
    assert cc["decoder"] == "fpylll" and cc["nsm"] == r.nsm and cc["samples"] == 500
    assert len(cc["generator_sha256"]) == 64


def test_pooled_estimate_is_the_sample_weighted_mean_with_its_standard_error():
    from latticeq.design.nsm import pooled_estimate

    assert pooled_estimate([(0.07, 1e-4, 1000)]) == (0.07, 1e-4)
    m, s = pooled_estimate([(0.07, 2e-4, 1000), (0.08, 1e-4, 3000)])
    assert m == pytest.approx(0.0775) and s == pytest.approx(math.sqrt((0.25 * 2e-4) ** 2 + (0.75 * 1e-4) ** 2))
    # equal halves: the standard error of two equal estimates falls by √2
    assert pooled_estimate([(0.07, 1e-4, 500), (0.07, 1e-4, 500)])[1] == pytest.approx(1e-4 / math.sqrt(2))
    with pytest.raises(ValueError, match="positive number of samples"):
        pooled_estimate([(0.07, 1e-4, 0)])


def test_reestimate_pools_estimates_on_fresh_seeds_and_refuses_what_cannot_be_pooled(tmp_path):
    import json

    from latticeq.design.nsm import estimate_nsm, reestimate

    L = Lattice(catalog.get("A2").generator, name="mine")
    path = tmp_path / "n2-x.json"
    d = L.to_dict()
    d["provenance"] = {"nsm": 0.0802, "nsm_stderr": 1e-4, "nsm_samples": 1000, "nsm_seed": None}
    path.write_text(json.dumps(d))
    # a search's own estimate (no recorded seed) is never pooled with new points
    with pytest.raises(ValueError, match="re-estimate it first"):
        reestimate(path, samples=3000, seed=9, pool=True, progress=False)
    assert json.loads(path.read_text()) == d
    a = reestimate(path, samples=3000, seed=9, progress=False)
    with pytest.raises(ValueError, match="already uses seed 9"):
        reestimate(path, samples=2000, seed=9, pool=True, progress=False)
    with pytest.raises(ValueError, match="cross-check"):
        reestimate(path, samples=2000, seed=10, pool=True, decoder="fpylll", progress=False)
    r = reestimate(path, samples=2000, seed=10, pool=True, progress=False)
    r3 = reestimate(path, samples=1000, seed=11, pool=True, progress=False)
    out = json.loads(path.read_text())
    prov = out["provenance"]
    # the pooled record is exactly the three independent estimates, weighted by their sizes
    b = estimate_nsm(L, samples=2000, seed=10, progress=False)
    c = estimate_nsm(L, samples=1000, seed=11, progress=False)
    assert r.samples == 5000 and r3.samples == prov["nsm_samples"] == 6000
    assert prov["nsm_seed"] == [9, 10, 11] and len(prov["nsm_parts"]) == 3
    assert [p["nsm"] for p in prov["nsm_parts"]] == [a.nsm, b.nsm, c.nsm]
    assert out["nsm"]["value"] == prov["nsm"] == r3.nsm == pytest.approx((3 * a.nsm + 2 * b.nsm + c.nsm) / 6)
    assert r3.stderr == pytest.approx(math.sqrt((a.stderr / 2) ** 2 + (b.stderr / 3) ** 2 + (c.stderr / 6) ** 2))
    assert r3.stderr < a.stderr
    assert prov["nsm_estimator"].startswith("pooled ")
    assert abs(r3.nsm - 5 / (36 * math.sqrt(3))) < 4 * r3.stderr  # G(A2)
    # a plain re-estimate replaces the pooled record (kept as the previous estimate)
    reestimate(path, samples=1000, seed=12, progress=False)
    prov = json.loads(path.read_text())["provenance"]
    assert "nsm_parts" not in prov and prov["previous_nsm"]["nsm_seed"] == [9, 10, 11]
    # parts made on another generator are refused
    reestimate(path, samples=1000, seed=13, pool=True, progress=False)
    d = json.loads(path.read_text())
    d["provenance"]["nsm_parts"][0]["generator_sha256"] = "0" * 64
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="generator changed"):
        reestimate(path, samples=1000, seed=14, pool=True, progress=False)
