import csv
import math

import numpy as np
import pytest

from latticeq.design.study import COLUMNS, collect, parse_dims, run_study, sphere_bound
from latticeq.lattice import Lattice


def test_sphere_bound_known_values():
    assert sphere_bound(1) == pytest.approx(1 / 12)          # the 1-ball is Z's Voronoi cell
    assert sphere_bound(2) == pytest.approx(1 / (4 * math.pi))
    assert sphere_bound(24) < 0.065771                        # below the Leech lattice
    assert sphere_bound(16) < 0.0683


def test_parse_dims():
    assert parse_dims("13-15,17") == [13, 14, 15, 17]
    assert parse_dims([5, 3, 5]) == [3, 5]
    with pytest.raises(ValueError, match="bad dimension list"):
        parse_dims("13-x")
    with pytest.raises(ValueError, match="2..64"):
        parse_dims("1-3")


def test_study_files(tmp_path):
    res = tmp_path / "lattices"
    Lattice(np.eye(13), nsm=(0.0705, 0.00001)).to_json(res / "n13-householder.json")
    Lattice(np.eye(13), nsm=(0.0701, 0.00002)).to_json(res / "n13-sgd-fused.json")
    rows = run_study("13-14", results=res, out=tmp_path)
    assert [r["dim"] for r in rows] == [13, 14]
    with open(tmp_path / "study.csv") as f:
        table = list(csv.reader(f))
    assert table[0] == COLUMNS
    r13 = dict(zip(COLUMNS, table[1]))
    assert r13["best_splice_components"] == "K12×Z1"
    assert float(r13["best_splice"]) == pytest.approx(0.0710346, abs=1e-7)
    assert float(r13["householder"]) == 0.0705 and r13["matrix_exp"] == "" and r13["sgd"] == ""
    assert float(r13["sgd_fused_stderr"]) == 0.00002
    md = (tmp_path / "study.md").read_text()
    assert "K12×Z1" in md and "0.0705000 ± 0.0000100 (+53.5σ)" in md
    assert "Fused below the best splice by more than 3 standard errors in n = 13 " in md
    assert (tmp_path / "study.png").stat().st_size > 1000


def test_study_rejects_foreign_result_files(tmp_path):
    (tmp_path / "n13-sgd.json").write_text('{"generator": [[1]]}')
    with pytest.raises(ValueError, match="not a latticeq result"):
        collect([13], results=tmp_path)


def test_best_table_shows_the_second_decoder_and_notices_a_changed_generator(tmp_path):
    import json

    from latticeq.design.nsm import reestimate

    res = tmp_path / "lattices"
    path = Lattice(np.eye(13), nsm=(1 / 12, 1e-5)).to_json(res / "n13-sgd.json")
    run_study("13", results=res, out=tmp_path)
    assert "| not yet |" in (tmp_path / "best.md").read_text()
    reestimate(path, samples=500, seed=1, decoder="fpylll", progress=False)
    run_study("13", results=res, out=tmp_path)
    row = [ln for ln in (tmp_path / "best.md").read_text().splitlines() if ln.startswith("| 13 ")][0]
    assert "(5e2 pts)" in row and row.rstrip().endswith("σ |")
    d = json.loads(path.read_text())
    d["generator"][0][0] = 1.5  # someone edits the generator: the cross-check no longer applies
    path.write_text(json.dumps(d))
    run_study("13", results=res, out=tmp_path)
    assert "stale (generator changed since)" in (tmp_path / "best.md").read_text()


def test_best_table_considers_every_result_of_a_dimension(tmp_path):
    import json

    res = tmp_path / "lattices"
    Lattice(np.eye(13), nsm=(0.0705, 1e-5)).to_json(res / "n13-householder.json")
    other = Lattice(np.eye(13), nsm=(0.0699, 1e-5), provenance={"method": "matrix-exp-free",
                                                                 "init_from": "splice n12-x×Z1"})
    other.to_json(res / "n13-mef-from-n12.json")
    (res / "n13-broken.json").write_text(json.dumps({"no": "nsm"}))
    with pytest.warns(UserWarning, match="skipping .*n13-broken.json"):
        run_study("13", results=res, out=tmp_path)
    row = [ln for ln in (tmp_path / "best.md").read_text().splitlines() if ln.startswith("| 13 ")][0]
    assert "0.0699000" in row and "Matrix-Exp (free), from splice n12-x×Z1" in row
    assert "`results/lattices/n13-mef-from-n12.json`" in row


def test_best_table_combines_errors_with_a_measured_record(tmp_path):
    """At n = 18 the record is our own measurement of Lyu et al.'s E9,2+ (± 8.9e-6): the σ column
    divides by the combined standard error, not by ours alone."""
    from latticeq.design.study import PUBLISHED

    res = tmp_path / "lattices"
    g, se = 0.0684, 6e-6
    Lattice(np.eye(18), nsm=(g, se)).to_json(res / "n18-sgd.json")
    run_study("18", results=res, out=tmp_path)
    row = [ln for ln in (tmp_path / "best.md").read_text().splitlines() if ln.startswith("| 18 ")][0]
    rec, _, _, rec_se = PUBLISHED[18]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert "E9,2+" in cells[4] and f"± {rec_se:.1e}" in cells[4]
    assert float(cells[5]) == pytest.approx((rec - g) / math.hypot(se, rec_se), abs=0.06)


def test_best_table_takes_the_triangular_modification_as_the_reference_not_as_ours(tmp_path):
    """n{N}-triangular.json is Agrell & Allen's construction run by latticeq: it fills the record
    column (the stronger of it and a published record), with combined errors, and is never 'our best'
    even when it is lower."""
    res = tmp_path / "lattices"
    Lattice(np.eye(25), nsm=(0.0660, 4e-6)).to_json(res / "n25-matrix-exp-free.json")
    Lattice(np.eye(25), nsm=(0.0661, 3e-6), provenance={"method": "triangular"}).to_json(res / "n25-triangular.json")
    Lattice(np.eye(18), nsm=(0.0684, 6e-6)).to_json(res / "n18-sgd.json")
    Lattice(np.eye(18), nsm=(0.0683, 5e-6), provenance={"method": "triangular"}).to_json(res / "n18-triangular.json")
    run_study("18,25", results=res, out=tmp_path)
    md = (tmp_path / "best.md").read_text()
    rows = {ln.split("|")[1].strip(): [c.strip() for c in ln.strip().strip("|").split("|")]
            for ln in md.splitlines() if ln.startswith(("| 18 ", "| 25 "))}
    assert rows["25"][1].startswith("0.0660000") and "triangular modification of Leech×Z1" in rows["25"][4]
    assert float(rows["25"][5]) == pytest.approx((0.0661 - 0.0660) / math.hypot(4e-6, 3e-6), abs=0.06)
    # at 18 the triangular run (0.0683) is stronger than Lyu et al.'s E9,2+ and lower than ours
    assert rows["18"][1].startswith("0.0684000") and "triangular modification" in rows["18"][4]
    assert float(rows["18"][5]) < 0 and "E9,2+" not in rows["18"][4]


def test_best_table_counts_our_own_restarts_of_the_triangular_family_as_ours(tmp_path):
    """Only n{N}-triangular.json is the reference; a differently named triangular search (random
    glue starts, more restarts) is one of our searches and is labelled with its start."""
    res = tmp_path / "lattices"
    Lattice(np.eye(25), nsm=(0.0661, 3e-6), provenance={"method": "triangular"}).to_json(res / "n25-triangular.json")
    Lattice(np.eye(25), nsm=(0.0660, 3e-6), provenance={"method": "triangular", "restarts": 8,
                                                         "fusion_overrides": {"noise": 1.0}}
            ).to_json(res / "n25-triangular-random-glue.json")
    run_study("25", results=res, out=tmp_path)
    row = [ln for ln in (tmp_path / "best.md").read_text().splitlines() if ln.startswith("| 25 ")][0]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1].startswith("0.0660000 ± 0.0000030 (triangular modification, random start σ = 1, best of 8")
    assert "n25-triangular-random-glue.json" in cells[1] and "n25-triangular.json" in cells[4]
    assert float(cells[5]) == pytest.approx(1e-4 / math.hypot(3e-6, 3e-6), abs=0.06)
