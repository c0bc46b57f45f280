"""Result plots: NSM against dimension (study CSV) and perplexity against bits (run records).

The study CSV (written by the design search) has one row per dimension ``n`` and the columns::

    dim, sphere_bound, best_splice, best_splice_stderr, best_splice_components,
    householder, householder_stderr, matrix_exp, matrix_exp_stderr,
    matrix_exp_free, matrix_exp_free_stderr, sgd, sgd_stderr, sgd_fused, sgd_fused_stderr

where an empty cell means "not run". Run records (written by the model pipeline) are JSON
objects with at least ``model, method, bits, perplexity``; the other keys (``group_size, sym,
act_order, calibration, seed, eval, wall_time_s, quant_time_s, peak_memory_bytes, layers,
latticeq_version, created``) are shown in tables.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from latticeq.draw._io import new_figure, save_figure

#: NSM columns of the study CSV that carry a ``*_stderr`` companion, in plotting order.
STUDY_METHODS = ("best_splice", "householder", "matrix_exp", "matrix_exp_free", "sgd", "sgd_fused")

_METHOD_LABELS = {
    "best_splice": "best splice (catalog products)",
    "householder": "Householder fusion",
    "matrix_exp": "matrix-exp fusion",
    "matrix_exp_free": "matrix-exp fusion (free)",
    "sgd": "SGD (Agrell-Allen)",
    "sgd_fused": "SGD from fused start",
}


@dataclass
class StudyTable:
    """The study CSV as arrays (``nan`` where a cell is empty).

    Attributes
    ----------
    dim : (r,) int array of dimensions, sorted.
    sphere_bound : (r,) NSM of the n-ball, the lower bound G(n) >= sphere_bound(n).
    nsm, stderr : dict method -> (r,) float arrays.
    components : (r,) list of str, the best splice's components (e.g. ``"E8+Z1"``).
    rows : the raw rows (list of dict of str), for tables.
    """

    dim: np.ndarray
    sphere_bound: np.ndarray
    nsm: dict
    stderr: dict
    components: list
    rows: list = field(default_factory=list)

    def methods_present(self) -> list:
        """Methods with at least one finite value, in :data:`STUDY_METHODS` order."""
        return [m for m in STUDY_METHODS if np.isfinite(self.nsm[m]).any()]


def _cell(row: dict, key: str) -> float:
    text = (row.get(key) or "").strip()
    if text == "" or text.lower() in ("nan", "none", "null"):
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"study CSV: column {key!r} has non-numeric value {text!r} (dim={row.get('dim')!r})") from None


def load_study(path) -> StudyTable:
    """Read ``results/study.csv`` into a :class:`StudyTable`.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file has no ``dim`` column, no data rows, or non-numeric cells.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"study CSV {str(path)!r} does not exist")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        rows = [r for r in reader if any((v or "").strip() for v in r.values() if isinstance(v, str))]
    if "dim" not in header:
        raise ValueError(f"study CSV {str(path)!r} has no 'dim' column (columns: {header})")
    if not rows:
        raise ValueError(f"study CSV {str(path)!r} has no rows: nothing to plot")
    rows.sort(key=lambda r: int(float(r["dim"])))
    dim = np.array([int(float(r["dim"])) for r in rows], dtype=int)
    sphere = np.array([_cell(r, "sphere_bound") for r in rows])
    nsm = {m: np.array([_cell(r, m) for r in rows]) for m in STUDY_METHODS}
    err = {m: np.array([_cell(r, m + "_stderr") for r in rows]) for m in STUDY_METHODS}
    comps = [(r.get("best_splice_components") or "").strip() for r in rows]
    return StudyTable(dim=dim, sphere_bound=sphere, nsm=nsm, stderr=err, components=comps, rows=rows)


def plot_study(study, out, *, title: str = "Normalized second moment against dimension", relative: bool = False):
    """Draw NSM against n: the sphere bound, the best splice and every method that was run.

    Parameters
    ----------
    study : StudyTable or path to the study CSV.
    out : output ``.png`` or ``.svg`` path.
    relative : if True, plot ``10 log10(G / G_sphere)`` (dB above the sphere bound) instead of G.

    Returns
    -------
    Path of the written figure.
    """
    if not isinstance(study, StudyTable):
        study = load_study(study)
    fig, ax = new_figure(figsize=(7.5, 4.8))
    n = study.dim

    def tr(y):
        return 10 * np.log10(y / study.sphere_bound) if relative else y

    if np.isfinite(study.sphere_bound).any() and not relative:
        ax.plot(n, study.sphere_bound, "k--", lw=1.2, label="sphere bound")
    markers = iter("osD^v<>p")
    for m in study.methods_present():
        y, e = study.nsm[m], study.stderr[m]
        ok = np.isfinite(y)
        yerr = np.where(np.isfinite(e), e, 0.0)[ok]
        if relative:
            yerr = 10 / np.log(10) * yerr / y[ok]
        style = dict(lw=2.0, color="tab:gray") if m == "best_splice" else dict(lw=0.8, ls=":")
        ax.errorbar(n[ok], tr(y)[ok], yerr=yerr, marker=next(markers), ms=4, capsize=2,
                    label=_METHOD_LABELS.get(m, m), **style)
    ax.set_xlabel("dimension n")
    ax.set_ylabel("dB above the sphere bound" if relative else r"NSM  $G = E\|x-Q(x)\|^2 / (n\,V^{2/n})$")
    ax.set_title(title)
    ax.set_xticks(n if len(n) <= 24 else n[:: max(1, len(n) // 12)])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out, description=f"draw study: dims {study.dim.tolist()}, methods {study.methods_present()}")


# ----------------------------------------------------------------------------- run records

RECORD_REQUIRED = ("method", "bits", "perplexity")


def load_records(records) -> list:
    """Normalize run records: dicts, JSON file paths, or directories of ``*.json`` files.

    A JSON file may hold one record (an object) or a list of records. Records without the keys
    ``method``, ``bits`` and ``perplexity`` raise ValueError.
    """
    if isinstance(records, (str, Path, dict)):
        records = [records]
    out = []
    for item in records:
        if isinstance(item, dict):
            out.append(dict(item))
            continue
        p = Path(item)
        if p.is_dir():
            files = sorted(p.glob("*.json"))
        elif p.is_file():
            files = [p]
        else:
            raise FileNotFoundError(f"run record {str(p)!r} does not exist")
        for f in files:
            try:
                data = json.loads(f.read_text())
            except json.JSONDecodeError as exc:
                raise ValueError(f"run record {str(f)!r} is not valid JSON: {exc}") from None
            data = data if isinstance(data, list) else [data]
            for d in data:
                if not isinstance(d, dict):
                    raise ValueError(f"run record {str(f)!r} holds a {type(d).__name__}, expected a JSON object")
                d = dict(d)
                d.setdefault("_source", str(f))
                out.append(d)
    for r in out:
        missing = [k for k in RECORD_REQUIRED if k not in r]
        if missing:
            raise ValueError(f"run record {r.get('_source', r)!r} lacks keys {missing} (needed: {list(RECORD_REQUIRED)})")
    return out


def _ppl(r) -> float:
    p = r["perplexity"]
    if isinstance(p, dict):  # tolerate {"perplexity": ...} or {dataset: value}
        p = p.get("perplexity", next(iter(p.values()), None))
    try:
        return float(p)
    except (TypeError, ValueError):
        raise ValueError(f"run record has non-numeric perplexity {p!r} (method {r.get('method')!r})") from None


@dataclass
class QuantSeries:
    """Perplexity against bits, one series per (method, group size).

    Attributes
    ----------
    series : dict label -> (bits (k,), perplexity (k,)) sorted by bits.
    baseline : perplexity of the unquantized model (a record with ``bits`` None or >= 16, or
        method ``none``/``fp16``/``fp32``), or None. Records with ``perplexity`` None are skipped.
    model : the model name(s) in the records.
    """

    series: dict
    baseline: float | None
    model: str


def quant_series(records) -> QuantSeries:
    """Group run records into :class:`QuantSeries` (best perplexity per method, group size, bits)."""
    recs = load_records(records)
    if not recs:
        raise ValueError("no run records: nothing to plot")
    baseline = None
    groups: dict = {}
    for r in recs:
        if r["perplexity"] is None:          # run not evaluated (yet): table only
            continue
        method = str(r["method"])
        bits = r["bits"]
        if method.lower() in ("fp16", "fp32", "bf16", "none", "float", "baseline") or bits is None or float(bits) >= 16:
            p = _ppl(r)
            baseline = p if baseline is None else min(baseline, p)
            continue
        gs = r.get("group_size")
        label = method if gs in (None, 0, -1, "") else f"{method} g{gs}"
        key = float(bits)
        d = groups.setdefault(label, {})
        d[key] = min(d.get(key, math.inf), _ppl(r))
    series = {lab: (np.array(sorted(d)), np.array([d[b] for b in sorted(d)])) for lab, d in sorted(groups.items())}
    if not series and baseline is None:
        raise ValueError("run records hold no evaluated runs (every perplexity is missing): nothing to plot")
    models = sorted({str(r.get("model", "?")) for r in recs})
    return QuantSeries(series=series, baseline=baseline, model=", ".join(models))


def plot_quant(records, out, *, title: str | None = None, log: bool = True):
    """Draw perplexity against bits per weight, one line per method (and group size).

    The unquantized baseline, if among the records, is a horizontal dashed line.
    """
    qs = records if isinstance(records, QuantSeries) else quant_series(records)
    fig, ax = new_figure(figsize=(7, 4.6))
    markers = iter("osD^v<>ph*" * 3)
    for label, (b, p) in qs.series.items():
        ax.plot(b, p, marker=next(markers), ms=5, lw=1.4, label=label)
        for bi, pi in zip(b, p):
            ax.annotate(f"{pi:.1f}", (bi, pi), textcoords="offset points", xytext=(3, 3), fontsize=7)
    if qs.baseline is not None:
        ax.axhline(qs.baseline, color="k", ls="--", lw=1, label=f"unquantized ({qs.baseline:.2f})")
    if log:
        ax.set_yscale("log")
    allbits = sorted({float(x) for b, _ in qs.series.values() for x in b})
    if allbits:
        ax.set_xticks(allbits)
    ax.set_xlabel("bits per weight")
    ax.set_ylabel("perplexity")
    ax.set_title(title or f"Perplexity against bits — {qs.model}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save_figure(fig, out, description=f"draw quant: model {qs.model}, series {list(qs.series)}")
