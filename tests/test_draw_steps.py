"""GPTQ vs Babai pictures: the steps drawn are the solvers' steps (code for code, point for point)."""

import itertools

import numpy as np
import pytest

from latticeq.draw.steps import example_problem, nearest_plane_steps, plot_babai, plot_gptq, steps_picture

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module", params=[(2, 5), (2, 1), (3, 1)], ids=["2d-seed5", "2d-seed1", "3d-seed1"])
def pic(request):
    dim, seed = request.param
    X, w = example_problem(dim=dim, seed=seed)
    return steps_picture(X, w)


def test_gptq_and_babai_give_the_same_codes(pic):
    assert (pic.gptq.codes == pic.babai.codes).all()
    assert [s.index for s in pic.babai.steps] == pic.babai.codes.tolist()
    assert pic.gptq.error == pytest.approx(pic.babai.error)


def test_gptq_moving_target_is_babais_orthogonal_projection(pic):
    # Birnick 2025, Thm 1: X·(GPTQ's updated weights) = projection of Xw onto the chosen affine subspace
    mapped = pic.gptq.moving @ pic.B
    projected = np.array([s.target for s in pic.babai.steps] + [pic.babai.point])
    assert np.allclose(mapped, projected, atol=1e-9)
    # and the first move is orthogonal (in data space) to the plane's directions, not in parameter space
    move = mapped[1] - mapped[0]
    assert np.allclose(pic.babai.steps[0].span @ move, 0, atol=1e-9)
    dw = pic.gptq.moving[1] - pic.gptq.moving[0]
    assert not np.allclose(dw[1:], 0)        # parameter-space move is not the Euclidean projection


def test_errors_are_output_errors_and_points_are_lattice_points(pic):
    for run in (pic.gptq, pic.babai, pic.lll):
        q = pic.step * (run.codes - pic.zero)
        assert np.allclose(run.q, q)
        assert run.error == pytest.approx(float(np.sum((pic.X @ (pic.w - q)) ** 2)), rel=1e-9)
        assert run.error == pytest.approx(float(np.sum((pic.target - run.point) ** 2)), rel=1e-9)
    # Babai's bound holds for unclipped decoding, with either basis
    assert pic.babai.error <= pic.babai.babai_bound + 1e-12
    assert pic.lll.error <= pic.lll.babai_bound + 1e-12
    # the exact closest grid point (brute force over the box) is at least as good as every solver
    n = pic.dim
    C = np.array(list(itertools.product(range(pic.maxq + 1), repeat=n)), dtype=float)
    E = pic.step * (C - pic.zero) - pic.w
    best = np.min(np.einsum("ij,jk,ik->i", E, pic.X.T @ pic.X, E))
    assert best <= min(pic.gptq.error, pic.lll.error) + 1e-12


def test_lll_codes_equal_the_solver(pic):
    import torch

    from latticeq.nn.layer import LayerProblem
    from latticeq.nn.solvers._base import prepare
    from latticeq.nn.solvers.lll import lll_babai_codes
    from latticeq.draw.steps import _fixed_step_grid_class

    grid = _fixed_step_grid_class()(bits=4, step=pic.step)
    prep = prepare(LayerProblem(torch.tensor(pic.w[None]), torch.tensor(pic.X.T @ pic.X)), grid, percdamp=0.0)
    codes = lll_babai_codes(prep)[0][0]
    assert pic.lll.codes.tolist() == codes.astype(int).tolist()
    # away from ties, a free nearest-plane replay on the reduced basis picks the same planes
    origin = -pic.step * pic.zero * pic.B.sum(axis=0)
    free = nearest_plane_steps(pic.lll.basis, pic.target, origin=origin)
    assert [s.index for s in free] == [s.index for s in pic.lll.steps]
    # reduced basis spans the same lattice: integer change of basis with det ±1
    T = pic.lll.basis @ np.linalg.inv(pic.step * pic.B)
    assert np.allclose(T, np.rint(T), atol=1e-8) and abs(round(np.linalg.det(T))) == 1


def test_nearest_plane_steps_on_the_square_grid_is_rounding():
    steps = nearest_plane_steps(np.eye(2), [0.3, -1.7])
    assert [s.index for s in steps] == [0, -2]
    assert np.allclose(steps[0].projection, [0.0, -1.7])
    assert np.allclose(steps[0].target, [0.3, -1.7])
    # clamping to a box
    assert [s.index for s in nearest_plane_steps(np.eye(2), [5.2, -3.0], lo=0, hi=3)] == [3, 0]


def test_plots_write_images(pic, tmp_path):
    a = plot_babai(pic, tmp_path / "babai.png")
    b = plot_gptq(pic, tmp_path / "gptq.svg")
    assert a.read_bytes()[:8] == PNG_MAGIC
    assert b"<svg" in b.read_bytes()[:3000]


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="n = 2 or 3"):
        example_problem(X=np.ones((5, 4)))
    with pytest.raises(ValueError, match="full column rank"):
        example_problem(X=np.array([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]]))
    with pytest.raises(ValueError, match="w must have n = 2"):
        example_problem(X=np.eye(2), w=np.ones(3))
    with pytest.raises(ValueError, match="dim must be 2 or 3"):
        example_problem(dim=4)
    with pytest.raises(ValueError, match="leaves the 4-bit grid"):
        steps_picture(np.eye(2), np.array([0.0, 50.0]))
    with pytest.raises(ValueError, match="step must be > 0"):
        steps_picture(np.eye(2), np.zeros(2), step=0.0)


def test_clipped_grid_steps_still_match_the_solvers():
    # a 2-bit grid (codes 0..3, values -2..1): the moving target leaves the box and codes clamp
    X = np.array([[-2.0, 1.0], [0.0, 0.1], [0.1, 0.0]])  # strongly correlated columns: big GPTQ moves
    clamped = 0
    for w in ([0.55, 0.8], [-1.45, -1.8], [0.6, -1.9], [-1.5, -1.2]):   # the last is an exact tie (c = 0.5)
        pic = steps_picture(X, np.array(w), bits=2)
        assert (pic.gptq.codes == pic.babai.codes).all()
        assert ((0 <= pic.babai.codes) & (pic.babai.codes <= 3)).all()
        clamped += any(abs(s.center - np.clip(s.center, 0, 3)) > 0.5 for s in pic.babai.steps)
        # every drawn plane is a nearest plane within the box
        assert all(abs(s.index - np.clip(s.center, 0, 3)) <= 0.5 + 1e-9 for s in pic.babai.steps)
    assert clamped >= 1                                   # the clipping path was exercised


def test_random_example_stays_inside_the_grid():
    for bits in (2, 3, 4):
        for seed in range(5):
            X, w = example_problem(seed=seed, bits=bits, step=0.5)
            zero = 2 ** (bits - 1)
            assert (w >= -0.5 * zero).all() and (w <= 0.5 * (2 ** bits - 1 - zero)).all()


def test_exact_ties_draw_the_solvers_choice():
    # w on half steps: planes are equidistant; the picture follows the solvers, whatever they chose
    for X, w in ((np.array([[1.0, 0.5], [0.0, 1.0]]), [0.5, 0.5]), (np.eye(3), [-1.5, -1.5, -1.5])):
        pic = steps_picture(X, np.array(w))
        assert (pic.gptq.codes == pic.babai.codes).all()
        assert all(abs(s.index - s.center) <= 0.5 + 1e-9 for s in pic.lll.steps + pic.babai.steps)
