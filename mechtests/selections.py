"""Neuron selections the papers make, for claim authors: one object per evaluator, memoised there.

The plugin's ``selections`` fixture gives a `NeuronSelections` for the test's pair:

    def test_top_toxic(selections, evaluator, claim):
        neurons = selections.top_toxic(selections.k(20))

Example:
    >>> sel = NeuronSelections(evaluator)
    >>> len(sel.top_toxic(7)), sorted(sel.groups())[:2]
    (7, ['AN_down', 'AN_up'])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:
    from mechtests.evaluator import Evaluator
    from mechtests.neurons import NeuronSet


class NeuronCount(Protocol):
    """How many neurons, resolved against a model's count (e.g. a fraction of another model's)."""

    def resolve(self, n_neurons: int) -> int: ...


class NeuronSelections:
    """Top-k toxic neurons (by cos(value vector, probe)), the positively activated filter, the
    eight groups of PAPER.md and the neurons DPO reduced most, computed once per evaluator."""

    def __init__(self, ev: Evaluator) -> None:
        self.ev = ev
        base = ev.model("base")
        self.n_neurons = base.n_layers * base.d_mlp

    def k(self, spec: int | NeuronCount) -> int:
        """``spec`` as a neuron count for this model (an int, or anything with ``resolve``); skips
        the test when the model has fewer neurons than asked for (a claim on k neurons of a model
        with fewer is not a claim about that model)."""
        import pytest

        k = int(spec) if isinstance(spec, int) else int(spec.resolve(self.n_neurons))
        if k > self.n_neurons:
            pytest.skip(f"k={k} ({spec}) exceeds the model's {self.n_neurons} MLP neurons")
        return k

    def top_toxic(self, k: int, *, positive_only: bool = False) -> NeuronSet:
        """Top-k neurons by cos(value vector, probe); ``positive_only``: among cos > 0 and mean
        base activation > 0 (A's "toxic & positively activated")."""
        from mechtests.neurons import NeuronSet

        def compute() -> NeuronSet:
            among = None
            if positive_only:
                act = torch.from_numpy(self.ev.mean_activation("base"))
                among = (self.ev.cosines() > 0) & (act > 0)
            return NeuronSet.top_k(self.ev.cosines(), k, among=among)

        return self.ev.memo(f"top_toxic:{k}:{positive_only}", compute)

    def n_positive_toxic(self) -> int:
        """How many neurons are toxic-aligned and positively activated (A: 5,770 of 98,304)."""
        act = torch.from_numpy(self.ev.mean_activation("base"))
        return int(((self.ev.cosines() > 0) & (act > 0)).sum())

    def groups(self) -> dict[str, NeuronSet]:
        """The eight groups (PAPER.md) from the base and tuned passes' mean activations."""
        from mechtests.neurons import classify_neurons

        def compute() -> dict[str, Any]:
            return classify_neurons(self.ev.cosines(), torch.from_numpy(self.ev.mean_activation("base")),
                                    torch.from_numpy(self.ev.mean_activation("tuned")))

        return self.ev.memo("groups", compute)

    def top_reduced(self, k: int) -> NeuronSet:
        """The k neurons whose probe-projected contribution DPO reduced most (``reduction =
        a_base (w_base · p̂) - a_tuned (w_tuned · p̂)``, mean activations over all prompts)."""
        from mechtests.evaluator import BlockAttribution
        from mechtests.neurons import NeuronSet

        def compute() -> NeuronSet:
            red, _, _ = BlockAttribution.from_evaluator(self.ev).reduction()
            base = self.ev.model("base")
            return NeuronSet.top_k(torch.from_numpy(red.reshape(base.n_layers, base.d_mlp)), k)

        return self.ev.memo(f"top_reduced:{k}", compute)
