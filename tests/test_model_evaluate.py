"""Perplexity (latticeq.nn.evaluate): GPTQ's non-overlapping windows, exact value, bad input."""

import math

import pytest

torch = pytest.importorskip("torch")

from latticeq.nn import evaluate as ev  # noqa: E402
from model_helpers import byte_tokenizer, tiny_llama  # noqa: E402


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    p = tmp_path_factory.mktemp("ev") / "t.txt"
    p.write_text("abcdefghij" * 25 + "xyz", encoding="utf-8")  # 253 bytes = tokens
    return p


def test_windows_are_non_overlapping_prefix(text):
    tok = byte_tokenizer()
    w, T = ev.eval_windows(tok, text, seqlen=50)
    assert T == 253 and w.shape == (5, 50)
    ids = torch.tensor(tok(text.read_text(), add_special_tokens=False)["input_ids"])
    assert torch.equal(w.reshape(-1), ids[:250])


def test_perplexity_equals_manual_nll(text):
    tok = byte_tokenizer()
    m = tiny_llama()
    res = ev.perplexity(m, tok, text=text, seqlen=50, batch_size=2, progress=False)
    w, _ = ev.eval_windows(tok, text, seqlen=50)
    nll = []
    with torch.no_grad():
        for row in w:
            logp = torch.log_softmax(m(row[None]).logits[0, :-1].double(), dim=-1)
            nll.append(-logp[torch.arange(49), row[1:]].mean().item())
    assert res.windows == res.total_windows == 5
    assert res.nll == pytest.approx(sum(nll) / 5, rel=1e-5)
    assert res.perplexity == pytest.approx(math.exp(sum(nll) / 5), rel=1e-5)
    assert res.window_nll == pytest.approx(nll, rel=1e-5)  # each window's own mean NLL
    sd = math.sqrt(sum((x - sum(nll) / 5) ** 2 for x in nll) / 4)
    assert res.stderr_nll == pytest.approx(sd / math.sqrt(5), rel=1e-4)
    assert res.eval_info()["window_nll"] == list(res.window_nll) and res.eval_info()["windows"] == 5
    # batch size does not change the value; max_windows takes a prefix
    one = ev.perplexity(m, tok, text=text, seqlen=50, batch_size=1, max_windows=2, progress=False)
    assert one.windows == 2 and one.nll == pytest.approx(sum(nll[:2]) / 2, rel=1e-5)


def test_default_text_is_pride_and_prejudice():
    from latticeq.nn.calib import EVALUATION_TEXT

    assert EVALUATION_TEXT.name == "prideprejudice.txt"
    w, T = ev.eval_windows(byte_tokenizer(), None, seqlen=4096)
    assert T == len(EVALUATION_TEXT.read_bytes()) and w.shape[0] == T // 4096


def test_bad_input(text, tmp_path):
    tok = byte_tokenizer()
    m = tiny_llama()
    with pytest.raises(ValueError, match="seqlen"):
        ev.eval_windows(tok, text, seqlen=1)
    with pytest.raises(FileNotFoundError, match="not a file"):
        ev.eval_windows(tok, tmp_path / "none.txt")
    with pytest.raises(ValueError, match="too short"):
        ev.eval_windows(tok, text, seqlen=1000)
    with pytest.raises(ValueError, match="max_windows"):
        ev.perplexity(m, tok, text=text, seqlen=50, max_windows=0, progress=False)
    with pytest.raises(ValueError, match="tokenizer"):
        ev.perplexity(m, None, text=text, seqlen=50, progress=False)
