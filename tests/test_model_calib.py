"""Calibration windows (latticeq.nn.calib): shape, determinism, GPTQ sampling, bad input."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from latticeq.nn import calib  # noqa: E402
from model_helpers import byte_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


def test_default_corpus_excludes_pride_and_prejudice():
    paths = calib.resolve_texts(None)
    names = {p.name for p in paths}
    assert names == set(calib.CALIBRATION_NOVELS)
    assert "prideprejudice.txt" not in names
    assert all(p.is_file() for p in paths)
    assert calib.EVALUATION_TEXT.is_file()
    assert calib.describe_calibration(None).startswith("austen:")


def test_windows_are_substrings_at_gptq_offsets(tmp_path, tok):
    text = "".join(chr(ord("a") + (i * 7) % 26) for i in range(500))
    f = tmp_path / "t.txt"
    f.write_text(text, encoding="utf-8")
    w = calib.calibration_windows(tok, texts=f, nsamples=5, seqlen=20, seed=3)
    assert w.shape == (5, 20) and w.dtype == torch.long
    ids = torch.tensor(tok(text, add_special_tokens=False)["input_ids"])
    starts = np.random.default_rng(3).integers(0, len(ids) - 20, size=5)
    for row, s in zip(w, starts):
        assert torch.equal(row, ids[s : s + 20])
        assert tok.decode(row) in text


def test_seed_determinism(tmp_path, tok):
    f = tmp_path / "t.txt"
    f.write_text("The quick brown fox jumps over the lazy dog. " * 40, encoding="utf-8")
    a = calib.calibration_windows(tok, texts=[f], nsamples=8, seqlen=16, seed=1)
    b = calib.calibration_windows(tok, texts=[str(f)], nsamples=8, seqlen=16, seed=1)
    c = calib.calibration_windows(tok, texts=f, nsamples=8, seqlen=16, seed=2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_multiple_files_are_joined(tmp_path, tok):
    f1, f2 = tmp_path / "a.txt", tmp_path / "b.txt"
    f1.write_text("a" * 30, encoding="utf-8")
    f2.write_text("b" * 30, encoding="utf-8")
    text = calib.read_texts([f1, f2])
    assert text == "a" * 30 + "\n\n" + "b" * 30


def test_too_short_text(tmp_path, tok):
    f = tmp_path / "short.txt"
    f.write_text("x" * 100, encoding="utf-8")
    with pytest.raises(ValueError, match="too short"):
        calib.calibration_windows(tok, texts=f, nsamples=10, seqlen=10)
    # exactly enough (N*L + 1 tokens) works
    f.write_text("x" * 101, encoding="utf-8")
    assert calib.calibration_windows(tok, texts=f, nsamples=10, seqlen=10).shape == (10, 10)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"nsamples": 0}, "nsamples"),
        ({"nsamples": 2.5}, "nsamples"),
        ({"seqlen": 1}, "seqlen"),
        ({"seed": "a"}, "seed"),
    ],
)
def test_bad_numbers(tmp_path, tok, kwargs, match):
    f = tmp_path / "t.txt"
    f.write_text("y" * 1000, encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        calib.calibration_windows(tok, texts=f, **kwargs)


def test_missing_file_and_bad_types(tmp_path, tok):
    with pytest.raises(FileNotFoundError, match="not a file"):
        calib.calibration_windows(tok, texts=tmp_path / "nope.txt")
    with pytest.raises(ValueError, match="file paths or dataset names"):
        calib.resolve_texts([3])
    with pytest.raises(ValueError, match="no calibration texts"):
        calib.resolve_texts([])


def test_dataset_names_are_recognised():
    assert calib.resolve_texts("wikitext2") == "wikitext2"
    assert calib.resolve_texts("C4") == "c4"


def test_non_utf8_text(tmp_path, tok):
    f = tmp_path / "latin1.txt"
    f.write_bytes("caf\xe9 ".encode("latin-1") * 100)
    with pytest.raises(ValueError, match="not UTF-8"):
        calib.calibration_windows(tok, texts=f, nsamples=2, seqlen=4)


def test_windows_start_with_bos_when_the_tokenizer_puts_it_before_every_text(tmp_path):
    """Gemma-style tokenizers: every calibration, held-out and evaluation window is <bos> followed
    by seqlen − 1 consecutive text tokens; the offsets are drawn as for seqlen − 1 without BOS."""
    from latticeq.nn.evaluate import eval_windows

    btok = byte_tokenizer(bos=True)
    assert calib.window_prefix(btok) == [256] and calib.window_prefix(byte_tokenizer()) == []
    text = "".join(chr(ord("a") + (i * 7) % 26) for i in range(500))
    f = tmp_path / "t.txt"
    f.write_text(text, encoding="utf-8")
    ids = torch.tensor(btok(text, add_special_tokens=False)["input_ids"])
    w = calib.calibration_windows(btok, texts=f, nsamples=5, seqlen=20, seed=3)
    starts = np.random.default_rng(3).integers(0, len(ids) - 19, size=5)
    assert w.shape == (5, 20)
    for row, s in zip(w, starts):
        assert row[0] == 256 and torch.equal(row[1:], ids[s : s + 19])
    train, held = calib.heldout_split(btok, texts=f, nsamples=5, seqlen=20, seed=3, heldout=2)
    assert torch.equal(train, w) and (held[:, 0] == 256).all() and (held[:, 1:] != 256).all()
    ev, tokens = eval_windows(btok, f, seqlen=20)
    assert tokens == len(ids) and ev.shape == (len(ids) // 19, 20)
    assert (ev[:, 0] == 256).all() and torch.equal(ev[:, 1:].reshape(-1), ids[: ev.shape[0] * 19])
    # without BOS nothing changes: windows are raw consecutive tokens
    ev0, _ = eval_windows(byte_tokenizer(), f, seqlen=20)
    assert torch.equal(ev0.reshape(-1), ids[: ev0.numel()])
