"""The core: lattices, the catalog, reduction and closest-point search."""

from latticeq.lattice.lattice import Lattice, Theta

__all__ = ["Lattice", "Theta", "catalog", "load"]


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
