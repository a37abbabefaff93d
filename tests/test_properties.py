"""Property-based tests (hypothesis) of the engine's invariants over random small models.

Models come from ``TransformerBridgeConfig`` sources (random init, GPT-2 or Llama layout), so
each example is a different architecture size; examples are few because each loads a model.
"""

from __future__ import annotations

from functools import lru_cache

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformer_lens.config import TransformerBridgeConfig

from mechtests.attribution import completeness, group_attribution
from mechtests.data import left_padded_batch
from mechtests.interventions import (
    Compose,
    MeanAblation,
    PatchActivations,
    PatchFromModel,
    ScaleKeys,
    SubtractDirection,
    ZeroAblation,
)
from mechtests.models import LoadedModel, ModelPair, load_model, load_pair
from mechtests.neurons import GROUPS, MIRRORS, NeuronSet, top_k_by_cosine

SHAPES = st.tuples(st.sampled_from([False, True]), st.integers(1, 2), st.sampled_from([8, 16]), st.sampled_from([8, 24]))


def _config(gated: bool, n_layers: int, d_model: int, d_mlp: int, seed: int) -> TransformerBridgeConfig:
    return TransformerBridgeConfig(d_model=d_model, d_head=d_model // 2, n_layers=n_layers, n_ctx=32, n_heads=2,
                                   d_mlp=d_mlp, gated_mlp=gated, seed=seed)


@lru_cache(maxsize=16)
def _pair(gated: bool, n_layers: int, d_model: int, d_mlp: int) -> ModelPair:
    return load_pair(_config(gated, n_layers, d_model, d_mlp, 0), _config(gated, n_layers, d_model, d_mlp, 1))


def _logits(model: LoadedModel) -> torch.Tensor:
    ids, mask = left_padded_batch(model.tokenizer, ["hello world", "ab"], max_tokens=16)
    with torch.inference_mode():
        return model.forward(ids, mask).logits.clone()


def _intervention(kind: int, model: LoadedModel, source: LoadedModel, neurons: NeuronSet, seed: int) -> object:
    gen = torch.Generator().manual_seed(seed)
    values = torch.randn(model.n_layers, model.d_mlp, generator=gen)
    options = [
        lambda: ZeroAblation(neurons),
        lambda: MeanAblation(neurons, values),
        lambda: PatchActivations(neurons, values),
        lambda: PatchFromModel(neurons, source),
        lambda: ScaleKeys(neurons, 3.0),
        lambda: SubtractDirection(model.final_resid_hook, torch.randn(model.d_model, generator=gen), 2.0),
        lambda: Compose(ZeroAblation(neurons), ScaleKeys(neurons, 0.5)),
    ]
    return options[kind % len(options)]()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SHAPES, st.integers(0, 6), st.floats(0.0, 1.0), st.booleans(), st.integers(0, 1000))
def test_any_intervention_always_restores(shape: tuple[bool, int, int, int], kind: int, density: float, raises: bool,
                                          seed: int) -> None:
    pair = _pair(*shape)
    model = pair.base
    mask = torch.rand(model.n_layers, model.d_mlp, generator=torch.Generator().manual_seed(seed)) < density
    intervention = _intervention(kind, model, pair.tuned, NeuronSet.from_mask(mask), seed)
    clean = _logits(model)
    try:
        with intervention.applied(model):  # type: ignore[attr-defined]
            _logits(model)
            if raises:
                raise KeyError("body failed")
    except KeyError:
        assert raises
    assert torch.equal(_logits(model), clean)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SHAPES, st.integers(0, 1000))
def test_empty_interventions_change_nothing(shape: tuple[bool, int, int, int], seed: int) -> None:
    pair = _pair(*shape)
    model = pair.base
    empty = NeuronSet.empty(n_layers=model.n_layers, d_mlp=model.d_mlp)
    some = NeuronSet.from_mask(torch.rand(model.n_layers, model.d_mlp, generator=torch.Generator().manual_seed(seed)) < 0.5)
    clean = _logits(model)
    for intervention in (ZeroAblation(empty), MeanAblation(empty, torch.ones(model.n_layers, model.d_mlp)),
                         PatchActivations(empty, torch.ones(model.n_layers, model.d_mlp)), PatchFromModel(empty, pair.tuned),
                         ScaleKeys(some, 1.0), SubtractDirection(model.final_resid_hook, torch.ones(model.d_model), 0.0),
                         Compose()):
        with intervention.applied(model):
            assert torch.equal(_logits(model), clean), intervention


ARRAYS = st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(0, 2**31 - 1), st.booleans())


@settings(max_examples=60, deadline=None)
@given(ARRAYS)
def test_attributions_sum_to_the_total(spec: tuple[int, int, int, bool]) -> None:
    n_layers, d_mlp, seed, with_ties = spec
    gen = torch.Generator().manual_seed(seed)

    def draw() -> torch.Tensor:
        x = torch.randn(n_layers, d_mlp, generator=gen, dtype=torch.float64)
        return x.round() if with_ties else x  # rounding creates zeros and unchanged neurons

    cos, base_act, tuned_act, base_proj, tuned_proj = draw(), draw(), draw(), draw(), draw()
    ga = group_attribution(cos, base_act, tuned_act, base_proj, tuned_proj)
    grouped = torch.zeros(n_layers, d_mlp, dtype=torch.bool)
    for name in GROUPS + MIRRORS:
        mask = ga.groups[name].to_mask()
        assert not (grouped & mask).any(), "groups overlap"
        grouped |= mask
    ungrouped = float(ga.reduction[~grouped].sum())
    assert sum(ga.sums.values()) + ungrouped == pytest.approx(ga.net, abs=1e-9)
    assert ga.gross_decrease - ga.gross_increase == pytest.approx(ga.net, abs=1e-9)
    assert sum(ga.counts.values()) == int(grouped.sum())
    total = sum(ga.sums[g] for g in GROUPS)
    if total != 0:
        assert sum(ga.shares[g] for g in GROUPS) == pytest.approx(1.0)
    # Neurons outside every group have cos == 0 or no activation change.
    outside = ~grouped
    assert bool(((cos[outside] == 0) | (base_act[outside] == tuned_act[outside])).all())


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SHAPES, st.integers(0, 1000))
def test_completeness_holds_on_random_models(shape: tuple[bool, int, int, int], seed: int) -> None:
    from mechtests.probes import Probe

    pair = _pair(*shape)
    probe = Probe(torch.randn(pair.base.d_model, generator=torch.Generator().manual_seed(seed)), 0.0)
    result = completeness(pair, probe, ["some text here", "more", "a b c d e f"])
    # float32 rounding scales with the terms summed, not with their (possibly cancelling) total:
    # random pairs can have parts of ~0.05 summing to ~1e-5, where residual / total is noise.
    # A missing or wrong term leaves a residual the size of a part, far above this bound.
    scale = sum(abs(v) for v in result.parts.values())
    assert abs(result.residual) <= 1e-4 * scale, result
    if abs(result.total_change) >= 0.01 * scale:  # no cancellation: the claim's own measure holds
        assert result.relative_residual < 1e-4, result


@settings(max_examples=60, deadline=None)
@given(ARRAYS, st.integers(0, 20))
def test_top_k_takes_the_largest(spec: tuple[int, int, int, bool], k: int) -> None:
    n_layers, d_mlp, seed, with_ties = spec
    cos = torch.randn(n_layers, d_mlp, generator=torch.Generator().manual_seed(seed))
    cos = cos.round() if with_ties else cos
    k = min(k, n_layers * d_mlp)
    chosen = top_k_by_cosine(cos, k)
    mask = chosen.to_mask()
    assert len(chosen) == k
    if 0 < k < n_layers * d_mlp:
        assert float(cos[mask].min()) >= float(cos[~mask].max())
    assert NeuronSet.from_mask(mask) == chosen


def test_config_models_are_cached_per_shape() -> None:
    assert _pair(False, 1, 8, 8) is _pair(False, 1, 8, 8)
    assert isinstance(load_model(_config(False, 1, 8, 8, 0)), LoadedModel)
