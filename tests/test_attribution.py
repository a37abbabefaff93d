"""attribution.py and the hand-set known-answer model: cosine ranks, groups and shares on paper,
and the completeness identity on real tiny pairs (GPT-2 and Llama)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mechtests.attribution import completeness, group_attribution, layer_shares, neuron_projections
from mechtests.errors import UsageError
from mechtests.models import LoadedModel, ModelPair, load_model
from mechtests.neurons import neuron_cosines, positively_activated, top_k_by_cosine
from mechtests.probes import Probe
from mechtests.testing import make_tiny_checkpoint, set_weights

# Hand-set value vectors (rows), d_model = d_mlp = 4, probe along e1 (weight 2 e1).
VALUE_VECTORS = torch.tensor([
    [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [3.0, 4.0, 0.0, 0.0]],
    [[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [-1.0, -1.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0]],
])
# On paper: cos = w_0 / |w|.
EXPECTED_COS = torch.tensor([[1.0, 0.0, -1.0, 0.6], [2 ** -0.5, 0.0, -(2 ** -0.5), 1.0]])
PROBE = Probe(torch.tensor([2.0, 0.0, 0.0, 0.0]), 0.0)
BASE_ACT = torch.tensor([[0.5, 1.0, 0.2, -0.3], [-0.4, 0.3, -0.5, 0.7]], dtype=torch.float64)
TUNED_ACT = torch.tensor([[0.1, 1.0, 0.6, -0.5], [-0.2, 0.1, -0.1, 0.9]], dtype=torch.float64)


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def hand_set_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    arch = request.param
    path = make_tiny_checkpoint(tmp_path_factory.mktemp(f"hand-{arch}"), arch=arch, d_model=4, d_mlp=4, n_heads=1)
    if arch == "gpt2":  # Conv1D c_proj: weight [d_mlp, d_model], value vectors are rows
        updates = {f"transformer.h.{l}.mlp.c_proj.weight": VALUE_VECTORS[l] for l in range(2)}
    else:  # Linear down_proj: weight [d_model, d_mlp], value vectors are columns
        updates = {f"model.layers.{l}.mlp.down_proj.weight": VALUE_VECTORS[l].T for l in range(2)}
    set_weights(path, updates)
    return load_model(path)


def test_cosines_and_ranks_on_paper(hand_set_model: LoadedModel) -> None:
    torch.testing.assert_close(hand_set_model.all_value_vectors(), VALUE_VECTORS)
    cos = neuron_cosines(hand_set_model, PROBE)
    torch.testing.assert_close(cos, EXPECTED_COS, rtol=1e-6, atol=1e-7)
    assert list(top_k_by_cosine(cos, 3)) == [(0, 0), (1, 0), (1, 3)]
    assert list(top_k_by_cosine(cos, 2, among=positively_activated(cos, BASE_ACT))) == [(0, 0), (1, 3)]


def test_projections_groups_and_shares_on_paper(hand_set_model: LoadedModel) -> None:
    """reduction = (a_base - a_tuned) * (w . p_unit), worked out by hand for each neuron."""
    cos = neuron_cosines(hand_set_model, PROBE)
    base_proj = neuron_projections(hand_set_model, PROBE, BASE_ACT)
    tuned_proj = neuron_projections(hand_set_model, PROBE, TUNED_ACT)
    w_dot_p = torch.tensor([[1.0, 0.0, -1.0, 3.0], [1.0, 0.0, -1.0, 2.0]], dtype=torch.float64)
    torch.testing.assert_close(base_proj, BASE_ACT * w_dot_p)
    ga = group_attribution(cos, BASE_ACT, TUNED_ACT, base_proj, tuned_proj)
    expected_reduction = torch.tensor([[0.4, 0.0, 0.4, 0.6], [-0.2, 0.0, 0.4, -0.4]], dtype=torch.float64)
    torch.testing.assert_close(ga.reduction, expected_reduction, rtol=1e-6, atol=1e-6)
    members = {name: list(s) for name, s in ga.groups.items()}
    assert members == {"TP_down": [(0, 0)], "TN_down": [(0, 3)], "AP_up": [(0, 2)], "AN_up": [(1, 2)],
                       "TP_up": [(1, 3)], "TN_up": [(1, 0)], "AP_down": [], "AN_down": []}
    assert dict(ga.counts) == {"TP_down": 1, "TN_down": 1, "AP_up": 1, "AN_up": 1, "TP_up": 1, "TN_up": 1,
                               "AP_down": 0, "AN_down": 0}
    assert ga.sums["TP_down"] == pytest.approx(0.4) and ga.sums["TN_down"] == pytest.approx(0.6)
    assert ga.sums["TP_up"] == pytest.approx(-0.4) and ga.sums["TN_up"] == pytest.approx(-0.2)
    assert ga.shares["TP_down"] == pytest.approx(2 / 9) and ga.shares["TN_down"] == pytest.approx(1 / 3)
    assert ga.shares["AP_up"] == pytest.approx(2 / 9) and ga.shares["AN_up"] == pytest.approx(2 / 9)
    assert ga.shares["TP_up"] == pytest.approx(-2 / 9)
    assert ga.net == pytest.approx(1.2) and ga.gross_decrease == pytest.approx(1.8)
    assert ga.gross_increase == pytest.approx(0.6)
    assert ga.fraction_toward_toxicity == pytest.approx(2 / 6)  # 2 of the 6 that moved
    torch.testing.assert_close(layer_shares(ga.reduction), torch.tensor([1.4 / 1.2, -0.2 / 1.2], dtype=torch.float64))


def test_attribution_bad_inputs(hand_set_model: LoadedModel) -> None:
    with pytest.raises(UsageError, match="expected \\(2, 4\\)"):
        neuron_projections(hand_set_model, PROBE, torch.zeros(3, 4))
    with pytest.raises(UsageError, match="width 5 does not fit"):
        neuron_projections(hand_set_model, Probe(torch.ones(5)), BASE_ACT)
    with pytest.raises(UsageError, match="shapes differ"):
        group_attribution(EXPECTED_COS, BASE_ACT, TUNED_ACT, torch.zeros(2, 4), torch.zeros(3, 4))


TEXTS = ("you are a horrible person", "what a lovely day it is", "go away", "the cat sat on the mat",
         "I think that", "zz")


def test_completeness_within_1e4(tiny_pair: ModelPair) -> None:
    probe = Probe(torch.randn(32, generator=torch.Generator().manual_seed(0)), 0.0)
    result = completeness(tiny_pair, probe, TEXTS, batch_size=4)
    assert abs(result.total_change) > 1e-3  # a real change, not 0 vs 0
    assert result.relative_residual < 1e-4
    assert result.residual == pytest.approx(result.total_change - sum(result.parts.values()), abs=1e-12)
    expected_parts = {"embed", "attention", "neurons", "mlp_bias"} | (
        {"pos_embed"} if tiny_pair.base.mlp_kind == "standard" else set())
    assert set(result.parts) == expected_parts


def test_completeness_of_a_model_with_itself_is_zero(tiny_pair: ModelPair) -> None:
    same = ModelPair("same", tiny_pair.base, tiny_pair.base)
    probe = Probe(torch.ones(32), 0.0)
    result = completeness(same, probe, TEXTS)
    assert result.total_change == 0.0 and result.residual == 0.0 and result.relative_residual == 0.0


def test_completeness_bad_input(tiny_pair: ModelPair) -> None:
    with pytest.raises(UsageError, match="at least one text"):
        completeness(tiny_pair, Probe(torch.ones(32)), [])


def test_neuron_parts_match_projection_of_pooled_activations(tiny_pair: ModelPair) -> None:
    """The completeness 'neurons' part equals neuron_projections of pooled activations, summed."""
    from mechtests.data import left_padded_batch, masked_mean

    probe = Probe(torch.randn(32, generator=torch.Generator().manual_seed(1)), 0.0)
    means = {}
    for role in ("base", "tuned"):
        model = tiny_pair.role(role)  # type: ignore[arg-type]
        ids, mask = left_padded_batch(model.tokenizer, list(TEXTS), max_tokens=64)
        got: dict[int, torch.Tensor] = {}
        with torch.inference_mode(), model.hooks([(model.neuron_hook(l), lambda a, l=l, got=got: got.__setitem__(l, a.clone()))
                                                  for l in range(2)]):
            model.forward(ids, mask)
        means[role] = torch.stack([masked_mean(got[l].double(), mask).mean(0) for l in range(2)])
    neuron_change = float((neuron_projections(tiny_pair.base, probe, means["base"])
                           - neuron_projections(tiny_pair.tuned, probe, means["tuned"])).sum())
    assert completeness(tiny_pair, probe, TEXTS).parts["neurons"] == pytest.approx(neuron_change, rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("arch", ["mistral", "gemma2"])
def test_other_gated_architectures(tmp_path: Path, arch: str) -> None:
    """Mistral (Llama-like) satisfies the identity; Gemma-2's post-sublayer norms make it not
    apply, which completeness says instead of returning a wrong residual."""
    from mechtests.models import load_pair
    from mechtests.testing import perturbed_copy

    base = make_tiny_checkpoint(tmp_path / "base", arch=arch)  # type: ignore[arg-type]
    pair = load_pair(base, perturbed_copy(base, tmp_path / "tuned", scale=0.05))
    assert pair.base.mlp_kind == "gated"
    probe = Probe(torch.randn(32, generator=torch.Generator().manual_seed(0)), 0.0)
    if arch == "gemma2":
        assert pair.base.has_post_sublayer_norms
        with pytest.raises(UsageError, match="post-sublayer norms|pass a norm"):
            completeness(pair, probe, TEXTS)
    else:
        assert not pair.base.has_post_sublayer_norms
        assert completeness(pair, probe, TEXTS).relative_residual < 1e-4
