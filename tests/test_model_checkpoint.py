"""GPTQ-format checkpoints (latticeq.nn.checkpoint): packing against the reference layout,
exact round trips of codes and logits, atomic writes, bad input."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from latticeq.nn import checkpoint as ck  # noqa: E402
from model_helpers import tiny_gpt2, tiny_llama  # noqa: E402


def _gptq_reference_pack(intweight, bits):
    """IST-DASLab/gptq ``QuantLinear.pack`` loop over rows of intweight (n, m), transcribed."""
    intweight = intweight.astype(np.uint32)
    qweight = np.zeros((intweight.shape[0] // 32 * bits, intweight.shape[1]), dtype=np.uint32)
    i = row = 0
    while row < qweight.shape[0]:
        if bits in (2, 4, 8):
            for j in range(i, i + (32 // bits)):
                qweight[row] |= intweight[j] << (bits * (j - i))
            i += 32 // bits
            row += 1
        else:  # 3 bits
            for j in range(i, i + 10):
                qweight[row] |= intweight[j] << (3 * (j - i))
            i += 10
            qweight[row] |= intweight[i] << 30
            row += 1
            qweight[row] |= (intweight[i] >> 2) & 1
            i += 1
            for j in range(i, i + 10):
                qweight[row] |= intweight[j] << (3 * (j - i) + 1)
            i += 10
            qweight[row] |= intweight[i] << 31
            row += 1
            qweight[row] |= (intweight[i] >> 1) & 0x3
            i += 1
            for j in range(i, i + 10):
                qweight[row] |= intweight[j] << (3 * (j - i) + 2)
            i += 10
            row += 1
    return qweight.view(np.int32)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_pack_matches_gptq_reference(bits):
    rng = np.random.default_rng(bits)
    codes = rng.integers(0, 2**bits, size=(96, 7))  # (n, m) as GPTQ packs intweight
    packed = ck.pack_codes(codes, bits, axis=0)
    assert packed.dtype == np.int32 and packed.shape == (96 * bits // 32, 7)
    np.testing.assert_array_equal(packed, _gptq_reference_pack(codes, bits))
    np.testing.assert_array_equal(ck.unpack_codes(packed, bits, 96, axis=0), codes)
    # along the output dimension (qzeros)
    pz = ck.pack_codes(codes.T, bits, axis=1)
    np.testing.assert_array_equal(pz, _gptq_reference_pack(codes, bits).T)
    np.testing.assert_array_equal(ck.unpack_codes(pz, bits, 96, axis=1), codes.T)


def test_pack_known_words():
    # 8 four-bit codes 0..7 in one word: 0x76543210
    assert ck.pack_codes(np.arange(8)[:, None], 4)[0, 0] == 0x76543210
    # 3-bit: code 10 straddles words 0 and 1 (two low bits at 30-31, high bit at bit 0)
    c = np.zeros((32, 1), dtype=np.int64)
    c[10] = 0b101
    p = ck.pack_codes(c, 3).view(np.uint32)
    assert p[0, 0] == 0b01 << 30 and p[1, 0] == 1 and p[2, 0] == 0


def test_pack_bad_input():
    with pytest.raises(ValueError, match="codes must lie"):
        ck.pack_codes(np.array([[16]]), 4)
    with pytest.raises(ValueError, match="bits"):
        ck.pack_codes(np.array([[1]]), 0)
    with pytest.raises(ValueError, match="do not hold exactly 9 codes of 4 bits"):
        ck.unpack_codes(np.zeros((1, 1), dtype=np.int32), 4, 9)
    # too many words is as wrong as too few: 3-bit data read as 2-bit
    packed = ck.pack_codes(np.arange(64).reshape(64, 1) % 8, 3)
    with pytest.raises(ValueError, match="the data and the stated bit width disagree"):
        ck.unpack_codes(packed, 2, 64)


def _random_layers(model, bits, group_size, seed=0):
    """Random codes / scales / zeros for every block linear layer, and the dequantized model."""
    from latticeq.nn.pipeline import find_blocks, find_linears

    rng = np.random.default_rng(seed)
    name, blocks = find_blocks(model)
    layers = {}
    for bi, block in enumerate(blocks):
        for lname, mod in find_linears(block).items():
            conv = type(mod).__name__ == "Conv1D"
            m, n = (mod.weight.shape[1], mod.weight.shape[0]) if conv else mod.weight.shape
            G = 1 if group_size is None else n // group_size
            g_idx = rng.permutation(np.arange(n) * G // n)  # act-order style scrambled groups
            q = ck.quantized_layer(
                rng.integers(0, 2**bits, size=(m, n)), rng.uniform(0.001, 0.05, size=(m, G)),
                rng.integers(0, 2**bits, size=(m, G)), g_idx, bits, transposed=conv)
            W = q.dequant()
            mod.weight.data = W.T.contiguous() if conv else W
            layers[f"{name}.{bi}.{lname}"] = q
    return layers


@pytest.mark.parametrize("make, bits, group_size, fmt", [
    (tiny_llama, 4, 32, "gptq"), (tiny_llama, 3, None, "gptq"), (tiny_llama, 2, 16, "gptq_v2"),
    (tiny_gpt2, 3, 32, "gptq"),
])
def test_round_trip_reproduces_logits_exactly(tmp_path, make, bits, group_size, fmt):
    model = make()
    layers = _random_layers(model, bits, group_size)
    out = ck.save_checkpoint(model, layers, tmp_path / "ckpt", bits=bits, group_size=group_size,
                             sym=False, desc_act=True, checkpoint_format=fmt)
    qc = json.loads((out / "quantize_config.json").read_text())
    assert qc["bits"] == bits and qc["group_size"] == (group_size or -1)
    assert qc["quant_method"] == "gptq" and qc["checkpoint_format"] == fmt and qc["desc_act"] is True
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["quantization_config"]["bits"] == bits
    from safetensors.torch import load_file

    t = load_file(str(out / "model.safetensors"))
    some = next(iter(layers))
    assert t[some + ".qweight"].dtype == torch.int32 and t[some + ".scales"].dtype == torch.float16
    assert t[some + ".g_idx"].dtype == torch.int32 and t[some + ".qzeros"].dtype == torch.int32
    assert some + ".weight" not in t
    back = ck.load_checkpoint(out)
    for name, q in layers.items():
        r = back.latticeq_quantized[name]
        np.testing.assert_array_equal(r.codes, q.codes)
        np.testing.assert_array_equal(r.zeros, q.zeros)
        np.testing.assert_array_equal(r.g_idx, q.g_idx)
    x = torch.randint(0, 256, (2, 24))
    with torch.no_grad():
        assert torch.equal(model(x).logits, back(x).logits)


def test_v1_zero_wraps_like_gptq(tmp_path):
    # zero point 0 in v1 is stored as (0 - 1) mod 2^b = 2^b - 1 and restored on load
    q = ck.quantized_layer(np.zeros((32, 32)), np.ones((32, 1)), np.zeros((32, 1)), np.zeros(32, int), 4)
    t = ck._layer_tensors(q, "gptq")
    assert t["qzeros"].numpy().view(np.uint32)[0, 0] == 0xFFFFFFFF
    t2 = ck._layer_tensors(q, "gptq_v2")
    assert t2["qzeros"].numpy()[0, 0] == 0
    # other readers (GPTQModel, vLLM) misread it: saving v1 with a zero point 0 warns, v2 does not
    model = tiny_llama()
    layers = _random_layers(model, 4, 32)
    some = next(iter(layers))
    layers[some].zeros[0, 0] = 0
    with pytest.warns(UserWarning, match="group.*zero point 0.*gptq_v2"):
        ck.save_checkpoint(model, layers, tmp_path / "v1", bits=4, group_size=32, sym=False, desc_act=False)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ck.save_checkpoint(model, layers, tmp_path / "v2", bits=4, group_size=32, sym=False, desc_act=False,
                           checkpoint_format="gptq_v2")


def test_existing_output_needs_force(tmp_path):
    model = tiny_llama()
    layers = _random_layers(model, 4, 32)
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="force"):
        ck.save_checkpoint(model, layers, out, bits=4, group_size=32, sym=False, desc_act=False)
    assert (out / "keep.txt").exists() and not (out / "config.json").exists()
    ck.save_checkpoint(model, layers, out, bits=4, group_size=32, sym=False, desc_act=False, force=True)
    assert not (out / "keep.txt").exists() and (out / "config.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    model = tiny_llama()
    layers = _random_layers(model, 4, 32)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        ck.save_checkpoint(model, layers, tmp_path / "ckpt", bits=4, group_size=32, sym=False, desc_act=False)
    assert list(tmp_path.iterdir()) == []


def test_quantized_layer_validation():
    with pytest.raises(ValueError, match="codes must be integers"):
        ck.quantized_layer(np.full((2, 4), 0.5), np.ones((2, 1)), np.zeros((2, 1)), np.zeros(4, int), 4)
    with pytest.raises(ValueError, match="zero points"):
        ck.quantized_layer(np.zeros((2, 4)), np.ones((2, 1)), np.full((2, 1), 16), np.zeros(4, int), 4)
    with pytest.raises(ValueError, match="g_idx"):
        ck.quantized_layer(np.zeros((2, 4)), np.ones((2, 1)), np.zeros((2, 1)), np.ones(4, int), 4)
    with pytest.raises(ValueError, match="float16"):
        ck.quantized_layer(np.zeros((2, 4)), np.full((2, 1), 1e6), np.zeros((2, 1)), np.zeros(4, int), 4)


def test_load_rejects_incomplete(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        ck.load_checkpoint(tmp_path)
