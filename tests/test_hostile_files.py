"""Crafted and damaged files: nothing executes, nothing loads silently wrong, every refusal is
a clear message naming the file."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from latticeq.cli import main
from latticeq.nn import checkpoint as ck
from latticeq.nn import pipeline as pl
from model_helpers import byte_tokenizer, tiny_llama


class _Boom:
    """Unpickling this runs code (touches a marker file)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _windows(n=4, L=16):
    return torch.randint(0, 256, (n, L), generator=torch.Generator().manual_seed(0))


@pytest.fixture()
def interrupted_run(tmp_path, monkeypatch):
    """A run state folder after block 0 of a 3-block model."""
    import latticeq.nn.solvers as solvers

    real, calls = solvers.solve, {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(solvers, "solve", flaky)
    opts = pl.QuantizeOptions(bits=4, group_size=32, method="gptq")
    with pytest.raises(KeyboardInterrupt):
        pl.quantize_model(tiny_llama(layers=3), _windows(), opts, state_dir=tmp_path / "st", progress=False)
    monkeypatch.setattr(solvers, "solve", real)
    return tmp_path / "st", opts


def test_planted_pickle_in_resume_state_does_not_run(interrupted_run, tmp_path):
    state, opts = interrupted_run
    marker = tmp_path / "pwned"
    with open(state / "inputs.pt", "wb") as f:
        pickle.dump({"next_block": 1, "hidden": _Boom(str(marker)), "calls": [], "elapsed": 0.0}, f)
    with pytest.raises(ValueError, match="not a plain tensor state"):
        pl.quantize_model(tiny_llama(layers=3), _windows(), opts, state_dir=state, resume=True, progress=False)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["garbage", "truncate", "wrong_layers", "missing"])
def test_damaged_block_state_is_refused(interrupted_run, damage):
    state, opts = interrupted_run
    f = state / "block_0000.safetensors"
    if damage == "garbage":
        f.write_bytes(b"\x00" * 100)
    elif damage == "truncate":
        f.write_bytes(f.read_bytes()[:-50])
    elif damage == "missing":
        f.unlink()
    else:  # a block state of another model: different layer names
        from safetensors.numpy import save_file

        save_file({"x.codes": np.zeros((2, 2), np.uint8)}, str(f),
                  metadata={"format": pl.BLOCK_STATE_FORMAT, "layers": json.dumps({"x": {"bits": 4, "transposed": False}}),
                            "stats": "[]"})
    with pytest.raises(ValueError, match="cannot resume: block state"):
        pl.quantize_model(tiny_llama(layers=3), _windows(), opts, state_dir=state, resume=True, progress=False)


@pytest.fixture()
def checkpoint(tmp_path):
    from latticeq.nn.pipeline import find_blocks, find_linears

    model = tiny_llama()
    rng = np.random.default_rng(0)
    layers = {}
    _, blocks = find_blocks(model)
    for bi, b in enumerate(blocks):
        for name, mod in find_linears(b).items():
            m, n = mod.weight.shape
            layers[f"model.layers.{bi}.{name}"] = ck.quantized_layer(
                rng.integers(0, 8, (m, n)), rng.random((m, n // 32)) + 0.1, rng.integers(1, 7, (m, n // 32)),
                np.arange(n) // 32, 3)
    out = tmp_path / "ckpt"
    ck.save_checkpoint(model, layers, out, bits=3, group_size=32, sym=False, desc_act=False,
                       tokenizer=byte_tokenizer())
    return out


def _set_bits(path, key_path, value):
    d = json.loads(path.read_text())
    tgt = d
    for k in key_path[:-1]:
        tgt = tgt[k]
    tgt[key_path[-1]] = value
    path.write_text(json.dumps(d))


def test_checkpoint_loads_when_intact(checkpoint):
    from latticeq.io import default_permissions

    m = ck.load_checkpoint(checkpoint)
    assert len(m.latticeq_quantized) == 14
    for f in checkpoint.iterdir():  # plain permissions, as any other file the user writes
        assert f.stat().st_mode & 0o777 == default_permissions(), f


def test_bits_that_disagree_with_the_packed_data_are_refused(checkpoint):
    _set_bits(checkpoint / "quantize_config.json", ["bits"], 2)
    _set_bits(checkpoint / "config.json", ["quantization_config", "bits"], 2)
    with pytest.raises(ValueError, match="the data and the stated bit width disagree"):
        ck.load_checkpoint(checkpoint)


def test_config_files_that_disagree_are_refused(checkpoint):
    _set_bits(checkpoint / "quantize_config.json", ["bits"], 4)
    with pytest.raises(ValueError, match="disagree \\(bits: 4 vs 3\\)"):
        ck.load_checkpoint(checkpoint)


@pytest.mark.parametrize("damage, match", [
    ("truncate", "truncated or not a safetensors file"),
    ("empty", "truncated or not a safetensors file"),
    ("bad_config", "config.json' is not valid JSON"),
    ("no_model_type", "has no model_type"),
    ("missing_tensor", "lacks tensor"),
])
def test_damaged_checkpoints_give_messages_naming_the_file(checkpoint, damage, match):
    st = checkpoint / ck.WEIGHTS_NAME
    if damage == "truncate":
        st.write_bytes(st.read_bytes()[: st.stat().st_size // 2])
    elif damage == "empty":
        st.write_bytes(b"")
    elif damage == "bad_config":
        (checkpoint / "config.json").write_text("{oops")
    elif damage == "no_model_type":
        d = json.loads((checkpoint / "config.json").read_text())
        d.pop("model_type")
        (checkpoint / "config.json").write_text(json.dumps(d))
    else:
        from safetensors.torch import load_file, save_file

        t = load_file(str(st))
        t.pop("model.layers.0.self_attn.q_proj.scales")
        save_file(t, str(st), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=match):
        ck.load_checkpoint(checkpoint)
    r = CliRunner().invoke(main, ["eval", str(checkpoint), "--max-windows", "1", "--no-progress"])
    assert r.exit_code == 2 and "error:" in r.output and "Traceback" not in r.output


def test_pickled_npy_is_not_loaded(tmp_path):
    marker = tmp_path / "pwned"
    np.save(tmp_path / "W.npy", np.array([_Boom(str(marker))], dtype=object), allow_pickle=True)
    np.save(tmp_path / "H.npy", np.eye(4))
    r = CliRunner().invoke(main, ["quantize-layer", str(tmp_path / "W.npy"), str(tmp_path / "H.npy"), "--bits", "3",
                                  "--out", str(tmp_path / "q.npz")])
    assert r.exit_code == 2 and "W.npy" in r.output
    assert not marker.exists() and not (tmp_path / "q.npz").exists()


@pytest.mark.parametrize("field, value, match", [
    ("nsm", "low", "'nsm' must be"),
    ("nsm", {"value": "x"}, "'nsm.value' must be a number"),
    ("name", 5, "'name' must be a string"),
    ("provenance", [1], "'provenance' must be an object"),
])
def test_malformed_lattice_json_fields(tmp_path, field, value, match):
    from latticeq.lattice import Lattice

    p = tmp_path / "l.json"
    d = {"generator": np.eye(3).tolist(), "name": "x", field: value}
    p.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=match):
        Lattice.from_json(p)
    r = CliRunner().invoke(main, ["nsm", str(p), "--samples", "100"])
    assert r.exit_code == 2 and match.split("'")[1] in r.output


@pytest.mark.parametrize("field, value", [("perplexity", "abc"), ("eval", {"windows": "2"}), ("layers", 5),
                                          ("bits", 2.5), ("act_order", "yes")])
def test_malformed_run_records_are_refused(tmp_path, field, value):
    from latticeq.nn.records import make_record

    rec = make_record(model="m", method="gptq", bits=3, group_size=None, sym=False, act_order=False,
                      calibration=None, seed=0, perplexity=10.0, eval=None, wall_time_s=1.0, quant_time_s=1.0,
                      peak_memory_bytes=1, layers=[])
    rec[field] = value
    (tmp_path / "r.json").write_text(json.dumps(rec))
    r = CliRunner().invoke(main, ["report", str(tmp_path / "r.json")])
    assert r.exit_code == 2 and "not a valid latticeq run record" in r.output and field.split("_")[0] in r.output
