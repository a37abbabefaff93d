"""neurons.py: NeuronSet validation and algebra, top-k selection, the eight groups."""

from __future__ import annotations

import pytest
import torch

from mechtests.errors import UsageError
from mechtests.neurons import (
    GROUP_LABELS,
    GROUPS,
    MIRRORS,
    NeuronSet,
    classify_neurons,
    group_masks,
    k_for_fraction,
    positively_activated,
    top_k_by_cosine,
)


def test_neuronset_sorted_unique_and_iterable() -> None:
    s = NeuronSet.from_pairs([(1, 3), (0, 2), (1, 3), (0, 0)], n_layers=2, d_mlp=4)
    assert list(s) == [(0, 0), (0, 2), (1, 3)] and len(s) == 3
    assert (0, 2) in s and (1, 0) not in s
    assert s.layers == (0, 0, 1) and s.indices == (0, 2, 3)
    assert s == NeuronSet((0, 1, 0), (2, 3, 0), 2, 4)
    assert {layer: idx.tolist() for layer, idx in s.by_layer().items()} == {0: [0, 2], 1: [3]}


def test_neuronset_mask_roundtrip_and_algebra() -> None:
    mask = torch.tensor([[True, False, True], [False, False, True]])
    s = NeuronSet.from_mask(mask)
    assert torch.equal(s.to_mask(), mask)
    t = NeuronSet.from_pairs([(1, 2), (1, 0)], n_layers=2, d_mlp=3)
    assert list(s | t) == [(0, 0), (0, 2), (1, 0), (1, 2)]
    assert list(s - t) == [(0, 0), (0, 2)]
    assert len(NeuronSet.empty(n_layers=2, d_mlp=3)) == 0
    assert not NeuronSet.empty(n_layers=2, d_mlp=3).to_mask().any()


def test_neuronset_key_is_stable_and_content_based() -> None:
    a = NeuronSet.from_pairs([(0, 1), (1, 2)], n_layers=2, d_mlp=4)
    b = NeuronSet.from_pairs([(1, 2), (0, 1)], n_layers=2, d_mlp=4)
    assert a.key() == b.key() and a.key().startswith("neurons[2]:")
    assert a.key() != NeuronSet.from_pairs([(0, 1)], n_layers=2, d_mlp=4).key()
    assert a.key() != NeuronSet.from_pairs([(0, 1), (1, 2)], n_layers=2, d_mlp=5).key()


@pytest.mark.parametrize(
    ("pairs", "message"),
    [([(2, 0)], r"neuron \(2, 0\) is outside"), ([(0, 4)], r"neuron \(0, 4\) is outside"), ([(-1, 0)], "outside")],
)
def test_neuronset_validation(pairs: list[tuple[int, int]], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        NeuronSet.from_pairs(pairs, n_layers=2, d_mlp=4)


def test_neuronset_other_errors() -> None:
    with pytest.raises(UsageError, match="2 layers but 1 indices"):
        NeuronSet((0, 1), (0,), 2, 4)
    with pytest.raises(UsageError, match="bool"):
        NeuronSet.from_mask(torch.ones(2, 2))
    with pytest.raises(UsageError, match="different models"):
        NeuronSet.empty(n_layers=2, d_mlp=4) | NeuronSet.empty(n_layers=2, d_mlp=5)


COS = torch.tensor([[1.0, 0.0, -1.0, 0.6], [0.70710678, 0.0, -0.70710678, 1.0]])


def test_top_k_known_answer_with_ties() -> None:
    assert list(top_k_by_cosine(COS, 3)) == [(0, 0), (1, 0), (1, 3)]
    # Ties at 1.0 are broken by (layer, index): (0, 0) ranks before (1, 3).
    assert list(top_k_by_cosine(COS, 1)) == [(0, 0)]
    assert list(top_k_by_cosine(COS, 4)) == [(0, 0), (0, 3), (1, 0), (1, 3)]
    assert len(top_k_by_cosine(COS, 0)) == 0
    assert len(top_k_by_cosine(COS, 8)) == 8


def test_top_k_among_filter() -> None:
    among = torch.tensor([[False, True, True, True], [True, True, True, False]])
    assert list(top_k_by_cosine(COS, 2, among=among)) == [(0, 3), (1, 0)]
    with pytest.raises(UsageError, match="k=7 but only 6 candidate neurons"):
        top_k_by_cosine(COS, 7, among=among)


def test_top_k_bad_input() -> None:
    with pytest.raises(UsageError, match="k=9 but only 8 candidate neurons"):
        top_k_by_cosine(COS, 9)
    with pytest.raises(UsageError, match="k=-1"):
        top_k_by_cosine(COS, -1)
    with pytest.raises(UsageError, match="n_layers, d_mlp"):
        top_k_by_cosine(torch.ones(3), 1)
    with pytest.raises(UsageError, match="bool mask"):
        top_k_by_cosine(COS, 1, among=torch.ones(2, 4))


def test_positively_activated() -> None:
    act = torch.tensor([[0.5, 1.0, 0.2, -0.3], [-0.4, 0.3, 0.0, 0.0]])
    expected = torch.tensor([[True, False, False, False], [False, False, False, False]])
    assert torch.equal(positively_activated(COS, act), expected)


def test_k_for_fraction() -> None:
    assert k_for_fraction(100 / 98304, 98304) == 100
    assert k_for_fraction(1000 / 98304, 98304) == 1000
    assert k_for_fraction(100 / 98304, 256) == 1  # never zero
    assert k_for_fraction(2000 / 98304, 49152) == 1000
    assert k_for_fraction(1.0, 5) == 5
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(UsageError, match="fraction"):
            k_for_fraction(bad, 10)


def test_groups_known_answer() -> None:
    """Every sign combination of PAPER.md's table, plus the no-group cases (cos 0, no change)."""
    cos = torch.tensor([[0.5, 0.5, -0.5, -0.5, 0.5, 0.5, -0.5, -0.5, 0.0, 0.5]])
    base = torch.tensor([[1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, 0.0]])
    tuned = torch.tensor([[0.5, -2.0, 2.0, -0.5, 2.0, -0.5, 0.5, -2.0, 0.0, 0.0]])
    groups = classify_neurons(cos, base, tuned)
    expected = {"TP_down": 0, "TN_down": 1, "AP_up": 2, "AN_up": 3, "TP_up": 4, "TN_up": 5, "AP_down": 6, "AN_down": 7}
    assert set(groups) == set(GROUPS + MIRRORS)
    for name, index in expected.items():
        assert list(groups[name]) == [(0, index)], name
    # base activation exactly 0 counts as positive; no change -> no group.
    assert all((0, 9) not in g and (0, 8) not in g for g in groups.values())
    zero_base = classify_neurons(torch.tensor([[0.5]]), torch.tensor([[0.0]]), torch.tensor([[-1.0]]))
    assert list(zero_base["TP_down"]) == [(0, 0)]
    assert GROUP_LABELS["TP_down"] == "TP↓" and GROUP_LABELS["AN_up"] == "AN↑"


def test_groups_shape_mismatch() -> None:
    with pytest.raises(UsageError, match="shapes differ"):
        group_masks(torch.ones(2, 3), torch.ones(2, 3), torch.ones(3, 2))
