"""Every command under bad input: one line ``error: …`` naming the problem, exit status 2, no
traceback, nothing written and no existing file changed — checked before any expensive work."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from click.testing import CliRunner

from latticeq.cli import main
from model_helpers import byte_tokenizer, tiny_llama


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    W = rng.standard_normal((8, 16))
    X = rng.standard_normal((64, 16))
    np.save(d / "W.npy", W)
    np.save(d / "H.npy", 2 * X.T @ X / 64)
    (d / "empty.npy").write_bytes(b"")
    (d / "trunc.npy").write_bytes((d / "W.npy").read_bytes()[:60])
    np.save(d / "pts.npy", rng.standard_normal((5, 4)))
    (d / "existing.txt").write_text("user data")
    (d / "latin1.txt").write_bytes("caf\xe9 ".encode("latin-1") * 500)
    tiny_llama().save_pretrained(d / "model")
    byte_tokenizer().save_pretrained(d / "model")
    (d / "calib.txt").write_text("It was a bright cold day in April. " * 200, encoding="utf-8")
    (d / "userdir").mkdir()
    (d / "userdir" / "notes.txt").write_text("keep me")
    return d


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _check(r, *needles):
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    assert "error:" in r.output, r.output
    for n in needles:
        assert n in r.output, (n, r.output)


def _snapshot(d):
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in d.rglob("*") if p.is_file()}


CASES = [
    # (command line with {d} for the inputs folder, what the message names)
    ("nsm E9", "unknown lattice"),
    ("nsm {d}/nope.json", "no lattice file"),
    ("info Q7", "unknown lattice"),
    ("closest D4 {d}/pts.npy --out {d}/existing.txt", "exists; pass --force"),
    ("closest D4 {d}/empty.npy --out {d}/new.npy", "empty"),
    ("closest D4 {d}/pts.npy --out {d}/nofolder/x.npy", "does not exist"),
    ("quantize-layer {d}/empty.npy {d}/H.npy --bits 3 --out {d}/q.npz", "W.npy"),
    ("quantize-layer {d}/trunc.npy {d}/H.npy --bits 3 --out {d}/q.npz", "not a readable .npy"),
    ("quantize-layer {d}/W.npy {d}/H.npy --bits 3 --out {d}/existing.txt", "exists; pass --force"),
    ("quantize-layer {d}/W.npy {d}/H.npy --bits 3 --group-size 17 --out {d}/q.npz", "exceeds the number of columns 16"),
    ("quantize-layer {d}/W.npy {d}/H.npy --bits 3 --group-refresh fresh --out {d}/q.npz", "--group-refresh"),
    ("search --dim 4 --method sgd --mu0 nan --out {d}/s", "mu0"),
    ("search --dim 4 --method sgd --mu0 -1 --out {d}/s", "mu0"),
    ("search --dim 4 --method sgd --steps 0 --out {d}/s", "steps"),
    ("search --dim 4 --method sgd --start-noise 1 --out {d}/s", "--start-noise applies to the fusion methods"),
    ("search --dim 4 --method splice --start-noise 1 --out {d}/s", "not splice"),
    ("search --dim 5 --method triangular --start-noise -1 --out {d}/s", "--start-noise"),
    ("search --dim 13 --method splice --steps 100 --out {d}/s", "takes no steps"),
    ("search --dim 5 --method triangular --mu0 0.1 --out {d}/s", "--mu0 applies to sgd only"),
    ("search --dim 1 --method sgd --out {d}/s", "dimension"),
    ("campaign --dims 30-20 --out {d}/s --state {d}/c", "end is below the start"),
    ("campaign --dims 25 --methods splice --out {d}/s --state {d}/c", "unknown campaign method"),
    ("campaign --dims 13,24 --methods triangular --out {d}/s --state {d}/c", "single lattice in n = 24 (Leech)"),
    ("search --dim 16 --method triangular --samples 100 --out {d}/s", "at least two lattices"),
    ("splice --components K12,Q --out {d}/sp.json", "unknown lattice"),
    ("splice --dim 13 --out {d}/existing.txt", "exists; pass --force"),
    ("identify E8 --plot {d}/existing.txt", "suffix"),
    ("study --out {d}/nofolder", "not an existing folder"),
    ("compare E8 D8+ --tol 0", "--tol"),
    ("draw voronoi A2 --out {d}/existing.txt", "suffix"),
    ("report {d}/nothing", "no record file"),
    ("quantize {d}/model --bits 9 --method gptq --out {d}/q1", "bits"),
    ("quantize {d}/model --bits 3 --method gptq --eval {d}/latin1.txt --calib {d}/calib.txt --seqlen 32 --nsamples 2 --out {d}/q2", "not UTF-8"),
    ("quantize {d}/model --bits 3 --method gptq --eval-windows -1 --out {d}/q3", "eval_windows"),
    ("quantize {d}/model --bits 3 --method gptq --device cuda:banana --out {d}/q4", "device"),
    ("quantize {d}/model --bits 3 --method rtn --out {d}/userdir --force", "did not write"),
    ("quantize {d}/model --bits 3 --method rtn --out {d}/userdir", "exists and holds files"),
    ("eval {d}/model --text {d}/latin1.txt --seqlen 32", "not UTF-8"),
    ("eval {d}/model --max-windows 0", "--max-windows"),
    ("eval {d}/model --record {d}/existing.txt", "exists; pass --force"),
    ("quantize {d}/model --bits 3 --method gptq --nosuchflag --out {d}/q5", "No such option"),
]


@pytest.mark.parametrize("line,needle", CASES, ids=[c[0].split()[0] + "-" + str(i) for i, c in enumerate(CASES)])
def test_bad_input_is_one_clear_line_and_writes_nothing(files, line, needle):
    before = _snapshot(files)
    t0 = time.perf_counter()
    r = _run(*line.format(d=files).split())
    _check(r, needle)
    assert time.perf_counter() - t0 < 60  # fails fast (the real bound, 5 s, is not a unit test's job)
    assert _snapshot(files) == before, "a refused command changed or wrote files"


def test_sgd_with_a_huge_step_size_stops_with_a_message(tmp_path):
    r = _run("search", "--dim", "6", "--method", "sgd", "--mu0", "1000", "--steps", "50000",
             "--samples", "100", "--out", tmp_path, "--no-progress", "--workers", "1")
    _check(r, "diverged", "--mu0")


def test_unwritable_output_folder_is_refused_up_front(files, tmp_path, monkeypatch):
    import latticeq.io as lio

    real = lio.os.access
    monkeypatch.setattr(lio.os, "access", lambda p, mode: False if mode == os.W_OK else real(p, mode))
    for line in (f"closest D4 {files}/pts.npy --out {tmp_path}/c.npy",
                 f"quantize-layer {files}/W.npy {files}/H.npy --bits 3 --out {tmp_path}/q.npz",
                 f"splice --dim 13 --out {tmp_path}/s.json",
                 f"search --dim 4 --method sgd --out {tmp_path}/res"):
        _check(_run(*line.split()), "not writable")
    assert list(tmp_path.iterdir()) == []


def test_force_overwrites_what_it_may(files, tmp_path):
    out = tmp_path / "q.npz"
    args = ["quantize-layer", files / "W.npy", files / "H.npy", "--bits", "3", "--out", out]
    assert _run(*args).exit_code == 0
    _check(_run(*args), "exists; pass --force")
    assert _run(*args, "--force").exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.npz"]  # no temp files left
