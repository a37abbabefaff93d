"""Conditions of one model together vs one by one, as ratios measured in one run (issue 13, item 3).

(c) `generation`: five conditions of the papers' protocol on the base model (none, zeroing the
    top 100 and top 1,000 of 98,304 scaled, scaling the top-7 key vectors x2 and x5) generated
    one by one (`generate`, one pass each) against all five in one pass (`generate_many`, rows of
    a batch carrying different conditions), both with the neuron statistics on and the same
    rows-per-pass budget (`--mt-bench-batch`; the engine's default is `auto_batch_rows`).
(d) `perplexity`: the same five over the perplexity windows (`perplexity_windows` per condition
    against `perplexity_windows_many`).

`ratio` = one-by-one seconds / together seconds (> 1: together is faster). Asserted: both did the
same work (identical tokens; NLL equal to float32 rounding); no time is asserted.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from benchmarks.subjects import BenchSettings, Subject
from benchmarks.timing import Interleaved


def _conditions(model: Any) -> list[Any]:
    from mechtests.interventions import ScaleKeys, ZeroAblation
    from mechtests.neurons import NeuronSet, k_for_fraction

    scores = torch.randn(model.n_layers, model.d_mlp, generator=torch.Generator().manual_seed(0))
    n = model.n_layers * model.d_mlp
    top = [NeuronSet.top_k(scores, k_for_fraction(k / 98_304, n)) for k in (100, 1000)]
    keys = NeuronSet.top_k(scores, 7)
    return [None, ZeroAblation(top[0]), ZeroAblation(top[1]), ScaleKeys(keys, 2.0), ScaleKeys(keys, 5.0)]


@pytest.mark.benchmark(group="c-conditions-together")
def test_generation_conditions_together_vs_one_by_one(benchmark: Any, subject: Subject,
                                                      bench_settings: BenchSettings) -> None:
    from mechtests.generation import GenerationConfig, generate, generate_many

    model, prompts = subject.model, subject.prompts
    ivs = _conditions(model)
    cfg = GenerationConfig(max_new_tokens=bench_settings.tokens, max_prompt_tokens=32, batch_size=bench_settings.batch)

    def one_by_one() -> list[Any]:
        return [generate(model, prompts, config=cfg, intervention=iv, collect_stats=True) for iv in ivs]

    pairing = Interleaved(one_by_one, warmup_rounds=1)
    together = benchmark.pedantic(
        pairing.candidate(lambda: generate_many(model, prompts, ivs, config=cfg, collect_stats=True)),
        setup=pairing.setup, rounds=bench_settings.rounds, warmup_rounds=1)
    n_tokens = len(prompts) * bench_settings.tokens * len(ivs)
    benchmark.extra_info.update({
        "subject": subject.name, "device": bench_settings.device, "dtype": bench_settings.dtype,
        "prompts": len(prompts), "conditions": len(ivs), "new_tokens": bench_settings.tokens,
        "rows_per_pass": cfg.batch_size,
        "one_by_one_tokens_per_s": n_tokens / pairing.baseline_median(),
        "together_tokens_per_s": n_tokens / pairing.candidate_median(),
        "ratio": pairing.ratio(), **pairing.info("c"),
    })
    for alone, both in zip(pairing.last_baseline, together, strict=True):
        assert torch.equal(alone.new_tokens, both.new_tokens)


@pytest.mark.benchmark(group="d-perplexity-together")
def test_perplexity_conditions_together_vs_one_by_one(benchmark: Any, subject: Subject,
                                                      bench_settings: BenchSettings) -> None:
    from mechtests.metrics import perplexity_windows, perplexity_windows_many

    model = subject.model
    ivs = _conditions(model)
    window = min(model.n_ctx, bench_settings.window)
    rows = max(2, bench_settings.batch // 4)  # windows are long rows: fewer per pass than prompts
    text = " ".join(subject.prompts.texts * 50)
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"][: bench_settings.windows * window]
    text = model.tokenizer.decode(ids)

    def one_by_one() -> list[Any]:
        return [perplexity_windows(model, text, window=window, intervention=iv, batch_size=rows) for iv in ivs]

    pairing = Interleaved(one_by_one, warmup_rounds=1)
    together = benchmark.pedantic(
        pairing.candidate(lambda: perplexity_windows_many(model, text, ivs, window=window, batch_size=rows)),
        setup=pairing.setup, rounds=bench_settings.rounds, warmup_rounds=1)
    benchmark.extra_info.update({
        "subject": subject.name, "device": bench_settings.device, "dtype": bench_settings.dtype,
        "windows": len(together[0][0]), "window": window, "conditions": len(ivs), "rows_per_pass": rows,
        "ratio": pairing.ratio(), **pairing.info("d"),
    })
    for (nll_a, n_a), (nll_b, n_b) in zip(pairing.last_baseline, together, strict=True):
        np.testing.assert_array_equal(n_a, n_b)
        np.testing.assert_allclose(nll_a, nll_b, rtol=1e-5)
