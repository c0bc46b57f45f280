"""One self-contained HTML report: result tables and figures embedded (base64), for sharing.

Used by ``latticeq report --html OUT.html``. The page has no external references: PNG figures
are embedded as ``data:image/png;base64`` URIs, SVG figures as ``data:image/svg+xml;base64``.
"""

from __future__ import annotations

import base64
import html
import json
import tempfile
import time
from pathlib import Path

from latticeq import __version__
from latticeq.draw._io import atomic_write_bytes

_MIME = {".png": "image/png", ".svg": "image/svg+xml"}

#: Columns of the run-record table, in order (others are ignored; ``layers`` is summarized).
RECORD_COLUMNS = (
    "model", "method", "bits", "group_size", "sym", "act_order", "calibration", "seed",
    "perplexity", "eval", "quant_time_s", "wall_time_s", "peak_memory_bytes", "layers",
    "latticeq_version", "created",
)

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f3f3f3}
td.t{text-align:left}figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:0.9em;color:#555}.meta{color:#666;font-size:0.85em}
"""


def _fmt(value, key: str = "") -> str:
    if value is None or value == "":
        return ""
    if key == "peak_memory_bytes":
        try:
            return f"{float(value) / 2**20:.0f} MiB"
        except (TypeError, ValueError):
            return str(value)
    if key == "layers":
        if isinstance(value, (list, dict)):
            return f"{len(value)} layers"
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _table(header, rows) -> str:
    out = ["<table><thead><tr>"]
    out += [f"<th>{html.escape(str(h))}</th>" for h in header]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>")
        for cell in row:
            text = html.escape(str(cell))
            cls = "" if _is_number(cell) else ' class="t"'
            out.append(f"<td{cls}>{text}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _is_number(text) -> bool:
    try:
        float(str(text).split()[0])
        return True
    except (ValueError, IndexError):
        return False


def _figure_html(caption: str, path: Path) -> str:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"figure {str(path)!r} does not exist")
    mime = _MIME.get(path.suffix.lower())
    if mime is None:
        raise ValueError(f"figure {str(path)!r}: only {', '.join(_MIME)} can be embedded")
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(caption)}" src="data:{mime};base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _normalize_figures(figures):
    out = []
    for f in figures:
        if isinstance(f, (tuple, list)):
            if len(f) != 2:
                raise ValueError(f"figure entry {f!r}: give a path or a (caption, path) pair")
            out.append((str(f[0]), Path(f[1])))
        else:
            out.append((Path(f).stem.replace("_", " "), Path(f)))
    return out


def write_html_report(out_path, *, records=(), study_csv=None, figures=(), title: str = "latticeq report",
                      plots: bool = True):
    """Write one self-contained HTML page with result tables and embedded figures.

    Parameters
    ----------
    out_path : str or Path
        The ``.html`` file to write (atomically: temp file + ``os.replace``).
    records : iterable
        Run records: dicts, JSON files (one object or a list) or directories of ``*.json``.
        Shown as a table; with ``plots=True`` and at least one quantized run, the
        perplexity-against-bits plot is embedded too.
    study_csv : str or Path, optional
        The design study CSV (``results/study.csv``). Shown as a table and, with ``plots=True``,
        as the NSM-against-dimension plot.
    figures : iterable
        Extra figures: paths (caption = file stem) or ``(caption, path)`` pairs; PNG or SVG.
    title : str
        Page title.
    plots : bool
        Draw and embed the study and quantization plots from the data given.

    Returns
    -------
    Path of the written page.

    Raises
    ------
    ValueError
        Wrong suffix, nothing to report, malformed records or study CSV.
    FileNotFoundError
        Missing records, study CSV, figures, or output directory.
    """
    from latticeq.draw.results import load_records, load_study, plot_quant, plot_study, quant_series

    out = Path(out_path)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"HTML report path {str(out)!r} must end in .html")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"cannot write {str(out)!r}: directory {str(parent)!r} does not exist")

    recs = load_records(records) if records else []
    study = load_study(study_csv) if study_csv is not None else None
    figs = _normalize_figures(figures)
    if not recs and study is None and not figs:
        raise ValueError("nothing to report: give records, a study CSV, or figures")

    created = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='meta'>latticeq {html.escape(__version__)} · generated {created}</p>",
    ]
    with tempfile.TemporaryDirectory(prefix="latticeq-report-") as tmp:
        if recs:
            parts.append("<h2>Quantization runs</h2>")
            cols = [c for c in RECORD_COLUMNS if any(c in r for r in recs)]
            ordered = sorted(recs, key=lambda r: (str(r.get("model")), str(r.get("method")), -float(r.get("bits") or 99)))
            parts.append(_table(cols, [[_fmt(r.get(c), c) for c in cols] for r in ordered]))
            if plots:
                try:
                    qs = quant_series(recs)
                except ValueError:
                    qs = None
                if qs is not None and qs.series:
                    p = plot_quant(qs, Path(tmp) / "quant.png")
                    parts.append(_figure_html("Perplexity against bits per weight", p))
        if study is not None:
            parts.append("<h2>Lattice-quantizer study (NSM against dimension)</h2>")
            header = list(study.rows[0].keys())
            parts.append(_table(header, [[r.get(h) or "" for h in header] for r in study.rows]))
            if plots:
                p = plot_study(study, Path(tmp) / "study.png")
                parts.append(_figure_html("NSM against dimension, with the sphere bound", p))
        if figs:
            parts.append("<h2>Figures</h2>")
            parts += [_figure_html(cap, p) for cap, p in figs]
    parts.append("</body></html>\n")
    return atomic_write_bytes(out, "\n".join(parts).encode("utf-8"))
