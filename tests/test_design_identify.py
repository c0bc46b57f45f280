import numpy as np
import pytest

from latticeq.design.identify import (compare, identify, kissing_number, plot_theta_images, same_theta_shells,
                                      theta_image)
from latticeq.lattice import Lattice, catalog


def _disguise(L, seed, noise=0.0, scale=1.7):
    """Rotate, rescale, change basis, optionally perturb: the same lattice in another form."""
    rng = np.random.default_rng(seed)
    n = L.dim
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    U = np.eye(n, dtype=int) + np.tril(rng.integers(-1, 2, (n, n)), -1)
    B = U @ L.generator @ Q * scale
    return Lattice(B + noise * rng.standard_normal((n, n)))


@pytest.mark.parametrize("name, kiss", [("Z2", 4), ("A2", 6), ("D4", 24), ("E8", 240)])
def test_kissing_numbers(name, kiss):
    assert kissing_number(catalog.get(name), rtol=0) == kiss
    assert kissing_number(_disguise(catalog.get(name), 1, noise=1e-4), rtol=0.02) == kiss


def test_theta_image_of_z2():
    img = theta_image(catalog.get("Z2"), max_ratio=2.0)
    np.testing.assert_allclose(img.norms, [1, 1, 1, 1, 2, 2, 2, 2])
    assert img.shells() == [(1.0, 4), (2.0, 4)]
    assert img.minimum_norm == pytest.approx(1.0)


def test_a_continuum_of_norms_is_no_shell():
    from latticeq.design.identify import ThetaImage
    def image(norms):
        v = np.asarray(norms, dtype=float)
        return ThetaImage(v, np.arange(1, len(v) + 1), 1.0, 2.0)
    assert image([1, 1, 1.5, 1.5]).first_shell(0.05) == (1.0, 2)      # a gap closes it
    assert image([1, 1, 1.01, 1.01]).first_shell(0.05) == (1.005, 4)  # ends well below the cutoff
    assert image(np.linspace(1, 2, 50)).first_shell(0.05) is None    # runs into the cutoff
    # Z2: norms 1 (4 vectors) and 2 (4); within a factor 1 + rtol of each other for rtol >= 1
    assert kissing_number("Z2", rtol=0.5) == 4
    assert kissing_number("Z2", rtol=1.5) is None


def test_identify_cli_reports_shells_or_their_absence(tmp_path):
    from click.testing import CliRunner
    from latticeq.cli import main
    # basis (1, 0), (0.3, 1): squared norms 1, 1.09 and 1.49 (each ±) up to twice the minimum
    path = tmp_path / "skew.json"
    Lattice(np.array([[1.0, 0.0], [0.3, 1.0]]), name="skew").to_json(path)
    r = CliRunner().invoke(main, ["identify", str(path), "--rtol", "0.05"])
    assert r.exit_code == 0 and "kissing number ≈ 2; shells (norm/min : count) 1.000:2, 1.090:2, 1.490:2" in r.output
    r = CliRunner().invoke(main, ["identify", str(path), "--rtol", "0.4"])
    assert r.exit_code == 0, r.output
    assert "no shell structure: the 6 vectors up to 2× the minimum" in r.output
    assert "2 vectors of exactly minimal norm" in r.output and "kissing number" not in r.output


def test_compare_up_to_rotation_and_scale():
    E8 = catalog.get("E8")
    assert compare(E8, _disguise(E8, 2))
    assert compare("E8", "D8+")            # D8+ is E8
    assert not compare("E8", "Z8")
    assert not compare("D4", "Z4")
    assert not compare(E8, _disguise(E8, 3, noise=1e-3))          # exact tolerance
    assert compare(E8, _disguise(E8, 3, noise=1e-5), tol=1e-3)    # numerical tolerance


def test_identify_recognizes_a_perturbed_d4():
    assert identify(_disguise(catalog.get("D4"), 4, noise=1e-5)) in ("D4", "D4*")
    assert identify(_disguise(catalog.get("Z3"), 5)) is None  # Z3 is not among the catalog names


def test_theta_plot(tmp_path):
    p = tmp_path / "theta.png"
    plot_theta_images({"E8": catalog.get("E8"), "D8": catalog.get("D8")}, p)
    assert p.stat().st_size > 1000


def test_bad_input():
    with pytest.raises(ValueError, match="max_ratio"):
        theta_image(catalog.get("Z2"), max_ratio=0.5)
    with pytest.raises(ValueError, match="rtol"):
        kissing_number(catalog.get("Z2"), rtol=-1)
    with pytest.raises(FileNotFoundError):
        compare("/nonexistent/lattice.json", "E8")


def test_identify_recognizes_a_numerically_optimized_bw16_by_its_theta_image():
    # a Λ16 whose generator is perturbed by 5e-4: no longer similar, but its theta image
    # still has shells of 4320 and 61440 vectors with norm ratio 3/2
    L = _disguise(catalog.get("BW16"), 6, noise=5e-4)
    assert not compare("BW16", L, tol=1e-6)
    assert kissing_number(L, rtol=0.05) == 4320
    assert identify(L) == "BW16"
    assert identify(_disguise(catalog.get("D4"), 7, noise=1e-3)) in ("D4", "D4*")


def test_identify_separates_close_shells_with_a_finer_tolerance():
    # Λ15* has 280 minimal vectors, then 2048 at 5/4 and 1710 at 4/3 of the minimum; perturbed,
    # the second and third shells blur into one of 3758 at the default tolerance
    C = catalog.get("Lambda15*")
    L = _disguise(C, 8, noise=1e-4)
    assert theta_image(L).shells(0.05)[1][1] == 3758
    assert not same_theta_shells(L, C, rtol=0.05)
    assert identify(L) == "Lambda15*"
    assert identify(_disguise(catalog.get("Lambda15"), 9, noise=1e-4)) == "Lambda15"


def test_theta_image_moves_its_cutoff_when_too_many_vectors_qualify():
    # E8: 240 vectors of norm 2 and 2160 of norm 4 (twice the minimum)
    full = theta_image(catalog.get("E8"), max_ratio=2.0)
    assert len(full.norms) == 2400 and full.max_ratio == 2.0
    cut = theta_image(catalog.get("E8"), max_ratio=2.0, max_count=1000)
    assert cut.max_ratio == 1.5 and len(cut.norms) == 240
    np.testing.assert_allclose(cut.norms, 1.0)
