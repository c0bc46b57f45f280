import numpy as np
import pytest
import torch

from latticeq.design.fusion import (FusionState, _mixing, fuse, fused_generator, fusion_advance,
                                    fusion_start, lower_block_mask)
from latticeq.design.search import estimate_nsm_mc
from latticeq.design.splice import splice


def test_mixing_matrices():
    rng = np.random.default_rng(0)
    V = torch.tensor(rng.standard_normal((6, 5)))
    H = _mixing("householder", V).numpy()
    np.testing.assert_allclose(H @ H.T, np.eye(5), atol=1e-12)
    assert np.linalg.det(H) == pytest.approx(1.0)  # even number of reflections
    W = torch.tensor(rng.standard_normal((5, 5)))
    E = _mixing("matrix-exp", W).numpy()
    np.testing.assert_allclose(E @ E.T, np.eye(5), atol=1e-10)
    F = _mixing("matrix-exp-free", W).numpy()
    assert np.linalg.det(F) == pytest.approx(np.exp(np.trace(W.numpy())), rel=1e-9)
    T = _mixing("triangular", W, lower_block_mask([2, 3])).numpy()
    np.testing.assert_allclose(T[:2, :2], np.eye(2), atol=1e-12)   # unit lower block-triangular:
    np.testing.assert_allclose(T[2:, 2:], np.eye(3), atol=1e-12)   # identity blocks on the diagonal,
    assert not T[:2, 2:].any() and np.abs(T[2:, :2]).min() > 0    # zero above, W's block below
    np.testing.assert_allclose(T[2:, :2], W.numpy()[2:, :2], atol=1e-12)  # exp(N) = I + N as N² = 0
    with pytest.raises(ValueError, match="unknown fusion method"):
        _mixing("cayley", W)


def test_lower_block_mask():
    np.testing.assert_array_equal(lower_block_mask([1, 2, 1]), [[0, 0, 0, 0],
                                                                [1, 0, 0, 0],
                                                                [1, 0, 0, 0],
                                                                [1, 1, 1, 0]])


@pytest.mark.parametrize("method", ["householder", "matrix-exp", "matrix-exp-free", "triangular"])
def test_start_without_noise_is_the_splice(method):
    S = splice(["D4", "Z1"])
    st = fusion_start(S, method=method, noise=0.0, seed=0)
    B = fused_generator(st)
    # M = I exactly (paired reflections cancel, W = 0): the same generator as the splice
    np.testing.assert_allclose(B, S.generator, atol=1e-12)


def test_fusion_beats_the_splice_in_dimension_5():
    S = splice(["D4", "Z1"])  # NSM 0.0779043; the best 5-dim lattice D5* has 0.0756254
    st = fuse(S, method="matrix-exp-free", steps=250, batch=512, seed=1, progress=False)
    g, se = estimate_nsm_mc(fused_generator(st), 200_000, seed=2)
    assert g < S.provenance["nsm"] - 3 * se
    assert g > 0.0756254 - 4 * se  # cannot beat D5* (Agrell & Allen: best known in n = 5)


def test_triangular_modification_of_z_times_z_finds_the_hexagonal_lattice():
    # Agrell & Allen: a triangular modification lowers a product's NSM. Z × Z modified to
    # [[a, 0], [h, b]] reaches A2 (a = 1, h = 1/2, b = √3/2), the optimum in two dimensions.
    S = splice(["Z1", "Z1"])
    st = fuse(S, method="triangular", steps=300, batch=512, lr0=2e-2, anneal=10.0, noise=0.1, seed=0,
              progress=False)
    B = fused_generator(st)
    assert B[0, 1] == 0.0                                    # the first component is not touched
    g, se = estimate_nsm_mc(B, 200_000, seed=4)
    a2 = 5 / (36 * np.sqrt(3))
    assert g < 1 / 12 - 20 * se and abs(g - a2) < 4 * se
    a, h, b = B[0, 0], B[1, 0], B[1, 1]                      # the hexagonal shape, up to the sign of h
    assert abs(abs(h / a) - 0.5) < 0.03 and abs(b / a - np.sqrt(3) / 2) < 0.03
    T = _mixing("triangular", torch.tensor(st.theta), lower_block_mask([1, 1])).numpy()
    assert T[0, 1] == 0.0 and T[0, 0] == T[1, 1] == 1.0


def test_triangular_keeps_the_components_and_needs_two():
    S = splice(["D4", "Z1"])
    st = fuse(S, method="triangular", steps=20, batch=128, seed=2, progress=False)
    B = fused_generator(st)
    assert not B[:4, 4].any() and np.abs(B[4, :4]).max() > 0  # only the Z row moves along D4
    D = S.generator[:4, :4]
    ratio = B[:4, :4] / np.where(D == 0, 1, D)
    assert np.allclose(ratio[D != 0], ratio[D != 0][0])      # the D4 block only rescaled
    from latticeq.lattice import Lattice
    one = Lattice(S.generator[:4, :4], provenance={"dims": [4], "scales": [1.0], "components": ["D4"]})
    with pytest.raises(ValueError, match="at least two lattices"):
        fusion_start(one, method="triangular")


def test_triangular_start_with_large_noise_is_a_random_glue():
    # With two components M = I + W∘T exactly, so the Z row starts at its scaled unit vector plus
    # the glue W[4, :4] · (D4 block): a random combination of D4's basis vectors, of order one.
    S = splice(["D4", "Z1"])
    glues = []
    for seed in (0, 1):
        st = fusion_start(S, method="triangular", noise=1.0, seed=seed)
        B = fused_generator(st) * abs(np.linalg.det(S.generator)) ** (1 / 5)  # back to the splice's volume
        np.testing.assert_allclose(B[:4], S.generator[:4], atol=1e-12)     # D4 rows untouched
        assert B[4, 4] == pytest.approx(S.generator[4, 4], rel=1e-12)
        np.testing.assert_allclose(B[4, :4], st.theta[4, :4] @ S.generator[:4, :4], atol=1e-12)
        assert 0.1 < np.abs(st.theta[4, :4]).max() < 10 and not st.theta[:4].any()
        glues.append(B[4, :4])
    assert np.abs(glues[0] - glues[1]).max() > 0.1                          # each seed its own glue


def test_state_round_trip_resumes_exactly():
    S = splice(["A2", "Z1"])
    a = fusion_start(S, method="householder", steps=40, batch=64, seed=3)
    fusion_advance(a, 20)
    b = FusionState.from_dict(a.to_dict())
    fusion_advance(a, 20)
    fusion_advance(b, 20)
    np.testing.assert_array_equal(a.theta, b.theta)
    np.testing.assert_array_equal(a.log_scales, b.log_scales)


def test_fusion_bad_input():
    S = splice(["D4", "Z1"])
    with pytest.raises(ValueError, match="unknown fusion method 'cayley'"):
        fusion_start(S, method="cayley")
    with pytest.raises(ValueError, match="steps must be >= 1"):
        fusion_start(S, steps=0)
    with pytest.raises(ValueError, match="even number"):
        fusion_start(S, reflections=3)
    from latticeq.lattice import catalog
    with pytest.raises(ValueError, match="starts from a splice"):
        fusion_start(catalog.get("E8"))


def test_scales_only_ablation_keeps_the_mixing_and_learns_the_scales():
    S = splice(["D4", "Z1"])
    st = fusion_start(S, method="matrix-exp", noise=0.0, steps=60, batch=256, seed=1, train_mixing=False)
    st.log_scales = st.log_scales + np.array([0.3, -0.3])  # start away from the splice's scales
    fusion_advance(st, 60)
    np.testing.assert_array_equal(st.theta, np.zeros((5, 5)))  # M = exp(0) = I throughout
    B = fused_generator(st)
    assert np.count_nonzero(np.abs(B[:4, 4]) + np.abs(B[4, :4]) > 0) == 0  # still block diagonal
    assert abs(st.log_scales[0] - st.log_scales[1]) < 0.6  # scales moved back towards the optimum
    # resumes exactly through the state round trip (Adam moments of the scales only)
    a = fusion_start(S, method="matrix-exp", noise=0.0, steps=40, batch=64, seed=3, train_mixing=False)
    fusion_advance(a, 20)
    b = FusionState.from_dict(a.to_dict())
    fusion_advance(a, 20)
    fusion_advance(b, 20)
    np.testing.assert_array_equal(a.log_scales, b.log_scales)


def test_fixed_mixing_is_applied_before_the_scales():
    S = splice(["A2", "Z1"])
    Q = np.linalg.qr(np.random.default_rng(0).standard_normal((3, 3)))[0]
    st = fusion_start(S, method="matrix-exp", noise=0.0, seed=0, mixing_fixed=Q, train_mixing=False)
    B = fused_generator(st)
    ref = Q @ S.generator
    np.testing.assert_allclose(B, ref / abs(np.linalg.det(ref)) ** (1 / 3), atol=1e-12)
    with pytest.raises(ValueError, match="invertible"):
        fusion_start(S, mixing_fixed=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="3×3"):
        fusion_start(S, mixing_fixed=np.eye(4))
