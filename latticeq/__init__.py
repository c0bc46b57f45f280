"""latticeq: quantization as closest-point search in lattices.

Two halves on one core:

* ``latticeq.lattice`` — the core: :class:`Lattice`, the catalog of classical lattices,
  lattice reduction and closest-point search (Babai, exact Schnorr–Euchner, box-constrained,
  Conway–Sloane decoders).
* ``latticeq.design`` — designing lattice quantizers: NSM estimation, SGD, splicing, fusion.
* ``latticeq.nn`` — quantizing neural networks: grids, the layer problem, solvers (GPTQ ≡ Babai, …),
  the model pipeline.
* ``latticeq.draw`` — pictures of all of the above.
"""

__version__ = "0.1.0"
