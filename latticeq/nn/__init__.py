"""Quantizing neural networks as closest-point problems.

* :mod:`latticeq.nn.grid` — uniform integer grids (:class:`~latticeq.nn.grid.Grid`).
* :mod:`latticeq.nn.layer` — the layer problem ``(W, H)`` and Hessian accumulation.
* :mod:`latticeq.nn.solvers` — ``solve(problem, grid, method)``: RTN, GPTQ, Babai, min-pivot,
  LLL, block-exact, K-best, ``+refine``.
* :mod:`latticeq.nn.hessians` — recording Hessians of real layers.

Submodules are imported on use (torch is heavy).
"""
