"""Lattice-coded whole models (latticeq.nn.vqformat): the pipeline quantizes every block with a
vector codebook, the in-memory model and the loaded latticeq-vq checkpoint give identical
logits (Llama-, OPT-, GPT-2- and Gemma-style tiny models), the module equals its dequantized
weight, resume works, and bad checkpoints and settings are refused with clear errors."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from latticeq.lattice.codebook import parse_codebook  # noqa: E402
from latticeq.nn import pipeline as pl  # noqa: E402
from latticeq.nn.vqformat import (VQLinear, install_vq_layers, is_vq_checkpoint, load_vq_checkpoint,  # noqa: E402
                                  save_vq_checkpoint, set_vq_cache)
from model_helpers import tiny_gemma, tiny_gpt2, tiny_llama, tiny_model_folder, tiny_opt  # noqa: E402


def _windows(n=8, L=24, seed=0):
    return torch.randint(0, 256, (n, L), generator=torch.Generator().manual_seed(seed))


def _quantize(model, codebook="e8p", bits=2, **kw):
    opts = pl.QuantizeOptions(bits=bits, act_order=True, codebook=codebook, **kw)
    return opts, pl.quantize_model(model, _windows(), opts, batch_size=4, progress=False)


@pytest.mark.parametrize("make", [tiny_llama, tiny_opt, tiny_gpt2, tiny_gemma])
def test_round_trip_gives_identical_logits(make, tmp_path):
    model = make()
    ids = _windows(2, 20, seed=9)
    with torch.no_grad():
        ref = model(ids).logits
    opts, res = _quantize(model)
    n_linear = sum(len(pl.find_linears(b)) for b in pl.find_blocks(make())[1])
    assert len(res.layers) == n_linear
    assert all(isinstance(m, VQLinear) for m in model.modules() if isinstance(m, VQLinear)) and sum(
        isinstance(m, VQLinear) for m in model.modules()) == n_linear
    with torch.no_grad():
        mem = model(ids).logits
    assert not torch.allclose(mem, ref)  # it is quantized
    out = save_vq_checkpoint(model, res.layers, tmp_path / "ck", bits=2, incoherence=True, desc_act=True,
                             damp_percent=0.01)
    assert is_vq_checkpoint(out)
    loaded = load_vq_checkpoint(out)
    with torch.no_grad():
        back = loaded(ids).logits
    assert torch.equal(back, mem)
    # both hold every layer folded once into a dense weight; codes-only mode differs by rounding
    assert all(m.cache for m in model.modules() if isinstance(m, VQLinear))
    lean = load_vq_checkpoint(out, cache=False)
    assert set_vq_cache(lean, False) == n_linear
    with torch.no_grad():
        assert torch.allclose(lean(ids).logits, back, atol=1e-3, rtol=1e-4)
    # every module computes its layer's dequantized weight's product (up to float error), in both modes
    for net in (loaded, lean):
        for name, q in res.layers.items():
            mod = net.get_submodule(name)
            x = torch.randn(3, q.shape[1], dtype=torch.float32)
            y = mod(x) - (mod.bias if mod.bias is not None else 0)
            assert torch.allclose(y, x @ q.dequant().T, atol=1e-4, rtol=1e-4)
            assert torch.allclose(mod.dense_weight(), q.dequant().float(), atol=1e-6)
    cfg = json.loads((out / "config.json").read_text())["quantization_config"]
    assert cfg["codebook"]["kind"] == "e8p" and cfg["format_version"] == 3 and cfg["index_bits"] == 16
    # bits per weight from the stored tensors: 16-bit codes per 8 weights + fp16 scale per row +
    # int16 permutation + sign bits
    bpw = pl.bits_per_weight(res.layers)
    assert 2.0 < bpw < 2.0 + 16 / 16 + 16 / 16 + 2 / 8


def test_voronoi_and_residual_codebooks_round_trip(tmp_path):
    for cb, bits, method in (("voronoi:D4", 2, "gptq"), ("e8p", 3, "gptq"), ("voronoi:E8", 3, "gptq"),
                             ("voronoi:D4", 2, "gptq+refine")):
        model = tiny_llama()
        _, res = _quantize(model, codebook=cb, bits=bits, method=method)
        out = save_vq_checkpoint(model, res.layers, tmp_path / f"{cb.replace(':', '_')}-{method}", bits=bits,
                                 incoherence=True, desc_act=True, damp_percent=0.01)
        ids = _windows(1, 16, seed=3)
        with torch.no_grad():
            assert torch.equal(load_vq_checkpoint(out)(ids).logits, model(ids).logits)
        q = next(iter(res.layers.values()))
        assert q.codebook.spec() == parse_codebook(cb, bits).spec()


def test_index_packing_round_trips_every_width():
    from latticeq.nn.vqformat import pack_indices, unpack_indices

    rng = np.random.default_rng(0)
    for b in (1, 3, 7, 8, 12, 16, 24, 31, 32, 48, 63):
        for count in (0, 1, 5, 97):
            c = rng.integers(0, 2**b, size=count, dtype=np.uint64).astype(np.int64) if b < 63 else \
                rng.integers(0, 2**62, size=count).astype(np.int64) * 2 + 1
            stream = pack_indices(c, b)
            assert stream.dtype == np.uint8 and stream.shape == (-(-count * b // 8),)
            np.testing.assert_array_equal(unpack_indices(stream, count, b), c)
    # the bit order is little-endian within and across bytes: 12-bit 0xABC, 0x123 -> BC 3A 12
    np.testing.assert_array_equal(pack_indices(np.array([0xABC, 0x123]), 12), [0xBC, 0x3A, 0x12])
    with pytest.raises(ValueError, match=r"\[0, 2\^12\)"):
        pack_indices(np.array([4096]), 12)
    with pytest.raises(ValueError, match="1 to 63"):
        pack_indices(np.array([1]), 64)


def test_codes_are_stored_in_exactly_their_bits_and_version_1_still_loads(tmp_path):
    """Voronoi D4 at 3 bits per weight: 4096 codewords, 12-bit indices — 12 bits per 4 weights
    on disk (format 2), not 16; a version-1 file (whole bytes per index) loads the same model."""
    from safetensors.torch import load_file, save_file

    model = tiny_llama()
    _, res = _quantize(model, codebook="voronoi:D4", bits=3)
    name, q = next(iter(res.layers.items()))
    assert q.codebook.size == 4096 and q.codebook.index_bits == 12
    m, n = q.shape
    assert q.stored_bits() == 12 * m * n // 4 + 16 * m + 16 * n + 8 * -(-(m + n) // 8)
    out = save_vq_checkpoint(model, res.layers, tmp_path / "v2", bits=3, incoherence=True, desc_act=True,
                             damp_percent=0.01)
    t = load_file(str(out / "model.safetensors"))
    assert t[f"{name}.vq_codes"].shape == (12 * m * n // 4 // 8,)
    ids = _windows(1, 16, seed=5)
    with torch.no_grad():
        ref = model(ids).logits
        assert torch.equal(load_vq_checkpoint(out)(ids).logits, ref)
    # the same checkpoint written as version 1 by hand: 2 whole bytes per 12-bit index
    for name, q in res.layers.items():
        c = q.codes.astype("<u8")
        t[f"{name}.vq_codes"] = torch.from_numpy(np.ascontiguousarray(c.view(np.uint8).reshape(*c.shape, 8)[..., :2]))
    save_file(t, str(out / "model.safetensors"))
    cfg = json.loads((out / "config.json").read_text())
    cfg["quantization_config"]["format_version"] = 1
    del cfg["quantization_config"]["index_bits"]
    (out / "config.json").write_text(json.dumps(cfg))
    with torch.no_grad():
        assert torch.equal(load_vq_checkpoint(out)(ids).logits, ref)
    # a version-1 layout under a version-2 header: refused, naming the file
    cfg["quantization_config"]["format_version"] = 2
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="model.safetensors.*has codes"):
        load_vq_checkpoint(out)


def test_vq_quantization_beats_scalar_rtn_layer_error():
    _, vq = _quantize(tiny_llama())
    rtn = pl.quantize_model(tiny_llama(), None, pl.QuantizeOptions(bits=2, method="rtn"), progress=False)
    assert np.mean([r["relative_error"] for r in vq.layer_stats]) < 1.0
    assert len(vq.layer_stats) == len(rtn.layer_stats)


def test_resume_gives_the_same_model(tmp_path, monkeypatch):
    ids = _windows(1, 16, seed=4)
    full = tiny_llama()
    opts, res = _quantize(full)
    # interrupt after the first block, then resume
    calls = {"n": 0}
    real = pl._save_block_state

    def stop_after_first(*a, **k):
        real(*a, **k)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(pl, "_save_block_state", stop_after_first)
    with pytest.raises(KeyboardInterrupt):
        pl.quantize_model(tiny_llama(), _windows(), opts, batch_size=4, state_dir=tmp_path, progress=False)
    monkeypatch.setattr(pl, "_save_block_state", real)
    again = tiny_llama()
    res2 = pl.quantize_model(again, _windows(), opts, batch_size=4, state_dir=tmp_path, resume=True, progress=False)
    with torch.no_grad():
        assert torch.equal(again(ids).logits, full(ids).logits)
    assert set(res2.layers) == set(res.layers)
    # different settings: refused
    other = pl.QuantizeOptions(bits=2, act_order=True, codebook="voronoi:E8")
    with pytest.raises(ValueError, match="different settings"):
        pl.quantize_model(tiny_llama(), _windows(), other, batch_size=4, state_dir=tmp_path, resume=True,
                          progress=False)


def test_bad_settings_and_checkpoints(tmp_path):
    with pytest.raises(ValueError, match="group_size"):
        pl.QuantizeOptions(bits=2, codebook="e8p", group_size=32).validate()
    with pytest.raises(ValueError, match="method is one of gptq, gptq[+]refine"):
        pl.QuantizeOptions(bits=2, codebook="e8p", method="rtn").validate()
    with pytest.raises(ValueError, match="cannot be set"):
        pl.QuantizeOptions(bits=2, codebook="e8p", solver_options={"refine_passes": 2}).validate()
    pl.QuantizeOptions(bits=2, codebook="e8p", method="gptq+refine", solver_options={"refine_passes": 2}).validate()
    with pytest.raises(ValueError, match="e8p provides"):
        pl.QuantizeOptions(bits=5, codebook="e8p").validate()
    with pytest.raises(ValueError, match="unknown codebook"):
        pl.QuantizeOptions(bits=2, codebook="lattice:E8").validate()
    model = tiny_llama()
    _, res = _quantize(model)
    out = save_vq_checkpoint(model, res.layers, tmp_path / "ck", bits=2, incoherence=True, desc_act=True,
                             damp_percent=0.01)
    with pytest.raises(FileExistsError):
        save_vq_checkpoint(model, res.layers, out, bits=2, incoherence=True, desc_act=True, damp_percent=0.01)
    cfg_path = out / "config.json"
    good = cfg_path.read_text()
    for change, match in ((lambda q: q.update(format_version=7), "format version 7"),
                          (lambda q: q.update(codebook={"kind": "mystery"}), "unknown or invalid codebook"),
                          (lambda q: q.update(transform_factors={"64": [4, 4, 4]}), "factors")):
        cfg = json.loads(good)
        change(cfg["quantization_config"])
        cfg_path.write_text(json.dumps(cfg))
        with pytest.raises(ValueError, match=match):
            load_vq_checkpoint(out)
    cfg_path.write_text(good)
    # a truncated weights file: an error naming it
    w = out / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="model.safetensors"):
        load_vq_checkpoint(out)
    # codes of the wrong shape (another codebook's layout): refused, not silently wrong
    from safetensors.torch import load_file, save_file

    w.write_bytes(data)
    t = load_file(str(w))
    key = next(k for k in t if k.endswith("vq_codes"))
    t[key] = t[key][:-1].contiguous()
    save_file(t, str(w))
    with pytest.raises(ValueError, match="has codes"):
        load_vq_checkpoint(out)


def test_input_scales_round_trip_and_bad_ones_are_refused(tmp_path):
    """Format version 3's optional input scales: W · diag(c) in every mode (codes decoded per
    call, dense, VQLayer.dequant), 16 bits per column in bits per weight, saved and loaded back
    exactly; wrong shapes, non-finite values, or input scales under a version-2 header refused."""
    from safetensors.torch import load_file, save_file

    _, res = _quantize(tiny_llama())
    ids = _windows(1, 16, seed=6)
    bpw = pl.bits_per_weight(res.layers)
    rng = np.random.default_rng(0)
    dense = {}
    for name, q in res.layers.items():
        dense[name] = q.dequant().double()
        q.in_scales = rng.uniform(0.5, 1.5, q.shape[1]).astype(np.float16)
    model = tiny_llama()  # the same float tensors the run started from
    install_vq_layers(model, res.layers)
    for name, q in res.layers.items():
        W = dense[name] * torch.from_numpy(q.in_scales.astype(np.float64))[None, :]
        assert torch.allclose(q.dequant().double(), W, atol=1e-5)
        mod = model.get_submodule(name)
        assert torch.allclose(mod.dense_weight().double(), W, atol=1e-5)
        x = torch.randn(3, q.shape[1])
        mod.set_cache(False)
        lean = mod(x)
        mod.set_cache(True)
        assert torch.allclose(lean, mod(x), atol=1e-4, rtol=1e-4)
    n_cols = sum(q.shape[1] for q in res.layers.values())
    n_w = sum(q.shape[0] * q.shape[1] for q in res.layers.values())
    assert pl.bits_per_weight(res.layers) == pytest.approx(bpw + 16 * n_cols / n_w)
    with torch.no_grad():
        ref = model(ids).logits
    out = save_vq_checkpoint(model, res.layers, tmp_path / "ck", bits=2, incoherence=True, desc_act=True,
                             damp_percent=0.01)
    back = load_vq_checkpoint(out)
    with torch.no_grad():
        assert torch.equal(back(ids).logits, ref)
    assert all(np.array_equal(back.latticeq_quantized[k].in_scales, q.in_scales) for k, q in res.layers.items())
    w, cfg_path = out / "model.safetensors", out / "config.json"
    good_w, good_cfg = w.read_bytes(), cfg_path.read_text()
    key = next(k for k in load_file(str(w)) if k.endswith("vq_in_scales"))
    for bad in (lambda v: v[:-1], lambda v: v.float(), lambda v: v * float("inf")):
        t = load_file(str(w))
        t[key] = bad(t[key]).contiguous()
        save_file(t, str(w))
        with pytest.raises(ValueError, match="input scales"):
            load_vq_checkpoint(out)
        w.write_bytes(good_w)
    cfg = json.loads(good_cfg)
    cfg["quantization_config"]["format_version"] = 2
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="format version 2 does not define"):
        load_vq_checkpoint(out)


def test_cli_quantize_and_eval_a_vq_checkpoint(tmp_path):
    from click.testing import CliRunner

    from latticeq.cli import main

    d = tiny_model_folder(tmp_path)
    out = tmp_path / "vq"
    r = CliRunner().invoke(main, ["quantize", str(d / "model"), "--codebook", "e8p", "--bits", "2", "--act-order",
                                  "--calib", str(d / "calib.txt"), "--nsamples", "4", "--seqlen", "32",
                                  "--eval", str(d / "calib.txt"), "--eval-windows", "2", "--out", str(out),
                                  "--no-progress"])
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "latticeq_record.json").read_text())
    assert rec["codebook"]["kind"] == "e8p" and 2.0 < rec["bits_per_weight"] < 3.5
    assert rec["transforms"] == {"kind": "randomized-hadamard", "seed_out": 0, "seed_in": 1}
    r2 = CliRunner().invoke(main, ["eval", str(out), "--text", str(d / "calib.txt"), "--seqlen", "32",
                                   "--max-windows", "2", "--no-progress"])
    assert r2.exit_code == 0, r2.output
    assert f"{rec['perplexity']:.4f}" in r2.output  # the loaded checkpoint scores what the run scored
    r3 = CliRunner().invoke(main, ["quantize", str(d / "model"), "--codebook", "e8p", "--bits", "2",
                                   "--group-size", "32", "--out", str(tmp_path / "bad"), "--no-progress"])
    assert r3.exit_code == 2 and "group_size" in r3.output
