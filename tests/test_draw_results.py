"""Tests for the study / quant result plots and the HTML report."""

import base64
import json
import re

import numpy as np
import pytest

from latticeq.draw import write_html_report
from latticeq.draw.results import load_records, load_study, plot_quant, plot_study, quant_series

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

HEADER = ("dim,sphere_bound,best_splice,best_splice_stderr,best_splice_components,householder,householder_stderr,"
          "matrix_exp,matrix_exp_stderr,matrix_exp_free,matrix_exp_free_stderr,sgd,sgd_stderr,sgd_fused,sgd_fused_stderr")


@pytest.fixture
def study_csv(tmp_path):
    p = tmp_path / "study.csv"
    p.write_text(HEADER + "\n"
                 "3,0.07697,0.078543,,A3*,0.07855,0.00002,,,,,0.07856,0.00003,,\n"
                 "2,0.07958,0.080188,,A2,,,,,,,0.08019,0.00002,,\n"
                 "8,0.07347,0.071682,,E8,0.0717,0.00001,0.0718,0.00002,,,,,,\n")
    return p


def _records(tmp_path):
    recs = [
        dict(model="smollm2", method="none", bits=None, perplexity=20.0),
        dict(model="smollm2", method="babai", bits=4, group_size=128, perplexity=None),   # not evaluated
        dict(model="smollm2", method="rtn", bits=4, group_size=128, perplexity=30.0),
        dict(model="smollm2", method="rtn", bits=3, group_size=128, perplexity=90.0),
        dict(model="smollm2", method="gptq", bits=4, group_size=128, perplexity=24.0),
        dict(model="smollm2", method="gptq", bits=3, group_size=128, perplexity=40.0),
        dict(model="smollm2", method="gptq", bits=3, group_size=128, perplexity=38.0, seed=1),
    ]
    d = tmp_path / "runs"
    d.mkdir()
    for i, r in enumerate(recs):
        full = dict(r, sym=True, act_order=False, calibration="austen", seed=r.get("seed", 0), eval="austen-test",
                    wall_time_s=1.0, quant_time_s=0.5, peak_memory_bytes=2**30, layers=[{"name": "q"}],
                    latticeq_version="0.1.0", created="2026-01-01T00:00:00Z")
        (d / f"run{i}.json").write_text(json.dumps(full))
    return d


def test_load_study_parses_and_sorts(study_csv):
    s = load_study(study_csv)
    assert s.dim.tolist() == [2, 3, 8]
    assert s.nsm["best_splice"][0] == pytest.approx(0.080188)
    assert np.isnan(s.nsm["householder"][0])          # empty cell = not run
    assert s.stderr["sgd"][1] == pytest.approx(0.00003)
    assert s.components == ["A2", "A3*", "E8"]
    assert s.methods_present() == ["best_splice", "householder", "matrix_exp", "sgd"]


def test_plot_study_png(study_csv, tmp_path):
    out = plot_study(study_csv, tmp_path / "nsm.png")
    assert out.read_bytes()[:8] == PNG_MAGIC
    out = plot_study(study_csv, tmp_path / "nsm.svg", relative=True)
    assert b"<svg" in out.read_bytes()[:2000]


def test_study_bad_input(tmp_path):
    p = tmp_path / "empty.csv"
    p.write_text(HEADER + "\n")
    with pytest.raises(ValueError, match="no rows"):
        load_study(p)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_study(tmp_path / "nope.csv")
    q = tmp_path / "nodim.csv"
    q.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="no 'dim' column"):
        load_study(q)
    r = tmp_path / "bad.csv"
    r.write_text(HEADER + "\n2,0.08,abc,,,,,,,,,,,,\n")
    with pytest.raises(ValueError, match="non-numeric"):
        load_study(r)


def test_quant_series_groups_best_and_baseline(tmp_path):
    qs = quant_series(_records(tmp_path))
    assert qs.baseline == 20.0
    b, p = qs.series["gptq g128"]
    assert b.tolist() == [3.0, 4.0] and p.tolist() == [38.0, 24.0]   # best of the two 3-bit runs
    b, p = qs.series["rtn g128"]
    assert p.tolist() == [90.0, 30.0]
    assert qs.model == "smollm2"
    assert "babai g128" not in qs.series                           # perplexity None: table only


def test_plot_quant_png_and_bad_records(tmp_path):
    d = _records(tmp_path)
    out = plot_quant(d, tmp_path / "q.png")
    assert out.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="no run records"):
        quant_series([])
    with pytest.raises(ValueError, match="no evaluated runs"):
        quant_series([{"method": "gptq", "bits": 4, "perplexity": None}])
    with pytest.raises(ValueError, match="lacks keys"):
        load_records([{"method": "rtn"}])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_records(bad)
    with pytest.raises(FileNotFoundError):
        load_records(tmp_path / "missing.json")


def test_plot_unwritable_or_bad_suffix(study_csv, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plot_study(study_csv, tmp_path / "no" / "dir" / "x.png")
    with pytest.raises(ValueError, match="allowed"):
        plot_study(study_csv, tmp_path / "x.jpg")


def test_html_report_self_contained(study_csv, tmp_path):
    fig = plot_study(study_csv, tmp_path / "extra.png")
    out = write_html_report(tmp_path / "r.html", records=[_records(tmp_path)], study_csv=study_csv,
                            figures=[("My figure", fig)])
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>")
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(imgs) == 3                                   # quant plot, study plot, extra figure
    assert all(base64.b64decode(s)[:8] == PNG_MAGIC for s in imgs)
    assert "My figure" in text and "gptq" in text and "A3*" in text and "1024 MiB" in text
    assert "http://" not in text and "https://" not in text  # nothing external


def test_html_report_bad_input(tmp_path, study_csv):
    with pytest.raises(ValueError, match="nothing to report"):
        write_html_report(tmp_path / "r.html")
    with pytest.raises(ValueError, match=r"\.html"):
        write_html_report(tmp_path / "r.txt", study_csv=study_csv)
    with pytest.raises(FileNotFoundError, match="figure"):
        write_html_report(tmp_path / "r.html", figures=[tmp_path / "missing.png"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_html_report(tmp_path / "nodir" / "r.html", study_csv=study_csv)


def test_html_report_with_records_as_the_pipeline_writes_them(tmp_path):
    from latticeq.nn.records import make_record

    common = dict(model="smollm2", group_size=128, sym=False, act_order=True,
                  calibration={"source": "austen", "nsamples": 8, "seqlen": 128}, seed=0,
                  eval={"text": "pride-and-prejudice", "seqlen": 256, "windows": 4}, wall_time_s=3.0,
                  quant_time_s=1.0, peak_memory_bytes=3 * 2**20,
                  layers=[{"name": "q_proj", "error": 1.0, "relative_error": 0.1, "time_s": 0.1}])
    recs = [make_record(method="gptq", bits=4, perplexity=25.0, **common),
            make_record(method="babai", bits=3, perplexity=None, **common),
            make_record(**{**common, "layers": [], "group_size": None, "calibration": None, "act_order": False,
                           "quant_time_s": None}, method="none", bits=None, perplexity=20.0)]
    out = write_html_report(tmp_path / "r.html", records=recs)
    text = out.read_text()
    assert text.count("data:image/png;base64,") == 1          # quant plot (one evaluated quantized run)
    assert "pride-and-prejudice" in text and "1 layers" in text and "3 MiB" in text
