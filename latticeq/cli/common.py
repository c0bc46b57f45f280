"""Helpers shared by the command modules: argument loading, errors, atomic file writes."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from latticeq.io import atomic_save_npy as _atomic_save_npy
from latticeq.io import atomic_write


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
    """Call ``write(fileobj)`` on a temp file beside ``path``, then rename it into place.

    Parent folders are created. See :func:`latticeq.io.atomic_write`.
    """
    return atomic_write(path, write, "wb", mkdir=True)


def atomic_save_npy(path, array) -> Path:
    """``np.save`` ``array`` (no pickles) to ``path`` atomically, creating parent folders."""
    return _atomic_save_npy(path, array, allow_pickle=False, mkdir=True)
