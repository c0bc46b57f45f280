"""Shared helpers for the drawing modules: output-path validation and atomic figure saving."""

from __future__ import annotations

from pathlib import Path

from latticeq.io import atomic_write_bytes  # noqa: F401  (html.py imports it from here)

FORMATS = ("png", "svg")


def check_output_path(out, *, formats=FORMATS, force: bool = False) -> Path:
    """Validate an output image path before any work is done.

    Raises
    ------
    ValueError
        If the suffix is not one of ``formats``.
    OSError
        As :func:`latticeq.io.check_output`: missing or unwritable folder, a folder given, or
        an existing file without ``force``.
    """
    from latticeq.io import check_output

    path = Path(out)
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in formats:
        raise ValueError(
            f"output file {str(path)!r} has suffix {path.suffix or '(none)'!r}; "
            f"allowed: {', '.join('.' + f for f in formats)}"
        )
    return check_output(path, force=force, what="--out")


def save_figure(fig, out, *, dpi: int = 130, description: str | None = None) -> Path:
    """Save a matplotlib figure atomically as PNG or SVG (chosen by the suffix) and close it.

    Provenance goes into the file's metadata: latticeq's version, the UTC time, and
    ``description`` (what was drawn, with its parameters).
    """
    import io
    import time

    import matplotlib.pyplot as plt

    from latticeq import __version__

    path = check_output_path(out, force=True)  # callers that protect files check first
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
