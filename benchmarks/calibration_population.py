"""Build the calibration harness's populations from the default pair (run once, ~5 min on a CPU).

Per-unit results of the embedded default pair on every challenge prompt (1,199), every
perplexity window and every F1 item: per-prompt neuron activation sums of the base and tuned
passes (one NeuronStats block per prompt), per-prompt toxicity of base, tuned and two
interventions (zero-ablating the top 1000/98,304 toxic neurons; patching the four groups),
per-window NLLs and per-item F1 of both models. `benchmarks/calibration.py` resamples them.

    MT_CALIBRATION_OUT=benchmarks/results/calibration-population.npz \
        pytest benchmarks/calibration_population.py -p no:cacheprovider -q

It is a pytest module so the pair, probe, scorer and data are exactly the plugin's fixtures.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from mechtests.config import run_config

OUT_ENV = "MT_CALIBRATION_OUT"


@pytest.fixture(scope="session")
def mt_config():
    """The papers' full sizes, with one statistics block per prompt (per-prompt sums)."""
    return run_config("full", n_blocks=1_000_000)


@pytest.mark.skipif(OUT_ENV not in os.environ, reason=f"set {OUT_ENV}=FILE.npz to build the population")
def test_dump_population(evaluator) -> None:
    import torch

    from mechtests.evaluator import BlockAttribution
    from mechtests.interventions import PatchFromModel, ZeroAblation
    from mechtests.neurons import classify_neurons, top_k_by_cosine

    attr = BlockAttribution.from_evaluator(evaluator)
    assert attr.n_blocks == len(evaluator.prompts), "one block per prompt"
    n_neurons = attr.cosines.size
    k = max(1, round(1000 / 98_304 * n_neurons))
    ablated = ZeroAblation(top_k_by_cosine(evaluator.cosines(), k))
    groups = classify_neurons(evaluator.cosines(), torch.from_numpy(evaluator.mean_activation("base")),
                              torch.from_numpy(evaluator.mean_activation("tuned")))
    four = groups["TP_down"] | groups["TN_down"] | groups["AP_up"] | groups["AN_up"]
    patched = PatchFromModel(four, source=evaluator.model("tuned"))
    ppl_base, ppl_tuned = evaluator.perplexity("base"), evaluator.perplexity("tuned")
    out = Path(os.environ[OUT_ENV])
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out, base_sum=attr.base_sum, tuned_sum=attr.tuned_sum, base_count=attr.base_count,
        tuned_count=attr.tuned_count, cosines=attr.cosines, base_alignment=attr.base_alignment,
        tuned_alignment=attr.tuned_alignment, n_layers=attr.n_layers,
        tox_base=evaluator.toxicity("base"), tox_tuned=evaluator.toxicity("tuned"),
        tox_ablated=evaluator.toxicity("base", ablated), tox_patched=evaluator.toxicity("base", patched),
        ablated_k=k, ppl_base_nll=ppl_base.nll_sum, ppl_base_tokens=ppl_base.n_tokens,
        ppl_tuned_nll=ppl_tuned.nll_sum, ppl_tuned_tokens=ppl_tuned.n_tokens,
        f1_base=evaluator.f1("base"), f1_tuned=evaluator.f1("tuned"))
