"""The core: lattices, the catalog, reduction and closest-point search."""

from latticeq.lattice.lattice import Lattice, Theta

__all__ = ["Lattice", "Theta", "as_lattice", "catalog", "load"]


def __getattr__(name):  # lazy: the catalog pulls in the decoders
    if name == "catalog":
        import importlib

        return importlib.import_module("latticeq.lattice.catalog")
    raise AttributeError(name)


def load(spec) -> Lattice:
    """A lattice from a catalog name (``E8``, ``D4``, ``Leech`` …) or a path to a saved JSON file."""
    import os

    spec = str(spec)
    if spec.endswith(".json") or os.path.sep in spec or os.path.exists(spec):
        return Lattice.from_json(spec)
    from latticeq.lattice import catalog

    return catalog.get(spec)


def as_lattice(x) -> Lattice:
    """``x`` as a :class:`Lattice`: a Lattice as it is, a catalog name or saved JSON path through
    :func:`load`, anything else as a generator matrix (rows are the basis vectors)."""
    import os

    import numpy as np

    if isinstance(x, Lattice):
        return x
    if isinstance(x, (str, os.PathLike)):
        return load(x)
    return Lattice(np.asarray(x, dtype=np.float64))
