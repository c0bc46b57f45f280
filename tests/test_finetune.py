"""Fine-tuning lattice-coded models (latticeq.nn.finetune): held-out windows share no token with
the calibration windows, the trainable module computes the inference module's map and its
gradient, training lowers the KL divergence without touching codes, the best epoch (or the
start) is kept, an interrupted run resumes to the same tensors, and the CLI writes a checkpoint
that loads to the same perplexity and refuses bad input."""

import copy
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from latticeq.nn import calib  # noqa: E402
from latticeq.nn import pipeline as pl  # noqa: E402
from latticeq.nn.finetune import finetune, mean_kl, trainable_tensors  # noqa: E402
from latticeq.nn.vqformat import VQLinear  # noqa: E402
from model_helpers import tiny_gemma, tiny_llama, tiny_model_folder  # noqa: E402


def _windows(n, L=24, seed=0):
    return torch.randint(0, 256, (n, L), generator=torch.Generator().manual_seed(seed))


def _pair(make=tiny_llama):
    teacher = make()
    student = copy.deepcopy(teacher)
    opts = pl.QuantizeOptions(bits=2, act_order=True, codebook="e8p")
    res = pl.quantize_model(student, _windows(8), opts, batch_size=4, progress=False)
    return teacher, student, res.layers


def test_heldout_windows_share_no_token_with_the_calibration_windows(monkeypatch):
    # token ids = positions, so each window shows where it starts
    monkeypatch.setattr(calib, "read_texts", lambda texts=None: "")
    monkeypatch.setattr(calib, "tokenize_text", lambda tok, text: torch.arange(5000))
    train, held = calib.heldout_split(None, nsamples=6, seqlen=100, seed=3, heldout=20)
    assert torch.equal(train, calib.calibration_windows(None, nsamples=6, seqlen=100, seed=3))
    assert held.shape == (20, 100) and len(set(held[:, 0].tolist())) == 20
    for s in held[:, 0].tolist():
        for t in train[:, 0].tolist():
            assert abs(s - t) >= 100
    assert torch.equal(held, calib.heldout_split(None, nsamples=6, seqlen=100, seed=3, heldout=20)[1])
    with pytest.raises(ValueError, match="too short"):
        calib.heldout_split(None, nsamples=1, seqlen=2500, seed=0, heldout=1)  # no room beside it
    with pytest.raises(ValueError, match="heldout"):
        calib.heldout_split(None, nsamples=4, seqlen=100, heldout=0)


def _assert_exact_gradient(mod, x, y, param, i):
    """``y = mod(x)`` is linear in each entry of ``param``: d(sum y)/d param[i] from autograd
    equals the finite difference exactly up to rounding (``param`` restored afterwards)."""
    y.sum().backward()
    g = param.grad.clone()
    with torch.no_grad():
        p0 = param.detach().clone()
        e = torch.zeros_like(p0)
        e[i] = 1e-2
        param.copy_(p0 + e)
        up = mod(x).sum()
        param.copy_(p0)
        base = mod(x).sum()
    assert float(g[i]) == pytest.approx(float(up - base) / 1e-2, rel=1e-3, abs=1e-4)


@pytest.mark.parametrize("make", [tiny_llama, tiny_gemma])
def test_trainable_module_computes_the_same_map_and_its_gradient(make):
    _, student, layers = _pair(make)
    name = next(iter(layers))
    mod = student.get_submodule(name)
    x = torch.randn(5, mod.in_features, dtype=torch.float32)
    with torch.no_grad():
        ref = mod(x)
    mod.set_trainable(True)
    assert isinstance(mod.scales, torch.nn.Parameter)
    y = mod(x)
    assert torch.allclose(y, ref, atol=1e-5, rtol=1e-5)
    _assert_exact_gradient(mod, x, y, mod.scales, 3)
    mod.set_trainable(False)
    assert not isinstance(mod.scales, torch.nn.Parameter) and "scales" not in dict(mod.named_parameters())
    assert torch.equal(mod.scales, mod.scales.half().float())  # back to what a checkpoint stores


def test_trainable_input_scales_start_at_one_and_get_the_exact_gradient():
    _, student, layers = _pair()
    name = next(iter(layers))
    mod = student.get_submodule(name)
    x = torch.randn(5, mod.in_features, dtype=torch.float32)
    with torch.no_grad():
        ref = mod(x)
    assert mod.in_scales is None
    mod.set_trainable(True, in_scales=True)
    assert isinstance(mod.in_scales, torch.nn.Parameter) and torch.equal(mod.in_scales, torch.ones(mod.in_features))
    y = mod(x)
    assert torch.allclose(y, ref, atol=1e-5, rtol=1e-5)
    _assert_exact_gradient(mod, x, y, mod.in_scales, 2)
    with torch.no_grad():  # a scale on the input, in the original basis
        c0 = mod.in_scales.detach().clone()
        mod.in_scales.copy_(c0 * 0.9)
        shrunk = mod(x)
        mod.in_scales.copy_(c0)
        assert torch.allclose(shrunk, mod(x * 0.9), atol=1e-5)
    mod.set_trainable(False)
    assert "in_scales" not in dict(mod.named_parameters()) and torch.equal(mod.in_scales, mod.in_scales.half().float())
    # trained again without them: they stay fixed (a buffer), folded into every call
    mod.set_trainable(True)
    assert not isinstance(mod.in_scales, torch.nn.Parameter)
    assert set(trainable_tensors(student, ("in_scales",))) == {f"{n}.in_scales" for n in layers}


def test_finetune_lowers_the_kl_and_keeps_the_codes():
    teacher, student, layers = _pair()
    codes = {k: q.codes.copy() for k, q in layers.items()}
    win, held = _windows(16, seed=1), _windows(8, seed=2)
    norms_before = {k: v.clone() for k, v in student.state_dict().items() if "norm" in k}
    before = mean_kl(student, teacher, held)
    r = finetune(student, teacher, win, held, epochs=2, lr=1e-2, batch_size=4, progress=False)
    assert r.heldout_kl[0] == pytest.approx(before, rel=1e-4)  # trainable mode folds in float32
    assert r.best_epoch >= 1 and min(r.heldout_kl[1:]) < r.heldout_kl[0]
    assert r.train_kl[-1] < r.heldout_kl[0] * 2 and r.steps == 8
    assert r.trainable == sum(q.shape[0] for q in layers.values()) + sum(v.numel() for v in norms_before.values())
    after = mean_kl(student, teacher, held)
    assert after < before
    assert all(np.array_equal(q.codes, codes[k]) for k, q in layers.items())
    mods = [m for m in student.modules() if isinstance(m, VQLinear)]
    assert mods and all(not m.trainable and torch.equal(m.scales, m.scales.half().float()) for m in mods)
    assert any(not torch.equal(student.state_dict()[k], v) for k, v in norms_before.items())
    assert not any(p.requires_grad for p in list(student.parameters()) + list(teacher.parameters()))


def test_a_step_that_only_hurts_leaves_the_model_as_it_was():
    teacher, student, _ = _pair()
    start = {k: v.clone() for k, v in student.state_dict().items()}
    scales = {n: m.scales.clone() for n, m in student.named_modules() if isinstance(m, VQLinear)}
    with torch.no_grad():
        ref = student(_windows(2, seed=5)).logits
    r = finetune(student, teacher, _windows(8, seed=1), _windows(4, seed=2), epochs=1, lr=0.9, batch_size=8,
                 progress=False)
    assert r.best_epoch == 0 and r.heldout_kl[1] > r.heldout_kl[0]
    assert all(torch.equal(v, start[k]) for k, v in student.state_dict().items())
    assert all(torch.equal(m.scales, scales[n]) for n, m in student.named_modules() if isinstance(m, VQLinear))
    with torch.no_grad():
        assert torch.equal(student(_windows(2, seed=5)).logits, ref)


def test_an_interrupted_run_resumes_to_the_same_tensors(tmp_path, monkeypatch):
    win, held = _windows(12, seed=1), _windows(4, seed=2)
    teacher, a, _ = _pair()
    finetune(a, teacher, win, held, epochs=2, lr=1e-2, batch_size=4, progress=False)
    _, b, _ = _pair()
    state = tmp_path / "ft.pt"
    real_step = torch.optim.Adam.step
    calls = {"n": 0}

    def crash_after_four(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 4:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", crash_after_four)
    with pytest.raises(KeyboardInterrupt):
        finetune(b, teacher, win, held, epochs=2, lr=1e-2, batch_size=4, progress=False, state_path=state,
                 save_every=1)
    monkeypatch.setattr(torch.optim.Adam, "step", real_step)
    _, c, _ = _pair()
    r = finetune(c, teacher, win, held, epochs=2, lr=1e-2, batch_size=4, progress=False, state_path=state,
                 save_every=1)
    assert r.steps == 6
    sa, sc = a.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sc[k]) for k in sa)
    assert all(torch.equal(ma.scales, mc.scales) for ma, mc in zip(a.modules(), c.modules()) if isinstance(ma, VQLinear))
    with pytest.raises(ValueError, match="other settings"):
        finetune(c, teacher, win, held, epochs=3, lr=1e-2, batch_size=4, progress=False, state_path=state)


def test_bad_settings_are_refused():
    teacher, student, _ = _pair()
    win = _windows(4)
    with pytest.raises(ValueError, match="trains some of"):
        trainable_tensors(student, ("embeddings",))
    with pytest.raises(ValueError, match="no lattice-coded"):
        trainable_tensors(tiny_llama(), ("scales",))
    for kw, msg in ((dict(epochs=0), "epochs"), (dict(lr=2.0), "lr"), (dict(batch_size=0), "batch_size")):
        with pytest.raises(ValueError, match=msg):
            finetune(student, teacher, win, win, progress=False, **kw)
    with pytest.raises(ValueError, match="differ in length"):
        finetune(student, teacher, win, _windows(2, L=12), progress=False)


def test_cli_finetunes_a_checkpoint_that_loads_to_the_same_perplexity(tmp_path):
    from click.testing import CliRunner

    from latticeq.cli import main
    from latticeq.nn.records import _codebook_run_label, read_records

    d = tiny_model_folder(tmp_path)
    vq, ft = tmp_path / "vq", tmp_path / "ft"
    common = ["--calib", str(d / "calib.txt"), "--no-progress"]
    r = CliRunner().invoke(main, ["quantize", str(d / "model"), "--codebook", "e8p", "--bits", "2", "--act-order",
                                  "--nsamples", "4", "--seqlen", "32", "--out", str(vq), *common])
    assert r.exit_code == 0, r.output
    args = ["finetune", str(vq), "--out", str(ft), "--heldout", "2", "--epochs", "2", "--lr", "0.01",
            "--eval", str(d / "calib.txt"), "--eval-windows", "2", *common]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    rec = read_records([ft / "latticeq_record.json"])[0]
    f = rec["finetune"]
    assert f["teacher"] == str(d / "model") and f["calibration"]["nsamples"] == 4 and f["calibration"]["seqlen"] == 32
    assert len(f["heldout_kl"]) == 3 and f["heldout_kl"][f["best_epoch"]] <= f["heldout_kl"][0]
    assert f["start"] is None  # the quantization run was not evaluated
    assert rec["bits_per_weight"] == json.loads((vq / "latticeq_record.json").read_text())["bits_per_weight"]
    assert _codebook_run_label(rec).endswith("+ 2-epoch fine-tuning")
    assert not (ft / ".latticeq-state").exists()
    r2 = CliRunner().invoke(main, ["eval", str(ft), "--text", str(d / "calib.txt"), "--seqlen", "32",
                                   "--max-windows", "2", "--no-progress"])
    assert r2.exit_code == 0 and f"{rec['perplexity']:.4f}" in r2.output
    # with input scales: a new float16 tensor per layer, counted in bits per weight, loaded back to the same score
    fi = tmp_path / "ft-in"
    r = CliRunner().invoke(main, ["finetune", str(vq), "--out", str(fi), "--heldout", "2", "--epochs", "1", "--lr",
                                  "0.01", "--train", "scales,norms,in_scales", "--eval", str(d / "calib.txt"),
                                  "--eval-windows", "2", *common])
    assert r.exit_code == 0, r.output
    ri = read_records([fi / "latticeq_record.json"])[0]
    from latticeq.nn.vqformat import load_vq_checkpoint

    back = load_vq_checkpoint(fi)
    qs = back.latticeq_quantized
    assert all(q.in_scales is not None and q.in_scales.dtype == np.float16 for q in qs.values())
    assert any(not np.all(q.in_scales == 1) for q in qs.values())
    extra = 16 * sum(q.shape[1] for q in qs.values()) / sum(q.shape[0] * q.shape[1] for q in qs.values())
    assert ri["bits_per_weight"] == pytest.approx(rec["bits_per_weight"] + extra)
    assert ri["finetune"]["params"] == ["scales", "norms", "in_scales"]
    assert _codebook_run_label(ri).endswith("+ 1-epoch fine-tuning with input scales")
    assert ri["finetune"]["trainable"] == f["trainable"] + sum(q.shape[1] for q in qs.values())
    r2 = CliRunner().invoke(main, ["eval", str(fi), "--text", str(d / "calib.txt"), "--seqlen", "32",
                                   "--max-windows", "2", "--no-progress"])
    assert r2.exit_code == 0 and f"{ri['perplexity']:.4f}" in r2.output
    # bad input: an existing --out, a scalar checkpoint, an unknown parameter set, a missing folder
    r3 = CliRunner().invoke(main, args)
    assert r3.exit_code != 0 and "exists" in r3.output
    sc = tmp_path / "scalar"
    CliRunner().invoke(main, ["quantize", str(d / "model"), "--bits", "4", "--nsamples", "4", "--seqlen", "32",
                              "--out", str(sc), *common])
    r4 = CliRunner().invoke(main, ["finetune", str(sc), "--out", str(tmp_path / "x"), *common])
    assert r4.exit_code != 0 and "not a latticeq-vq checkpoint" in r4.output
    r5 = CliRunner().invoke(main, ["finetune", str(vq), "--out", str(tmp_path / "y"), "--train", "embeddings", *common])
    assert r5.exit_code != 0 and "trains some of" in r5.output
    r6 = CliRunner().invoke(main, ["finetune", str(tmp_path / "nope"), "--out", str(tmp_path / "z"), *common])
    assert r6.exit_code != 0 and "no checkpoint folder" in r6.output
    # resuming an unfinished run with other settings is refused
    (tmp_path / "u" / ".latticeq-state").mkdir(parents=True)
    (tmp_path / "u" / ".latticeq-state" / "run.json").write_text(json.dumps({"epochs": 9}))
    r7 = CliRunner().invoke(main, ["finetune", str(vq), "--out", str(tmp_path / "u"), "--resume", *common])
    assert r7.exit_code != 0 and "cannot resume" in r7.output
