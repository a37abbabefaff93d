"""Every performance measurement of issue 6 on one device, in one process, within a time budget.

Made for a short lease of a GPU (`benchmarks/gpu_run.sh` calls it), usable on a CPU too. For
each dtype, on the GPT-2-medium-shaped random-init pair (`benchmarks/shapes.py`):

1. speed ratios, interleaved in one run: (a) engine generation with a zero-ablation active vs
   plain Hugging Face `generate` (a model object of its own); (b) `collect_stats=True` vs
   plain engine generation;
2. the papers' protocol on a subset, extrapolated (`benchmarks/protocol.py`);
3. memory: peak `torch.cuda.max_memory_allocated` while collecting statistics for N = 64 and
   N = 1,199 prompts x 20 tokens (on a CPU: use `benchmarks/memory_probe.py`, a process per N);
4. `table` (issue 13): the papers' whole interventions table at the papers' sizes (1,199 prompts
   x 20 tokens, 2,000 F1 sentences, 281 windows of 1,024 tokens; synthetic text), the 13
   conditions computed together as `hypotheses/protocol_table.py` does (`Evaluator.prefetch`,
   `--mt-batch-size auto`), wall seconds per metric and peak CUDA memory; goal <= 60 s in bfloat16.

Steps run in that order per dtype and are skipped (and listed as skipped) once the budget is
spent, so a result file is always written. One JSON file per dtype goes to `--out`.

    python -m benchmarks.device_bench --device cuda --dtypes float32,bfloat16 --out "$OUT" --budget 330
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any


class Budget:
    """Wall-clock budget shared by all steps."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def speed(pair: Any, base_dir: Path, *, device: str, dtype: str, n_prompts: int, batch: int, rounds: int,
          tokens: int = 20) -> dict[str, Any]:
    """Benchmarks (a) and (b): medians of interleaved rounds after one warm-up round."""
    import torch

    from benchmarks.baseline import ablation_neurons, hf_generate, load_plain_hf
    from benchmarks.shapes import synthetic_prompts
    from benchmarks.timing import Interleaved
    from mechtests.data import TextSet
    from mechtests.generation import GenerationConfig, generate
    from mechtests.interventions import ZeroAblation

    model = pair.base
    prompts = TextSet("speed", synthetic_prompts(n_prompts))
    cfg = GenerationConfig(max_new_tokens=tokens, max_prompt_tokens=32, batch_size=batch)
    hf = load_plain_hf(base_dir, device=device, dtype=getattr(torch, dtype))
    ablation = ZeroAblation(ablation_neurons(model))
    texts = list(prompts.texts)

    def run_pairing(baseline: Callable[[], Any], candidate: Callable[[], Any]) -> Interleaved:
        pairing = Interleaved(baseline, warmup_rounds=1)
        cand = pairing.candidate(candidate)
        for _ in range(rounds + 1):
            pairing.setup()
            cand()
        return pairing

    a = run_pairing(lambda hf=hf: hf_generate(hf, model.tokenizer, texts, max_new_tokens=tokens, max_prompt_tokens=32,
                                              batch_size=batch),
                    lambda: generate(model, prompts, config=cfg, intervention=ablation))
    plain = generate(model, prompts, config=cfg)
    agreement = float((plain.new_tokens == a.last_baseline[1]).float().mean())
    del hf
    gc.collect()
    b = run_pairing(lambda: generate(model, prompts, config=cfg),
                    lambda: generate(model, prompts, config=cfg, collect_stats=True))
    n_tok = n_prompts * tokens
    return {
        "prompts": n_prompts, "batch": batch, "new_tokens": tokens, "rounds": rounds,
        "a_engine_with_ablation_tokens_per_s": n_tok / a.candidate_median(),
        "a_hf_generate_tokens_per_s": n_tok / a.baseline_median(),
        "a_ratio_vs_hf_generate": a.ratio(), "a_target": ">= 0.8",
        "a_token_agreement_without_intervention": agreement,
        "b_plain_tokens_per_s": n_tok / b.baseline_median(),
        "b_stats_tokens_per_s": n_tok / b.candidate_median(),
        "b_stats_overhead": b.candidate_median() / b.baseline_median() - 1.0, "b_target": "<= 0.30",
        **a.info("a"), **b.info("b"),
    }


def memory(pair: Any, *, device: str, ns: tuple[int, ...], batch: int, tokens: int = 20) -> dict[str, Any]:
    """Peak device memory of statistics collection per N (CUDA allocator high-water mark)."""
    import torch

    from benchmarks.shapes import synthetic_prompts
    from mechtests.data import TextSet
    from mechtests.generation import GenerationConfig, generate

    if not device.startswith("cuda"):
        return {"skipped": "CPU: run benchmarks/memory_probe.py (a fresh process per N)"}
    model = pair.base
    cfg = GenerationConfig(max_new_tokens=tokens, max_prompt_tokens=32, batch_size=batch)
    rows = []
    for n in ns:
        prompts = TextSet(f"mem{n}", synthetic_prompts(n))
        gc.collect()
        torch.cuda.empty_cache()
        _sync(device)
        resident = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        result = generate(model, prompts, config=cfg, collect_stats=True)
        _sync(device)
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated()
        rows.append({"n": n, "seconds": seconds, "tokens_per_s": n * tokens / seconds,
                     "resident_before_mib": resident / 2**20, "peak_allocated_mib": peak / 2**20,
                     "peak_above_resident_mib": (peak - resident) / 2**20,
                     "stats_shape": list(result.stats.activation_sum.shape)})
    first, last = rows[0]["peak_allocated_mib"], rows[-1]["peak_allocated_mib"]
    return {"rows": rows, "batch": batch, "new_tokens": tokens,
            "peak_ratio_last_vs_first": last / first, "target": "within 10%"}


def protocol(pair: Any, *, device: str, dtype: str, n_prompts: int, n_f1: int, windows: int,
             batch: int) -> dict[str, Any]:
    from benchmarks.protocol import Sizes, run_on_pair

    sizes = Sizes(n_prompts=n_prompts, n_f1=n_f1, n_perplexity_windows=windows, batch_size=batch)
    return run_on_pair(pair, sizes, device=device, dtype=dtype)


def table(pair: Any, *, device: str, n_prompts: int = 1199, n_f1: int = 2000, windows: int = 281) -> dict[str, Any]:
    """The whole table at the papers' sizes: every condition together, per metric (see module doc)."""
    from types import SimpleNamespace

    import torch

    from benchmarks.protocol import _together
    from benchmarks.shapes import synthetic_prompts
    from mechtests.config import run_config
    from mechtests.data import TextSet
    from mechtests.probes import Probe

    window = min(pair.base.n_ctx, 1024)
    text = " ".join(synthetic_prompts(windows * window // 8 + 100, seed=2))
    data = SimpleNamespace(challenge=TextSet("synthetic-challenge", synthetic_prompts(n_prompts, seed=0)),
                           probe_data=None, perplexity_text=text,
                           f1_sentences=TextSet("synthetic-f1", synthetic_prompts(n_f1, seed=1, length=(70, 90))))
    probe = Probe(torch.randn(pair.base.d_model, generator=torch.Generator().manual_seed(0)), 0.0)
    scorer = None
    try:
        from mechtests.scoring import make_scorer

        scorer = make_scorer("offline")
    except Exception:  # no scorer wheel on the host: generation, perplexity and F1 still timed
        pass
    config = run_config("full", device=device, n_prompts=n_prompts, n_f1=n_f1, n_perplexity_windows=windows)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = _together(pair, data, probe, scorer, config, (), device=device,
                    full_rows={"toxicity": n_prompts, "f1": n_f1, "perplexity": windows},
                    subset_rows={"toxicity": n_prompts, "f1": n_f1, "perplexity": windows})
    _sync(device)
    out["wall_s"] = time.perf_counter() - start
    out["goal"] = "<= 60 s in bfloat16 on one H100/H200"
    out["sizes"] = {"prompts": n_prompts, "f1": n_f1, "windows": windows, "window": window}
    if device.startswith("cuda"):
        out["peak_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--shape", default="gpt2-medium")
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget", type=float, default=330.0, help="seconds for everything after start-up")
    parser.add_argument("--speed-prompts", type=int, default=128)
    parser.add_argument("--speed-batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-ns", default="64,1199")
    parser.add_argument("--memory-batch", type=int, default=64)
    parser.add_argument("--protocol-prompts", type=int, default=128)
    parser.add_argument("--protocol-f1", type=int, default=128)
    parser.add_argument("--protocol-windows", type=int, default=8)
    parser.add_argument("--protocol-batch", type=int, default=64)
    parser.add_argument("--table-prompts", type=int, default=1199, help="step table: prompts (papers: 1,199)")
    parser.add_argument("--table-f1", type=int, default=2000, help="step table: F1 sentences (papers: 2,000)")
    parser.add_argument("--table-windows", type=int, default=281, help="step table: perplexity windows (papers: 281)")
    parser.add_argument("--steps", default="table,speed,protocol,memory")
    args = parser.parse_args(argv)
    budget = Budget(args.budget)
    import torch

    from benchmarks.protocol import _environment
    from benchmarks.shapes import DEFAULT_ROOT, SHAPES, build_pair
    from mechtests.models import load_pair

    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    base_dir, tuned_dir = build_pair(SHAPES[args.shape], args.root or DEFAULT_ROOT)
    build_s = time.perf_counter() - t0
    steps = [s for s in args.steps.split(",") if s]
    dtypes = [d for d in args.dtypes.split(",") if d]
    # Rough share of the budget each step may start with; later steps are skipped, not cut.
    min_left = {"table": 60.0, "speed": 20.0, "protocol": 40.0, "memory": 15.0}
    for i, dtype in enumerate(dtypes):
        doc: dict[str, Any] = {"schema": "mechtests-device-bench/1", "environment": _environment(args.device),
                               "shape": args.shape, "dtype": dtype, "build_checkpoints_s": build_s,
                               "skipped": [], "errors": {}}
        path = args.out / f"device-bench-{args.device.replace(':', '')}-{dtype}.json"
        t_load = time.perf_counter()
        pair = load_pair(base_dir, tuned_dir, name="bench", device=args.device, dtype=getattr(torch, dtype))
        doc["load_pair_s"] = time.perf_counter() - t_load
        for step in steps:
            # Leave later dtypes a fair share: this dtype may use its share of what is left.
            share = budget.left() / (len(dtypes) - i)
            if share < min_left.get(step, 30.0):
                doc["skipped"].append({"step": step, "seconds_left": budget.left()})
                continue
            started = time.perf_counter()
            try:
                if step == "speed":
                    doc["speed"] = speed(pair, base_dir, device=args.device, dtype=dtype, n_prompts=args.speed_prompts,
                                         batch=args.speed_batch, rounds=args.rounds)
                elif step == "memory":
                    doc["memory"] = memory(pair, device=args.device, batch=args.memory_batch,
                                           ns=tuple(int(n) for n in args.memory_ns.split(",")))
                elif step == "table":
                    doc["table"] = table(pair, device=args.device, n_prompts=args.table_prompts, n_f1=args.table_f1,
                                         windows=args.table_windows)
                elif step == "protocol":
                    doc["protocol"] = protocol(pair, device=args.device, dtype=dtype, n_prompts=args.protocol_prompts,
                                               n_f1=args.protocol_f1, windows=args.protocol_windows,
                                               batch=args.protocol_batch)
            except Exception as exc:
                doc["errors"][step] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-2000:]}"
            doc[f"{step}_s"] = time.perf_counter() - started
            path.write_text(json.dumps(doc, indent=2) + "\n")  # partial results survive a kill
            sys.stderr.write(f"[device_bench] {dtype} {step} done in {doc[f'{step}_s']:.1f}s, "
                             f"{budget.left():.0f}s left\n")
        path.write_text(json.dumps(doc, indent=2) + "\n")
        del pair
        gc.collect()
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
