"""Closest-point search in lattices.

* :mod:`.sphere` — exact and box-constrained Schnorr–Euchner search (numba): :func:`closest_coords`,
  the allocation-free single-point kernel :func:`decode_one` (with :func:`make_workspace`) for other
  numba code, and :func:`short_vectors` (Fincke–Pohst enumeration, with a counting mode).
* :mod:`.babai` — :func:`babai_rounding` and :func:`babai_nearest_plane` (vectorized numpy).
* :mod:`.conway_sloane` — fast exact decoders for Zⁿ, Dₙ, Aₙ, E8, unions of their cosets
  (Dₙ*, Dₙ⁺, Aₙ*, E6, E6*, E7, E7*), Barnes–Wall Λ16 (RM(1,4) cosets of 2·D16) and the Leech
  lattice (Golay-code cosets).
"""

from latticeq.lattice.decode.babai import babai_nearest_plane, babai_rounding
from latticeq.lattice.decode.conway_sloane import (
    CosetDecoder,
    decode_an,
    decode_bw16,
    decode_cosets,
    decode_dn,
    decode_e8,
    decode_leech,
    decode_zn,
)
from latticeq.lattice.decode.sphere import BOUND_NONE, closest_coords, decode_one, make_workspace, short_vectors

__all__ = [
    "BOUND_NONE",
    "closest_coords",
    "decode_one",
    "make_workspace",
    "short_vectors",
    "babai_rounding",
    "babai_nearest_plane",
    "CosetDecoder",
    "decode_zn",
    "decode_dn",
    "decode_an",
    "decode_e8",
    "decode_cosets",
    "decode_leech",
    "decode_bw16",
]
