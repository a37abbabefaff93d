"""Claim 5 (PAPER.md): ablating the top-k toxic neurons is not enough to emulate DPO (A)."""

from __future__ import annotations

import pytest
from mt_reference import ABLATION_KS, ZERO_POSITIVE_TOX, ZERO_TOX, KSpec, paper_recovered, ref

from mechtests.evaluator import Evaluator
from mechtests.premises import require_reduction

# The data roles these claims read: checked at start-up (mechtests.preflight).
pytestmark = pytest.mark.mechtests_data("challenge")


def _run(evaluator: Evaluator, selections, claim, kspec: KSpec, *,
         positive_only: bool, name: str, paper_tox: dict[int, float], family: str) -> None:
    from mechtests.interventions import ZeroAblation

    k = selections.k(kspec)
    neurons = selections.top_toxic(k, positive_only=positive_only)
    tox_base, tox_tuned = evaluator.toxicity("base"), evaluator.toxicity("tuned")
    require_reduction(tox_base, tox_tuned)
    tox_ablated = evaluator.toxicity("base", ZeroAblation(neurons))
    value = paper_tox.get(kspec.paper_k or -1)
    reported = "not reported" if value is None else f"tox {value}"
    reference = ref(f"interventions table (A): {family}, top {kspec.paper_k}/98,304 -> {reported}",
                    None if value is None else paper_recovered(value))
    claim(name, metric="recovered = (tox_base - tox_ablated) / (tox_base - tox_tuned)", direction="<",
          threshold=0.75, samples=(tox_base - tox_ablated, tox_base - tox_tuned), ratio=True,
          reference=reference, params={"k": kspec.label, "neurons": k,
                                       "tox_ablated": round(float(tox_ablated.mean()), 4)})


@pytest.mark.parametrize("kspec", ABLATION_KS, ids=lambda s: s.label)
def test_zero_ablation_not_enough(kspec: KSpec, evaluator: Evaluator, selections, claim) -> None:
    """Zeroing the top-k toxic value vectors recovers < 0.75 of DPO's toxicity reduction.

    Paper (PAPER.md, interventions table, A): zeroing the top 100 / 200 / 1,000 toxic value
    vectors of GPT-2 medium gives tox 0.403 / 0.405 / 0.436 against 0.453 -> 0.208 for DPO, i.e.
    recovered 0.20 / 0.20 / 0.07. Fieller interval of the ratio of paired per-prompt means.
    """
    _run(evaluator, selections, claim, kspec, positive_only=False,
         name="zero_ablation_not_enough", paper_tox=ZERO_TOX, family="zero top-k toxic")


@pytest.mark.parametrize("kspec", ABLATION_KS, ids=lambda s: s.label)
def test_zero_positive_ablation_not_enough(kspec: KSpec, evaluator: Evaluator, selections, claim) -> None:
    """Zeroing the top-k toxic *and positively activated* neurons (cos > 0, mean base activation
    > 0) recovers < 0.75 of DPO's reduction.

    Paper (PAPER.md, interventions table, A): top 100 / 200 / 1,000 / 2,000 of the 5,770 such
    neurons give tox 0.384 / 0.366 / 0.320 / 0.319, i.e. recovered 0.28 / 0.36 / 0.54 / 0.55 (the
    best ablation, at +34% perplexity). Fieller interval of the ratio of paired per-prompt means.
    """
    k = selections.k(kspec)
    available = selections.n_positive_toxic()
    if k > available:
        pytest.skip(f"k={k} exceeds the {available} toxic, positively activated neurons of this model")
    _run(evaluator, selections, claim, kspec, positive_only=True,
         name="zero_positive_ablation_not_enough", paper_tox=ZERO_POSITIVE_TOX, family="zero top-k toxic & positive")
