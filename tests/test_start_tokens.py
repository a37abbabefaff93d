"""A tokenizer that puts a BOS before every text (Llama's ``<s>``, Gemma's ``<bos>``) is read as it is
configured: every prompt, perplexity window and probe text starts with it, pooling skips it, and
the cache keeps its results apart from the same weights behind another tokenizer.

Known answers on the tiny GPT-2 model: the byte-level tokenizer parses the literal text
``<|endoftext|>`` as the special token 256, so a prompt given to the BOS-adding tokenizer and the
same prompt written after ``<|endoftext|>`` to the plain one are the very same ids.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import processors

from mechtests.data import TextSet, left_padded_batch, start_tokens, without_start_tokens
from mechtests.errors import UsageError
from mechtests.generation import GenerationConfig, check_fits_context, generate
from mechtests.metrics import perplexity_windows
from mechtests.models import LoadedModel, load_model
from mechtests.probes import pooled_residual
from mechtests.testing import byte_tokenizer, make_tiny_checkpoint

BOS = 256  # the byte tokenizer's <|endoftext|>
TEXTS = ("hello there", "a", "the quick brown fox jumps over")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadedModel, LoadedModel]:
    """The same weights behind the plain byte tokenizer and behind one that adds a BOS."""
    root = tmp_path_factory.mktemp("bos")
    plain = make_tiny_checkpoint(root / "plain", n_ctx=64, seed=0)
    with_bos = root / "with-bos"
    shutil.copytree(plain, with_bos)
    tokenizer = byte_tokenizer()
    tokenizer.add_bos_token = True
    tokenizer.save_pretrained(with_bos)
    return load_model(plain), load_model(with_bos)


def test_start_tokens_are_the_leading_ids_a_tokenizer_adds_never_a_trailing_one() -> None:
    assert start_tokens(byte_tokenizer()) == ()  # GPT-2: nothing, as the papers
    leading = byte_tokenizer()
    leading.add_bos_token = True
    assert start_tokens(leading) == (BOS,)
    trailing = byte_tokenizer()
    trailing.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="$A <|endoftext|>", special_tokens=[("<|endoftext|>", BOS)])
    assert trailing("ab")["input_ids"] == [97, 98, BOS]
    assert start_tokens(trailing) == ()  # an EOS is never put after a prompt
    ids, mask = left_padded_batch(leading, ["abc", "a"], max_tokens=2)
    assert ids[:, -3:].tolist() == [[BOS, 97, 98], [ids[1, -3].item(), BOS, 97]] and mask.tolist() == [[1, 1, 1],
                                                                                                      [0, 1, 1]]
    assert without_start_tokens(mask, 1).tolist() == [[0, 1, 1], [0, 0, 1]]
    assert torch.equal(without_start_tokens(mask, 0), mask)


def test_generation_reads_the_bos_as_the_tokenizer_puts_it(models: tuple[LoadedModel, LoadedModel]) -> None:
    plain, with_bos = models
    assert (plain.start_tokens, with_bos.start_tokens) == ((), (BOS,))
    cfg = GenerationConfig(max_new_tokens=5, max_prompt_tokens=8, batch_size=2)
    got = generate(with_bos, TextSet("p", TEXTS), config=cfg, collect_stats=True)
    written = TextSet("w", tuple("<|endoftext|>" + t for t in TEXTS))
    expected = generate(plain, written, config=GenerationConfig(max_new_tokens=5, max_prompt_tokens=9, batch_size=2),
                        collect_stats=True)
    assert torch.equal(got.new_tokens, expected.new_tokens)
    assert got.stats is not None and expected.stats is not None
    torch.testing.assert_close(got.stats.activation_sum, expected.stats.activation_sum, rtol=0, atol=0)
    # without the BOS the model sees other inputs: other continuations (the test can tell them apart)
    assert not torch.equal(got.new_tokens, generate(plain, TextSet("p", TEXTS), config=cfg).new_tokens)
    with pytest.raises(UsageError, match=r"1 start token\(s\) \+ max_prompt_tokens \(32\) \+ max_new_tokens \(32\) = 65 "
                                         r"exceeds the context length n_ctx=64"):
        check_fits_context(with_bos, GenerationConfig(max_new_tokens=32, max_prompt_tokens=32))
    check_fits_context(plain, GenerationConfig(max_new_tokens=32, max_prompt_tokens=32))  # 64 fits


def test_perplexity_windows_open_with_the_bos_which_is_never_scored(models: tuple[LoadedModel, LoadedModel]) -> None:
    plain, with_bos = models
    text = "the cat sat on the mat and then it went away for a while " * 3
    ids = plain.tokenizer(text, add_special_tokens=False)["input_ids"]
    window = 20
    nll, n = perplexity_windows(with_bos, text, window=window)
    spans = [ids[i : i + window - 1] for i in range(0, len(ids), window - 1)]
    spans = [s for s in spans if len(s) >= 2]
    assert n.tolist() == [float(len(s)) for s in spans]  # every text token scored, the BOS never
    with torch.inference_mode():
        for w, (got_nll, span) in enumerate(zip(nll, spans, strict=True)):
            x = torch.tensor([[BOS, *span]])
            logits = plain.forward(x, torch.ones_like(x)).logits[0, :-1].double()
            want = torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum").item()
            assert got_nll == pytest.approx(want, rel=1e-5, abs=1e-6), w
    plain_nll, plain_n = perplexity_windows(plain, text, window=window)
    assert plain_n.tolist() == [float(len(s) - 1) for s in
                                [t for t in (ids[i : i + window] for i in range(0, len(ids), window)) if len(t) >= 2]]
    assert not np.array_equal(plain_nll, nll[: len(plain_nll)])


def test_probe_pooling_is_over_the_texts_own_tokens(models: tuple[LoadedModel, LoadedModel]) -> None:
    plain, with_bos = models
    pooled = pooled_residual(with_bos, list(TEXTS), max_tokens=16)
    got: list[torch.Tensor] = []
    with torch.inference_mode(), plain.hooks([(plain.final_resid_hook, lambda r: got.append(r.clone()))]):
        for text in TEXTS:
            ids = [BOS, *plain.tokenizer(text, add_special_tokens=False)["input_ids"][:16]]
            x = torch.tensor([ids])
            plain.forward(x, torch.ones_like(x))
    expected = torch.stack([r[0, 1:].mean(0) for r in got])  # the BOS position is context, not pooled
    torch.testing.assert_close(pooled, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(UsageError, match=r"max_tokens=64 \(\+ 1 start token\(s\)\) exceeds the context length n_ctx=64"):
        pooled_residual(with_bos, ["a"], max_tokens=64)
    assert pooled_residual(with_bos, ["a " * 80]).shape == (1, with_bos.d_model)  # default: n_ctx - 1 text tokens


def test_the_same_weights_behind_another_tokenizer_are_another_cache_entry(
        models: tuple[LoadedModel, LoadedModel]) -> None:
    plain, with_bos = models
    assert plain.fingerprint == with_bos.fingerprint
    assert plain.tokenizer_fingerprint != with_bos.tokenizer_fingerprint
    again = load_model(Path(plain.source))
    assert again.tokenizer_fingerprint == plain.tokenizer_fingerprint  # deterministic across loads
