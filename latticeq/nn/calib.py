"""Calibration data: random token windows, as in GPTQ.

GPTQ (Frantar, Ashkboos, Hoefler, Alistarh, arXiv 2210.17323; reference code
``datautils.py``) calibrates on ``nsamples`` windows of ``seqlen`` consecutive tokens, each
starting at a uniformly random offset of the tokenized corpus. latticeq does the same on

* the novels shipped in :mod:`latticeq.data` (default): Jane Austen's *Emma*, *Mansfield Park*,
  *Northanger Abbey* and *Sense and Sensibility* — **never** *Pride and Prejudice*, which is
  held out for perplexity (:mod:`latticeq.nn.evaluate`);
* any UTF-8 text files;
* the Hugging Face datasets ``wikitext2`` and ``c4`` when the hub is reachable.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = [
    "DATA_DIR",
    "CALIBRATION_NOVELS",
    "EVALUATION_TEXT",
    "DATASETS",
    "resolve_texts",
    "read_texts",
    "tokenize_text",
    "calibration_windows",
    "heldout_split",
    "describe_calibration",
]

#: Folder of the shipped public-domain novels.
DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "austen"
#: Default calibration corpus (Pride and Prejudice excluded on purpose).
CALIBRATION_NOVELS = ("emma.txt", "mansfieldpark.txt", "northangerabbey.txt", "sensesensibility.txt")
#: Default evaluation text (held out from calibration).
EVALUATION_TEXT = DATA_DIR / "prideprejudice.txt"
#: Hugging Face dataset names understood as calibration sources.
DATASETS = ("wikitext2", "c4")


def resolve_texts(texts=None) -> list[Path] | str:
    """Turn a ``texts`` argument into a list of existing files, or a dataset name.

    ``None`` → the shipped calibration novels; a dataset name in :data:`DATASETS` → that name;
    a path or a sequence of paths → those files (each must exist).
    """
    if texts is None:
        paths = [DATA_DIR / name for name in CALIBRATION_NOVELS]
        assert EVALUATION_TEXT not in paths
        return paths
    if isinstance(texts, (str, os.PathLike)):
        if isinstance(texts, str) and texts.lower() in DATASETS:
            return texts.lower()
        texts = [texts]
    paths = []
    for t in texts:
        if not isinstance(t, (str, os.PathLike)):
            raise ValueError(f"calibration texts must be file paths or dataset names, got {t!r}")
        p = Path(t).expanduser()
        if not p.is_file():
            raise FileNotFoundError(
                f"calibration text {str(t)!r} is not a file; pass UTF-8 text files or one of "
                f"the dataset names {list(DATASETS)}"
            )
        paths.append(p)
    if not paths:
        raise ValueError("no calibration texts given")
    return paths


def _load_dataset_text(name: str, split: str) -> str:
    try:
        from datasets import load_dataset  # optional dependency
    except ImportError as exc:
        raise RuntimeError(
            f"calibration dataset {name!r} needs the `datasets` package, which is not installed; "
            f"pass UTF-8 text files instead (default: the shipped novels)"
        ) from exc
    try:
        if name == "wikitext2":
            data = load_dataset("wikitext", "wikitext-2-raw-v1", split=split)
            return "\n\n".join(data["text"])
        data = load_dataset(
            "allenai/c4", data_files={"train": "en/c4-train.00000-of-01024.json.gz"}, split="train"
        )
        return "\n\n".join(data["text"][:20000])
    except Exception as exc:  # network errors come in many types
        raise RuntimeError(
            f"could not fetch the dataset {name!r} from the Hugging Face hub "
            f"({type(exc).__name__}: {exc}); pass UTF-8 text files instead"
        ) from exc


def read_texts(texts=None) -> str:
    """The calibration corpus as one string (files joined by blank lines)."""
    resolved = resolve_texts(texts)
    if isinstance(resolved, str):
        return _load_dataset_text(resolved, "train")
    parts = []
    for p in resolved:
        try:
            parts.append(p.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ValueError(f"calibration text {str(p)!r} is not UTF-8: {exc}") from exc
    return "\n\n".join(parts)


def tokenize_text(tokenizer, text: str):
    """Token ids of ``text`` as a 1-D LongTensor (no special tokens added)."""
    import torch

    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    # Long texts: tokenize in paragraph chunks so the tokenizer never sees one huge input and
    # does not warn about the model's maximum length; chunk boundaries are blank lines, which
    # the BPE tokenizers used here never merge across.
    ids: list[int] = []
    chunk_chars = 100_000
    start = 0
    while start < len(text):
        end = min(len(text), start + chunk_chars)
        if end < len(text):
            cut = text.rfind("\n\n", start, end)
            if cut > start:
                end = cut
        ids.extend(tokenizer(text[start:end], add_special_tokens=False)["input_ids"])
        start = end
    return torch.tensor(ids, dtype=torch.long)


def window_prefix(tokenizer) -> list[int]:
    """The tokens every calibration and evaluation window starts with.

    ``[BOS]`` when the tokenizer puts its BOS token before every text it encodes (Gemma's does:
    Gemma is trained on sequences that start with ``<bos>``, and scores ~50× worse without it),
    so that each window is a sequence as the model's authors feed it; ``[]`` otherwise
    (GPT-2-style byte-level BPE such as SmolLM2's, which add nothing: windows are raw text
    tokens, as in GPTQ).
    """
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return []
    ids = tokenizer("a")["input_ids"]
    return [int(bos)] if len(ids) > 0 and ids[0] == bos else []


def window_layout(tokenizer, seqlen) -> tuple[list[int], int]:
    """``(prefix, body)``: each window of ``seqlen`` tokens is the prefix followed by ``body``
    consecutive text tokens. Raises ValueError for a seqlen that leaves no text token."""
    if isinstance(seqlen, bool) or not isinstance(seqlen, (int, np.integer)) or seqlen < 2:
        raise ValueError(f"seqlen must be an integer ≥ 2, got {seqlen!r}")
    prefix = window_prefix(tokenizer)
    return prefix, int(seqlen) - len(prefix)


def calibration_windows(tokenizer, texts=None, nsamples: int = 128, seqlen: int = 512, seed: int = 0):
    """Random calibration windows of consecutive tokens, as GPTQ draws them.

    Window ``i`` is ``prefix + ids[s_i : s_i + body]`` with ``s_i`` uniform on
    ``{0, ..., len(ids) - body - 1}``, drawn from ``numpy.random.default_rng(seed)``; the
    prefix is :func:`window_prefix` (empty for most tokenizers, then ``body = seqlen``).

    Parameters
    ----------
    tokenizer : transformers tokenizer
    texts : None, path, sequence of paths, or "wikitext2" / "c4"
        ``None`` = the shipped novels except *Pride and Prejudice*.
    nsamples : int
        Number of windows N (≥ 1).
    seqlen : int
        Tokens per window L (≥ 2).
    seed : int

    Returns
    -------
    torch.LongTensor of shape (nsamples, seqlen)

    Raises
    ------
    ValueError
        If N or L is invalid, or the corpus has fewer than N × L tokens.
    """
    prefix, body = window_layout(tokenizer, seqlen)
    ids = tokenize_text(tokenizer, read_texts(texts))
    starts = _calibration_starts(ids.numel(), nsamples, body, seed)
    return _stack(ids, starts, body, prefix)


def _stack(ids, starts, body: int, prefix=()):
    import torch

    head = torch.tensor(list(prefix), dtype=ids.dtype)
    return torch.stack([torch.cat([head, ids[s : s + body]]) for s in np.asarray(starts).tolist()])


def _calibration_starts(n_tokens: int, nsamples: int, seqlen: int, seed: int) -> np.ndarray:
    if not isinstance(nsamples, (int, np.integer)) or isinstance(nsamples, bool) or nsamples < 1:
        raise ValueError(f"nsamples must be a positive integer, got {nsamples!r}")
    if not isinstance(seqlen, (int, np.integer)) or isinstance(seqlen, bool) or seqlen < 1:
        raise ValueError(f"seqlen must be a positive integer, got {seqlen!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    need = int(nsamples) * int(seqlen)
    if n_tokens < need + 1:
        raise ValueError(
            f"calibration text too short: {n_tokens} tokens, but nsamples × seqlen = "
            f"{nsamples} × {seqlen} = {need} are needed; give more text or fewer/shorter windows"
        )
    rng = np.random.default_rng(int(seed))
    return rng.integers(0, n_tokens - seqlen, size=int(nsamples))


def heldout_split(tokenizer, texts=None, nsamples: int = 128, seqlen: int = 512, seed: int = 0,
                  heldout: int = 16):
    """The calibration windows and ``heldout`` more windows of the same corpus that share no
    token position with any of them (for validation, e.g. of fine-tuning).

    The first tensor equals :func:`calibration_windows` with the same arguments. The held-out
    windows start at distinct offsets drawn uniformly, with ``numpy.random.default_rng([seed,
    1])``, among those whose window ``[s, s + seqlen)`` overlaps no calibration window.

    Returns
    -------
    (LongTensor (nsamples, seqlen), LongTensor (heldout, seqlen))
    """
    if not isinstance(heldout, (int, np.integer)) or isinstance(heldout, bool) or heldout < 1:
        raise ValueError(f"heldout must be a positive integer, got {heldout!r}")
    prefix, body = window_layout(tokenizer, seqlen)
    ids = tokenize_text(tokenizer, read_texts(texts))
    starts = _calibration_starts(ids.numel(), nsamples, body, seed)
    free = np.ones(ids.numel() - body, dtype=bool)
    for s in starts.tolist():  # a window at t overlaps the one at s when |t − s| < body
        free[max(0, s - body + 1): s + body] = False
    candidates = np.flatnonzero(free)
    if len(candidates) < heldout:
        raise ValueError(f"calibration text too short for {heldout} held-out windows of {seqlen} tokens beside "
                         f"the {nsamples} calibration windows ({ids.numel()} tokens); give more text or fewer windows")
    rng = np.random.default_rng([int(seed), 1])
    held = np.sort(rng.choice(candidates, size=int(heldout), replace=False))
    return _stack(ids, starts, body, prefix), _stack(ids, held, body, prefix)


def describe_calibration(texts=None) -> str:
    """A short provenance string for a ``texts`` argument (for run records)."""
    resolved = resolve_texts(texts)
    if isinstance(resolved, str):
        return resolved
    if texts is None:
        return "austen:" + ",".join(p.stem for p in resolved)
    return ",".join(str(p) for p in resolved)
