"""Sequential model quantization (latticeq.nn.pipeline): structure discovery, equality with a
naive true-sequential reference, resume, CLI end to end, bad input."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from latticeq.nn import pipeline as pl  # noqa: E402
from latticeq.nn.grid import Grid  # noqa: E402
from latticeq.nn.layer import HessianAccumulator, LayerProblem  # noqa: E402
from latticeq.nn.solvers import solve  # noqa: E402
from model_helpers import tiny_gemma, tiny_gpt2, tiny_llama, tiny_model_folder, tiny_opt  # noqa: E402


def _windows(n=8, L=24, seed=0):
    return torch.randint(0, 256, (n, L), generator=torch.Generator().manual_seed(seed))


def test_structure_llama_and_gpt2():
    m = tiny_llama()
    name, blocks = pl.find_blocks(m)
    assert name == "model.layers" and len(blocks) == 2
    h, c = pl.capture_block_inputs(m, _windows(), batch_size=4)
    assert len(h) == 2 and h[0].shape == (4, 24, 64)
    assert "position_embeddings" in c[0][1]  # transformers 5.x: rotary computed in the model
    assert pl.linear_groups(blocks[0], h, c) == [
        ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], ["self_attn.o_proj"],
        ["mlp.gate_proj", "mlp.up_proj"], ["mlp.down_proj"]]
    g = tiny_gpt2()
    name, blocks = pl.find_blocks(g)
    assert name == "transformer.h"
    h, c = pl.capture_block_inputs(g, _windows(), batch_size=4)
    assert pl.linear_groups(blocks[0], h, c) == [["attn.c_attn"], ["attn.c_proj"], ["mlp.c_fc"], ["mlp.c_proj"]]
    # the captured inputs are what the first block really receives
    seen = []
    hk = blocks[0].register_forward_pre_hook(lambda mod, args, kwargs: seen.append(args[0] if args else kwargs["hidden_states"]), with_kwargs=True)
    with torch.no_grad():
        g(_windows()[:4])
    hk.remove()
    assert torch.equal(seen[0], h[0])


def _naive_sequential(model, windows, grid, method, act_order, batch_size):
    """True-sequential GPTQ the slow way: for each group, run the whole model with hooks."""
    name, blocks = pl.find_blocks(model)
    codes = {}
    # the model's own block inputs (the embeddings: quantizing blocks does not change them) trace every
    # block's layers grouped by shared input (the same shapes in every block)
    h, c = pl.capture_block_inputs(model, windows, batch_size=batch_size)
    for bi, block in enumerate(blocks):
        mods = pl.find_linears(block)
        groups = pl.linear_groups(block, h, c)
        for group in groups:
            n = mods[group[0]].weight.shape[1]
            acc = HessianAccumulator(n)
            hook = mods[group[0]].register_forward_pre_hook(lambda mod, inp: acc.add_batch(inp[0]))
            with torch.no_grad():
                for s in range(0, windows.shape[0], batch_size):
                    model(windows[s : s + batch_size], use_cache=False)
            hook.remove()
            for lname in group:
                mod = mods[lname]
                # as the pipeline: a Hessian that float round-off leaves slightly indefinite gets ε·I
                problem, _ = pl._layer_problem(mod.weight.detach(), acc.hessian)
                sol = solve(problem, grid, method=method, act_order=act_order)
                from latticeq.nn.checkpoint import quantized_layer

                q = quantized_layer(sol.codes, sol.scales, sol.zeros, sol.g_idx, grid.bits)
                mod.weight.data = q.dequant()
                codes[f"{name}.{bi}.{lname}"] = q.codes
    return codes


@pytest.mark.parametrize("method, group_size, act", [("gptq", 32, True), ("rtn", None, False), ("block", None, True),
                                                     ("gptq+refine+refit", 32, True)])
def test_pipeline_equals_naive_true_sequential(method, group_size, act):
    w = _windows(8, 24)
    grid = Grid(3, group_size=group_size)
    ref = _naive_sequential(tiny_llama(seed=1), w, grid, method, act, batch_size=4)
    m = tiny_llama(seed=1)
    res = pl.quantize_model(m, w, pl.QuantizeOptions(bits=3, group_size=group_size, method=method, act_order=act),
                            batch_size=4, progress=False)
    assert set(res.layers) == set(ref)
    for k, q in res.layers.items():
        np.testing.assert_array_equal(q.codes, ref[k])
    assert [s["name"] for s in res.layer_stats][:4] == [
        "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj",
        "model.layers.0.self_attn.v_proj", "model.layers.0.self_attn.o_proj"]
    assert all(0 <= s["relative_error"] < 1 for s in res.layer_stats)
    assert res.peak_memory_bytes > 0
    # embeddings and lm_head untouched
    assert torch.equal(m.model.embed_tokens.weight, tiny_llama(seed=1).model.embed_tokens.weight)


@pytest.mark.parametrize("make, blocks_name, groups", [
    (tiny_opt, "model.decoder.layers",
     [["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], ["self_attn.out_proj"], ["fc1"], ["fc2"]]),
    (tiny_gemma, "model.layers",
     [["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], ["self_attn.o_proj"],
      ["mlp.gate_proj", "mlp.up_proj"], ["mlp.down_proj"]]),
])
def test_opt_and_gemma_follow_the_same_sequential_pipeline(make, blocks_name, groups, tmp_path):
    """The generic walk finds OPT's and Gemma's blocks and true-sequential groups (in call
    order), the pipeline's codes equal the slow reference's code for code, and the GPTQ
    checkpoint loads back with the same logits."""
    w = _windows(8, 24)
    m = make(seed=1)
    name, blocks = pl.find_blocks(m)
    assert name == blocks_name and len(blocks) == 2
    assert pl.linear_groups(blocks[0], *pl.capture_block_inputs(m, w, batch_size=4)) == groups
    ref = _naive_sequential(make(seed=1), w, Grid(3, group_size=32), "gptq", True, batch_size=4)
    res = pl.quantize_model(m, w, pl.QuantizeOptions(bits=3, group_size=32, method="gptq", act_order=True),
                            batch_size=4, progress=False)
    assert set(res.layers) == set(ref) and len(ref) == 2 * sum(len(g) for g in groups)
    for k, q in res.layers.items():
        np.testing.assert_array_equal(q.codes, ref[k])
    from latticeq.nn.checkpoint import load_checkpoint, save_checkpoint

    out = save_checkpoint(m, res.layers, tmp_path / "q", bits=3, group_size=32, sym=False, desc_act=True)
    back = load_checkpoint(out)
    with torch.no_grad():
        logits = m(w[:2]).logits
        assert torch.equal(back(w[:2]).logits, logits)
        assert not torch.equal(logits, make(seed=1)(w[:2]).logits)  # quantization changed the model


def test_group_size_not_dividing_width_works_like_gptq():
    # 64 and 128 input columns, groups of 48: ceil(n/48) groups, the last one smaller (GPTQ)
    w = _windows(8, 24)
    res = pl.quantize_model(tiny_llama(), w, pl.QuantizeOptions(bits=4, group_size=48, method="gptq"),
                            progress=False)
    for name, q in res.layers.items():
        n = q.codes.shape[1]
        np.testing.assert_array_equal(q.g_idx, np.arange(n) // 48)
        assert q.scales.shape[0] == -(-n // 48)
    # per layer: identical to solving the first 48-column groups directly where they coincide
    grid = Grid(4, group_size=48)
    W = torch.randn(8, 96, generator=torch.Generator().manual_seed(0))
    X = torch.randn(200, 96, generator=torch.Generator().manual_seed(1))
    H = 2 * X.T @ X / 200
    full = solve(LayerProblem(W, H), grid, method="rtn")
    sol, codes, g_idx = pl.solve_layer(W[:, :80], H[:80, :80], grid, pl.QuantizeOptions(bits=4, group_size=48, method="rtn"))
    np.testing.assert_array_equal(codes[:, :48].numpy(), full.codes[:, :48].numpy())


def test_gptq_beats_rtn_on_layer_error():
    w = _windows(8, 32)
    g = pl.quantize_model(tiny_llama(), w, pl.QuantizeOptions(bits=2, method="gptq"), progress=False)
    # the first layer sees the float model's inputs: its Hessian from a hooked full forward
    m = tiny_llama()
    q_proj = m.model.layers[0].self_attn.q_proj
    acc = HessianAccumulator(q_proj.weight.shape[1])
    hook = q_proj.register_forward_pre_hook(lambda mod, inp: acc.add_batch(inp[0]))
    with torch.no_grad():
        m(w, use_cache=False)
    hook.remove()
    rtn = solve(LayerProblem(q_proj.weight.detach(), acc.hessian), Grid(2), method="rtn")
    assert g.layer_stats[0]["error_metric"] == "hessian"
    assert g.layer_stats[0]["error"] <= rtn.error


def test_rtn_needs_no_calibration():
    """Plain RTN skips the calibration forwards: same codes with or without windows, and the
    reported per-layer error is the weight-space one, ‖W − Q‖² (H = I)."""
    opts = pl.QuantizeOptions(bits=3, group_size=32, method="rtn")
    assert not opts.needs_calibration
    assert pl.QuantizeOptions(bits=3, method="rtn+refine").needs_calibration
    assert pl.QuantizeOptions(bits=3, method="gptq").needs_calibration
    m0 = tiny_llama()
    a = pl.quantize_model(m0, None, opts, progress=False)
    b = pl.quantize_model(tiny_llama(), _windows(8, 24), opts, progress=False)
    assert set(a.layers) == set(b.layers) and len(a.layers) == 14
    for k in a.layers:
        np.testing.assert_array_equal(a.layers[k].codes, b.layers[k].codes)
    W = tiny_llama().model.layers[1].mlp.down_proj.weight.detach()
    st = {s["name"]: s for s in a.layer_stats}["model.layers.1.mlp.down_proj"]
    Q = a.layers["model.layers.1.mlp.down_proj"].dequant()
    assert st["error_metric"] == "weight"
    assert st["error"] == pytest.approx(float(((W - Q) ** 2).sum()), rel=2e-2)  # Q has fp16 scales
    assert torch.equal(m0.model.layers[1].mlp.down_proj.weight, Q)
    # a calibrated method still insists on windows
    with pytest.raises(ValueError, match="windows"):
        pl.quantize_model(tiny_llama(), None, pl.QuantizeOptions(bits=3, method="gptq"), progress=False)


def test_resume_after_interruption_gives_same_result(tmp_path, monkeypatch):
    w = _windows(8, 24)
    opts = pl.QuantizeOptions(bits=4, group_size=32, method="gptq", act_order=True)
    full = pl.quantize_model(tiny_llama(layers=3), w, opts, progress=False)

    import latticeq.nn.solvers as solvers

    real = solvers.solve
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 9:  # first layer of the second block
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(solvers, "solve", flaky)
    with pytest.raises(KeyboardInterrupt):
        pl.quantize_model(tiny_llama(layers=3), w, opts, state_dir=tmp_path / "st", progress=False)
    assert (tmp_path / "st" / "block_0000.safetensors").exists() and not (tmp_path / "st" / "block_0001.safetensors").exists()
    monkeypatch.setattr(solvers, "solve", real)
    m = tiny_llama(layers=3)
    res = pl.quantize_model(m, w, opts, state_dir=tmp_path / "st", resume=True, progress=False)
    assert set(res.layers) == set(full.layers)
    for k in full.layers:
        np.testing.assert_array_equal(res.layers[k].codes, full.layers[k].codes)
    # a different setting refuses to resume
    with pytest.raises(ValueError, match="cannot resume"):
        pl.quantize_model(tiny_llama(layers=3), w, pl.QuantizeOptions(bits=3), state_dir=tmp_path / "st",
                          resume=True, progress=False)


def test_bad_options_and_models():
    w = _windows()
    with pytest.raises(ValueError, match="bits"):
        pl.quantize_model(tiny_llama(), w, pl.QuantizeOptions(bits=1), progress=False)
    with pytest.raises(ValueError, match="unknown method"):
        pl.quantize_model(tiny_llama(), w, pl.QuantizeOptions(bits=3, method="nope"), progress=False)
    with pytest.raises(ValueError, match="group_size"):
        pl.quantize_model(tiny_llama(), w, pl.QuantizeOptions(bits=3, group_size=0), progress=False)
    with pytest.raises(ValueError, match="exceeds every layer"):
        pl.quantize_model(tiny_llama(), w, pl.QuantizeOptions(bits=3, group_size=512), progress=False)
    with pytest.raises(ValueError, match="no decoder blocks"):
        pl.find_blocks(torch.nn.Sequential(torch.nn.Embedding(4, 4), torch.nn.ReLU()))
    with pytest.raises(ValueError, match="LongTensor"):
        pl.quantize_model(tiny_llama(), w.float(), pl.QuantizeOptions(bits=3), progress=False)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    d = tiny_model_folder(tmp_path_factory.mktemp("tiny"))
    (d / "eval.txt").write_text("The clocks were striking thirteen, and all was well. " * 40, encoding="utf-8")
    return d


def test_cli_quantize_eval_report(tiny_folder, tmp_path):
    from click.testing import CliRunner

    from latticeq.cli import main

    d = tiny_folder
    out = tmp_path / "q"
    runner = CliRunner()
    r = runner.invoke(main, ["quantize", str(d / "model"), "--bits", "4", "--group-size", "32", "--act-order",
                             "--method", "gptq", "--calib", str(d / "calib.txt"), "--nsamples", "6",
                             "--seqlen", "32", "--eval", str(d / "eval.txt"), "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "latticeq_record.json").read_text())
    from latticeq.nn.records import RECORD_KEYS

    assert tuple(rec) == RECORD_KEYS
    assert rec["threads"] == torch.get_num_threads()  # the times depend on it
    assert rec["calibration"] == {"source": str(d / "calib.txt"), "nsamples": 6, "seqlen": 32}
    assert len(rec["layers"]) == 14 and rec["eval"]["seqlen"] == 32
    assert not (out / pl.STATE_DIR).exists()
    # eval of the checkpoint reproduces the in-memory perplexity exactly
    r2 = runner.invoke(main, ["eval", str(out), "--text", str(d / "eval.txt"), "--seqlen", "32", "--no-progress"])
    assert r2.exit_code == 0, r2.output
    assert f"perplexity {rec['perplexity']:.4f}" in r2.output
    # existing output: refused without --force, nothing changed
    before = (out / "model.safetensors").read_bytes()
    r3 = runner.invoke(main, ["quantize", str(d / "model"), "--bits", "2", "--method", "rtn", "--calib",
                              str(d / "calib.txt"), "--nsamples", "2", "--seqlen", "32", "--out", str(out)])
    assert r3.exit_code != 0 and "exists" in r3.output
    assert (out / "model.safetensors").read_bytes() == before
    r4 = runner.invoke(main, ["report", str(out), "--out", str(tmp_path / "t.md"), "--plot", str(tmp_path / "p.png"),
                              "--html", str(tmp_path / "r.html")])
    assert r4.exit_code == 0, r4.output
    assert "gptq act-order" in (tmp_path / "t.md").read_text() and (tmp_path / "p.png").stat().st_size > 0
    assert "gptq" in (tmp_path / "r.html").read_text()


def test_cli_quantize_mse_refit_round_trip(tiny_folder, tmp_path):
    from click.testing import CliRunner

    from latticeq.cli import main

    d = tiny_folder
    out = tmp_path / "q"
    runner = CliRunner()
    r = runner.invoke(main, ["quantize", str(d / "model"), "--bits", "3", "--mse", "--act-order",
                             "--method", "gptq+refine+refit", "--calib", str(d / "calib.txt"), "--nsamples", "6",
                             "--seqlen", "32", "--eval", str(d / "eval.txt"), "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "latticeq_record.json").read_text())
    assert rec["mse"] is True and rec["method"] == "gptq+refine+refit"
    w = rec["eval"]["window_nll"]  # per-window NLLs, for paired standard errors between runs
    assert len(w) == rec["eval"]["windows"] >= 2
    assert rec["perplexity"] == pytest.approx(np.exp(np.mean(w)), rel=1e-9)
    r2 = runner.invoke(main, ["eval", str(out), "--text", str(d / "eval.txt"), "--seqlen", "32", "--no-progress"])
    assert r2.exit_code == 0, r2.output
    assert f"perplexity {rec['perplexity']:.4f}" in r2.output


@pytest.mark.parametrize("args, match", [
    (["--bits", "9", "--method", "gptq"], "bits"),
    (["--bits", "3", "--method", "nope"], "unknown method"),
    (["--bits", "3", "--group-size", "0", "--method", "gptq"], "group_size"),
    (["--bits", "3", "--method", "gptq", "--nsamples", "1000"], "too short"),
])
def test_cli_bad_input_writes_nothing(tiny_folder, tmp_path, args, match):
    from click.testing import CliRunner

    from latticeq.cli import main

    out = tmp_path / "q"
    r = CliRunner().invoke(main, ["quantize", str(tiny_folder / "model"), *args, "--calib",
                                  str(tiny_folder / "calib.txt"), "--seqlen", "32", "--out", str(out)])
    assert r.exit_code != 0 and match in r.output
    assert not out.exists()


def test_cli_unknown_model(tmp_path):
    from click.testing import CliRunner

    from latticeq.cli import main

    r = CliRunner().invoke(main, ["quantize", "no_such_model", "--bits", "3", "--method", "gptq", "--out", str(tmp_path / "q")])
    assert r.exit_code != 0 and "unknown model" in r.output
    assert not (tmp_path / "q").exists()


@pytest.mark.slow
def test_smollm2_checkpoint_round_trip(tmp_path):
    """The real packaged model (two blocks): GPTQ-format checkpoint (3-bit, g64, act-order g_idx)
    with the GGUF tokenizer, loaded back by folder spec: exact logits, same tokens."""
    from test_model_checkpoint import _random_layers

    from latticeq.nn.checkpoint import save_checkpoint
    from latticeq.nn.model import load_model, load_tokenizer

    model = load_model("smollm2")
    tok = load_tokenizer("smollm2")
    name, blocks = pl.find_blocks(model)
    del blocks[2:]  # two blocks keep the test short; the format does not depend on depth
    model.config.num_hidden_layers = 2
    layers = _random_layers(model, 3, 64)
    out = save_checkpoint(model, layers, tmp_path / "smol", bits=3, group_size=64, sym=False,
                          desc_act=True, tokenizer=tok)
    back = load_model(str(out))
    tok2 = load_tokenizer(str(out))
    text = "It is a truth universally acknowledged, that a single man in possession of a good fortune"
    ids = tok(text, return_tensors="pt")["input_ids"]
    assert torch.equal(ids, tok2(text, return_tensors="pt")["input_ids"])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, back(ids).logits)


def test_without_a_terminal_progress_is_plain_lines_one_per_block(tiny_folder, tmp_path):
    from click.testing import CliRunner

    from latticeq.cli import main

    d = tiny_folder
    r = CliRunner().invoke(main, ["quantize", str(d / "model"), "--bits", "4", "--method", "gptq", "--calib",
                                  str(d / "calib.txt"), "--nsamples", "4", "--seqlen", "32", "--out", str(tmp_path / "q")])
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.output.splitlines() if "layers, relative error mean" in ln]
    assert [ln.split(":")[0] for ln in lines] == ["block 1/2", "block 2/2"]
    assert all("elapsed" in ln and "ETA" in ln for ln in lines)
    assert "quantizing: started (0/14)" in r.output


def test_line_progress_throttles_and_reports_completion():
    import io

    from latticeq.progress import LineProgress

    buf = io.StringIO()
    p = LineProgress(stream=buf, interval=3600)
    t = p.add_task("job", total=10)
    for _ in range(10):
        p.advance(t)
    out = buf.getvalue().splitlines()
    assert out[0] == "job: started (0/10)" and out[-1].startswith("job, 10/10 (100%)") and out[-1].endswith("done")
    assert len(out) == 2  # nothing in between within the interval
