"""Shared builders for the model tests: a byte-level tokenizer and tiny random models.

Not a test module itself (no ``test_`` prefix); imported by tests/test_model_*.py.
"""

from __future__ import annotations


def byte_tokenizer(bos: bool = False):
    """A real fast tokenizer with one token per UTF-8 byte (byte-level BPE without merges);
    ``bos=True`` adds a ``<bos>`` token (id 256) that it puts before every text, as Gemma's does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    if bos:
        vocab["<bos>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    if not bos:
        return PreTrainedTokenizerFast(tokenizer_object=tok)
    tok.add_special_tokens(["<bos>"])
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>")


def tiny_llama(seed: int = 0, layers: int = 2, vocab: int = 256):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(cfg).eval()


def tiny_opt(seed: int = 0, layers: int = 2, vocab: int = 256):
    import torch
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(seed)
    cfg = OPTConfig(vocab_size=vocab, hidden_size=64, ffn_dim=128, num_hidden_layers=layers,
                    num_attention_heads=4, max_position_embeddings=256, word_embed_proj_dim=64,
                    pad_token_id=1, bos_token_id=2, eos_token_id=2)
    return OPTForCausalLM(cfg).eval()


def tiny_gemma(seed: int = 0, layers: int = 2, vocab: int = 256):
    import torch
    from transformers import GemmaConfig, GemmaForCausalLM

    torch.manual_seed(seed)
    cfg = GemmaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=256,
                      pad_token_id=0, bos_token_id=2, eos_token_id=1)
    return GemmaForCausalLM(cfg).eval()


def tiny_gpt2(seed: int = 0, layers: int = 2, vocab: int = 256):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab, n_embd=64, n_layer=layers, n_head=4, n_positions=256,
                     bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


def tiny_model_folder(d):
    """A saved tiny Llama with the byte tokenizer in ``d/model`` and calibration text ``d/calib.txt``."""
    tiny_llama().save_pretrained(d / "model")
    byte_tokenizer().save_pretrained(d / "model")
    (d / "calib.txt").write_text("It was a bright cold day in April. " * 200, encoding="utf-8")
    return d
