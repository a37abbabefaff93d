"""The papers' figures for the reference suite: what is drawn, with which title, caption and values.

The library draws charts (`mechtests.figures`); this module says which of them make the papers'
figures and names the reference claims that feed them. ``hypotheses/conftest.py`` collects the
points through the plugin's ``pytest_mechtests_claim`` hook and hands them to the report.

Example:
    >>> svg = recovery_figure([{"family": "patch TP↓", "k": 40, "estimate": 0.4, "ci_low": 0.2, "ci_high": 0.6}])
    >>> svg.startswith("<svg")
    True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mechtests.figures import family_lines

# The claims whose recovered fraction goes into the recovery-vs-k figure, by family (k: the
# claim's ``neurons`` parameter).
RECOVERY_FAMILIES = {"zero_ablation_not_enough": "zero top-k toxic",
                     "zero_positive_ablation_not_enough": "zero top-k toxic & positive",
                     "tp_down_patch_is_partial": "patch TP↓", "all_groups_patch_emulates_dpo": "patch all four groups"}
RECOVERY_TITLE = "Recovered fraction vs k"
RECOVERY_RENDER = "mt_paper_figures:recovery_figure"  # resolved where the report is written (xdist: the controller)
RECOVERY_CAPTION = ("Fraction of DPO's toxicity reduction reproduced by zeroing the top-k toxic neurons (all, or "
                    "positively activated only) and by patching groups to the tuned model's activations (k = group "
                    "size); bands: claim CIs. Paper A: ablation 0.07-0.55, TP↓ patch 0.48.")
# The papers' values beside the attribution figures (``figures.attribution_figures(notes=...)``).
FIGURE_NOTES = {
    "Share of the probe-projected reduction per group": "Paper A (GPT-2 medium): TP↓ 31.8%, TN↓ 23.9%, AP↑ 7.0%, AN↑ 37.3%.",
    "Reduction per layer": "Paper A: the reduction concentrates in later layers.",
    "Cumulative share over ranked neurons": "Paper A: the top 1,720 of 98,304 carry ~99% of the net.",
}

# A ratio's interval explodes when the tuned model's reduction is small on some resamples: the
# figure shows this range (1 = the tuned model; 0 = no recovery).
RECOVERY_RANGE = (-1.0, 2.0)


def recovery_figure(points: Sequence[Mapping[str, Any]]) -> str:
    """Recovered fraction vs k per family, with CI bands, from recorded claim points (``family``,
    ``k``, ``estimate``, ``ci_low``, ``ci_high``), clipped to `RECOVERY_RANGE`."""
    return family_lines(points, title="Fraction of DPO's toxicity reduction recovered", xlabel="neurons (k)",
                        ylabel="recovered", clip=RECOVERY_RANGE, hline=1.0, hline_label="tuned model")
