"""Voronoi cells and theta images: the geometry behind the pictures, pinned to known values."""

import math

import numpy as np
import pytest

from latticeq.draw.theta import ball_volume, plot_theta, theta_curves
from latticeq.draw.voronoi import plot_voronoi, voronoi_cell, voronoi_picture
from latticeq.lattice import Lattice

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
Z2 = np.eye(2)
A2 = np.array([[1.0, 0.0], [0.5, math.sqrt(3) / 2]])
D3 = np.array([[1.0, 1.0, 0.0], [1.0, -1.0, 0.0], [0.0, 1.0, 1.0]])       # FCC = A3
A3STAR = np.array([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 1.0, 1.0]])    # BCC = A3*

# Exact NSMs (Conway & Sloane, SPLAG ch. 21, table 2.3): Z^n 1/12, A2 5/(36√3), A3 = D3 2^{-11/3},
# A3* 19/(192·2^{1/3})
EXACT = {"Z2": 1 / 12, "A2": 5 / (36 * math.sqrt(3)), "Z3": 1 / 12,
         "D3": 2 ** (-11 / 3), "A3*": 19 / (192 * 2 ** (1 / 3))}


@pytest.mark.parametrize("name,G,facets,verts", [
    ("Z2", Z2, 4, 4), ("A2", A2, 6, 6), ("Z3", np.eye(3), 6, 8),
    ("D3", D3, 12, 14), ("A3*", A3STAR, 14, 24)])
def test_cell_volume_nsm_and_face_counts(name, G, facets, verts):
    c = voronoi_cell(G)
    assert c.volume == pytest.approx(abs(np.linalg.det(G)), rel=1e-9)   # area / volume = |det|
    assert c.nsm == pytest.approx(EXACT[name], rel=1e-9)
    assert len(c.relevant) == facets and len(c.vertices) == verts
    assert len(c.faces) == (1 if c.dim == 2 else facets)


def test_cell_is_basis_independent_and_scales():
    U = np.array([[3, 2], [4, 3]])                      # unimodular: same lattice, ugly basis
    c1, c2 = voronoi_cell(A2), voronoi_cell(U @ A2)
    assert c2.volume == pytest.approx(c1.volume) and c2.nsm == pytest.approx(c1.nsm)
    assert sorted(np.round(np.linalg.norm(c2.relevant, axis=1), 9)) == sorted(np.round(np.linalg.norm(c1.relevant, axis=1), 9))
    c3 = voronoi_cell(2.5 * A2)
    assert c3.volume == pytest.approx(2.5 ** 2 * c1.volume) and c3.nsm == pytest.approx(c1.nsm)


def test_cell_vertices_are_equidistant_from_the_relevant_neighbours():
    c = voronoi_cell(A3STAR)
    # every vertex is a deep hole candidate: at least n+1 lattice points (0 and relevant vectors) at equal distance
    for v in c.vertices:
        d0 = np.linalg.norm(v)
        near = np.isclose(np.linalg.norm(v - c.relevant, axis=1), d0, rtol=1e-9)
        assert near.sum() >= 3
    assert c.contains(np.zeros((1, 3))).all() and not c.contains(c.relevant).any()


def test_a_skewed_basis_gives_the_same_cell():
    # the cell is built from a reduced basis, so a long, skewed basis of A2 draws A2's hexagon
    B = np.array([[1.0, 0.0], [7.0, 1.0]]) @ A2
    c, ref = voronoi_cell(B), voronoi_cell(A2)
    assert len(c.vertices) == 6
    assert c.volume == pytest.approx(ref.volume) and c.nsm == pytest.approx(5 / (36 * np.sqrt(3)))
    assert np.linalg.norm(c.generator, axis=1).max() < 1.01 * np.linalg.norm(A2, axis=1).max()


def test_voronoi_picture_errors_lie_in_cell_and_match_core_decoder():
    L = Lattice(A3STAR, name="A3*")
    pic = voronoi_picture(L, samples=200, seed=3)
    assert pic.cell.volume == pytest.approx(1.0)                        # unit-volume scaling
    assert pic.cell.contains(pic.errors, tol=1e-7).all()                # errors x - Q(x) inside V
    assert np.allclose(pic.samples - pic.quantized, pic.errors)
    # brute force (array input, no core decoder) gives the same closest points
    brute = voronoi_picture(L.generator, samples=200, seed=3)
    assert np.allclose(brute.quantized, pic.quantized)
    # Monte Carlo per-dimension MSE agrees loosely with the exact G (vol 1): 200 samples
    assert pic.mse_per_dim == pytest.approx(pic.cell.nsm, rel=0.25)
    # the drawn lattice points really are lattice points
    coords = pic.points @ np.linalg.inv(pic.cell.generator)
    assert np.allclose(coords, np.rint(coords), atol=1e-9)


@pytest.mark.parametrize("G,suffix", [(A2, "png"), (D3, "png"), (A2, "svg")])
def test_plot_voronoi_writes_image(tmp_path, G, suffix):
    out = plot_voronoi(voronoi_picture(G, samples=30), tmp_path / f"v.{suffix}", reference_nsm=0.08)
    data = out.read_bytes()
    if suffix == "png":
        assert data[:8] == PNG_MAGIC
        from PIL import Image

        meta = Image.open(out).text                     # provenance in the PNG metadata
        assert meta["Software"].startswith("latticeq") and "draw voronoi" in meta["Description"]
    else:
        assert b"<svg" in data[:3000] and b"draw voronoi" in data


def test_voronoi_bad_input(tmp_path):
    with pytest.raises(ValueError, match="2-D and 3-D"):
        voronoi_cell(np.eye(4))
    with pytest.raises(ValueError, match="2-D and 3-D"):
        voronoi_picture(Lattice(np.eye(8), name="Z8"))
    with pytest.raises(ValueError, match="square"):
        voronoi_cell(np.ones((2, 3)))
    with pytest.raises(ValueError, match="singular"):
        voronoi_cell(np.array([[1.0, 2.0], [2.0, 4.0]]))
    with pytest.raises(ValueError, match="samples"):
        voronoi_picture(A2, samples=-1)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plot_voronoi(voronoi_picture(A2, samples=3), tmp_path / "missing" / "v.png")
    with pytest.raises(ValueError, match="allowed"):
        plot_voronoi(voronoi_picture(A2, samples=3), tmp_path / "v.gif")


# ------------------------------------------------------------------ theta images

def test_theta_known_series():
    z2, a2 = theta_curves([Lattice(Z2, name="Z2"), Lattice(A2, name="A2")], max_norm2=9.5, normalize=False)
    assert z2.norms.tolist() == pytest.approx([0, 1, 2, 4, 5, 8, 9])
    assert z2.counts.tolist() == [1, 4, 4, 4, 8, 4, 4]               # r_2(k): sums of two squares
    assert a2.norms.tolist() == pytest.approx([0, 1, 3, 4, 7, 9])
    assert a2.counts.tolist() == [1, 6, 6, 6, 12, 6]                 # hexagonal lattice shells
    assert a2.cumulative[-1] == a2.counts.sum()


def test_theta_unit_volume_and_e8_kissing():
    from latticeq.lattice import Lattice as L_

    # E8 (SPLAG ch. 4 §8.1 basis): unit volume already, minimum norm 2, 240 roots, 2160 at norm 4
    D8 = np.zeros((8, 8))
    D8[0, 0] = 2
    for i in range(1, 7):
        D8[i, i - 1], D8[i, i] = -1, 1
    D8[7] = 0.5
    (e8,) = theta_curves(L_(D8, name="E8"), max_norm2=4.5)
    assert e8.scale == pytest.approx(1.0)
    assert e8.norms[1:].tolist() == pytest.approx([2, 4]) and e8.counts.tolist() == [1, 240, 2160]
    # unit-volume scaling makes a scaled copy give the identical image
    (e8s,) = theta_curves(L_(3.0 * D8, name="3E8"), max_norm2=4.5)
    assert np.allclose(e8s.norms, e8.norms) and (e8s.counts == e8.counts).all()


def test_theta_default_radius_and_plot(tmp_path):
    curves = theta_curves([Lattice(Z2, name="Z2"), Lattice(A2, name="A2"), Lattice(D3, name="D3")])
    assert all(len(c.norms) >= 3 for c in curves)                    # first shells always shown
    out = plot_theta(curves, tmp_path / "t.png")
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert ball_volume(2) == pytest.approx(math.pi) and ball_volume(3) == pytest.approx(4 * math.pi / 3)


def test_theta_bad_input(tmp_path):
    with pytest.raises(ValueError, match="max_norm2"):
        theta_curves(Lattice(Z2), max_norm2=-1.0)
    with pytest.raises(ValueError, match="at least one"):
        theta_curves([])
    with pytest.raises(ValueError, match="lower max_norm2"):
        theta_curves(Lattice(np.eye(3)), max_norm2=400.0, max_count=1000)
    with pytest.raises(ValueError, match="no theta curves"):
        plot_theta([], tmp_path / "t.png")


def test_theta_generic_lattice_is_binned(tmp_path):
    # a generic lattice has (almost) every squared norm distinct: ±x pairs only
    G = np.random.default_rng(0).standard_normal((4, 4))
    (c,) = theta_curves(Lattice(G, name="random4"), max_norm2=6.0)
    assert len(c.norms) > 60 and (c.counts[1:] % 2 == 0).all()
    out = plot_theta([c], tmp_path / "t.png", max_stems=60)
    assert out.read_bytes()[:8] == PNG_MAGIC
