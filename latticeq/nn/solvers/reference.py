"""GPTQ as published, transcribed: ``GPTQ.fasterquant`` and ``Quantizer`` of IST-DASLab/gptq
(Frantar et al., ICLR 2023), kept line for line (a per-column Python loop of torch operations).

Not a solver to use: it is the named baseline that the tests check :func:`latticeq.nn.solvers.solve`
against code for code, and that ``benchmarks/layers.py`` times our GPTQ against.
"""

from __future__ import annotations

import torch

__all__ = ["reference_gptq"]


def _find_params(x, maxq, sym):
    """``Quantizer.find_params`` (per row, min–max range including 0)."""
    dev = x.device
    tmp = torch.zeros(x.shape[0], device=dev, dtype=x.dtype)
    xmin = torch.minimum(x.min(1)[0], tmp)
    xmax = torch.maximum(x.max(1)[0], tmp)
    if sym:
        xmax = torch.maximum(torch.abs(xmin), xmax)
        tmp = xmin < 0
        if torch.any(tmp):
            xmin[tmp] = -xmax[tmp]
    tmp = (xmin == 0) & (xmax == 0)
    xmin[tmp] = -1
    xmax[tmp] = +1
    scale = (xmax - xmin) / maxq
    if sym:
        zero = torch.full_like(scale, (maxq + 1) / 2)
    else:
        zero = torch.round(-xmin / scale)
    return scale.unsqueeze(1), zero.unsqueeze(1)


def reference_gptq(W, H, *, bits: int = 3, groupsize: int = -1, sym: bool = False, actorder: bool = False,
                   static_groups: bool = False, percdamp: float = 0.01, blocksize: int = 128,
                   dtype=torch.float32, find_params=None):
    """Quantize ``W`` (m × n) with Hessian ``H`` (n × n) as the reference does.

    ``find_params(x) -> (scale, zero)`` (each ``(m,)``) replaces the Quantizer's min–max search
    (e.g. a :class:`latticeq.nn.grid.Grid` with ``mse=True``). Returns ``(Q, codes)`` in the
    original column order.
    """
    maxq = 2**bits - 1
    if find_params is None:
        def find(x):
            return _find_params(x, maxq, sym)
    else:
        def find(x):
            s, z = find_params(x)
            return s.unsqueeze(1), z.unsqueeze(1)

    def quantize(x, scale, zero):
        q = torch.clamp(torch.round(x / scale) + zero, 0, maxq)
        return scale * (q - zero), q

    W = W.clone().to(dtype)
    H = H.clone().to(dtype)
    columns = W.shape[1]
    scale, zero = find(W)
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    if static_groups and groupsize != -1:
        groups = [find(W[:, i : i + groupsize]) for i in range(0, columns, groupsize)]
    if actorder:
        perm = torch.argsort(torch.diag(H), descending=True, stable=True)
        W = W[:, perm]
        H = H[perm][:, perm]
        invperm = torch.argsort(perm)
    Q = torch.zeros_like(W)
    codes = torch.zeros_like(W)
    damp = percdamp * torch.mean(torch.diag(H))
    diag = torch.arange(columns)
    H[diag, diag] += damp
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    H = torch.linalg.cholesky(H, upper=True)
    Hinv = H
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        C1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]
            if groupsize != -1:
                if not static_groups:
                    if (i1 + i) % groupsize == 0:
                        scale, zero = find(W[:, (i1 + i) : (i1 + i + groupsize)])
                else:
                    idx = i1 + i
                    if actorder:
                        idx = perm[idx]
                    scale, zero = groups[idx // groupsize]
            q, c = quantize(w.unsqueeze(1), scale, zero)
            q, c = q.flatten(), c.flatten()
            Q1[:, i] = q
            C1[:, i] = c
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        Q[:, i1:i2] = Q1
        codes[:, i1:i2] = C1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    if actorder:
        Q = Q[:, invperm]
        codes = codes[:, invperm]
    return Q, codes
