"""The layer problem: quantize ``W`` (m × n) to minimize ``tr((W − Q) H (W − Q)ᵀ)``.

For calibration inputs ``X`` (k × n) the output error of a linear layer is
``‖X (W − Q)ᵀ‖_F² = tr((W − Q) XᵀX (W − Q)ᵀ)``; only ``H ∝ XᵀX`` matters. Each row is a
closest-vector problem in the lattice spanned by the rows of ``diag(s) B`` with ``B Bᵀ = H``
(Birnick 2025, arXiv 2508.01077; Chen et al. 2025, arXiv 2507.18553).

Damping ``H + λI`` is the lattice of ``X`` stacked on ``√λ·I``; ``λ = percdamp · mean(diag H)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["HessianAccumulator", "LayerProblem"]


class HessianAccumulator:
    """Running ``H = (2/N) Σ x xᵀ`` over calibration inputs, exactly as GPTQ's ``add_batch``.

    ``N`` counts samples as GPTQ does: a batch of shape ``(b, t, n)`` adds ``b`` samples, a
    2-D batch ``(t, n)`` (one sequence) adds one. The scale of ``H`` does not change any
    solution (damping is relative), only its shape.

    On the CPU the update is BLAS ``syrk`` on one triangle (half the flops of ``xᵀx``); the
    other triangle is filled, and the whole checked for NaN/inf (which any bad input would
    leave there), when :attr:`hessian` is read.

    Parameters
    ----------
    n : int
        Input features of the layer.
    device, dtype
        Where and how ``H`` is kept (default float32 like GPTQ).
    """

    def __init__(self, n: int, device=None, dtype=torch.float32):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        self.n = n
        self._H = torch.zeros(n, n, device=device, dtype=dtype)
        self._syrk = None
        if self._H.device.type == "cpu" and dtype in (torch.float32, torch.float64):
            from scipy.linalg.blas import dsyrk, ssyrk

            self._syrk = ssyrk if dtype == torch.float32 else dsyrk
            self._upper = np.zeros((n, n), dtype=np.float32 if dtype == torch.float32 else np.float64, order="F")
        self.nsamples = 0

    def add_batch(self, x: torch.Tensor) -> None:
        """Add inputs ``x`` of shape ``(..., n)``."""
        if not isinstance(x, torch.Tensor):
            raise ValueError("x must be a torch.Tensor of shape (..., n)")
        if x.shape[-1] != self.n:
            raise ValueError(f"x has {x.shape[-1]} features in its last dimension, expected n = {self.n}")
        if x.ndim <= 2:
            x = x.reshape(1, -1, self.n)
        count = x.shape[0]
        x = x.reshape(-1, self.n).to(device=self._H.device, dtype=self._H.dtype)
        decay = self.nsamples / (self.nsamples + count)
        self.nsamples += count
        alpha = 2.0 / self.nsamples
        if self._syrk is not None:
            # upper triangle of  decay·H + alpha·xᵀx  (x C-ordered is xᵀ Fortran-ordered)
            self._upper = self._syrk(alpha, np.ascontiguousarray(x.detach().numpy()).T, beta=decay,
                                     c=self._upper, trans=0, lower=0, overwrite_c=1)
        else:
            self._H *= decay
            x = alpha ** 0.5 * x
            self._H += x.T @ x

    @property
    def hessian(self) -> torch.Tensor:
        """``H`` (n × n, symmetric); ValueError if any input held NaN or infinite values."""
        if self._syrk is not None:
            U = torch.from_numpy(np.triu(self._upper))
            self._H = U + torch.triu(U, diagonal=1).T
        if not torch.isfinite(self._H).all():
            raise ValueError("calibration inputs contain NaN or infinite values")
        return self._H


def _as_tensor(a, name: str) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a
    try:
        import numpy as np

        return torch.from_numpy(np.asarray(a))
    except Exception as exc:  # pragma: no cover - defensive
        raise ValueError(f"{name} must be a tensor or array, got {type(a).__name__}") from exc


@dataclass
class LayerProblem:
    """A validated layer problem ``(W, H)``.

    Parameters
    ----------
    W : (m, n) tensor
        Weights, rows = output channels.
    H : (n, n) tensor or None
        Symmetric positive semidefinite proxy Hessian. Columns with ``H_jj = 0`` are *dead*:
        their weights do not affect the output; solvers set them to 0 (GPTQ convention).
        ``None`` is the identity: the weight-space error ``‖W − Q‖²`` (no calibration), whose
        objectives cost O(mn) instead of O(mn²) (``identity`` is then True).

    Raises
    ------
    ValueError
        Shapes that do not match, NaN/inf, ``H`` not symmetric or not positive semidefinite.
    """

    W: torch.Tensor
    H: torch.Tensor | None = None
    dead: torch.Tensor = field(init=False, repr=False)
    identity: bool = field(init=False, repr=False, default=False)
    _baseline: float | None = field(init=False, repr=False, default=None)
    #: factorizations of the damped H by (order, percdamp, dtype, device), filled by the solvers'
    #: ``prepare`` and shared by :meth:`with_weights` problems
    _factors: dict = field(init=False, repr=False, default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        W = _as_tensor(self.W, "W")
        if self.H is None:
            if W.ndim != 2 or not W.is_floating_point():
                raise ValueError(f"W must be a floating-point 2-D matrix (m × n), got shape {tuple(W.shape)}")
            if not torch.isfinite(W).all():
                raise ValueError("W contains NaN or infinite values")
            n = W.shape[1]
            self.W, self.identity = W, True
            self.H = torch.eye(n, dtype=W.dtype, device=W.device)
            self.dead = torch.zeros(n, dtype=torch.bool, device=W.device)
            return
        H = _as_tensor(self.H, "H")
        if W.ndim != 2:
            raise ValueError(f"W must be a 2-D matrix (m × n), got shape {tuple(W.shape)}")
        if H.ndim != 2 or H.shape[0] != H.shape[1]:
            raise ValueError(f"H must be a square n × n matrix, got shape {tuple(H.shape)}")
        if H.shape[0] != W.shape[1]:
            raise ValueError(f"shape mismatch: W is {tuple(W.shape)} but H is {tuple(H.shape)}; H must be n × n with n = W.shape[1] = {W.shape[1]}")
        if not W.is_floating_point() or not H.is_floating_point():
            raise ValueError("W and H must be floating-point")
        if not torch.isfinite(W).all():
            raise ValueError("W contains NaN or infinite values")
        if not torch.isfinite(H).all():
            raise ValueError("H contains NaN or infinite values")
        H64 = H.to(torch.float64)
        scale = H64.abs().max().clamp_min(1e-300)
        asym = (H64 - H64.T).abs().max() / scale
        if asym > 1e-4:
            raise ValueError(f"H is not symmetric (max |H - Hᵀ| / max |H| = {asym.item():.3g}, allowed ≤ 1e-4)")
        H64 = (H64 + H64.T) / 2
        diag = torch.diagonal(H64)
        if (diag < -1e-10 * scale).any():
            raise ValueError("H is not positive semidefinite: it has a negative diagonal entry")
        dead = diag <= 0
        # PSD check: Cholesky of H (dead rows/cols replaced by identity) plus a tiny jitter
        Hc = H64.clone()
        if dead.any():
            if (Hc[dead].abs().max() > 1e-8 * scale):
                raise ValueError("H is not positive semidefinite: a zero diagonal entry has a nonzero row")
            Hc[dead, :] = 0
            Hc[:, dead] = 0
            Hc[dead, dead] = 1
        jitter = 1e-7 * torch.diagonal(Hc).mean()
        _, info = torch.linalg.cholesky_ex(Hc + jitter * torch.eye(Hc.shape[0], dtype=Hc.dtype, device=Hc.device))
        if info.item() != 0:
            raise ValueError("H is not positive semidefinite (Cholesky of H + 1e-7·mean(diag H)·I failed)")
        self.W = W
        self.H = H64.to(H.dtype)
        self.dead = dead

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.W.shape)

    def with_weights(self, W) -> "LayerProblem":
        """The problem of other weights ``W`` (m' × n) with the same ``H``: layers that read the
        same input (Llama's q, k, v) share one validated ``H`` and its factorizations instead
        of checking and factoring it once per layer."""
        import copy

        W = _as_tensor(W, "W")
        if W.ndim != 2 or W.shape[1] != self.W.shape[1] or not W.is_floating_point():
            raise ValueError(f"W must be a floating-point m × {self.W.shape[1]} matrix, got "
                             f"{W.dtype} {tuple(W.shape)}")
        if not torch.isfinite(W).all():
            raise ValueError("W contains NaN or infinite values")
        new = copy.copy(self)  # H, dead and the factorization cache are shared
        new.W, new._baseline = W, None
        return new

    def _err(self, Q) -> torch.Tensor:
        Q = _as_tensor(Q, "Q")
        if tuple(Q.shape) != tuple(self.W.shape):
            raise ValueError(f"Q has shape {tuple(Q.shape)}, expected {tuple(self.W.shape)}")
        return self.W.to(torch.float64) - Q.to(self.W.device, torch.float64)

    def row_objective(self, Q) -> torch.Tensor:
        """Per-row ``(w − q) H (w − q)ᵀ`` (float64, shape (m,))."""
        E = self._err(Q)
        if self.identity:
            return (E * E).sum(dim=1)
        return ((E @ self.H.to(torch.float64)) * E).sum(dim=1)

    def objective(self, Q) -> float:
        """``tr((W − Q) H (W − Q)ᵀ)``."""
        return float(self.row_objective(Q).sum())

    def baseline(self) -> float:
        """``tr(W H Wᵀ)`` (the objective of ``Q = 0``), computed once."""
        if self._baseline is None:
            W = self.W.to(torch.float64)
            WH = W if self.identity else W @ self.H.to(torch.float64)
            self._baseline = float((WH * W).sum())
        return self._baseline

    def relative_error(self, Q) -> float:
        """``tr((W − Q) H (W − Q)ᵀ) / tr(W H Wᵀ)``."""
        b = self.baseline()
        return self.objective(Q) / b if b > 0 else 0.0

    def damped(self, percdamp: float = 0.01, *, dtype=torch.float64, max_tries: int = 8) -> tuple[torch.Tensor, float]:
        """``H`` with dead columns set to identity and ``λ I`` added; λ grows ×10 until Cholesky works.

        Returns ``(H_damped, λ)``. Raises ValueError if ``percdamp`` is negative or if
        Cholesky still fails at ``percdamp · 10**(max_tries-1)``.
        """
        if not percdamp >= 0:
            raise ValueError(f"percdamp must be ≥ 0, got {percdamp!r}")
        H = self.H.to(dtype).clone()
        if self.dead.any():
            d = self.dead.to(H.device)
            H[d, d] = 1
        mean_diag = torch.diagonal(H).mean()
        p = percdamp
        eye = torch.eye(H.shape[0], dtype=dtype, device=H.device)
        for _ in range(max_tries):
            lam = float(p * mean_diag)
            Hd = H + lam * eye
            _, info = torch.linalg.cholesky_ex(Hd)
            if info.item() == 0:
                return Hd, lam
            p = max(p * 10, 1e-6)
        raise ValueError(f"Cholesky of the damped Hessian failed up to percdamp = {p / 10:g}; H is numerically singular")
