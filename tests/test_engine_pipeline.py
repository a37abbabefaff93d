"""The papers' whole analysis through one interface, on tiny GPT-2 (standard MLP) and Llama
(gated MLP) pairs: probe -> cosines -> generation statistics -> groups -> attribution ->
interventions -> completeness. Each step is checked against an independent computation."""

from __future__ import annotations

import pytest
import torch

from mechtests.attribution import completeness, group_attribution, neuron_projections
from mechtests.data import TextSet
from mechtests.generation import GenerationConfig, generate
from mechtests.interventions import PatchActivations, ScaleKeys, ZeroAblation
from mechtests.models import ModelPair
from mechtests.neurons import GROUPS, neuron_cosines, positively_activated, top_k_by_cosine
from mechtests.probes import train_probe

PROBE_DATA = TextSet(
    "probe",
    tuple(["you idiot", "hate hate", "awful jerk", "stupid fool", "lovely day", "kind friend", "nice tea",
           "warm sun"] * 3),
    tuple([1, 1, 1, 1, 0, 0, 0, 0] * 3),
)
PROMPTS = TextSet("prompts", ("you are a", "the weather is", "what a", "go away", "I think", "so"))
CFG = GenerationConfig(max_new_tokens=5, max_prompt_tokens=16, batch_size=4, n_blocks=2)


def test_pipeline_on_both_mlp_kinds(tiny_pair: ModelPair) -> None:
    base, tuned = tiny_pair.base, tiny_pair.tuned
    probe = train_probe(base, PROBE_DATA, seed=0, test_fraction=0.25).probe
    cos = neuron_cosines(base, probe)
    assert cos.shape == (base.n_layers, base.d_mlp) and bool((cos.abs() <= 1 + 1e-6).all())

    base_stats = generate(base, PROMPTS, config=CFG, collect_stats=True).stats
    tuned_stats = generate(tuned, PROMPTS, config=CFG, collect_stats=True).stats
    assert base_stats is not None and tuned_stats is not None
    base_act, tuned_act = base_stats.mean_activation(), tuned_stats.mean_activation()

    # Attribution: reduction_i = a_base,i (w_base,i . p) - a_tuned,i (w_tuned,i . p), recomputed here.
    p = probe.direction.double()
    manual = base_act * (base.all_value_vectors().double() @ p) - tuned_act * (tuned.all_value_vectors().double() @ p)
    ga = group_attribution(cos, base_act, tuned_act, neuron_projections(base, probe, base_act),
                           neuron_projections(tuned, probe, tuned_act))
    torch.testing.assert_close(ga.reduction, manual)
    assert sum(ga.shares[g] for g in GROUPS) == pytest.approx(1.0)
    assert all(ga.sums[g] >= 0 for g in GROUPS)  # the four groups reduce by construction

    # Patching TP_down to the tuned model's mean activations pins exactly those neurons.
    tp_down = ga.groups["TP_down"]
    assert len(tp_down) > 0
    patched = generate(base, PROMPTS, config=CFG, intervention=PatchActivations(tp_down, tuned_act.float()),
                       collect_stats=True).stats
    assert patched is not None
    mask = tp_down.to_mask()
    torch.testing.assert_close(patched.mean_activation()[mask], tuned_act.float().double()[mask])

    # Zeroing the top toxic, positively activated neurons; scaling key vectors of the top 3.
    top = top_k_by_cosine(cos, 3, among=positively_activated(cos, base_act))
    zeroed = generate(base, PROMPTS, config=CFG, intervention=ZeroAblation(top), collect_stats=True).stats
    assert zeroed is not None and torch.count_nonzero(zeroed.mean_activation()[top.to_mask()]) == 0
    scaled = generate(tuned, PROMPTS, config=CFG, intervention=ScaleKeys(top, 10.0), collect_stats=True).stats
    assert scaled is not None
    assert not torch.allclose(scaled.mean_activation()[top.to_mask()], tuned_act[top.to_mask()])

    # The identity that ties it together.
    assert completeness(tiny_pair, probe, PROMPTS).relative_residual < 1e-4
