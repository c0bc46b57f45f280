"""quantize-layer CLI: output contract and error messages."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from latticeq.cli import main


def _files(tmp_path, m=6, n=32, asym=False):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((100, n))
    H = X.T @ X / 50
    if asym:
        H[0, 1] += 5
    W = 0.1 * rng.standard_normal((m, n))
    np.save(tmp_path / "W.npy", W.astype(np.float32))
    np.save(tmp_path / "H.npy", H)
    return str(tmp_path / "W.npy"), str(tmp_path / "H.npy")


@pytest.mark.parametrize("method", ["gptq", "babai", "block+refine", "kbest"])
def test_quantize_layer_writes_contract(tmp_path, method):
    w, h = _files(tmp_path)
    out = str(tmp_path / "out.npz")
    r = CliRunner().invoke(main, ["quantize-layer", w, h, "--bits", "3", "--group-size", "16", "--act-order", "--method", method, "--out", out])
    assert r.exit_code == 0, r.output
    z = np.load(out)
    assert z["codes"].shape == (6, 32) and z["codes"].min() >= 0 and z["codes"].max() <= 7
    assert z["scales"].shape == (6, 2) and z["zeros"].shape == (6, 2)
    assert sorted(z["perm"].tolist()) == list(range(32))
    g = z["g_idx"]
    assert np.allclose(z["dequant"], z["scales"][:, g] * (z["codes"] - z["zeros"][:, g]))
    from latticeq.nn.layer import LayerProblem

    P = LayerProblem(torch.from_numpy(np.load(w)), torch.from_numpy(np.load(h)))
    assert float(z["error"]) == pytest.approx(P.objective(torch.from_numpy(z["dequant"]).double()), rel=1e-5)
    assert json.loads(str(z["provenance"]))["method"] == method


def test_quantize_layer_gptq_and_babai_files_agree(tmp_path):
    w, h = _files(tmp_path, m=10, n=48)
    outs = []
    for meth in ("gptq", "babai"):
        out = str(tmp_path / f"{meth}.npz")
        r = CliRunner().invoke(main, ["quantize-layer", w, h, "--bits", "2", "--method", meth, "--out", out])
        assert r.exit_code == 0, r.output
        outs.append(np.load(out)["codes"])
    assert np.array_equal(*outs)


@pytest.mark.parametrize(
    "args,msg",
    [
        (["--bits", "9"], "bits must be an integer from 2 to 8"),
        (["--bits", "3", "--group-size", "500"], "exceeds the number of columns"),
        (["--bits", "3", "--method", "magic"], "unknown method 'magic'"),
    ],
)
def test_quantize_layer_bad_input(tmp_path, args, msg):
    w, h = _files(tmp_path)
    r = CliRunner().invoke(main, ["quantize-layer", w, h, *args, "--out", str(tmp_path / "o.npz")])
    assert r.exit_code != 0
    assert msg in r.output


def test_quantize_layer_bad_hessian_and_missing_file(tmp_path):
    w, h = _files(tmp_path, asym=True)
    r = CliRunner().invoke(main, ["quantize-layer", w, h, "--bits", "3", "--out", str(tmp_path / "o.npz")])
    assert r.exit_code != 0 and "not symmetric" in r.output
    r = CliRunner().invoke(main, ["quantize-layer", str(tmp_path / "nope.npy"), h, "--bits", "3", "--out", str(tmp_path / "o.npz")])
    assert r.exit_code != 0 and "file not found" in r.output


def test_quantize_layer_bits_per_weight_counts_everything(tmp_path):
    w, h = _files(tmp_path, m=6, n=32)
    out = str(tmp_path / "s.npz")
    r = CliRunner().invoke(main, ["quantize-layer", w, h, "--bits", "3", "--group-size", "16", "--out", out])
    assert r.exit_code == 0, r.output
    # 3-bit codes + per (row, group) fp16 scale and 3-bit zero + int32 g_idx per column
    assert float(np.load(out)["bits_per_weight"]) == pytest.approx((3 * 192 + 2 * 6 * 19 + 32 * 32) / 192)


@pytest.mark.parametrize("codebook,d", [("voronoi:D4", 4), ("voronoi:E8", 8)])
def test_quantize_layer_with_a_lattice_codebook(tmp_path, codebook, d):
    w, h = _files(tmp_path, m=6, n=32)
    out = str(tmp_path / "v.npz")
    r = CliRunner().invoke(main, ["quantize-layer", w, h, "--bits", "2", "--codebook", codebook, "--act-order",
                                  "--seed", "5", "--out", out])
    assert r.exit_code == 0, r.output
    z = np.load(out)
    assert z["codes"].shape == (6, 32 // d) and z["scales"].shape == (6,) and z["dequant"].shape == (6, 32)
    assert float(z["bits_per_weight"]) == pytest.approx(2 + 16 / 32)
    prov = json.loads(str(z["provenance"]))
    assert prov["codebook"]["lattice"]["catalog"] == codebook.split(":")[1] and prov["transforms"]["input"]["seed"] == 6
    from latticeq.nn.layer import LayerProblem

    P = LayerProblem(torch.from_numpy(np.load(w)), torch.from_numpy(np.load(h)))
    assert float(z["error"]) == pytest.approx(P.objective(torch.from_numpy(z["dequant"]).double()), rel=1e-5)


@pytest.mark.parametrize("codebook,msg", [("e8q", "unknown codebook 'e8q'"), ("voronoi:Q9", "unknown lattice 'Q9'"),
                                          ("voronoi:E8", "not a multiple of the codebook dimension 8")])
def test_quantize_layer_codebook_bad_input(tmp_path, codebook, msg):
    w, h = _files(tmp_path, m=6, n=30)
    r = CliRunner().invoke(main, ["quantize-layer", w, h, "--bits", "2", "--codebook", codebook,
                                  "--out", str(tmp_path / "v.npz")])
    assert r.exit_code == 2 and msg in r.output
    assert not (tmp_path / "v.npz").exists()


def test_quantize_layer_codebook_refinement_and_scalar_only_flags(tmp_path):
    w, h = _files(tmp_path, m=6, n=32)
    outs = {}
    for method in ("gptq", "gptq+refine"):
        out = str(tmp_path / f"{method}.npz")
        r = CliRunner().invoke(main, ["quantize-layer", w, h, "--bits", "2", "--codebook", "voronoi:D4",
                                      "--method", method, "--out", out])
        assert r.exit_code == 0, r.output
        outs[method] = np.load(out)
        assert json.loads(str(outs[method]["provenance"]))["method"] == method
    assert float(outs["gptq+refine"]["error"]) <= float(outs["gptq"]["error"]) * (1 + 1e-9)
    for extra, msg in ((["--method", "rtn"], "method is one of gptq, gptq+refine"),
                       (["--group-size", "16"], "--group-size cannot be used with a vector codebook"),
                       (["--mse", "--block", "4"], "--mse, --block cannot be used")):
        r = CliRunner().invoke(main, ["quantize-layer", w, h, "--bits", "2", "--codebook", "voronoi:D4",
                                      "--out", str(tmp_path / "bad.npz"), *extra])
        assert r.exit_code == 2 and msg in r.output, r.output
        assert not (tmp_path / "bad.npz").exists()
