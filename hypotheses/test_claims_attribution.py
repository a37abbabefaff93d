"""Claims 7, 8, 12 and 13 (PAPER.md): where DPO's probe-projected reduction comes from (A).

Per neuron, ``reduction_i = a_i(base) (w_i(base) · p̂) - a_i(tuned) (w_i(tuned) · p̂)`` with the
mean last-position activation over the 20 greedy steps of every challenge prompt. Intervals
come from a bootstrap over the NeuronStats blocks (clusters of prompts, paired across models).
Statistics that sort neurons by the sign of their own change (group shares, gross ratio) are
cross-fitted: sorted on one half of the blocks, summed on the other, both ways
(`BlockAttribution.folds`), each half resampled within itself (BCa; measured against percentile
intervals in docs/STATISTICS.md). The layer share is a ratio of
per-block sums with Fieller's interval; the fraction of neurons moving toward toxicity counts
neurons shown to move (per-neuron tests, Holm), not signs of noise.
"""

from __future__ import annotations

import pytest
from mt_reference import ref

from mechtests.effects import GROUP_LABELS
from mechtests.evaluator import GROUP_NAMES, BlockAttribution, Evaluator
from mechtests.premises import require_change, require_linear_neuron_writes

# The data roles these claims read: checked at start-up (mechtests.preflight).
pytestmark = pytest.mark.mechtests_data("challenge")

PAPER_SHARES = {"TP_down": 0.318, "TN_down": 0.239, "AP_up": 0.070, "AN_up": 0.373}
LABELS = GROUP_LABELS


@pytest.fixture
def recorded_attribution(evaluator: Evaluator, attribution: BlockAttribution, figure_recorder) -> BlockAttribution:
    """The attribution, also handed to the session's figures (group shares, per layer, scatter)."""
    figure_recorder.attributions[evaluator.pair.name] = attribution
    return attribution


def test_tp_down_is_a_minority(recorded_attribution: BlockAttribution, claim) -> None:
    """The dampened toxic neurons (TP↓) carry < 0.50 of the four groups' total reduction.

    Paper (PAPER.md, group table, A): TP↓ 3,961 neurons, sum 15.11 of 47.48 = 31.8%.
    """
    attr = recorded_attribution
    require_change(attr)
    claim("tp_down_is_a_minority", metric="TP↓ share of the four groups' reduction", direction="<", threshold=0.50,
          samples=attr.folds(), paired=False,
          unit_size=attr.prompts_per_block, statistic=attr.share(("TP_down",)),
          plug_in=attr.plug_in_share(("TP_down",)),
          reference=ref("group table: TP↓ share 31.8% (A)", 0.318), params={"n_blocks": attr.n_blocks})


@pytest.mark.parametrize("group", GROUP_NAMES)
def test_every_group_contributes(group: str, recorded_attribution: BlockAttribution, claim) -> None:
    """Each of TP↓, TN↓, AP↑, AN↑ carries > 0.05 of the four groups' total reduction.

    Paper (PAPER.md, group table, A): shares 31.8% / 23.9% / 7.0% / 37.3%.
    """
    attr = recorded_attribution
    require_change(attr)
    claim("every_group_contributes", metric=f"{LABELS[group]} share of the four groups' reduction", direction=">",
          threshold=0.05, samples=attr.folds(), paired=False,
          unit_size=attr.prompts_per_block, statistic=attr.share((group,)),
          plug_in=attr.plug_in_share((group,)),
          reference=ref(f"group table: {LABELS[group]} share {PAPER_SHARES[group]:.1%} (A)", PAPER_SHARES[group]),
          params={"group": LABELS[group]})


def test_anti_toxic_promotion_matters(recorded_attribution: BlockAttribution, claim) -> None:
    """Promoting anti-toxic neurons (AP↑ + AN↑) carries > 0.25 of the reduction.

    Paper (PAPER.md, group table, A): 7.0% + 37.3% = 44.3%.
    """
    attr = recorded_attribution
    require_change(attr)
    claim("anti_toxic_promotion_matters", metric="AP↑ + AN↑ share", direction=">", threshold=0.25,
          samples=attr.folds(), paired=False,
          unit_size=attr.prompts_per_block, statistic=attr.share(("AP_up", "AN_up")),
          plug_in=attr.plug_in_share(("AP_up", "AN_up")),
          reference=ref("group table: AP↑ + AN↑ = 44.3% (A)", 0.443))


def test_adjustments_are_noisy_fraction(recorded_attribution: BlockAttribution, claim) -> None:
    """A large fraction (> 0.30) of the neurons that moved, moved toward toxicity (reduction < 0;
    a neuron with exactly no change counts neither way).

    Paper (PAPER.md, claim 8 / group table, A): 41.5% of GPT-2 medium's neurons; the four mirror
    groups hold 49,369 neurons (~50%).
    """
    attr = recorded_attribution
    require_change(attr)
    claim("adjustments_are_noisy_fraction", metric="fraction of moved neurons with reduction < 0", direction=">",
          threshold=0.30, estimator=attr.toward_toxicity(), unit_size=attr.prompts_per_block,
          reference=ref("claim 8: 41.5% of neurons increase toxicity (A)", 0.415))


def test_adjustments_are_noisy_gross(recorded_attribution: BlockAttribution, claim) -> None:
    """The gross increase of the toxic projection is > 0.50 of the gross decrease.

    Paper (PAPER.md, group table, A): mirror groups sum to -40.27 against 47.48 (0.85); the net
    reduction (7.22) is ~15% of the gross.
    """
    attr = recorded_attribution
    require_change(attr)
    claim("adjustments_are_noisy_gross", metric="gross increase / gross decrease", direction=">", threshold=0.50,
          samples=attr.folds(), paired=False,
          unit_size=attr.prompts_per_block, statistic=attr.crossfit_gross_ratio,
          plug_in=float(attr.gross_ratio()),
          reference=ref("group table: 40.27 / 47.48 (A)", 0.85))


def test_reduction_in_later_layers(recorded_attribution: BlockAttribution, claim) -> None:
    """The upper half of the layers carries > 0.50 of the net reduction.

    Paper (PAPER.md, "Per-neuron attribution", A): "Reductions concentrate in later layers";
    the largest single drops are L19/770, L19/1438, L12/882 of 24 layers.
    """
    attr = recorded_attribution
    require_change(attr)
    claim("reduction_in_later_layers", metric="upper-half-of-layers share of the net reduction", direction=">",
          threshold=0.50, samples=attr.layer_share_samples(), ratio=True, unit_size=attr.prompts_per_block,
          reference=ref("Per-neuron attribution: reductions concentrate in later layers (A)", None),
          params={"layers": attr.n_layers})


def test_attribution_is_complete(evaluator: Evaluator, probe, claim) -> None:
    """Embeddings + attention outputs + MLP neurons + biases sum to the change of the final
    residual stream's probe projection: |residual| / |total change| < 1e-4.

    Paper (PAPER.md, claim 12): an identity of the residual stream, a built-in sanity check of
    the attribution (A's per-neuron decomposition is one term of it).
    """
    from mechtests.attribution import completeness
    from mechtests.stats import Estimate

    require_linear_neuron_writes(evaluator.pair)
    texts = evaluator.prompts.head(min(len(evaluator.prompts), 64))
    def compute() -> dict[str, float]:
        result = completeness(evaluator.pair, probe, texts)
        return {"relative_residual": float(result.relative_residual), "total_change": float(result.total_change)}

    result = evaluator.cached("completeness", {"texts": texts.sha256}, compute)
    claim("attribution_is_complete", metric="|residual| / |total change of probe projection|", direction="<",
          threshold=1e-4, estimate=Estimate.exact(abs(result["relative_residual"])),
          reference=ref("claim 12: completeness is an identity", 0.0),
          params={"total_change": round(result["total_change"], 6), "n_texts": len(texts)})
