"""generation.py: batched greedy decoding with KV cache, batch independence, streamed statistics."""

from __future__ import annotations

import pytest
import torch

from mechtests.data import TextSet
from mechtests.errors import DataError, NumericalError, UsageError
from mechtests.generation import GenerationConfig, NeuronStats, generate
from mechtests.interventions import PatchActivations, PatchFromModel, ZeroAblation
from mechtests.models import LoadedModel, ModelPair
from mechtests.neurons import NeuronSet

PROMPTS = TextSet("p", ("Hello there, my friend", "a", "The quick brown fox jumps over", "zz top", "you are",
                        "I think that the weather", "ok"))
CFG = GenerationConfig(max_new_tokens=6, max_prompt_tokens=16, batch_size=3, n_blocks=3)


def _reference_greedy(model: LoadedModel, text: str, steps: int, max_prompt_tokens: int) -> tuple[list[int], torch.Tensor]:
    """Greedy decoding of one unpadded prompt by full forward passes (no cache), and the
    neuron activations at the last position of each pass: ``[steps, L, d_mlp]``."""
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"][:max_prompt_tokens]  # the papers keep the first tokens
    tokens = torch.tensor([ids])
    new: list[int] = []
    acts: list[torch.Tensor] = []
    got: dict[int, torch.Tensor] = {}
    hooks = [(model.neuron_hook(layer), lambda a, layer=layer: got.__setitem__(layer, a[0, -1].clone()))
             for layer in range(model.n_layers)]
    with torch.inference_mode(), model.hooks(hooks):
        for _ in range(steps):
            logits = model.forward(tokens).logits[0, -1]
            acts.append(torch.stack([got[layer] for layer in range(model.n_layers)]))
            nxt = int(logits.argmax())
            new.append(nxt)
            tokens = torch.cat([tokens, torch.tensor([[nxt]])], dim=1)
    return new, torch.stack(acts).double()


def test_matches_uncached_unpadded_reference(tiny_pair: ModelPair) -> None:
    """KV cache + left padding + derived positions give the same tokens and activations as a
    plain full-forward loop on each prompt alone."""
    model = tiny_pair.base
    result = generate(model, PROMPTS, config=CFG, collect_stats=True)
    assert result.new_tokens.shape == (len(PROMPTS), CFG.max_new_tokens)
    expected_sum = torch.zeros(CFG.n_blocks, model.n_layers, model.d_mlp, dtype=torch.float64)
    for i, text in enumerate(PROMPTS.texts):
        tokens, acts = _reference_greedy(model, text, CFG.max_new_tokens, CFG.max_prompt_tokens)
        assert result.new_tokens[i].tolist() == tokens, f"prompt {i}"
        expected_sum[i % CFG.n_blocks] += acts.sum(dim=0)
    stats = result.stats
    assert stats is not None
    torch.testing.assert_close(stats.activation_sum, expected_sum, rtol=1e-4, atol=1e-4)
    expected_count = torch.tensor([3.0, 2.0, 2.0], dtype=torch.float64) * CFG.max_new_tokens
    torch.testing.assert_close(stats.count, expected_count, rtol=0, atol=0)
    torch.testing.assert_close(stats.mean_activation(), expected_sum.sum(0) / (len(PROMPTS) * CFG.max_new_tokens))
    assert stats.activation_sum.dtype == torch.float64 and stats.activation_sum.device.type == "cpu"


def test_continuation_does_not_depend_on_batch_mates(tiny_pair: ModelPair) -> None:
    model = tiny_pair.base
    together = generate(model, PROMPTS, config=GenerationConfig(max_new_tokens=6, max_prompt_tokens=16, batch_size=7))
    for i in range(len(PROMPTS)):
        alone = generate(model, PROMPTS.subset([i]), config=CFG)
        assert torch.equal(alone.new_tokens[0], together.new_tokens[i])
        assert alone.continuations[0] == together.continuations[i]
    reordered = generate(model, PROMPTS.subset([6, 5, 4, 3, 2, 1, 0]), config=GenerationConfig(max_new_tokens=6,
                                                                                             max_prompt_tokens=16,
                                                                                             batch_size=2))
    assert torch.equal(reordered.new_tokens.flip(0), together.new_tokens)


def test_prompt_is_removed_and_exact_steps(tiny_pairs: dict[str, ModelPair]) -> None:
    model = tiny_pairs["gpt2"].base
    result = generate(model, PROMPTS, config=CFG)
    for i, text in enumerate(result.continuations):
        assert text == model.tokenizer.decode(result.new_tokens[i].tolist(), skip_special_tokens=True)
    assert result.stats is None
    assert result.new_tokens.shape[1] == CFG.max_new_tokens  # no early stop at EOS


def test_truncation_keeps_first_prompt_tokens_as_the_papers(tiny_pairs: dict[str, ModelPair]) -> None:
    """Lee et al. tokenize with truncation=True (right side): a long prompt keeps its first tokens;
    truncation="last" keeps its end instead."""
    model = tiny_pairs["gpt2"].base
    head, tail = "the start of it", "the end of it"
    long = head + "x" * 40 + tail
    cfg = GenerationConfig(max_new_tokens=4, max_prompt_tokens=len(head), batch_size=2)
    first = generate(model, TextSet("a", (long,)), config=cfg)
    assert torch.equal(first.new_tokens, generate(model, TextSet("b", (head,)), config=cfg).new_tokens)
    cfg_last = GenerationConfig(max_new_tokens=4, max_prompt_tokens=len(tail), batch_size=2, truncation="last")
    last = generate(model, TextSet("a", (long,)), config=cfg_last)
    assert torch.equal(last.new_tokens, generate(model, TextSet("b", (tail,)), config=cfg_last).new_tokens)
    assert not torch.equal(first.new_tokens, last.new_tokens)


def test_intervention_active_at_every_step(tiny_pair: ModelPair) -> None:
    model = tiny_pair.base
    neurons = NeuronSet.from_pairs([(0, 3), (1, 10), (1, 11)], n_layers=2, d_mlp=64)
    result = generate(model, PROMPTS, config=CFG, intervention=ZeroAblation(neurons), collect_stats=True)
    assert result.stats is not None
    mean = result.stats.mean_activation()
    mask = neurons.to_mask()
    assert torch.count_nonzero(mean[mask]) == 0
    assert torch.count_nonzero(mean[~mask]) == int((~mask).sum())
    plain = generate(model, PROMPTS, config=CFG, collect_stats=True)
    assert plain.stats is not None
    values = torch.full((2, 64), 0.25)
    patched = generate(model, PROMPTS, config=CFG, intervention=PatchActivations(neurons, values), collect_stats=True)
    assert patched.stats is not None
    torch.testing.assert_close(patched.stats.mean_activation()[mask], torch.full((3,), 0.25, dtype=torch.float64))


def test_patch_from_model_per_position_during_generation(tiny_pair: ModelPair) -> None:
    """Cached, batched generation with PatchFromModel equals a step-by-step reference that runs
    the source on the full sequence and patches every position."""
    target, source = tiny_pair.base, tiny_pair.tuned
    neurons = NeuronSet.from_mask(torch.rand(2, 64, generator=torch.Generator().manual_seed(0)) < 0.5)
    result = generate(target, PROMPTS, config=CFG, intervention=PatchFromModel(neurons, source))
    by_layer = neurons.by_layer()
    for i, text in enumerate(PROMPTS.texts):
        tokens = torch.tensor([target.tokenizer(text, add_special_tokens=False)["input_ids"][:16]])
        expected: list[int] = []
        for _ in range(CFG.max_new_tokens):
            src: dict[int, torch.Tensor] = {}
            with torch.inference_mode():
                keep = [(source.neuron_hook(l), lambda a, l=l, src=src: src.__setitem__(l, a.clone())) for l in by_layer]
                with source.hooks(keep):
                    source.forward(tokens)

                def patch(a: torch.Tensor, l: int, src: dict[int, torch.Tensor] = src) -> torch.Tensor:
                    a[..., by_layer[l]] = src[l][..., by_layer[l]]
                    return a

                with target.hooks([(target.neuron_hook(l), lambda a, l=l: patch(a, l)) for l in by_layer]):
                    nxt = int(target.forward(tokens).logits[0, -1].argmax())
            expected.append(nxt)
            tokens = torch.cat([tokens, torch.tensor([[nxt]])], dim=1)
        assert result.new_tokens[i].tolist() == expected, f"prompt {i}"


def test_patch_from_an_identical_copy_changes_nothing(tiny_pair: ModelPair) -> None:
    from mechtests.models import load_model

    model = tiny_pair.base
    copy = load_model(model.source)
    assert copy is not model and copy.fingerprint == model.fingerprint
    every = NeuronSet.from_mask(torch.ones(2, 64, dtype=torch.bool))
    plain = generate(model, PROMPTS, config=CFG, collect_stats=True)
    patched = generate(model, PROMPTS, config=CFG, intervention=PatchFromModel(every, copy), collect_stats=True)
    assert torch.equal(plain.new_tokens, patched.new_tokens)
    assert plain.stats is not None and patched.stats is not None
    torch.testing.assert_close(plain.stats.activation_sum, patched.stats.activation_sum, rtol=1e-6, atol=1e-6)
    # From itself: the identity, statistics counted once.
    itself = generate(model, PROMPTS, config=CFG, intervention=PatchFromModel(every, model), collect_stats=True)
    assert itself.stats is not None
    torch.testing.assert_close(itself.stats.activation_sum, plain.stats.activation_sum, rtol=0, atol=0)


def test_block_means() -> None:
    stats = NeuronStats(torch.arange(12, dtype=torch.float64).reshape(2, 2, 3), torch.tensor([2.0, 4.0], dtype=torch.float64))
    torch.testing.assert_close(stats.block_means()[1], torch.arange(6, 12, dtype=torch.float64).reshape(2, 3) / 4)
    torch.testing.assert_close(stats.mean_activation(), (torch.arange(6.0) + torch.arange(6.0, 12.0)).reshape(2, 3).double() / 6)
    assert stats.n_blocks == 2
    with pytest.raises(NumericalError, match="no observations"):
        NeuronStats(torch.zeros(1, 1, 1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)).mean_activation()


def test_bad_inputs(tiny_pairs: dict[str, ModelPair]) -> None:
    model = tiny_pairs["gpt2"].base
    with pytest.raises(UsageError, match="is empty"):
        generate(model, TextSet("none", ()), config=CFG)
    with pytest.raises(DataError, match="prompt 2 of 'e' .* has no tokens"):
        generate(model, TextSet("e", ("fine", "also fine", "")), config=CFG)
    assert generate(model, ["a list works too"], config=CFG).new_tokens.shape == (1, CFG.max_new_tokens)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="exceeds the context length n_ctx=64"):
        generate(model, PROMPTS, config=GenerationConfig(max_new_tokens=20, max_prompt_tokens=50))
    for field in ("max_new_tokens", "max_prompt_tokens", "batch_size", "n_blocks"):
        with pytest.raises(UsageError, match=field):
            GenerationConfig(**{field: 0})


def test_nan_activations_raise(tiny_checkpoints: dict[str, tuple[object, object]], tmp_path: object) -> None:
    import contextlib
    from pathlib import Path

    from safetensors.torch import load_file

    from mechtests.errors import CheckpointError
    from mechtests.models import load_model
    from mechtests.testing import perturbed_copy, set_weights

    base_dir, _ = tiny_checkpoints["gpt2"]
    broken = perturbed_copy(Path(str(base_dir)), Path(str(tmp_path)) / "nan", scale=0.0)
    name = "transformer.h.1.mlp.c_fc.bias"
    bias = load_file(str(broken / "model.safetensors"))[name]
    bias[5] = float("nan")
    set_weights(broken, {name: bias})
    with pytest.raises(CheckpointError, match="transformer.h.1.mlp.c_fc.bias holds 1 NaN"):
        load_model(broken)  # NaN weights never reach generation

    class NanActivations:
        def key(self) -> str:
            return "nan"

        @contextlib.contextmanager
        def applied(self, model):
            with model.hooks([(model.neuron_hook(1), lambda a: a * float("nan"))]):
                yield

    model = load_model(Path(str(base_dir)))
    with pytest.raises(NumericalError, match="non-finite"):
        generate(model, PROMPTS, config=CFG, collect_stats=True, intervention=NanActivations())
    # Without statistics the logits themselves are checked, and the first bad step is named.
    with pytest.raises(NumericalError, match="non-finite logits at generation step 0"):
        generate(model, PROMPTS, config=CFG, collect_stats=False, intervention=NanActivations())
