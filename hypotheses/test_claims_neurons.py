"""Claim 4 (PAPER.md): the top toxic neurons' activations drop after DPO (B)."""

from __future__ import annotations

import pytest
from mt_reference import KSpec, absolute, frac, ref

from mechtests.evaluator import BlockAttribution
from mechtests.premises import require_change

# The data roles these claims read: checked at start-up (mechtests.preflight).
pytestmark = pytest.mark.mechtests_data("challenge")


@pytest.mark.parametrize("kspec", [frac(128), frac(1000), absolute(7)], ids=lambda s: s.label)
def test_top_toxic_neurons_dampened(kspec: KSpec, selections, attribution: BlockAttribution, claim) -> None:
    """Most of the top-k toxic neurons (by cos(value vector, probe)) have a lower mean activation
    in the tuned model: the fraction dampened > 0.5.

    Paper (PAPER.md, claim 4, B): DPO lowers the activations of the toxic value vectors (B's
    figure of the top toxic neurons' activations before/after DPO; 128 of 98,304 shown, "most"
    drop). k = 128/98,304 and 1,000/98,304 of the model's neurons, and B's absolute top 7.
    Each neuron's change is tested over the NeuronStats blocks (prompt clusters) and the interval
    counts the neurons shown dampened / shown raised (Holm, `stats.sign_fraction_estimate`).
    """
    require_change(attribution)
    k = selections.k(kspec)
    neurons = selections.top_toxic(k)
    mask = neurons.to_mask().cpu().numpy()
    claim("top_toxic_neurons_dampened", metric="fraction of top-k toxic neurons whose activation drops",
          direction=">", threshold=0.5, estimator=attribution.fraction_dampened(mask),
          unit_size=attribution.prompts_per_block,
          reference=ref("claim 4 (B): most top toxic neurons dampened", None), params={"k": kspec.label, "neurons": k})
