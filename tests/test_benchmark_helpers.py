"""Known answers for the benchmark helpers (benchmarks/): ratios, result comparison, workloads."""

from __future__ import annotations

import pytest
import torch

from benchmarks.shapes import SHAPES, synthetic_prompts
from benchmarks.suite import differences
from benchmarks.timing import Interleaved


def test_interleaved_ratio_uses_medians_after_warmup() -> None:
    pairing = Interleaved(baseline=lambda: None, warmup_rounds=1)
    pairing.baseline_seconds[:] = [9.0, 2.0, 6.0, 4.0]  # warm-up 9.0 dropped: median 4.0
    pairing.candidate_seconds[:] = [7.0, 1.0, 3.0, 2.0]  # median 2.0
    assert pairing.baseline_median() == pytest.approx(4.0)
    assert pairing.candidate_median() == pytest.approx(2.0)
    assert pairing.ratio() == pytest.approx(2.0)


def test_interleaved_runs_baseline_in_setup_and_times_both() -> None:
    calls: list[str] = []
    pairing = Interleaved(baseline=lambda: calls.append("baseline") or "b")
    run = pairing.candidate(lambda: calls.append("candidate") or "c")
    for _ in range(3):
        pairing.setup()
        run()
    assert calls == ["baseline", "candidate"] * 3
    assert (pairing.last_baseline, pairing.last_candidate) == ("b", "c")
    assert len(pairing.baseline_seconds) == len(pairing.candidate_seconds) == 3


def test_differences_reports_verdict_number_and_missing_claims() -> None:
    a = {"t::x": {"verdict": "pass", "estimate": 0.5}, "t::y": {"verdict": "fail", "estimate": 0.1}}
    same = {"t::x": {"verdict": "pass", "estimate": 0.5 * (1 + 1e-12)}, "t::y": {"verdict": "fail", "estimate": 0.1}}
    assert differences(a, same) == []
    moved = {"t::x": {"verdict": "inconclusive", "estimate": 0.6}, "t::z": {"verdict": "pass", "estimate": 0.0}}
    assert differences(a, moved) == [
        "only in first: t::y",
        "only in second: t::z",
        "t::x: verdict 'pass' != 'inconclusive'",
        "t::x: estimate 0.5 != 0.6",
    ]
    nan = {"t::x": {"verdict": "pass", "estimate": float("nan")}}
    assert differences(nan, nan) == []


def test_synthetic_prompts_are_deterministic_and_sized() -> None:
    first, again = synthetic_prompts(50, seed=3), synthetic_prompts(50, seed=3)
    assert first == again and first != synthetic_prompts(50, seed=4)
    lengths = [len(p.split()) for p in synthetic_prompts(200, length=(3, 6))]
    assert (min(lengths), max(lengths)) == (3, 6)


def test_gpt2_medium_shape_is_the_papers() -> None:
    shape = SHAPES["gpt2-medium"]
    assert (shape.n_layer, shape.n_embd, shape.d_mlp, shape.n_head, shape.vocab_size, shape.n_positions) == (
        24, 1024, 4096, 16, 50257, 1024)
    assert shape.n_layer * shape.d_mlp == 98_304  # PAPER.md's neuron count


def test_ablation_neurons_scale_the_papers_k() -> None:
    from benchmarks.baseline import ablation_neurons

    class Shape:
        n_layers, d_mlp = 24, 4096

    class Small:
        n_layers, d_mlp = 4, 1024

    big = ablation_neurons(Shape())
    assert len(big) == 100 and big == ablation_neurons(Shape())  # papers' k, seeded
    assert len(ablation_neurons(Small())) == round(100 * 4096 / 98_304)
    assert len(set(big.layers)) > 12  # spread over the layers, so most layers get a hook
    assert torch.equal(big.to_mask(), ablation_neurons(Shape(), seed=0).to_mask())
