"""interventions.py: every intervention restores the model, has the same effect each time, and
does what it says (checked against weight-edited checkpoints where possible)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from mechtests.data import left_padded_batch
from mechtests.errors import NumericalError, UsageError
from mechtests.interventions import (
    Compose,
    MeanAblation,
    NoIntervention,
    PatchActivations,
    PatchFromModel,
    ScaleKeys,
    SubtractDirection,
    ZeroAblation,
)
from mechtests.models import LoadedModel, ModelPair, load_model, weights_fingerprint
from mechtests.neurons import NeuronSet

NEURONS = NeuronSet.from_pairs([(0, 1), (0, 40), (1, 5), (1, 63)], n_layers=2, d_mlp=64)


def _inputs(model: LoadedModel) -> tuple[torch.Tensor, torch.Tensor]:
    return left_padded_batch(model.tokenizer, ["hello there my friend", "abc", "zz top"], max_tokens=32)


def _logits(model: LoadedModel) -> torch.Tensor:
    ids, mask = _inputs(model)
    with torch.inference_mode():
        return model.forward(ids, mask).logits.clone()


def _all_interventions(pair: ModelPair) -> list[object]:
    model = pair.base
    gen = torch.Generator().manual_seed(0)
    return [
        NoIntervention(),
        ZeroAblation(NEURONS),
        MeanAblation(NEURONS, torch.randn(2, 64, generator=gen)),
        PatchActivations(NEURONS, torch.randn(2, 64, generator=gen)),
        PatchFromModel(NEURONS, pair.tuned),
        ScaleKeys(NEURONS, 5.0),
        SubtractDirection(model.mlp_out_hook(1), torch.randn(32, generator=gen), 3.0),
        Compose(ZeroAblation(NEURONS), ScaleKeys(NEURONS, 2.0), SubtractDirection(model.final_resid_hook, torch.ones(32), 1.0)),
    ]


def test_restores_exactly_and_repeats_identically(tiny_pair: ModelPair) -> None:
    """After any intervention the logits equal the untouched model's bit for bit, and three
    uses in a row (three "metrics") give bit-identical results (no piling up, no x s^3)."""
    model = tiny_pair.base
    clean = _logits(model)
    fingerprint = weights_fingerprint(model._hf.state_dict())
    for intervention in _all_interventions(tiny_pair):
        effects = []
        for _ in range(3):
            with intervention.applied(model):  # type: ignore[attr-defined]
                effects.append(_logits(model))
            assert torch.equal(_logits(model), clean), intervention
        assert torch.equal(effects[0], effects[1]) and torch.equal(effects[1], effects[2]), intervention
        if not isinstance(intervention, NoIntervention):
            assert not torch.equal(effects[0], clean), f"{intervention} had no effect"
    assert weights_fingerprint(model._hf.state_dict()) == fingerprint


def test_restores_when_the_body_raises(tiny_pair: ModelPair) -> None:
    model = tiny_pair.base
    clean = _logits(model)
    for intervention in _all_interventions(tiny_pair):
        with pytest.raises(RuntimeError, match="boom"):
            with intervention.applied(model):  # type: ignore[attr-defined]
                _logits(model)
                raise RuntimeError("boom")
        assert torch.equal(_logits(model), clean), intervention


def _activations(model: LoadedModel, hook: Callable[[int], str]) -> dict[int, torch.Tensor]:
    got: dict[int, torch.Tensor] = {}
    ids, mask = _inputs(model)
    with torch.inference_mode(), model.hooks([(hook(l), lambda a, l=l: got.__setitem__(l, a.clone())) for l in range(2)]):
        model.forward(ids, mask)
    return got


def test_zero_and_constant_patches_set_exactly_the_chosen_neurons(tiny_pair: ModelPair) -> None:
    model = tiny_pair.base
    values = torch.arange(128, dtype=torch.float32).reshape(2, 64) / 10
    mask = NEURONS.to_mask()
    for intervention, expected in ((ZeroAblation(NEURONS), torch.zeros(2, 64)), (PatchActivations(NEURONS, values), values),
                                   (MeanAblation(NEURONS, values), values)):
        with intervention.applied(model):
            acts = _activations(model, model.neuron_hook)
        for layer, idx in NEURONS.by_layer().items():
            expanded = expected[layer, idx].expand_as(acts[layer][..., idx])
            torch.testing.assert_close(acts[layer][..., idx], expanded, rtol=0, atol=0)
        # Layer 0's other neurons are untouched (layer 1's see a changed input).
        clean = _activations(model, model.neuron_hook)
        torch.testing.assert_close(acts[0][..., ~mask[0]], clean[0][..., ~mask[0]], rtol=0, atol=0)


def _scaled_checkpoint(src: Path, dst: Path, arch: str, neurons: NeuronSet, factor: float) -> Path:
    from safetensors.torch import load_file

    from mechtests.testing import perturbed_copy, set_weights

    out = perturbed_copy(src, dst, scale=0.0)
    state = load_file(str(out / "model.safetensors"))
    updates = {}
    for layer, idx in neurons.by_layer().items():
        if arch == "gpt2":  # Conv1D c_fc: weight [d_model, d_mlp], key vectors are columns
            name = f"transformer.h.{layer}.mlp.c_fc.weight"
            weight = state[name].clone()
            weight[:, idx] *= factor
        else:  # Linear up_proj: weight [d_mlp, d_model], key vectors are rows
            name = f"model.layers.{layer}.mlp.up_proj.weight"
            weight = state[name].clone()
            weight[idx, :] *= factor
        updates[name] = weight
    set_weights(out, updates)
    return out


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_scale_keys_equals_scaled_weights(tmp_path: Path, tiny_checkpoints: dict[str, tuple[Path, Path]],
                                          tiny_pairs: dict[str, ModelPair], arch: str) -> None:
    """ScaleKeys on the pre-activation == a checkpoint whose key vectors were really scaled."""
    model = tiny_pairs[arch].base
    edited = load_model(_scaled_checkpoint(tiny_checkpoints[arch][0], tmp_path / "scaled", arch, NEURONS, 7.0))
    with ScaleKeys(NEURONS, 7.0).applied(model):
        hooked = _logits(model)
    torch.testing.assert_close(hooked, _logits(edited), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(hooked, _logits(model), atol=1e-3)


def test_patch_from_model_uses_the_source_activations(tiny_pair: ModelPair) -> None:
    model, source = tiny_pair.base, tiny_pair.tuned
    every = NeuronSet.from_mask(torch.ones(2, 64, dtype=torch.bool))
    layer0 = NeuronSet.from_mask(torch.tensor([[True] * 64, [False] * 64]))
    src = _activations(source, source.neuron_hook)
    with PatchFromModel(layer0, source).applied(model):
        acts = _activations(model, model.neuron_hook)
    torch.testing.assert_close(acts[0], src[0], rtol=0, atol=0)
    with PatchFromModel(every, source).applied(model):
        acts = _activations(model, model.neuron_hook)
    torch.testing.assert_close(acts[1], src[1], rtol=0, atol=0)


def test_subtract_direction_shifts_the_residual(tiny_pair: ModelPair) -> None:
    model = tiny_pair.base
    direction = torch.zeros(32)
    direction[3] = 2.0
    clean = _activations(model, model.resid_post_hook)
    with SubtractDirection(model.resid_post_hook(0), direction, 1.5).applied(model):
        shifted = _activations(model, model.resid_post_hook)
    expected = clean[0].clone()
    expected[..., 3] -= 1.5  # unit-normalised direction times alpha
    torch.testing.assert_close(shifted[0], expected, rtol=0, atol=1e-6)
    raw = SubtractDirection(model.resid_post_hook(0), direction, 1.5, normalize=False)
    assert torch.equal(raw.direction, direction)


def test_keys_are_content_identities(tiny_pair: ModelPair) -> None:
    values = torch.ones(2, 64)
    assert PatchActivations(NEURONS, values).key() == PatchActivations(NEURONS, values.clone()).key()
    assert PatchActivations(NEURONS, values).key() != PatchActivations(NEURONS, values * 2).key()
    # Only the chosen neurons' values matter.
    other = values.clone()
    other[0, 0] = 9.0
    assert PatchActivations(NEURONS, values).key() == PatchActivations(NEURONS, other).key()
    assert MeanAblation(NEURONS, values).key() != PatchActivations(NEURONS, values).key()
    assert ScaleKeys(NEURONS, 2.0).key() != ScaleKeys(NEURONS, 5.0).key()
    assert PatchFromModel(NEURONS, tiny_pair.tuned).key() != PatchFromModel(NEURONS, tiny_pair.base).key()
    assert Compose(ZeroAblation(NEURONS)).key() == Compose(ZeroAblation(NEURONS)).key()
    assert NoIntervention().key() == "none"


def test_bad_interventions(tiny_pair: ModelPair) -> None:
    model = tiny_pair.base
    bad_values = torch.zeros(2, 64)
    bad_values[1, 5] = float("nan")
    with pytest.raises(NumericalError, match="NaN"):
        PatchActivations(NEURONS, bad_values)
    with pytest.raises(UsageError, match="shape"):
        MeanAblation(NEURONS, torch.zeros(3, 64))
    with pytest.raises(UsageError, match="finite"):
        ScaleKeys(NEURONS, float("inf"))
    with pytest.raises(NumericalError):
        SubtractDirection("hook_embed", torch.tensor([float("nan")] * 32), 1.0)
    with pytest.raises(UsageError, match="all zeros"):
        SubtractDirection("hook_embed", torch.zeros(32), 1.0)
    with pytest.raises(UsageError, match="width 16"):
        with SubtractDirection("hook_embed", torch.ones(16), 1.0).applied(model):
            pass
    foreign = NeuronSet.from_pairs([(0, 0)], n_layers=3, d_mlp=64)
    with pytest.raises(UsageError, match="3x64 model"):
        with ZeroAblation(foreign).applied(model):
            pass
    assert torch.equal(_logits(model), _logits(model))
