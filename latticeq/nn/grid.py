"""Uniform integer grids for weight quantization (the ``Quantizer`` of GPTQ).

A row segment ``x`` (one output channel, one group of columns) is represented as

.. math::  x \\approx s\\,(c - z), \\qquad c = \\operatorname{clamp}(\\operatorname{round}(x/s) + z,\\ 0,\\ 2^b - 1),

with scale ``s > 0`` and integer zero point ``z``. Scale and zero come from the row's
min–max range (Frantar et al., "GPTQ", ICLR 2023, ``quant.py``), optionally shrunk by the
MSE-optimal factor ``p ∈ {1, 0.99, …, 0.2}`` minimizing ``Σ |x − Q(x)|^2.4`` (the same
search as the reference implementation).

In lattice terms (Birnick 2025, arXiv 2508.01077) the grid fixes the scaled integer
lattice ``s·Z`` per column and the box ``[0, 2^b − 1]`` of admissible codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

__all__ = ["Grid", "GROUP_REFRESH"]

#: where dynamic groups take their parameters from (see :class:`Grid`)
GROUP_REFRESH = ("published", "updated")


@dataclass(frozen=True)
class Grid:
    """A uniform integer grid.

    Parameters
    ----------
    bits : int
        Bits per weight, 2 to 8; codes lie in ``[0, maxq]`` with ``maxq = 2**bits - 1``.
    group_size : int or None
        ``None`` for one scale per output channel (row); otherwise the number of consecutive
        columns sharing a scale, at most the number of columns ``n``. When it does not divide
        ``n`` there are ``⌈n/g⌉`` groups, the last one smaller, as in GPTQ.
    sym : bool
        Symmetric grid: ``z = (maxq + 1) / 2`` and range ``[-max|x|, max|x|]``.
    mse : bool
        Search shrink factors ``p = 1 - i/100`` (``i < 80``) of the range for the smallest
        ``Σ |x - Q(x)|^2.4`` per row (GPTQ's ``mse=True``).
    static_groups : bool
        Compute all group parameters from the original weights before quantization (GPTQ
        ``--static-groups``) instead of refreshing them from the error-updated weights at
        each group boundary.
    group_refresh : {"published", "updated"}
        Which error-updated weights a dynamic group's parameters come from.
        ``"published"`` (default) is GPTQ as published (IST-DASLab ``gptq.py``, GPTQModel):
        the weights as the lazy-update block has them, i.e. updated by every column of the
        earlier blocks but not by the earlier columns of the current block.
        ``"updated"`` uses the fully error-updated weights (every earlier column's update), so
        the result does not depend on the lazy-update block size. The two agree when every
        group starts at a block start (e.g. g = 128 with blocks of 128).

    Examples
    --------
    >>> import torch
    >>> g = Grid(bits=3)
    >>> s, z = g.find_params(torch.tensor([[-1.0, 0.0, 2.5]]))
    >>> g.quantize(torch.tensor([[-1.0, 0.0, 2.5]]), s, z).tolist()
    [[0.0, 2.0, 7.0]]
    """

    bits: int
    group_size: int | None = None
    sym: bool = False
    mse: bool = False
    static_groups: bool = False
    group_refresh: str = "published"

    # MSE clipping search of the reference implementation
    _mse_grid: ClassVar[int] = 100
    _mse_maxshrink: ClassVar[float] = 0.8
    _mse_norm: ClassVar[float] = 2.4

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 2 <= self.bits <= 8:
            raise ValueError(f"bits must be an integer from 2 to 8, got {self.bits!r}")
        if self.group_size is not None:
            if isinstance(self.group_size, bool) or not isinstance(self.group_size, int) or self.group_size < 1:
                raise ValueError(f"group_size must be None (per-channel) or a positive integer, got {self.group_size!r}")
        if self.group_refresh not in GROUP_REFRESH:
            raise ValueError(f"unknown group_refresh {self.group_refresh!r}; allowed: {', '.join(GROUP_REFRESH)}")

    @property
    def maxq(self) -> int:
        """Largest code, ``2**bits - 1``."""
        return 2**self.bits - 1

    def check_columns(self, n: int) -> None:
        """Raise ValueError unless the group size is at most the number of columns ``n``."""
        if self.group_size is not None and self.group_size > n:
            raise ValueError(
                f"group_size {self.group_size} exceeds the number of columns {n}; "
                f"allowed: None (per-channel) or a group size from 1 to {n}"
            )

    def n_groups(self, n: int) -> int:
        """Number of column groups of an ``m × n`` weight, ``⌈n/g⌉`` (1 when per-channel)."""
        self.check_columns(n)
        return 1 if self.group_size is None else -(-n // self.group_size)

    # -- parameters ---------------------------------------------------------------------------
    def _minmax_params(self, xmin: torch.Tensor, xmax: torch.Tensor):
        maxq = self.maxq
        if self.sym:
            xmax = torch.maximum(xmin.abs(), xmax)
            xmin = torch.where(xmin < 0, -xmax, xmin)
        both0 = (xmin == 0) & (xmax == 0)
        xmin = torch.where(both0, -torch.ones_like(xmin), xmin)
        xmax = torch.where(both0, torch.ones_like(xmax), xmax)
        scale = (xmax - xmin) / maxq
        if self.sym:
            zero = torch.full_like(scale, (maxq + 1) / 2)
        else:
            zero = torch.round(-xmin / scale)
        return scale, zero

    def find_params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and zero point of each row of ``x`` (shape ``(m, k)``) → two ``(m,)`` tensors.

        Min–max range including 0 (GPTQ ``Quantizer.find_params``), then, if ``mse``, the
        shrink factor ``p`` minimizing ``Σ_j |x_j − Q_p(x_j)|^2.4``.
        """
        if x.ndim != 2:
            raise ValueError(f"find_params expects a 2-D tensor (rows × columns), got shape {tuple(x.shape)}")
        zero_t = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        xmin = torch.minimum(x.min(dim=1).values, zero_t)
        xmax = torch.maximum(x.max(dim=1).values, zero_t)
        scale, zero = self._minmax_params(xmin, xmax)
        if self.mse:
            if x.device.type == "cpu" and x.dtype == torch.float64:
                # fused compiled search (same arithmetic, no 80 passes over memory)
                import numpy as np

                from latticeq.nn._grid_kernels import mse_shrink_search

                scale = scale.clone()
                zero = zero.clone()
                mse_shrink_search(np.ascontiguousarray(x.numpy()), xmin.numpy(), xmax.numpy(), float(self.maxq), self.sym,
                                  int(self._mse_maxshrink * self._mse_grid), float(self._mse_norm), scale.numpy(), zero.numpy())
                return scale, zero
            scale, zero = self._mse_search_torch(x, xmin, xmax, scale, zero)
        return scale, zero

    def _mse_search_torch(self, x, xmin, xmax, scale, zero):
        """The clipping search as the reference writes it (one pass per shrink factor)."""
        best = torch.full_like(scale, float("inf"))
        for i in range(int(self._mse_maxshrink * self._mse_grid)):
            p = 1 - i / self._mse_grid
            s1, z1 = self._minmax_params(p * xmin, p * xmax)
            q = self.dequantize(self.quantize(x, s1[:, None], z1[:, None]), s1[:, None], z1[:, None])
            err = (q - x).abs().pow(self._mse_norm).sum(dim=1)
            better = err < best
            best = torch.where(better, err, best)
            scale = torch.where(better, s1, scale)
            zero = torch.where(better, z1, zero)
        return scale, zero

    def quantize(self, x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
        """Codes ``clamp(round(x/scale) + zero, 0, maxq)`` (float tensor of integers)."""
        return torch.clamp(torch.round(x / scale) + zero, 0, self.maxq)

    @staticmethod
    def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
        """Weights ``scale * (codes - zero)``."""
        return scale * (codes - zero)

    def static_params(self, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Parameters of every group of ``W`` in original column order: ``(m, n_groups)`` each."""
        m, n = W.shape
        if self.group_size is None:
            s, z = self.find_params(W)
            return s[:, None], z[:, None]
        g = self.group_size
        self.check_columns(n)
        ss, zz = [], []
        for j in range(0, n, g):
            s, z = self.find_params(W[:, j : j + g])
            ss.append(s)
            zz.append(z)
        return torch.stack(ss, dim=1), torch.stack(zz, dim=1)

    def describe(self) -> str:
        gs = "per-channel" if self.group_size is None else f"g{self.group_size}"
        refresh = " refresh=updated" if self.group_refresh == "updated" and self.group_size is not None and not self.static_groups else ""
        return f"{self.bits}-bit {gs}{' sym' if self.sym else ''}{' mse' if self.mse else ''}{' static' if self.static_groups else ''}{refresh}"
