"""Several conditions in one pass (rows of a batch carry different interventions) give what each
condition gives alone: the same tokens and F1 scores, neuron statistics and perplexity windows
equal to float32 rounding (as between two batch sizes of one condition); on both backends (the
plain twin and the bridge) and both MLP kinds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mechtests.data import TextSet
from mechtests.errors import UsageError
from mechtests.generation import AUTO_ROWS_CAP, GenerationConfig, auto_batch_rows, generate, generate_many, row_bytes
from mechtests.interventions import (
    Compose,
    PatchFromModel,
    ScaleKeys,
    SubtractDirection,
    ZeroAblation,
    row_batchable,
    row_batched,
)
from mechtests.metrics import f1_scores, f1_scores_many, perplexity_windows, perplexity_windows_many
from mechtests.models import ModelPair, load_pair
from mechtests.neurons import NeuronSet

PROMPTS = TextSet("p", ("hello there", "a", "the quick brown fox jumps", "why not", "zz top", "one two three four",
                        "x", "say something"))
TEXT = " ".join(PROMPTS.texts * 6)


def conditions(model, source=None) -> list:
    """Conditions whose effects differ: none, an ablation, key scaling, steering, composed, and with
    a ``source``, a patch from it run in lockstep on its own rows."""
    scores = torch.randn(model.n_layers, model.d_mlp, generator=torch.Generator().manual_seed(0))
    top = NeuronSet.top_k(scores, 20)
    direction = torch.randn(model.d_model, generator=torch.Generator().manual_seed(1))
    steer = SubtractDirection(model.mlp_out_hook(model.n_layers - 1), direction, 3.0)
    out = [None, ZeroAblation(top), ScaleKeys(NeuronSet.top_k(scores, 5), 4.0), steer,
           Compose(ZeroAblation(NeuronSet.top_k(-scores, 10)), steer)]
    if source is not None:
        out.append(PatchFromModel(NeuronSet.top_k(scores, 30), source=source))
    return out


@pytest.fixture(scope="module", params=["auto", "bridge"])
def pairs_by_backend(request: pytest.FixtureRequest, tiny_checkpoints: dict[str, tuple[Path, Path]]
                     ) -> dict[str, ModelPair]:
    return {arch: load_pair(base, tuned, name=f"{arch}-{request.param}", backend=request.param)
            for arch, (base, tuned) in tiny_checkpoints.items()}


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("batch_size", [3, 40])  # ragged batches of 1 prompt x 3 rows ... all in one
def test_generation_together_equals_each_alone(pairs_by_backend: dict[str, ModelPair], arch: str,
                                               batch_size: int) -> None:
    model = pairs_by_backend[arch].base
    ivs = conditions(model, pairs_by_backend[arch].tuned)
    cfg = GenerationConfig(max_new_tokens=6, max_prompt_tokens=8, batch_size=batch_size, n_blocks=3)
    together = generate_many(model, PROMPTS, ivs, config=cfg, collect_stats=True)
    alone = [generate(model, PROMPTS, config=GenerationConfig(max_new_tokens=6, max_prompt_tokens=8, batch_size=4,
                                                              n_blocks=3), intervention=iv, collect_stats=True)
             for iv in ivs]
    for iv, a, t in zip(ivs, alone, together, strict=True):
        assert torch.equal(a.new_tokens, t.new_tokens), iv
        assert a.continuations == t.continuations
        assert a.stats is not None and t.stats is not None
        assert torch.equal(a.stats.count, t.stats.count)
        # float32 rounding: BLAS kernels differ with the number of rows, as between any two batch
        # sizes of one condition (the tokens above are identical all the same)
        torch.testing.assert_close(t.stats.activation_sum, a.stats.activation_sum, rtol=1e-5, atol=1e-5)
    # the conditions really differ (else equality would prove nothing)
    assert len({tuple(r.new_tokens.flatten().tolist()) for r in together}) >= 3
    assert not torch.equal(together[0].stats.activation_sum, together[1].stats.activation_sum)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_perplexity_and_f1_together_equal_each_alone(pairs_by_backend: dict[str, ModelPair], arch: str) -> None:
    model = pairs_by_backend[arch].base
    ivs = conditions(model, pairs_by_backend[arch].tuned)
    together = perplexity_windows_many(model, TEXT, ivs, window=16, batch_size=7)
    for iv, (nll, n) in zip(ivs, together, strict=True):
        nll_alone, n_alone = perplexity_windows(model, TEXT, window=16, intervention=iv, batch_size=3)
        np.testing.assert_array_equal(n, n_alone)
        np.testing.assert_allclose(nll, nll_alone, rtol=1e-6, atol=0)
    assert len({round(float(nll.sum()), 3) for nll, _ in together}) >= 3
    sentences = TextSet("f1", tuple(t + " and then the rest of it follows here" for t in PROMPTS.texts))
    f1_together = f1_scores_many(model, sentences, ivs, prompt_tokens=8, new_tokens=5, batch_size=11)
    for iv, scores in zip(ivs, f1_together, strict=True):
        np.testing.assert_array_equal(scores, f1_scores(model, sentences, prompt_tokens=8, new_tokens=5,
                                                        intervention=iv, batch_size=2))


def test_models_are_restored_after_a_pass_together(tiny_pairs: dict[str, ModelPair]) -> None:
    model = tiny_pairs["gpt2"].base
    cfg = GenerationConfig(max_new_tokens=4, max_prompt_tokens=8, batch_size=8)
    before = generate(model, PROMPTS, config=cfg).new_tokens
    generate_many(model, PROMPTS, conditions(model), config=cfg)
    with pytest.raises(UsageError, match="empty"):
        generate_many(model, TextSet("e", ()), [None, None], config=cfg)
    assert torch.equal(generate(model, PROMPTS, config=cfg).new_tokens, before)


def test_only_row_batchable_interventions_share_a_batch(tiny_pairs: dict[str, ModelPair]) -> None:
    pair = tiny_pairs["gpt2"]
    top = NeuronSet.top_k(torch.ones(pair.base.n_layers, pair.base.d_mlp), 3)
    patch = PatchFromModel(top, source=pair.tuned)
    assert row_batchable(patch) and row_batchable(Compose(ZeroAblation(top), patch))
    assert row_batchable(None) and row_batchable(Compose(ZeroAblation(top)))

    class Foreign:  # someone else's intervention: it never said its hooks only touch their rows
        def key(self) -> str:
            return "foreign"

        def applied(self, model):  # pragma: no cover - refused before use
            raise AssertionError

    assert not row_batchable(Foreign())
    cfg = GenerationConfig(max_new_tokens=2, max_prompt_tokens=8)
    assert not row_batchable(Compose(ZeroAblation(top), Foreign()))
    with pytest.raises(UsageError, match="cannot share a batch"):
        generate_many(pair.base, PROMPTS, [None, Foreign()], config=cfg)
    # a model patched from itself is the identity, in a shared batch too
    itself = PatchFromModel(top, source=pair.base)
    alone, shared = generate_many(pair.base, PROMPTS, [None, itself], config=cfg)
    assert torch.equal(alone.new_tokens, shared.new_tokens)


def test_a_hook_tensor_without_the_batch_rows_is_refused(tiny_pairs: dict[str, ModelPair]) -> None:
    model = tiny_pairs["gpt2"].base
    top = NeuronSet.top_k(torch.ones(model.n_layers, model.d_mlp), 3)
    ids = torch.tensor([[1, 2, 3]])
    with row_batched(model, [None, ZeroAblation(top)]) as layout:
        layout.rows = 2  # the caller promised two rows but sends one
        with pytest.raises(UsageError, match="expected a tensor of 2 rows"):
            model.forward(ids, torch.ones_like(ids))


def test_auto_batch_rows_follow_free_memory(tiny_pairs: dict[str, ModelPair],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import mechtests.generation as generation

    model = tiny_pairs["gpt2"].base
    per_row = row_bytes(model, 52)
    # known answer: KV cache 2 L d T + prompt intermediates 32 (3 d_mlp + 8 d) + logits 8 V, float32
    assert per_row == 2 * 2 * 32 * 52 * 4 + 32 * (3 * 64 + 8 * 32) * 4 + 8 * 257
    monkeypatch.setattr(generation, "free_memory_bytes", lambda device: 10 * per_row * 4)  # 0.25 share: 10 rows
    assert auto_batch_rows(model, 52) == 10
    monkeypatch.setattr(generation, "free_memory_bytes", lambda device: 0)
    assert auto_batch_rows(model, 52) == 1
    monkeypatch.setattr(generation, "free_memory_bytes", lambda device: None)
    assert auto_batch_rows(model, 52) == AUTO_ROWS_CAP["cpu"]["generation"]
    monkeypatch.setattr(generation, "free_memory_bytes", lambda device: 1 << 50)
    # CPU perplexity: 1,024 tokens per pass at most (one window of 1,024, eight of 128)
    assert auto_batch_rows(model, 1024, kind="perplexity") == 1
    assert auto_batch_rows(model, 128, kind="perplexity") == AUTO_ROWS_CAP["cpu"]["perplexity"] == 8
