"""Run records (latticeq.nn.records): exact keys, atomic writes, table ratios, plot, bad input."""

import json

import pytest

from latticeq.nn import records as R


def _rec(method, bits, gs, ppl, act=False):
    return R.make_record(
        model="m", method=method, bits=bits, group_size=gs, sym=False, act_order=act,
        calibration=None if bits is None else {"source": "austen", "nsamples": 4, "seqlen": 64},
        seed=0, perplexity=ppl, eval={"text": "pp.txt", "seqlen": 64, "windows": 3},
        wall_time_s=1.0, quant_time_s=None if bits is None else 0.5, peak_memory_bytes=2**20,
        layers=[] if bits is None else [{"name": "l", "error": 1.0, "relative_error": 0.1, "time_s": 0.1}])


def test_keys_exact_and_round_trip(tmp_path):
    r = _rec("gptq", 3, 128, 30.0, act=True)
    assert tuple(r) == R.RECORD_KEYS
    p = R.write_record(r, tmp_path / "a.json")
    assert json.loads(p.read_text()) == r
    assert [f.name for f in tmp_path.iterdir()] == ["a.json"]
    back = R.read_records(tmp_path)
    assert back[0]["perplexity"] == 30.0


def test_table_ratio_against_gptq(tmp_path):
    recs = [_rec("gptq", 3, None, 40.0, act=True), _rec("block", 3, None, 36.0, act=True),
            _rec("rtn", 3, None, 80.0), _rec("none", None, None, 20.0)]
    t = R.markdown_table(recs)
    lines = {l.split("|")[4].strip(): l for l in t.splitlines()[2:]}
    assert "| 0.900 |" in lines["block act-order"]
    assert "| 2.000 |" in lines["rtn"]
    assert "| 1.000 |" in lines["gptq act-order"]
    assert "| float |" in t


def test_table_compares_only_runs_with_the_same_calibration_and_eval():
    small = _rec("gptq", 3, None, 40.0, act=True)
    big = _rec("gptq", 3, None, 30.0, act=True)
    big["calibration"] = {"source": "austen", "nsamples": 128, "seqlen": 64}
    refine_big = _rec("gptq+refine", 3, None, 27.0, act=True)
    refine_big["calibration"] = big["calibration"]
    rows = R.markdown_table([small, big, refine_big]).splitlines()[2:]
    ratios = sorted(l.split("|")[6].strip() for l in rows)
    assert ratios == ["0.900", "1.000", "1.000"]  # each GPTQ is its own baseline; refine vs the 128-window GPTQ
    # a calibration-free run (plain RTN) is compared with the best-calibrated GPTQ of its setting
    rtn = _rec("rtn", 3, None, 60.0)
    rtn["calibration"] = None
    rows = R.markdown_table([small, big, rtn]).splitlines()[2:]
    assert [l.split("|")[6].strip() for l in rows if "| rtn |" in l] == ["2.000"]
    other = _rec("rtn", 3, 128, 60.0)
    other["calibration"] = None
    rows = R.markdown_table([small, big, other]).splitlines()[2:]
    assert [l.split("|")[6].strip() for l in rows if "| rtn |" in l] == ["—"]  # no GPTQ at g128


def test_paired_ratio_and_its_standard_error():
    import math

    base = _rec("gptq", 3, None, None, act=True)
    new = _rec("gptq+refine", 3, None, None, act=True)
    nb, nn = [3.0, 3.2, 3.4], [2.9, 3.0, 3.35]
    for r, w in ((base, nb), (new, nn)):
        r["eval"] = {"text": "pp.txt", "seqlen": 64, "windows": 3, "window_nll": w}
        r["perplexity"] = math.exp(sum(w) / 3)
    ratio, se = R.paired_ratio(new, base)
    d = [a - b for a, b in zip(nn, nb)]  # -0.1, -0.2, -0.05
    assert ratio == pytest.approx(new["perplexity"] / base["perplexity"], rel=1e-12)
    m = sum(d) / 3
    assert se == pytest.approx(ratio * math.sqrt(sum((x - m) ** 2 for x in d) / 2 / 3), rel=1e-12)
    rows = R.markdown_table([base, new]).splitlines()[2:]
    assert [l.split("|")[6].strip() for l in rows] == [f"{ratio:.3f} ± {se:.3f}", "1.000"]
    # not paired: different windows, or a record without per-window NLLs
    other = dict(new, eval={"text": "other.txt", "seqlen": 64, "windows": 3, "window_nll": nn})
    assert R.paired_ratio(other, base) is None
    assert R.paired_ratio(_rec("gptq", 3, None, 30.0), base) is None


def test_plot(tmp_path):
    recs = [_rec("gptq", b, None, 40.0 / b, act=True) for b in (2, 3, 4)] + [_rec("none", None, None, 9.0)]
    p = R.plot_records(recs, tmp_path / "p.png")
    assert p.stat().st_size > 1000


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="calibration must have keys"):
        R.make_record(model="m", method="gptq", bits=3, group_size=None, sym=False, act_order=False,
                      calibration={"source": "x"}, seed=0, perplexity=1.0, eval=None, wall_time_s=1,
                      quant_time_s=1, peak_memory_bytes=1, layers=[])
    with pytest.raises(ValueError, match="each layer entry"):
        R.make_record(model="m", method="gptq", bits=3, group_size=None, sym=False, act_order=False,
                      calibration=None, seed=0, perplexity=1.0, eval=None, wall_time_s=1,
                      quant_time_s=1, peak_memory_bytes=1, layers=[{"name": "x"}])
    with pytest.raises(ValueError, match="window_nll must list one number per scored window"):
        R.make_record(model="m", method="gptq", bits=3, group_size=None, sym=False, act_order=False,
                      calibration=None, seed=0, perplexity=1.0,
                      eval={"text": "t", "seqlen": 8, "windows": 3, "window_nll": [1.0, 2.0]}, wall_time_s=1,
                      quant_time_s=1, peak_memory_bytes=1, layers=[])
    with pytest.raises(ValueError, match="eval must have keys"):
        R.make_record(model="m", method="gptq", bits=3, group_size=None, sym=False, act_order=False,
                      calibration=None, seed=0, perplexity=1.0, eval={"text": "t", "seqlen": 8}, wall_time_s=1,
                      quant_time_s=1, peak_memory_bytes=1, layers=[])
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        R.make_record(model="m", method="gptq", bits=3, group_size=None, sym=False, act_order=False,
                      calibration=None, seed=0, perplexity=1.0, eval=None, wall_time_s=1,
                      quant_time_s=1, peak_memory_bytes=1, layers=[], threads=0)
    good = R.make_record(model="m", method="gptq", bits=3, group_size=None, sym=False, act_order=False,
                         calibration=None, seed=0, perplexity=1.0, eval=None, wall_time_s=1,
                         quant_time_s=1, peak_memory_bytes=1, layers=[], threads=2)
    (tmp_path / "threads.json").write_text(json.dumps({**good, "threads": "two"}))
    with pytest.raises(ValueError, match="threads must be a positive integer or null"):
        R.read_records([tmp_path / "threads.json"])
    old = dict(good)
    del old["threads"]  # written before the key existed: still read
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert R.read_records([tmp_path / "old.json"])[0].get("threads") is None
    with pytest.raises(ValueError, match="record keys differ"):
        R.write_record({"model": "m"}, tmp_path / "x.json")
    with pytest.raises(FileNotFoundError, match="no record"):
        R.read_records([tmp_path / "missing.json"])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        R.read_records([tmp_path / "bad.json"])
    (tmp_path / "other.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="not a latticeq run record"):
        R.read_records([tmp_path / "other.json"])
    with pytest.raises(ValueError, match="no run records"):
        R.read_records([])


def test_codebook_runs_with_and_without_block_descent_get_distinct_labels():
    spec = {"kind": "e8p", "version": 1, "size": 65536}
    plain, refined = (dict(_rec(m, 2, None, p, act=True), codebook=spec, transforms={"kind": "randomized-hadamard"})
                      for m, p in (("gptq", 46.0), ("gptq+refine", 43.7)))
    assert R._method_label(plain) == "block babai, e8p act-order"
    assert R._method_label(refined) == "block babai, e8p + block descent act-order"
    table = R.markdown_table([plain, refined])
    assert "e8p + block descent" in table and table.count("block babai, e8p") == 2
