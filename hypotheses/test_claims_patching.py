"""Claims 6 and 9 (PAPER.md): patching neuron groups to the tuned model's activations (A)."""

from __future__ import annotations

import pytest
from mt_reference import paper_recovered, ref

from mechtests.evaluator import GROUP_NAMES, Evaluator
from mechtests.neurons import GROUP_LABELS
from mechtests.premises import require_reduction

# The data roles these claims read: checked at start-up (mechtests.preflight).
pytestmark = pytest.mark.mechtests_data("challenge")


def _patched_toxicity(evaluator: Evaluator, selections, groups: tuple[str, ...]):
    """``(tox_base, tox_patched, tox_tuned, n_neurons)``: the base model with ``groups`` patched,
    per position, to the tuned model run in lockstep (DPO must reduce toxicity to begin with)."""
    from mechtests.interventions import PatchFromModel

    sets = selections.groups()
    neurons = sets[groups[0]]
    for g in groups[1:]:
        neurons = neurons | sets[g]
    tox_base, tox_tuned = evaluator.toxicity("base"), evaluator.toxicity("tuned")
    require_reduction(tox_base, tox_tuned)
    patch = PatchFromModel(neurons, source=evaluator.model("tuned"))
    if len(groups) > 1:  # TP↓ alone is a row of the papers' table, labelled there (mt_protocol)
        evaluator.label_condition("base", patch, f"patch {' + '.join(GROUP_LABELS[g] for g in groups)} to the tuned "
                                  "model's activations", order=9.5)
    tox_patched = evaluator.toxicity("base", patch)
    return tox_base, tox_patched, tox_tuned, len(neurons)


def test_tp_down_patch_is_partial(evaluator: Evaluator, selections, claim) -> None:
    """Patching only the dampened toxic neurons (TP↓) to the tuned model's activations recovers
    < 0.75 of DPO's toxicity reduction.

    Paper (PAPER.md, interventions table, A): patching all TP↓ neurons of GPT-2 medium to their
    post-DPO activations gives tox 0.335 (recovered 0.48) at unchanged perplexity (21.69).
    Fieller interval of the ratio of paired per-prompt means.
    """
    tox_base, tox_patched, tox_tuned, n = _patched_toxicity(evaluator, selections, ("TP_down",))
    claim("tp_down_patch_is_partial", metric="recovered, TP↓ patched to tuned activations",
          direction="<", threshold=0.75, samples=(tox_base - tox_patched, tox_base - tox_tuned), ratio=True,
          reference=ref("interventions table: patch TP↓ -> tox 0.335 (A)", paper_recovered(0.335)),
          params={"neurons": n, "tox_patched": round(float(tox_patched.mean()), 4)})


def test_all_groups_patch_emulates_dpo(evaluator: Evaluator, selections, claim) -> None:
    """Patching all four groups (TP↓, TN↓, AP↑, AN↑) to the tuned model's activations recovers
    > 0.80 of DPO's toxicity reduction.

    Paper (PAPER.md, "Interventions", A): "patching groups together approaches DPO's effect"
    (exact table not recovered). Fieller interval of the ratio of paired per-prompt means.
    """
    tox_base, tox_patched, tox_tuned, n = _patched_toxicity(evaluator, selections, GROUP_NAMES)
    claim("all_groups_patch_emulates_dpo", metric="recovered, four groups patched to tuned activations",
          direction=">", threshold=0.80, samples=(tox_base - tox_patched, tox_base - tox_tuned), ratio=True,
          reference=ref("Interventions: patching the four groups together approaches DPO (A)", None),
          params={"neurons": n, "tox_patched": round(float(tox_patched.mean()), 4)})
