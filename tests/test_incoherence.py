"""Randomized Hadamard transforms: orthogonality at every width SmolLM2 and common models use,
the Paley constructions, exact inversion, seeds, the dense fallback and its refusal."""

import numpy as np
import pytest
import torch

from latticeq.nn.incoherence import hadamard, paley_orders, random_orthogonal


@pytest.mark.parametrize("n", [1, 2, 4, 8, 12, 20, 24, 28, 36, 44, 60, 64, 192, 576, 768, 1536])
def test_hadamard_matrices_are_hadamard(n):
    H = hadamard(n)
    assert H is not None and H.shape == (n, n) and set(np.unique(H)) <= {-1, 1}
    assert np.array_equal(H @ H.T, n * np.eye(n, dtype=np.int64))


def test_paley_orders_and_gaps():
    pal = paley_orders(100)
    assert pal[12] in (("I", 11), ("II", 5)) and pal[20] == ("I", 19) and pal[28] == ("II", 13)
    assert hadamard(6) is None and hadamard(22) is None  # n ≡ 2 (mod 4): none exists


@pytest.mark.parametrize("n", [192, 576, 22])
def test_random_orthogonal_round_trip_and_seed(n):
    T = random_orthogonal(n, seed=3)
    assert T.kind == ("dense" if n == 22 else "hadamard")
    assert np.allclose(T.matrix @ T.matrix.T, np.eye(n), atol=1e-12)
    X = torch.randn(5, n, dtype=torch.float64)
    assert torch.allclose(T.inverse(T.forward(X)), X, atol=1e-12)
    assert np.array_equal(random_orthogonal(n, 3).matrix, T.matrix)
    assert not np.array_equal(random_orthogonal(n, 4).matrix, T.matrix)
    # the layer objective is invariant: tr(E H Eᵀ) with E -> E Tᵀ, H -> T H Tᵀ
    E, A = np.random.default_rng(0).standard_normal((2, 4, n))
    Hm = A.T @ A
    M = T.matrix
    assert np.trace(E @ Hm @ E.T) == pytest.approx(np.trace((E @ M.T) @ (M @ Hm @ M.T) @ (E @ M.T).T))


def test_no_fallback_is_a_clear_error():
    with pytest.raises(ValueError, match="no Hadamard matrix of order 22"):
        random_orthogonal(22, 0, fallback=False)
    with pytest.raises(ValueError, match="positive integer"):
        hadamard(0)


@pytest.mark.parametrize("n", [12, 576, 1536, 30])
def test_factored_transform_equals_the_dense_matrix(n):
    T = random_orthogonal(n, 5)
    X = np.random.default_rng(n).standard_normal((4, 3, n))
    assert np.allclose(T.forward(X), X @ T.matrix.T)
    assert np.allclose(T.inverse(T.forward(X)), X)
    Xt = torch.from_numpy(X)
    assert torch.allclose(T.forward(Xt), Xt @ torch.from_numpy(T.matrix).T)
    if T.kind == "hadamard":
        assert np.allclose(T.matrix, hadamard(n) * T.signs[None, :] / np.sqrt(n))
        assert sum(len(B) for B in T.blocks) < n or len(T.blocks) == 1
