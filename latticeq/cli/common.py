"""Helpers shared by the command modules: shared options, argument loading, errors, atomic file writes."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

import click

from latticeq.io import atomic_save_npy as _atomic_save_npy
from latticeq.io import atomic_write


#: exit status of every user error (bad option, bad file, refused output), in every command
USER_ERROR = 2
#: exit status of a long job stopped by its --budget-hours (checkpointed; running it again continues)
PAUSED = 3


def grid_options(f):
    """The grid options shared by ``quantize`` and ``quantize-layer`` (same names, defaults and help)."""
    for opt in reversed((
        click.option("--bits", type=int, required=True, help="Bits per weight (2-8)."),
        click.option("--group-size", type=int, default=None,
                     help="Columns per scale group (at most n; ⌈n/g⌉ groups, the last one smaller); "
                          "default per-channel."),
        click.option("--group-refresh", type=click.Choice(["published", "updated"]), default="published",
                     show_default=True,
                     help="Dynamic groups' parameters from GPTQ's block view of the weights (as published) "
                          "or from the fully error-updated weights."),
        click.option("--sym", is_flag=True, help="Symmetric grid (zero point 2^(b-1))."),
        click.option("--mse", is_flag=True, help="MSE-optimal clipping search of each grid range (GPTQ's mse=True)."),
        click.option("--act-order", is_flag=True, help="Process columns by descending diag(H) (GPTQ desc_act)."),
    )):
        f = opt(f)
    return f


#: ``--no-incoherence``, shared by ``quantize`` and ``quantize-layer``
no_incoherence_option = click.option("--no-incoherence", is_flag=True,
                                     help="Vector codebooks: skip the randomized Hadamard transforms.")


def budget_deadline(budget_hours: float | None) -> float | None:
    """The ``time.time()`` at which a ``--budget-hours`` budget that starts now runs out (None: no budget)."""
    return None if budget_hours is None else time.time() + 3600.0 * budget_hours


@contextlib.contextmanager
def exit_when_paused():
    """A long job that pauses at its budget (``SearchPaused``, after checkpointing) ends the command
    with ``paused: …`` on stderr and exit status :data:`PAUSED`."""
    from latticeq.design.nsm import SearchPaused

    try:
        yield
    except SearchPaused as exc:
        click.echo(f"paused: {exc}", err=True)
        raise SystemExit(PAUSED) from None


def fail(message: str, code: int = USER_ERROR):
    """Print a clear error and exit non-zero (no traceback for user errors)."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def load_array(path, what: str):
    """A numeric array from a ``.npy`` file (never a pickle), or exit with a clear error naming
    ``what`` (e.g. ``"W.npy"``): missing, empty, truncated or not an array file."""
    import numpy as np

    p = Path(path)
    if not p.is_file():
        fail(f"{what} {str(path)!r}: file not found")
    if p.stat().st_size == 0:
        fail(f"{what} {str(path)!r} is empty (0 bytes), not a .npy array")
    try:
        a = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        fail(f"{what} {str(path)!r} is not a readable .npy array ({exc})")
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "biuf":
        fail(f"{what} {str(path)!r} must hold a numeric array, got {getattr(a, 'dtype', type(a).__name__)}")
    return a


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


def quiet_transformers() -> None:
    """--no-progress: also silence transformers' and huggingface_hub's own progress bars."""
    import os

    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
