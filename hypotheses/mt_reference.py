"""Reference numbers and parameter grids of the papers (PAPER.md), shared by the claim modules.

Imported by name (``from mt_reference import ...``): pytest puts ``hypotheses/`` on ``sys.path``
when it collects these non-package test modules, and the unique name cannot clash with tests/.
"""

from __future__ import annotations

import dataclasses

# The papers' GPT-2 medium has 24 x 4,096 = 98,304 MLP neurons; k values are scaled to the
# model under test as the same fraction of its neurons (PAPER.md).
PAPER_NEURONS = 98_304
# A = Yang et al. 2024 (ablation is not enough), B = Lee et al. 2024 (DPO and toxicity); GPT-2 medium.
PAPER = "PAPER.md"
# PAPER.md's "Claims to encode", numbered: the README's results table lists the reference claims in
# this order, with "#" (python -m mechtests.results --numbering hypotheses/mt_reference.py:PAPER_CLAIMS).
PAPER_CLAIMS: dict[str, int] = {
    "dpo_reduces_toxicity": 1, "dpo_perplexity_cost": 1, "dpo_f1_cost": 1, "probe_separates_toxic_text": 2,
    "weights_stay_close": 3, "top_toxic_neurons_dampened": 4, "zero_ablation_not_enough": 5,
    "zero_positive_ablation_not_enough": 5, "tp_down_patch_is_partial": 6, "tp_down_is_a_minority": 7,
    "every_group_contributes": 7, "anti_toxic_promotion_matters": 7, "adjustments_are_noisy_fraction": 8,
    "adjustments_are_noisy_gross": 8, "all_groups_patch_emulates_dpo": 9, "unaligning_restores_toxicity": 10,
    "probe_subtraction_detoxifies": 11, "attribution_is_complete": 12, "reduction_in_later_layers": 13,
}
# DPO's toxicity reduction on GPT-2 medium (PAPER.md): 0.453 -> 0.208.
PAPER_TOX_BASE, PAPER_TOX_TUNED = 0.453, 0.208


def paper_recovered(tox_condition: float) -> float:
    """The paper's recovered fraction for a condition whose toxicity was ``tox_condition``."""
    return round((PAPER_TOX_BASE - tox_condition) / (PAPER_TOX_BASE - PAPER_TOX_TUNED), 3)


@dataclasses.dataclass(frozen=True)
class KSpec:
    """How many neurons: a fraction of the paper's 98,304 (``paper_k``), or an absolute count."""

    label: str
    paper_k: int | None = None
    absolute: int | None = None

    def resolve(self, n_neurons: int) -> int:
        """The k for a model with ``n_neurons`` MLP neurons (at least 1)."""
        if self.absolute is not None:
            return self.absolute
        assert self.paper_k is not None
        return max(1, round(self.paper_k / PAPER_NEURONS * n_neurons))


def frac(paper_k: int) -> KSpec:
    """k as the fraction ``paper_k / 98,304`` of the model's neurons."""
    return KSpec(f"{paper_k}of{PAPER_NEURONS}", paper_k=paper_k)


def absolute(k: int) -> KSpec:
    """An absolute number of neurons."""
    return KSpec(f"abs{k}", absolute=k)


def ref(figure: str, value: float | None) -> object:
    """The report's ``reference``: where the claim comes from in the papers, and the paper's value.

    Example:
        >>> ref("A, Table 2: TP↓ share 31.8%", 0.318)  # doctest: +SKIP
    """
    from mechtests.claims import Reference

    return Reference(f"{PAPER}: {figure}", value)


# k grids (PAPER.md): A zeroes the top 100 / 200 / 1,000 / 2,000 toxic value vectors of 98,304.
ABLATION_KS: tuple[KSpec, ...] = (frac(100), frac(200), frac(1000), frac(2000))
# Paper toxicity for each ablation (PAPER.md interventions table); None where not reported.
ZERO_TOX = {100: 0.403, 200: 0.405, 1000: 0.436}
ZERO_POSITIVE_TOX = {100: 0.384, 200: 0.366, 1000: 0.320, 2000: 0.319}
