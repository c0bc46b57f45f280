"""Reuse of a block's frozen results between the pipeline's forwards (latticeq.nn.reuse):
identical codes and outputs with a third of the linear products, on four architectures;
in-place changes and unfrozen layers are never served from the store."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from latticeq.nn import pipeline as pl  # noqa: E402
from latticeq.nn.reuse import OutputReuse, trace_block  # noqa: E402
from model_helpers import tiny_gemma, tiny_gpt2, tiny_llama, tiny_opt  # noqa: E402


class _CountProducts(torch.overrides.TorchFunctionMode):
    """Counts the weight products the forwards compute (nn.Linear and GPT-2's Conv1D)."""

    def __init__(self):
        super().__init__()
        self.n = 0
        self.attention = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (torch.nn.functional.linear, torch.addmm):
            self.n += 1
        if func is torch.nn.functional.scaled_dot_product_attention or func is torch.softmax \
                or func is torch.nn.functional.softmax:
            self.attention += 1
        return func(*args, **(kwargs or {}))


def _windows(n=8, L=24, seed=0):
    return torch.randint(0, 256, (n, L), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("make, per_batch_naive", [(tiny_llama, 20), (tiny_opt, 18), (tiny_gemma, 20),
                                                   (tiny_gpt2, 10)])
def test_same_codes_with_a_third_of_the_products(make, per_batch_naive):
    w = _windows(8, 24)
    opts = pl.QuantizeOptions(bits=3, group_size=32, method="gptq", act_order=True)
    counts, results = {}, {}
    for reuse in (False, True):
        m = make(seed=1)
        with _CountProducts() as c:
            res = pl.quantize_model(m, w, opts, batch_size=4, progress=False, reuse_outputs=reuse)
        counts[reuse], results[reuse] = (c.n, c.attention), (m, res)
    (m0, r0), (m1, r1) = results[False], results[True]
    assert set(r0.layers) == set(r1.layers)
    for k in r0.layers:
        np.testing.assert_array_equal(r0.layers[k].codes, r1.layers[k].codes)
    with torch.no_grad():
        assert torch.equal(m0(w[:2]).logits, m1(w[:2]).logits)
    n_lin = len(pl.find_linears(pl.find_blocks(m0)[1][0]))
    batches, blocks = 2, 2
    traced = blocks * n_lin  # the trace (groups, dependencies): one forward on one batch
    # the naive forwards: 0 + 3 + 4 + 6 + 7 products per batch for Llama (groups qkv, o, gate/up, down)
    assert counts[False][0] == traced + blocks * batches * per_batch_naive
    # with reuse every layer's product is computed once per batch
    assert counts[True][0] == traced + blocks * batches * n_lin
    # and attention once per batch (the trace's, then the o-group's forward), not in four forwards
    assert counts[False][1] == blocks * (1 + 4 * batches)
    assert counts[True][1] == blocks * (1 + batches)


def test_in_place_changes_and_unfrozen_layers_are_recomputed():
    lin = torch.nn.Linear(4, 4)

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = lin
            self.b = torch.nn.Linear(4, 4)

        def forward(self, x):
            y = self.a(x)
            return self.b(y)

    block = Block()
    x = torch.randn(3, 4)
    mods = {"a": block.a, "b": block.b}
    reuse = OutputReuse(block, mods, trace_block(block, mods, lambda: block(x)))
    with torch.no_grad(), reuse:
        reuse.start(0)
        block(x)
        assert reuse.hits == 0  # nothing frozen: nothing kept
        reuse.freeze("a")
        reuse.start(0)
        first = block(x)
        reuse.start(0)
        assert torch.equal(block(x), first) and reuse.hits == 1  # a's output handed back
        kept = reuse._cache[("a", 0, 0)][0]
        kept.mul_(2)  # someone changed the kept tensor in place: recomputed, not served
        reuse.start(0)
        assert torch.equal(block(x), first) and reuse.hits == 1
        block.b.weight.data.zero_()  # b is not frozen: never served from the store
        reuse.start(0)
        assert torch.equal(block(x), block.b.bias.expand(3, 4))
    assert "forward" not in block.a.__dict__  # wrappers removed on exit


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2])
def test_lattice_coded_layers_replaced_mid_block_are_reused_as_they_are_now(make):
    """A codebook run replaces each nn.Linear by a VQLinear when it is quantized: later
    forwards (and a tail module computed from its last layer's kept input) must use the new
    module, so the codes equal those of the run without reuse."""
    w = _windows(8, 24)
    opts = pl.QuantizeOptions(bits=2, act_order=True, codebook="e8p")
    res = [pl.quantize_model(make(seed=2), w, opts, batch_size=4, progress=False, reuse_outputs=r)
           for r in (False, True)]
    for k in res[0].layers:
        np.testing.assert_array_equal(res[0].layers[k].codes, res[1].layers[k].codes)


def test_cli_no_reuse_writes_the_same_checkpoint(tmp_path):
    from click.testing import CliRunner

    from latticeq.cli import main
    from model_helpers import tiny_model_folder

    d = tiny_model_folder(tmp_path)
    outs = []
    for extra in ([], ["--no-reuse"]):
        out = tmp_path / f"q{len(outs)}"
        r = CliRunner().invoke(main, ["quantize", str(d / "model"), "--bits", "3", "--group-size", "32", "--act-order",
                                      "--calib", str(d / "calib.txt"), "--nsamples", "4", "--seqlen", "32",
                                      "--out", str(out), "--no-progress", *extra])
        assert r.exit_code == 0, r.output
        outs.append((out / "model.safetensors").read_bytes())
    assert outs[0] == outs[1]
