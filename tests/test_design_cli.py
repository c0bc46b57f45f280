from click.testing import CliRunner

from latticeq.cli import main


def test_splice_command():
    r = CliRunner().invoke(main, ["splice", "--dim", "13"])
    assert r.exit_code == 0 and "K12×Z1: n=13 NSM = 0.0710346" in r.output
    r = CliRunner().invoke(main, ["splice", "--components", "D4,Z1", "--dim", "6"])
    assert r.exit_code != 0 and "sum to 5, not n=6" in r.output


def test_compare_command():
    r = CliRunner().invoke(main, ["compare", "E8", "D8+"])
    assert r.exit_code == 0 and "SAME" in r.output and "240" in r.output
    r = CliRunner().invoke(main, ["compare", "E8", "Z8"])
    assert r.exit_code == 0 and "DIFFERENT" in r.output


def test_search_bad_input(tmp_path):
    r = CliRunner().invoke(main, ["search", "--dim", "1", "--method", "sgd", "--out", str(tmp_path)])
    assert r.exit_code != 0 and "2..64" in r.output
    r = CliRunner().invoke(main, ["search", "--dim", "8", "--method", "annealing"])
    assert r.exit_code != 0 and "annealing" in r.output
    r = CliRunner().invoke(main, ["search", "--dim", "8", "--method", "sgd", "--preset", "turbo"])
    assert r.exit_code != 0 and "turbo" in r.output
    r = CliRunner().invoke(main, ["search", "--dim", "8", "--method", "sgd", "--resume",
                                  "--out", str(tmp_path)])
    assert r.exit_code != 0 and "nothing to resume" in r.output


def test_search_and_study_commands(tmp_path):
    out = tmp_path / "lattices"
    r = CliRunner().invoke(main, ["search", "--dim", "4", "--method", "sgd", "--steps", "3000",
                                  "--samples", "20000", "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert (out / "n4-sgd.json").exists()
    r = CliRunner().invoke(main, ["study", "--dims", "4-5", "--results", str(out), "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "study.csv").read_text().count("\n") == 3


def test_splice_with_a_saved_lattice_and_fusion_from_it(tmp_path):
    import json

    import numpy as np

    from latticeq.lattice import Lattice, catalog
    r = CliRunner()
    d4 = Lattice(catalog.get("D4").generator, name="mine", nsm=(0.0766, 1e-5)).to_json(tmp_path / "n4-mine.json")
    out = tmp_path / "n5-splice.json"
    res = r.invoke(main, ["splice", "--components", f"{d4},Z1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    p = json.loads(out.read_text())["provenance"]
    assert p["components"] == ["n4-mine", "Z1"]
    assert p["nsm"] == __import__("pytest").approx(0.0766 ** 0.8 * (1 / 12) ** 0.2)
    res = r.invoke(main, ["search", "--dim", "5", "--method", "householder", "--init", str(out), "--steps", "20",
                          "--samples", "2000", "--out", str(tmp_path), "--no-progress", "--name", "hh-from-mine"])
    assert res.exit_code == 0, res.output
    prov = json.loads((tmp_path / "n5-hh-from-mine.json").read_text())["provenance"]
    assert prov["init_from"] == "splice n4-mine×Z1"
    res = r.invoke(main, ["search", "--dim", "5", "--method", "triangular", "--init", str(out), "--steps", "5",
                          "--start-noise", "1", "--samples", "2000", "--out", str(tmp_path), "--no-progress",
                          "--name", "glued"])
    assert res.exit_code == 0, res.output
    prov = json.loads((tmp_path / "n5-glued.json").read_text())["provenance"]
    assert prov["fusion_overrides"] == {"steps": 5, "noise": 1.0} and prov["steps"] == 5
    bare = Lattice(np.eye(4), name="bare").to_json(tmp_path / "bare.json")
    res = r.invoke(main, ["splice", "--components", f"{bare},Z1"])
    assert res.exit_code != 0 and "records no NSM estimate" in res.output
    res = r.invoke(main, ["splice", "--components", "missing.json,Z1"])
    assert res.exit_code != 0 and "no lattice file at missing.json" in res.output
