"""Helpers shared by the command modules: argument loading, errors, atomic file writes."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import click


def fail(message: str, code: int = 2):
    """Print a clear error and exit non-zero (no traceback for user errors)."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def load_lattice_arg(spec: str):
    """A lattice from a catalog name or a saved JSON path, or exit with a clear error."""
    from latticeq.lattice import load

    try:
        return load(spec)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))


def atomic_write_bytes(path, write) -> Path:
    """Call ``write(fileobj)`` on a temp file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_save_npy(path, array) -> Path:
    import numpy as np

    return atomic_write_bytes(path, lambda f: np.save(f, array, allow_pickle=False))
