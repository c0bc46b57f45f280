"""Closest-point search in lattices.

* :mod:`.sphere` — exact and box-constrained Schnorr–Euchner search (numba), short vectors.
* :mod:`.babai` — Babai rounding and nearest-plane (vectorized numpy).
* :mod:`.conway_sloane` — fast decoders for Zⁿ, Dₙ, Aₙ, E8 and unions of their cosets.
"""

from latticeq.lattice.decode.sphere import closest_coords, decode_one, make_workspace, short_vectors

__all__ = ["closest_coords", "decode_one", "make_workspace", "short_vectors"]
