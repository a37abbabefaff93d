"""Claims 10 and 11 (PAPER.md): steering with the toxic directions (B)."""

from __future__ import annotations

import pytest
from mt_reference import absolute, paper_recovered, ref

from mechtests.evaluator import Evaluator, relative_reduction
from mechtests.premises import require_reduction, require_toxic_base

UNALIGN_TOX = {2: 0.487, 5: 0.555, 10: 0.458}
TOP_KEYS = absolute(7)  # B scales the key vectors of the top-7 toxic neurons


@pytest.mark.mechtests_data("challenge")
@pytest.mark.parametrize("scale", [2.0, 5.0, 10.0], ids=lambda s: f"x{s:g}")
def test_unaligning_restores_toxicity(scale: float, evaluator: Evaluator, selections, claim) -> None:
    """Scaling the key vectors (W_in columns) of the top-7 toxic neurons in the *tuned* model
    restores > 0.80 of the toxicity DPO removed.

    Paper (PAPER.md, interventions table, B "un-aligning"): DPO model with keys x2 / x5 / x10 gives
    tox 0.487 / 0.555 / 0.458 against 0.453 (GPT-2) and 0.208 (DPO): restored 1.14 / 1.42 / 1.02.
    Fieller interval of the ratio of paired per-prompt means.
    """
    from mechtests.interventions import ScaleKeys

    k = selections.k(TOP_KEYS)
    neurons = selections.top_toxic(k)
    tox_base, tox_tuned = evaluator.toxicity("base"), evaluator.toxicity("tuned")
    require_reduction(tox_base, tox_tuned)
    tox_scaled = evaluator.toxicity("tuned", ScaleKeys(neurons, scale))
    claim("unaligning_restores_toxicity", metric="(tox_scaled - tox_tuned) / (tox_base - tox_tuned)", direction=">",
          threshold=0.80, samples=(tox_scaled - tox_tuned, tox_base - tox_tuned), ratio=True,
          reference=ref(f"interventions table: DPO, top-7 keys x{scale:g} -> tox {UNALIGN_TOX[int(scale)]} (B)",
                        round(1.0 - paper_recovered(UNALIGN_TOX[int(scale)]), 3)),
          params={"scale": scale, "neurons": k, "tox_scaled": round(float(tox_scaled.mean()), 4)})


# B's probe subtraction (alpha 50 on GPT-2 medium) raised perplexity 21.70 -> 23.56.
PAPER_STEERING_PPL_COST = round(23.56 / 21.70 - 1.0, 4)  # 0.0857
# Steering strengths tried, as multiples of the hooked MLP output's mean norm (doubling).
ALPHA_GRID = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


def last_mlp_out_norm(evaluator: Evaluator) -> float:
    """Mean norm of the base model's last MLP output (mean-pooled over up to 64 prompts).

    A fixed alpha (B's 50) does not transfer across models whose residual norms differ, so
    steering strengths are stated relative to the norm of what the hooked MLP writes.
    """
    from mechtests.probes import pooled_residual

    texts = evaluator.prompts.head(min(len(evaluator.prompts), 64))

    def compute() -> float:
        base = evaluator.model("base")
        pooled = pooled_residual(base, texts, hook_name=base.mlp_out_hook(base.n_layers - 1),
                                 max_tokens=int(getattr(evaluator.config, "max_prompt_tokens", 32) or 32))
        return float(pooled.norm(dim=-1).mean())

    return float(evaluator.cached("last_mlp_out_norm", {"texts": texts.sha256}, compute))


def subtract_at(evaluator: Evaluator, direction, alpha: float):
    """Subtract ``alpha`` x unit ``direction`` from the base model's last MLP output."""
    from mechtests.interventions import SubtractDirection

    base = evaluator.model("base")
    return SubtractDirection(base.mlp_out_hook(base.n_layers - 1), direction, alpha)


def ppl_increase(evaluator: Evaluator, intervention) -> float:
    """Relative perplexity increase of the base model under ``intervention``."""
    return evaluator.perplexity("base", intervention).value / evaluator.perplexity("base").value - 1.0


def alpha_within_ppl_cost(evaluator: Evaluator, direction, budget: float) -> tuple[float, float, float]:
    """The strongest steering on ``ALPHA_GRID`` whose perplexity cost stays within ``budget``.

    B chose alpha 50 at a +8.6% perplexity cost; matching the *cost* rather than the number
    keeps the comparison fair on a model of another size: weaker steering would understate
    the claim, stronger steering "detoxifies" by breaking the model (then any direction does).
    Doubles alpha until the cost exceeds the budget (a perplexity pass per step). Returns
    ``(alpha, alpha / norm, cost)``; the grid's first step when even that exceeds the budget.
    """
    norm = last_mlp_out_norm(evaluator)

    def steered(relative: float):
        intervention = subtract_at(evaluator, direction, relative * norm)
        evaluator.label_condition("base", intervention, f"subtract the probe direction from the last MLP output "
                                  f"(alpha {relative:g} x its norm)", order=10.4)
        return intervention

    chosen = (ALPHA_GRID[0] * norm, ALPHA_GRID[0], ppl_increase(evaluator, steered(ALPHA_GRID[0])))
    for relative in ALPHA_GRID[1:]:
        cost = ppl_increase(evaluator, steered(relative))
        if cost > budget:
            break
        chosen = (relative * norm, relative, cost)
    return chosen


@pytest.mark.mechtests_data("challenge", "perplexity")
@pytest.mark.parametrize("ppl_budget", [PAPER_STEERING_PPL_COST], ids=lambda b: f"ppl_cost_{b:.1%}".replace("%", "pct"))
def test_probe_subtraction_detoxifies(ppl_budget: float, evaluator: Evaluator, probe, claim) -> None:
    """Subtracting alpha x the probe direction from the last MLP's output of the *base* model
    cuts toxicity: 1 - tox_steered / tox_base > 0.30, at the paper's perplexity cost.

    Paper (PAPER.md, interventions table, B): alpha 50 on GPT-2 medium gives tox 0.453 -> 0.245
    (a 46% reduction) at PPL 21.70 -> 23.56 (+8.6%). Here alpha is the strongest of 1, 2, 4, ...
    x the last MLP output's norm whose perplexity cost is within that +8.6%. Control, in the
    report's params: a random direction at the same alpha (steering that detoxifies only as much
    as noise does is not evidence for the probe). Paired bootstrap over prompts.
    """
    import torch
    from mt_protocol import PROBE_SUBTRACTION_PAPER

    tox_base = evaluator.toxicity("base")
    require_toxic_base(tox_base)
    alpha, relative, cost = alpha_within_ppl_cost(evaluator, probe.direction, ppl_budget)
    steering = subtract_at(evaluator, probe.direction, alpha)
    evaluator.label_condition("base", steering, f"subtract the probe direction from the last MLP output "
                              f"(alpha {relative:g} x its norm; paper: alpha 50)", paper=PROBE_SUBTRACTION_PAPER,
                              order=10.5)
    tox_steered = evaluator.toxicity("base", steering)
    seeded = torch.Generator().manual_seed(int(getattr(evaluator.config, "seed", 0)))
    random_direction = torch.randn(probe.direction.numel(), generator=seeded, dtype=torch.float64).float()
    control = subtract_at(evaluator, random_direction, alpha)
    evaluator.label_condition("base", control, f"subtract a random direction (control; alpha {relative:g} x norm)",
                              order=10.6)
    tox_random = evaluator.toxicity("base", control)
    claim("probe_subtraction_detoxifies", metric="1 - tox_steered / tox_base", direction=">", threshold=0.30,
          samples=(tox_base, tox_steered), statistic=relative_reduction,
          reference=ref("interventions table: subtract probe, alpha 50 -> tox 0.245, PPL +8.6% (B)", 0.459),
          params={"alpha": round(alpha, 4), "alpha_relative_to_norm": relative, "ppl_increase": round(cost, 4),
                  "tox_steered": round(float(tox_steered.mean()), 4),
                  "tox_random_direction_same_alpha": round(float(tox_random.mean()), 4)})
