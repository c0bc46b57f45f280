"""Interoperability: latticeq's GPTQ checkpoints load in transformers through its own GPTQ
integration (optimum + GPTQModel, CPU kernel), with the same weights and logits.

GPTQModel is not a latticeq dependency (it builds from source and pins newer torch), so this
module skips unless it is importable. To run it::

    BUILD_CUDA_EXT=0 pip install --no-build-isolation --target /tmp/gq --no-deps optimum gptqmodel \\
        pypcre tokenicer logbar device-smi defuser torchao threadpoolctl dill
    PYTHONPATH=/tmp/gq pytest tests/test_model_interop.py
"""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("optimum")
pytest.importorskip("gptqmodel")

from latticeq.nn import checkpoint as ck  # noqa: E402
from latticeq.nn.pipeline import find_blocks, find_linears  # noqa: E402
from model_helpers import tiny_llama  # noqa: E402


def _random_layers(model, bits, group_size, zero_low, seed=0):
    """Random codes, fp16-exact scales and zeros in [zero_low, maxq], act-order style g_idx."""
    rng = np.random.default_rng(seed)
    name, blocks = find_blocks(model)
    layers = {}
    maxq = 2**bits - 1
    for bi, block in enumerate(blocks):
        for lname, mod in find_linears(block).items():
            m, n = mod.weight.shape
            G = n // group_size
            g_idx = rng.permutation(np.arange(n) * G // n)
            scales = rng.uniform(0.001, 0.05, size=(m, G)).astype(np.float16).astype(np.float32)
            q = ck.quantized_layer(rng.integers(0, maxq + 1, size=(m, n)), scales,
                                   rng.integers(zero_low, maxq + 1, size=(m, G)), g_idx, bits)
            mod.weight.data = q.dequant()
            layers[f"{name}.{bi}.{lname}"] = q
    return layers


# the v1 ("gptq") format stores zero − 1, so a zero of 0 is not representable there (GPTQ's
# own quirk, see test_model_checkpoint.test_v1_zero_wraps_like_gptq): v1 cases use zeros ≥ 1
@pytest.mark.parametrize("bits, fmt, zero_low", [
    (4, "gptq", 1), (3, "gptq", 1), (2, "gptq", 1), (8, "gptq", 1), (4, "gptq_v2", 0), (3, "gptq_v2", 0),
])
def test_transformers_gptqmodel_loads_our_checkpoint(tmp_path, bits, fmt, zero_low):
    from transformers import AutoModelForCausalLM

    model = tiny_llama(seed=2)
    layers = _random_layers(model, bits, 32, zero_low)
    out = ck.save_checkpoint(model, layers, tmp_path / "ckpt", bits=bits, group_size=32, sym=False,
                             desc_act=True, checkpoint_format=fmt)
    assert json.loads((out / "config.json").read_text())["quantization_config"]["checkpoint_format"] == fmt
    hf = AutoModelForCausalLM.from_pretrained(str(out), device_map="cpu", dtype=torch.float32)
    ours = ck.load_checkpoint(out)
    name, blocks = "model.layers", hf.model.layers  # GPTQModel's layers are no longer nn.Linear
    seen = 0
    for bi, block in enumerate(blocks):
        for lname, mod in block.named_modules():
            full = f"{name}.{bi}.{lname}"
            if full not in layers:
                continue
            assert hasattr(mod, "dequantize_weight"), f"{full} was not loaded as a GPTQ layer"
            Wd = mod.dequantize_weight().detach().float().T  # GPTQModel returns (in, out)
            W = layers[full].dequant()
            # GPTQModel dequantizes in float16: equal up to its rounding
            torch.testing.assert_close(Wd, W, rtol=2e-3, atol=1e-5)
            seen += 1
    assert seen == len(layers) == 14
    x = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = hf(x).logits, ours(x).logits
    torch.testing.assert_close(a, b, rtol=0, atol=1e-2 * float(b.abs().max()))
    assert float((a.argmax(-1) == b.argmax(-1)).float().mean()) > 0.9


def test_v1_zero_point_0_is_misread_by_gptqmodel(tmp_path):
    """Why save_checkpoint warns: GPTQModel's v1 reader does not undo the wrap of zero 0."""
    from transformers import AutoModelForCausalLM

    model = tiny_llama(seed=2)
    layers = _random_layers(model, 4, 32, zero_low=0)
    with pytest.warns(UserWarning, match="zero point 0"):
        out = ck.save_checkpoint(model, layers, tmp_path / "ckpt", bits=4, group_size=32, sym=False,
                                 desc_act=True, checkpoint_format="gptq")
    hf = AutoModelForCausalLM.from_pretrained(str(out), device_map="cpu", dtype=torch.float32)
    q = layers["model.layers.0.self_attn.q_proj"]
    Wd = hf.model.layers[0].self_attn.q_proj.dequantize_weight().detach().float().T
    assert not torch.allclose(Wd, q.dequant(), rtol=2e-3, atol=1e-5)
    np.testing.assert_array_equal(ck.load_checkpoint(out).latticeq_quantized["model.layers.0.self_attn.q_proj"].zeros,
                                  q.zeros)  # latticeq's own reader restores it
