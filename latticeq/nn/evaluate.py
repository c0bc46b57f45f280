"""Perplexity on non-overlapping token windows, as in GPTQ's evaluation.

GPTQ (Frantar et al., arXiv 2210.17323, reference ``llama_eval``/``opt_eval``) cuts the
tokenized test text into ``W = ⌊T / L⌋`` non-overlapping windows of ``L`` tokens, scores each
window independently (no context carried over), and reports

.. math::  \\mathrm{ppl} = \\exp\\Big(\\frac{1}{W}\\sum_{w=1}^{W}
           \\frac{1}{L-1}\\sum_{t=2}^{L} -\\log p(x_{w,t} \\mid x_{w,<t})\\Big),

the exponential of the mean next-token negative log-likelihood (every window has the same
``L − 1`` predicted tokens, so the mean of window means equals the mean over all tokens).
Default text: *Pride and Prejudice*, which calibration never uses.

A full pass over *Pride and Prejudice* (≈ 330 windows of 512 tokens with SmolLM2's tokenizer)
takes minutes on two CPU cores; ``max_windows=k`` scores only the first ``k`` windows — a fixed,
documented prefix, so results with the same ``k`` are comparable.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from latticeq.nn.calib import EVALUATION_TEXT

__all__ = ["PerplexityResult", "eval_windows", "perplexity", "mean_and_stderr"]


@dataclass(frozen=True)
class PerplexityResult:
    """Perplexity of a model on a text.

    Attributes
    ----------
    perplexity : float
        ``exp(nll)``.
    nll : float
        Mean next-token negative log-likelihood (nats).
    windows : int
        Windows scored.
    total_windows : int
        Windows available in the text (``⌊T / L⌋``).
    seqlen : int
    tokens : int
        Tokens of the whole text ``T``.
    text : str
        Text file (path as given, or "prideprejudice.txt" for the default).
    window_nll : tuple of float
        Mean next-token NLL of each scored window (all windows score ``L − 1`` tokens, so
        ``nll`` is their mean). Their spread gives :attr:`stderr_nll`, and two models scored on
        the same windows can be compared pairwise (:func:`latticeq.nn.records.paired_ratio`).
    """

    perplexity: float
    nll: float
    windows: int
    total_windows: int
    seqlen: int
    tokens: int
    text: str
    window_nll: tuple = ()

    @property
    def stderr_nll(self) -> float:
        """Standard error of ``nll`` over windows (NaN with fewer than two windows)."""
        return mean_and_stderr(self.window_nll)[1]

    def eval_info(self) -> dict:
        """The ``eval`` entry of a run record (:mod:`latticeq.nn.records`)."""
        return {"text": self.text, "seqlen": self.seqlen, "windows": self.windows,
                "window_nll": list(self.window_nll)}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["window_nll"] = list(self.window_nll)
        return d


def mean_and_stderr(values) -> tuple[float, float]:
    """Mean of ``values`` and its standard error ``sd / √n`` (NaN with fewer than two values)."""
    n = len(values)
    m = math.fsum(values) / n if n else float("nan")
    if n < 2:
        return m, float("nan")
    return m, math.sqrt(math.fsum((x - m) ** 2 for x in values) / (n - 1) / n)


def eval_windows(tokenizer, text=None, seqlen: int = 512):
    """Token windows of the evaluation text: LongTensor ``(W, L)`` and the text's token count ``T``.

    The whole text is tokenized at once (no special tokens), as GPTQ does, and cut into
    ``W = ⌊T/b⌋`` consecutive pieces of ``b`` tokens; each window is
    :func:`latticeq.nn.calib.window_prefix` followed by one piece (for most tokenizers the
    prefix is empty and ``b = L``; for Gemma's it is ``<bos>`` and ``b = L − 1``, so that every
    window starts as Gemma's sequences do). The prefix is never a prediction target.
    """
    import torch

    from latticeq.nn.calib import window_layout

    prefix, body = window_layout(tokenizer, seqlen)
    path = EVALUATION_TEXT if text is None else Path(text).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"evaluation text {str(text)!r} is not a file")
    try:
        s = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"evaluation text {str(path)!r} is not UTF-8: {exc}") from exc
    ids = torch.tensor(tokenizer(s, add_special_tokens=False)["input_ids"], dtype=torch.long)
    nwin = ids.numel() // body
    if nwin < 1:
        raise ValueError(
            f"evaluation text too short: {ids.numel()} tokens, fewer than one window of {seqlen}"
        )
    pieces = ids[: nwin * body].view(nwin, body)
    if prefix:
        pieces = torch.cat([torch.tensor(prefix, dtype=ids.dtype).expand(nwin, len(prefix)), pieces], dim=1)
    return pieces, int(ids.numel())


def perplexity(
    model,
    tokenizer=None,
    text=None,
    seqlen: int = 512,
    max_windows: int | None = None,
    batch_size: int = 4,
    device: str | None = None,
    progress: bool = True,
    windows=None,
) -> PerplexityResult:
    """Perplexity of a causal LM on non-overlapping windows (GPTQ's evaluation).

    Parameters
    ----------
    model : transformers causal LM
    tokenizer : tokenizer, optional
        Needed unless ``windows`` is given.
    text : path or None
        UTF-8 text file; ``None`` = *Pride and Prejudice* (shipped).
    seqlen : int
        Window length ``L``.
    max_windows : int or None
        Score only the first ``max_windows`` windows (``None`` = all ``⌊T/L⌋``).
    batch_size : int
        Windows per forward pass (does not change the result beyond float rounding).
    device : str or None
        Device to run on (default: the model's device).
    progress : bool
        Show a rich progress bar.
    windows : LongTensor (W, L), optional
        Precomputed windows (from :func:`eval_windows`); ``text`` is then only recorded.

    Returns
    -------
    PerplexityResult
    """
    import torch
    import torch.nn.functional as F

    if max_windows is not None and (
        isinstance(max_windows, bool) or not isinstance(max_windows, int) or max_windows < 1
    ):
        raise ValueError(f"max_windows must be None or a positive integer, got {max_windows!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if windows is None:
        if tokenizer is None:
            raise ValueError("perplexity needs a tokenizer unless precomputed windows are given")
        windows, tokens = eval_windows(tokenizer, text, seqlen)
    else:
        if windows.ndim != 2 or windows.shape[1] != seqlen:
            raise ValueError(f"windows must have shape (W, {seqlen}), got {tuple(windows.shape)}")
        tokens = int(windows.numel())
    total = windows.shape[0]
    use = total if max_windows is None else min(total, max_windows)
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    text_name = EVALUATION_TEXT.name if text is None else os.fspath(text)

    from latticeq.progress import make_progress

    per_window: list[float] = []
    with make_progress(progress) as bar, torch.no_grad():
        task = bar.add_task(f"perplexity ({text_name}, L={seqlen})", total=use)
        for start in range(0, use, batch_size):
            batch = windows[start : min(use, start + batch_size)].to(dev)
            logits = model(batch, use_cache=False).logits.float()
            shift = logits[:, :-1, :].reshape(-1, logits.shape[-1])
            target = batch[:, 1:].reshape(-1)
            nll = F.cross_entropy(shift, target, reduction="none").view(batch.shape[0], -1)
            per_window += nll.double().mean(dim=1).tolist()
            bar.update(task, advance=batch.shape[0])
    nll = math.fsum(per_window) / len(per_window)
    return PerplexityResult(
        perplexity=math.exp(nll), nll=nll, windows=use, total_windows=total,
        seqlen=seqlen, tokens=tokens, text=text_name, window_nll=tuple(per_window),
    )
