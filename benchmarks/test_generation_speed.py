"""Generation speed as ratios measured in one run (issue 6, benchmarks (a) and (b)).

(a) `intervention_vs_hf`: the engine's greedy generation with a zero-ablation of the papers'
    top-100-sized neuron set active, against plain Hugging Face `generate` on the same
    checkpoint, prompts, tokenisation and batch size. Target: `ratio_vs_hf_generate` >= 0.8
    (engine tokens/s over HF tokens/s).
(b) `stats_overhead`: the streaming attribution pass (`collect_stats=True`) against the same
    engine generation without statistics hooks. Target: `stats_overhead` <= 0.30.

Nothing here asserts a time; the targets are read off `--benchmark-json` / the terminal table
(`extra_info`) and documented in docs/PERFORMANCE.md. What is asserted is that the compared
runs did the same work (same shapes; without an intervention, the same tokens).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from benchmarks.baseline import ablation_neurons, hf_generate, load_plain_hf
from benchmarks.subjects import BenchSettings, Subject
from benchmarks.timing import Interleaved


def _config(settings: BenchSettings) -> Any:
    from mechtests.generation import GenerationConfig

    return GenerationConfig(max_new_tokens=settings.tokens, max_prompt_tokens=32, batch_size=settings.batch)


def _tokens(settings: BenchSettings, subject: Subject) -> int:
    return len(subject.prompts) * settings.tokens


@pytest.mark.benchmark(group="a-intervention-vs-hf")
def test_intervention_vs_hf_generate(benchmark: Any, subject: Subject, bench_settings: BenchSettings) -> None:
    from mechtests.generation import generate
    from mechtests.interventions import ZeroAblation

    model, prompts, cfg = subject.model, subject.prompts, _config(bench_settings)
    hf = load_plain_hf(subject.hf_dir, device=bench_settings.device, dtype=bench_settings.torch_dtype)
    texts = list(prompts.texts)
    ablation = ZeroAblation(ablation_neurons(model))

    def baseline() -> Any:
        return hf_generate(hf, model.tokenizer, texts, max_new_tokens=cfg.max_new_tokens,
                           max_prompt_tokens=cfg.max_prompt_tokens, batch_size=cfg.batch_size)

    # Same work check, untimed: without an intervention the engine reproduces HF's tokens.
    plain = generate(model, prompts, config=cfg)
    _, hf_tokens = baseline()
    agreement = float((plain.new_tokens == hf_tokens).float().mean())

    pairing = Interleaved(baseline, warmup_rounds=1)
    result = benchmark.pedantic(
        pairing.candidate(lambda: generate(model, prompts, config=cfg, intervention=ablation)),
        setup=pairing.setup, rounds=bench_settings.rounds, warmup_rounds=1,
    )
    n_tokens = _tokens(bench_settings, subject)
    benchmark.extra_info.update({
        "subject": subject.name, "device": bench_settings.device, "dtype": bench_settings.dtype,
        "prompts": len(prompts), "new_tokens": bench_settings.tokens, "batch_size": cfg.batch_size,
        "ablated_neurons": len(ablation.neurons),
        "engine_tokens_per_s": n_tokens / pairing.candidate_median(),
        "hf_tokens_per_s": n_tokens / pairing.baseline_median(),
        "ratio_vs_hf_generate": pairing.ratio(), "target": ">= 0.8",
        "token_agreement_without_intervention": agreement,
        **pairing.info("a"),
    })
    assert result.new_tokens.shape == hf_tokens.shape == (len(prompts), bench_settings.tokens)
    # float32 greedy decoding through the same HF modules is exact; bf16/fp16 may flip near-ties.
    if bench_settings.dtype == "float32":
        assert agreement == pytest.approx(1.0, abs=0.02)


@pytest.mark.benchmark(group="b-stats-overhead")
def test_streaming_stats_overhead(benchmark: Any, subject: Subject, bench_settings: BenchSettings) -> None:
    from mechtests.generation import generate

    model, prompts, cfg = subject.model, subject.prompts, _config(bench_settings)
    pairing = Interleaved(lambda: generate(model, prompts, config=cfg), warmup_rounds=1)
    result = benchmark.pedantic(
        pairing.candidate(lambda: generate(model, prompts, config=cfg, collect_stats=True)),
        setup=pairing.setup, rounds=bench_settings.rounds, warmup_rounds=1,
    )
    overhead = pairing.candidate_median() / pairing.baseline_median() - 1.0
    n_tokens = _tokens(bench_settings, subject)
    benchmark.extra_info.update({
        "subject": subject.name, "device": bench_settings.device, "dtype": bench_settings.dtype,
        "prompts": len(prompts), "new_tokens": bench_settings.tokens, "batch_size": cfg.batch_size,
        "plain_tokens_per_s": n_tokens / pairing.baseline_median(),
        "stats_tokens_per_s": n_tokens / pairing.candidate_median(),
        "stats_overhead": overhead, "target": "<= 0.30",
        **pairing.info("b"),
    })
    # Same work: the statistics pass generates the very same tokens and counts every step.
    assert torch.equal(result.new_tokens, pairing.last_baseline.new_tokens)
    assert result.stats is not None
    assert float(result.stats.count.sum()) == pytest.approx(len(prompts) * bench_settings.tokens, abs=0)
