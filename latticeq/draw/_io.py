"""Shared helpers for the drawing modules: output-path validation and atomic figure saving."""

from __future__ import annotations

import os
from pathlib import Path

from latticeq.io import atomic_write_bytes  # noqa: F401  (html.py imports it from here)

FORMATS = ("png", "svg")


def check_output_path(out, *, formats=FORMATS) -> Path:
    """Validate an output path before any work is done.

    Raises
    ------
    ValueError
        If the suffix is not one of ``formats``.
    FileNotFoundError
        If the parent directory does not exist.
    PermissionError
        If the parent directory is not writable.
    """
    path = Path(out)
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in formats:
        raise ValueError(
            f"output file {str(path)!r} has suffix {path.suffix or '(none)'!r}; "
            f"allowed: {', '.join('.' + f for f in formats)}"
        )
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"cannot write {str(path)!r}: directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"cannot write {str(path)!r}: directory {str(parent)!r} is not writable")
    if path.is_dir():
        raise ValueError(f"output path {str(path)!r} is a directory; give a file name")
    return path


def save_figure(fig, out, *, dpi: int = 130, description: str | None = None) -> Path:
    """Save a matplotlib figure atomically as PNG or SVG (chosen by the suffix) and close it.

    Provenance goes into the file's metadata: latticeq's version, the UTC time, and
    ``description`` (what was drawn, with its parameters).
    """
    import io
    import time

    import matplotlib.pyplot as plt

    from latticeq import __version__

    path = check_output_path(out)
    fmt = path.suffix.lower().lstrip(".")
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if fmt == "svg":
        md = {"Creator": f"latticeq {__version__}", "Date": now}
        if description:
            md["Description"] = description
    else:
        md = {"Software": f"latticeq {__version__}", "Creation Time": now}
        if description:
            md["Description"] = description
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight", metadata=md)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def new_figure(*args, **kwargs):
    """``plt.subplots`` on the Agg backend (never opens a display)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)
