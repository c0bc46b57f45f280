"""Atomic file writes: the one place that writes a file so a reader never sees half of it.

Every writer below writes to a temp file beside the target (same directory, so the rename
stays on one filesystem), gives it the permissions a plain ``open(path, "w")`` would
(``0o666 & ~umask``; :func:`tempfile.mkstemp` makes ``0o600``), and then renames it over
the target with :func:`os.replace`. If writing raises — also ``KeyboardInterrupt`` — the temp
file is removed and the target is left exactly as it was. There is no ``fsync``: the writes
protect against crashes of the writer, not of the machine.

Parent folders are created only when ``mkdir=True``; otherwise a missing folder raises
:class:`FileNotFoundError` and nothing is written.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> atomic_write_json(d / "sub" / "a.json", {"x": 1}, mkdir=True).read_text()
'{\\n  "x": 1\\n}\\n'
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "CACHE_ROOT",
    "check_output",
    "default_permissions",
    "check_writable_folder",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_save_npy",
    "atomic_torch_save",
    "atomic_savefig",
]

#: latticeq's cache outside git (converted models, Hessians, benchmark checkpoints and run
#: state): ``$LATTICEQ_CACHE``, by default ``~/.cache/latticeq``
CACHE_ROOT = Path(os.environ.get("LATTICEQ_CACHE", Path.home() / ".cache" / "latticeq"))


def check_output(path, *, force: bool = False, folder: bool = False, owned=None,
                 what: str = "output") -> Path:
    """Validate an output path *before* any work starts; returns it as a :class:`Path`.

    The parent folder must exist and be writable (also false on a read-only file system).
    An existing file is refused unless ``force``. For ``folder=True`` an existing non-empty
    folder is refused unless ``force`` *and* ``owned(path)`` is true — ``--force`` never
    replaces files latticeq did not write. ``what`` names the output in messages (e.g.
    ``"--out"``). Raises ``FileNotFoundError``, ``PermissionError``, ``FileExistsError``,
    ``IsADirectoryError`` or ``NotADirectoryError`` (all ``OSError``) with a message naming it.
    """
    p = Path(path)
    parent = p.absolute().parent
    if not parent.is_dir():
        raise FileNotFoundError(f"{what} {str(path)!r}: folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"{what} {str(path)!r}: folder {str(parent)!r} is not writable")
    if folder:
        if p.exists() and not p.is_dir():
            raise NotADirectoryError(f"{what} {str(path)!r} is a file, not a folder")
        if p.is_dir() and any(p.iterdir()):
            if not force:
                raise FileExistsError(f"{what} {str(path)!r} exists and is not empty; pass --force to replace it")
            if owned is None or not owned(p):
                raise FileExistsError(f"{what} {str(path)!r} holds files latticeq did not write; --force only "
                                      "replaces latticeq's own outputs: choose another folder")
        return p
    if p.is_dir():
        raise IsADirectoryError(f"{what} {str(path)!r} is a folder; give a file name")
    if p.exists() and not force:
        raise FileExistsError(f"{what} {str(path)!r} exists; pass --force to overwrite it")
    if p.exists() and not os.access(p, os.W_OK):
        raise PermissionError(f"{what} {str(path)!r} is not writable")
    return p


def check_writable_folder(path, *, what: str = "output folder") -> Path:
    """A folder that exists and is writable, or that can be created (its nearest existing
    ancestor is a writable folder); raises ``NotADirectoryError`` / ``PermissionError``."""
    p = Path(path).absolute()
    q = p
    while not q.exists():
        q = q.parent
    if not q.is_dir():
        raise NotADirectoryError(f"{what} {str(path)!r}: {str(q)!r} is a file, not a folder")
    if not os.access(q, os.W_OK):
        raise PermissionError(f"{what} {str(path)!r}: folder {str(q)!r} is not writable")
    return Path(path)


def default_permissions() -> int:
    """``0o666`` less the process umask: what ``open(path, "w")`` gives a new file."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path, write: Callable, mode: str = "wb", *, mkdir: bool = False,
                 encoding: str = "utf-8") -> Path:
    """Call ``write(f)`` on a temp file beside ``path``, then rename it onto ``path``.

    Parameters
    ----------
    path : str or Path
        The target file.
    write : callable
        Called once with the open temp file; it writes the content.
    mode : {"wb", "w"}
        Binary or text.
    mkdir : bool
        Create missing parent folders first.
    encoding : str
        Encoding in text mode (ignored in binary mode).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If ``mode`` is not ``"wb"`` or ``"w"``.
    FileNotFoundError
        If the parent folder does not exist and ``mkdir`` is false.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({"encoding": encoding} if mode == "w" else {})) as f:
            write(f)
        os.chmod(tmp, default_permissions())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_bytes(path, data: bytes, *, mkdir: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(data), "wb", mkdir=mkdir)


def atomic_write_text(path, text: str, *, mkdir: bool = False, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(text), "w", mkdir=mkdir, encoding=encoding)


def atomic_write_json(path, obj, *, indent: int | None = 2, default: Callable | None = None,
                      end: str = "\n", mkdir: bool = False) -> Path:
    """Write ``json.dumps(obj, indent=indent, default=default) + end`` to ``path`` atomically.

    The text is built before the temp file is opened, so an object that cannot be encoded
    raises (``TypeError``) with nothing written.
    """
    text = json.dumps(obj, indent=indent, default=default) + end
    return atomic_write_text(path, text, mkdir=mkdir)


def atomic_save_npy(path, array, *, allow_pickle: bool = False, mkdir: bool = False) -> Path:
    """``np.save`` to ``path`` atomically (the name is kept as given: no ``.npy`` is appended)."""
    import numpy as np

    return atomic_write(path, lambda f: np.save(f, array, allow_pickle=allow_pickle), "wb", mkdir=mkdir)


def atomic_torch_save(path, obj, *, mkdir: bool = False) -> Path:
    """``torch.save(obj)`` to ``path`` atomically."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f), "wb", mkdir=mkdir)


def atomic_savefig(path, fig, *, format: str | None = None, mkdir: bool = False, **savefig_kwargs) -> Path:
    """``fig.savefig`` to ``path`` atomically.

    ``format`` defaults to the suffix of ``path`` (matplotlib's default format when there is
    none); other keyword arguments (``dpi``, ``metadata``, ...) go to ``savefig``. The figure
    is not closed.
    """
    path = Path(path)
    fmt = format or path.suffix.lstrip(".").lower() or None
    return atomic_write(path, lambda f: fig.savefig(f, format=fmt, **savefig_kwargs), "wb", mkdir=mkdir)
