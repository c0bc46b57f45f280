"""`latticeq draw ...` end to end through click, including the bad-input errors."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from latticeq.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(*args):
    return CliRunner().invoke(main, ["draw", *map(str, args)])


def test_voronoi_catalog_and_saved_lattice(tmp_path):
    r = run("voronoi", "A2", "--out", tmp_path / "a2.png", "--samples", 20)
    assert r.exit_code == 0, r.output
    assert "NSM 0.0801875" in r.output and (tmp_path / "a2.png").read_bytes()[:8] == PNG_MAGIC
    from latticeq.lattice import Lattice

    Lattice(np.array([[2.0, 0, 0], [0, 2.0, 0], [1.0, 1.0, 1.0]]), name="bcc").to_json(tmp_path / "bcc.json")
    r = run("voronoi", tmp_path / "bcc.json", "--out", tmp_path / "bcc.svg", "--samples", 10)
    assert r.exit_code == 0, r.output
    assert "14 relevant vectors" in r.output and "NSM 0.0785433" in r.output


def test_theta_overlay(tmp_path):
    r = run("theta", "A2", "Z2", "--out", tmp_path / "t.png")
    assert r.exit_code == 0, r.output
    assert "first shells" in r.output and (tmp_path / "t.png").exists()


def test_babai_and_gptq(tmp_path):
    X = np.array([[1.0, 2.3], [0.2, 1.1], [-0.4, 0.5]])
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "w.npy", np.array([0.4, -1.3]))
    r = run("babai", "--x", tmp_path / "X.npy", "--w", tmp_path / "w.npy", "--out", tmp_path / "b.png")
    assert r.exit_code == 0, r.output
    lines = [l for l in r.output.splitlines() if "codes" in l]
    assert lines[0].split("codes")[1].split("]")[0] == lines[1].split("codes")[1].split("]")[0]   # GPTQ == Babai
    r = run("gptq", "--dim", 3, "--seed", 2, "--out", tmp_path / "g.png")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "g.png").read_bytes()[:8] == PNG_MAGIC


def test_study_and_quant(tmp_path):
    csv = tmp_path / "study.csv"
    csv.write_text("dim,sphere_bound,best_splice,best_splice_stderr,best_splice_components\n2,0.0796,0.0802,,A2\n3,0.077,0.0785,,A3*\n")
    r = run("study", csv, "--out", tmp_path / "s.png")
    assert r.exit_code == 0, r.output
    assert "best_splice" in r.output and (tmp_path / "s.png").exists()
    rec = tmp_path / "r.json"
    rec.write_text(json.dumps([{"model": "m", "method": "gptq", "bits": 4, "perplexity": 21.0},
                               {"model": "m", "method": "gptq", "bits": 3, "perplexity": 30.0}]))
    r = run("quant", rec, "--out", tmp_path / "q.png")
    assert r.exit_code == 0, r.output
    assert "gptq" in r.output and (tmp_path / "q.png").exists()


def test_bad_input_gives_clear_errors(tmp_path):
    r = run("voronoi", "E8", "--out", tmp_path / "e8.png")
    assert r.exit_code != 0 and "2-D and 3-D" in r.output
    r = run("nonsense", "--out", tmp_path / "x.png")
    assert r.exit_code != 0 and "No such command" in r.output
    r = run("voronoi", "A2", "--out", tmp_path / "missing-dir" / "a.png")
    assert r.exit_code != 0 and "does not exist" in r.output
    r = run("voronoi", "A2", "--out", tmp_path / "a.bmp")
    assert r.exit_code != 0 and "allowed: .png, .svg" in r.output
    empty = tmp_path / "empty.csv"
    empty.write_text("dim,sphere_bound,best_splice\n")
    r = run("study", empty, "--out", tmp_path / "s.png")
    assert r.exit_code != 0 and "no rows" in r.output
    emptyrec = tmp_path / "none.json"
    emptyrec.write_text("[]")
    r = run("quant", emptyrec, "--out", tmp_path / "q.png")
    assert r.exit_code != 0 and "no run records" in r.output
    r = run("babai", "--x", tmp_path / "nope.npy", "--out", tmp_path / "b.png")
    assert r.exit_code != 0 and "no such .npy" in r.output
    r = run("theta", "NotALattice", "--out", tmp_path / "t.png")
    assert r.exit_code != 0 and "error" in r.output.lower()


@pytest.mark.skipif(__import__("os").geteuid() == 0, reason="root can write anywhere")
def test_unwritable_directory(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    r = run("voronoi", "A2", "--out", d / "a.png")
    assert r.exit_code != 0 and "not writable" in r.output


def test_unwritable_directory_reported(tmp_path, monkeypatch):
    import os

    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if mode == os.W_OK else real(p, mode))
    r = run("voronoi", "A2", "--out", tmp_path / "a.png")
    assert r.exit_code != 0 and "not writable" in r.output
