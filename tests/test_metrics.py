"""Metrics: known answers on hand-set tiny models, F1 on hand-made bags, interventions everywhere."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mechtests.data import TextSet
from mechtests.errors import DataError, NumericalError, UsageError
from mechtests.interventions import ZeroAblation
from mechtests.metrics import bag_f1, f1_scores, perplexity, perplexity_windows, toxicity_scores
from mechtests.models import LoadedModel, load_model
from mechtests.neurons import NeuronSet
from mechtests.testing import make_tiny_checkpoint, set_weights

D_MODEL = 32
VOCAB = 257


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("metrics") / "tiny", n_layers=2, d_model=D_MODEL,
                                d_mlp=64, n_ctx=64)


def _constant_logit_model(src: Path, dst: Path, z: torch.Tensor) -> LoadedModel:
    """A model whose logits are ``z`` at every position, whatever the input.

    The final LayerNorm with weight 0 and bias e_0 outputs e_0 everywhere; an unembedding whose
    column 0 is ``z`` then maps it to logits ``z``.
    """
    import shutil

    shutil.copytree(src, dst)
    e0 = torch.zeros(D_MODEL)
    e0[0] = 1.0
    unembed = torch.zeros(VOCAB, D_MODEL)
    unembed[:, 0] = z
    from safetensors import safe_open

    with safe_open(str(dst / "model.safetensors"), "pt") as f:
        # Tied checkpoints store the unembedding only as the token embedding.
        keys = set(f.keys())  # safe_open has no __contains__
        unembed_name = "lm_head.weight" if "lm_head.weight" in keys else "transformer.wte.weight"
    set_weights(dst, {"transformer.ln_f.weight": torch.zeros(D_MODEL), "transformer.ln_f.bias": e0,
                      unembed_name: unembed})
    return load_model(dst)


# ---------------------------------------------------------------- F1 on hand-made bags


@pytest.mark.parametrize(("pred", "true", "expected"), [
    ([1, 2, 3], [1, 2, 3], 1.0),
    ([1, 2, 3], [4, 5], 0.0),
    ([7, 7, 8], [7, 9], 0.4),  # overlap 1: P 1/3, R 1/2
    ([7, 7, 8], [7, 7, 9, 9], 2 * (2 / 3) * (2 / 4) / (2 / 3 + 2 / 4)),  # counts matter: overlap 2
    ([], [1], 0.0),
    ([1], [], 0.0),
])
def test_bag_f1_known_answers(pred: list[int], true: list[int], expected: float) -> None:
    assert bag_f1(pred, true) == pytest.approx(expected)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 6), max_size=12), st.lists(st.integers(0, 6), max_size=12))
def test_bag_f1_is_symmetric_bounded_and_order_free(a: list[int], b: list[int]) -> None:
    value = bag_f1(a, b)
    assert 0.0 <= value <= 1.0
    assert value == pytest.approx(bag_f1(b, a))
    assert value == pytest.approx(bag_f1(sorted(a), list(reversed(b))))
    if a:
        assert bag_f1(a, a) == pytest.approx(1.0)


def test_f1_scores_known_answer_with_constant_logits(tiny_dir: Path, tmp_path: Path) -> None:
    # Greedy always writes the argmax token "a"; the truth holds "a" five times in 20 tokens,
    # so overlap = 5, precision = recall = 5/20, F1 = 0.25. A truth without "a" scores 0.
    z = torch.zeros(VOCAB)
    a_id = load_model(tiny_dir).tokenizer("a", add_special_tokens=False)["input_ids"][0]
    z[a_id] = 5.0
    model = _constant_logit_model(tiny_dir, tmp_path / "const", z)
    prompt = "x" * 32
    sentences = TextSet("f1", (prompt + "aaaaa" + "b" * 15, prompt + "c" * 20, "y" * 32 + "a" * 20))
    scores = f1_scores(model, sentences, prompt_tokens=32, new_tokens=20, batch_size=2)
    assert scores.dtype == np.float64
    assert scores.tolist() == pytest.approx([0.25, 0.0, 1.0])


def test_f1_scores_with_gold_continuations_known_answer(tiny_dir: Path, tmp_path: Path) -> None:
    """Lee et al.'s {"prompt", "gold"}: the truth is the gold continuation; a prompt longer than
    32 tokens keeps its first 32 and the truth starts with the prompt's own remaining tokens."""
    from mechtests.data import F1Items

    z = torch.zeros(VOCAB)
    a_id = load_model(tiny_dir).tokenizer("a", add_special_tokens=False)["input_ids"][0]
    z[a_id] = 5.0
    model = _constant_logit_model(tiny_dir, tmp_path / "const", z)
    items = F1Items("wiki", (
        "x" * 10,                      # short prompt: truth = gold[:20] = 5 a's + 15 b's -> 0.25
        "x" * 32,                      # exactly 32 tokens: truth = 20 c's -> 0.0
        "x" * 32 + "a" * 10,           # 42 tokens: truth = the prompt's 10 a's + gold's 10 a's -> 1.0
    ), ("aaaaa" + "b" * 15, "c" * 20, "a" * 30))
    scores = f1_scores(model, items, prompt_tokens=32, new_tokens=20, batch_size=2)
    assert scores.tolist() == pytest.approx([0.25, 0.0, 1.0])
    # The same long item read as a sentence (no gold) would compare with the prompt's own tail only.
    as_sentence = f1_scores(model, TextSet("s", ("x" * 32 + "a" * 10,)), prompt_tokens=32, new_tokens=20)
    assert as_sentence.tolist() == pytest.approx([2 * (10 / 20) * 1.0 / (10 / 20 + 1.0)])


def test_f1_scores_rejects_sentences_without_a_continuation(tiny_dir: Path) -> None:
    model = load_model(tiny_dir)
    with pytest.raises(DataError, match="item 0 of 'f1' is a sentence of 5 tokens, so nothing follows"):
        f1_scores(model, TextSet("f1", ("short",)), prompt_tokens=32, new_tokens=20)


# ---------------------------------------------------------------- perplexity


def test_perplexity_of_window_sums() -> None:
    assert perplexity([math.log(2) * 3, math.log(2)], [3, 1]) == pytest.approx(2.0)
    with pytest.raises(NumericalError, match="zero tokens"):
        perplexity([], [])
    with pytest.raises(UsageError, match="shape"):
        perplexity([1.0], [1.0, 2.0])


def test_perplexity_windows_known_answer_by_hand(tiny_dir: Path, tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(VOCAB, generator=gen)
    model = _constant_logit_model(tiny_dir, tmp_path / "const", z)
    text = "the cat sat on the mat, and then it sat again."  # 46 byte tokens
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    nll_sum, n_tokens = perplexity_windows(model, text, window=16, batch_size=2)
    # By hand: windows of 16 tokens (16, 16, 14); each predicts its tokens 1.. from inside the window.
    log_probs = torch.log_softmax(z.double(), dim=0)
    windows = [ids[i : i + 16] for i in range(0, len(ids), 16)]
    expected_nll = [float(-sum(log_probs[t] for t in w[1:])) for w in windows]
    assert n_tokens.tolist() == [len(w) - 1 for w in windows] == [15, 15, 13]
    np.testing.assert_allclose(nll_sum, expected_nll, rtol=1e-5)
    assert perplexity(nll_sum, n_tokens) == pytest.approx(math.exp(sum(expected_nll) / 43), rel=1e-5)


def test_perplexity_windows_validates_window(tiny_dir: Path) -> None:
    model = load_model(tiny_dir)
    with pytest.raises(UsageError, match="exceeds"):
        perplexity_windows(model, "some text here", window=65)
    with pytest.raises(UsageError, match=">= 2"):
        perplexity_windows(model, "some text here", window=1)
    with pytest.raises(DataError, match="at least 2"):
        perplexity_windows(model, "a", window=8)


def zero_layer(model: LoadedModel, layer: int) -> ZeroAblation:
    """Zero every neuron of one layer, through the model's hook point."""
    mask = torch.zeros(model.n_layers, model.d_mlp, dtype=torch.bool)
    mask[layer] = True
    return ZeroAblation(NeuronSet.from_mask(mask))


def test_perplexity_intervention_acts_at_every_position(tiny_dir: Path, tmp_path: Path) -> None:
    # Zeroing layer 0's neurons by a hook equals zeroing its W_out in the weights, at every
    # position of every window; writing only position 0 (the original bug) would differ.
    import shutil

    shutil.copytree(tiny_dir, tmp_path / "no_mlp0")
    set_weights(tmp_path / "no_mlp0", {"transformer.h.0.mlp.c_proj.weight": torch.zeros(64, D_MODEL)})
    model, ablated = load_model(tiny_dir), load_model(tmp_path / "no_mlp0")
    text = "a quick brown fox jumps over the lazy dog " * 3
    plain = perplexity_windows(model, text, window=24)
    hooked = perplexity_windows(model, text, window=24, intervention=zero_layer(model, 0))
    by_weights = perplexity_windows(ablated, text, window=24)
    np.testing.assert_allclose(hooked[0], by_weights[0], rtol=1e-5)
    np.testing.assert_allclose(hooked[1], by_weights[1])
    assert not np.allclose(hooked[0], plain[0], rtol=1e-3)  # the intervention did something
    again = perplexity_windows(model, text, window=24)  # and was removed afterwards
    np.testing.assert_allclose(again[0], plain[0], rtol=1e-6)


def test_f1_intervention_reaches_generation(tiny_dir: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(tiny_dir, tmp_path / "no_mlp0")
    set_weights(tmp_path / "no_mlp0", {"transformer.h.0.mlp.c_proj.weight": torch.zeros(64, D_MODEL)})
    model, ablated = load_model(tiny_dir), load_model(tmp_path / "no_mlp0")
    sentences = TextSet("f1", tuple(f"sentence number {i} goes on and on and on " * 2 for i in range(4)))
    hooked = f1_scores(model, sentences, prompt_tokens=32, new_tokens=8, intervention=zero_layer(model, 0))
    by_weights = f1_scores(ablated, sentences, prompt_tokens=32, new_tokens=8)
    np.testing.assert_allclose(hooked, by_weights)


# ---------------------------------------------------------------- toxicity


def test_toxicity_scores_are_the_scorers_per_text_values() -> None:
    class Length:
        name = "length"

        def score(self, texts: list[str]) -> np.ndarray:
            return np.array([min(len(t), 10) / 10 for t in texts])

    out = toxicity_scores(("ab", "abcdefghijkl", ""), Length())
    assert out.tolist() == pytest.approx([0.2, 1.0, 0.0])
    assert out.dtype == np.float64

    class Short:
        name = "short"

        def score(self, texts: list[str]) -> np.ndarray:
            return np.zeros(1)

    with pytest.raises(NumericalError, match="shape"):
        toxicity_scores(["a", "b"], Short())
