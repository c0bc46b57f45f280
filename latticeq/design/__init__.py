"""Designing lattice quantizers: SGD (Agrell–Allen), orthogonal splicing, Householder and
matrix-exponential fusion (Zhang, Cao, Li, Yu, arXiv 2502.06887), the search runner,
identification and the fusion study.

Submodules are imported on demand (``from latticeq.design.splice import best_splice``) so that
importing the package stays light; ``nsm`` (NSM estimation) belongs to the core.
"""
