"""The core CLI contract: nsm, closest, info (flags, JSON keys, files, errors)."""

import json

import numpy as np
from click.testing import CliRunner

from latticeq.cli import main
from latticeq.lattice import Lattice, catalog


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_nsm_json_contract():
    r = run("nsm", "D4", "--samples", "20000", "--seed", "1", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    for key in ("nsm", "stderr", "samples", "dim", "reference", "sigmas"):
        assert key in d
    assert d["dim"] == 4 and d["samples"] == 20000
    assert abs(d["nsm"] - 0.0766032) < 5 * d["stderr"]


def test_nsm_text_and_saved_lattice(tmp_path):
    path = catalog.get("A2").to_json(tmp_path / "a2.json")
    r = run("nsm", path, "--samples", "5000", "--no-progress")
    assert r.exit_code == 0, r.output
    assert "NSM =" in r.output and "standard errors" in r.output


def test_closest_writes_exact_points(tmp_path):
    X = np.random.default_rng(0).normal(size=(50, 8))
    np.save(tmp_path / "x.npy", X)
    out = tmp_path / "p.npy"
    r = run("closest", "E8", tmp_path / "x.npy", "--out", out, "--coords", tmp_path / "u.npy")
    assert r.exit_code == 0, r.output
    P = np.load(out)
    np.testing.assert_allclose(P, catalog.get("E8").closest_point(X), atol=1e-9)
    U = np.load(tmp_path / "u.npy")
    np.testing.assert_allclose(U @ catalog.get("E8").generator, P, atol=1e-9)
    # never overwrites silently
    r = run("closest", "E8", tmp_path / "x.npy", "--out", out)
    assert r.exit_code == 2 and "exists" in r.output


def test_info_json_has_generator_and_kissing_number():
    r = run("info", "D4", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["kissing_number"] == 24 and d["dim"] == 4
    assert np.allclose(Lattice(d["generator"]).gram, catalog.get("D4").gram)


def test_bad_input_is_a_clear_error(tmp_path):
    r = run("nsm", "NoSuchLattice9")
    assert r.exit_code == 2 and "error:" in r.output
    r = run("closest", "E8", tmp_path / "missing.npy", "--out", tmp_path / "o.npy")
    assert r.exit_code == 2 and "no points file" in r.output
    np.save(tmp_path / "x.npy", np.zeros((3, 5)))
    r = run("closest", "E8", tmp_path / "x.npy", "--out", tmp_path / "o.npy")
    assert r.exit_code == 2 and "shape" in r.output
    assert not (tmp_path / "o.npy").exists()
    r = run("nsm", "E8", "--samples", "5")
    assert r.exit_code == 2 and "samples" in r.output


def test_nsm_update_records_in_the_file_and_refuses_bad_targets(tmp_path):
    path = tmp_path / "n3-x.json"
    Lattice(catalog.get("A3*").generator, name="mine").to_json(path)
    r = run("nsm", str(path), "--samples", "2000", "--seed", "5", "--update", "--json")
    assert r.exit_code == 0, r.output
    est = json.loads(r.output)
    d = json.loads(path.read_text())
    assert d["nsm"]["value"] == est["nsm"] and d["provenance"]["nsm_samples"] == 2000
    r = run("nsm", "D4", "--samples", "2000", "--update")
    assert r.exit_code != 0 and "--update needs a saved lattice file" in r.output
    r = run("nsm", str(path), "--samples", "2000", "--update", "--target-stderr", "1e-3")
    assert r.exit_code != 0 and "drop --target-stderr" in r.output
    r = run("nsm", str(path), "--samples", "2000", "--seed", "6", "--pool")
    assert r.exit_code != 0 and "use it with --update" in r.output
    r = run("nsm", str(path), "--samples", "2000", "--seed", "5", "--update", "--pool")
    assert r.exit_code != 0 and "already uses seed 5" in r.output
    r = run("nsm", str(path), "--samples", "3000", "--seed", "6", "--update", "--pool")
    assert r.exit_code == 0 and "pooled over 5,000 samples; this run 3,000" in r.output, r.output
    d = json.loads(path.read_text())
    assert d["provenance"]["nsm_samples"] == 5000 and d["provenance"]["nsm_seed"] == [5, 6]
