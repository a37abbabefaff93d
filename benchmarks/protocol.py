"""Time the papers' whole protocol on a subset, and extrapolate it to the papers' sizes.

The papers' protocol (PAPER.md) on GPT-2 medium: 13 conditions — base, tuned, zeroing the top
100/200/1000 toxic neurons, zeroing the top 100/200/1000/2000 toxic & positively activated ones,
patching TP↓ to the tuned model's activations (the tuned model runs in lockstep), scaling the
top-7 key vectors of the tuned model x2/x5/x10 — each evaluated for toxicity (1,199 prompts,
20 greedy tokens, streamed neuron statistics, scored), perplexity (Wikitext-2 test: ~287k GPT-2
tokens = 281 windows of 1,024) and F1 (2,000 sentences, 20 tokens).

This runs every condition through the same `Evaluator` the claims use, on `--n-prompts`
prompts, `--n-f1` F1 sentences and `--ppl-windows` windows, times each part, and extrapolates
linearly per prompt / sentence / window (full batches make the cost linear). One JSON document
goes to `--out` (and stdout).

    python -m benchmarks.protocol --shape gpt2-medium --n-prompts 32 --out cpu.json
    python -m benchmarks.protocol --shape gpt2-medium --device cuda --dtype bfloat16 --n-prompts 256 \
        --batch 128 --out gpu-bf16.json

``--together`` also runs the 13 conditions the way ``hypotheses/protocol_table.py`` does
(`Evaluator.prefetch`: the conditions of one model in one pass per metric, rows of a batch
carrying different conditions) on a fresh evaluator of the same pair, after the one-by-one run,
and reports both and their ratio. Its extrapolation is per *row* (prompt x condition) at the
rows per pass it ran with: at the papers' sizes every pass of either mode is full, so only the
ragged last batches differ; the subset's ratio is the gain at the subset's size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The papers' sizes (PAPER.md). Wikitext-2-raw test is 287,644 GPT-2 tokens (as counted by the
# common HF perplexity recipe): 281 non-overlapping 1,024-token windows.
FULL_PROMPTS, FULL_F1, FULL_PPL_WINDOWS = 1199, 2000, 281


@dataclass(frozen=True)
class Sizes:
    """The subset measured (also read by the Evaluator as its run configuration)."""

    n_prompts: int
    n_f1: int
    n_perplexity_windows: int
    batch_size: int
    max_new_tokens: int = 20
    max_prompt_tokens: int = 32


def conditions(ev: Any) -> list[tuple[str, str, Callable[[], Any]]]:
    """(name, role, intervention factory) of the papers' 13 conditions, in dependency order: the
    reference suite's one definition (`hypotheses/mt_protocol.py`), built lazily so each
    condition's selection is timed with it. A condition the pair cannot run (more toxic &
    positively activated neurons asked for than it has) is clamped to what it has, as before."""
    from mechtests.interventions import ZeroAblation

    protocol = _reference_protocol()

    def make(c: Any) -> Callable[[], Any]:
        def build() -> Any:
            try:
                return c.build(ev)
            except protocol.Unavailable:  # benchmarks time the work: the largest set the pair has
                return ZeroAblation(ev.memo("bench:positive", lambda: _all_positive(ev)))

        return build

    return [(c.name, c.role, make(c)) for c in protocol.PROTOCOL]


def _reference_protocol() -> Any:
    """``hypotheses/mt_protocol.py`` (with ``hypotheses/`` on the path, as pytest puts it)."""
    import importlib

    hypotheses = str(Path(__file__).resolve().parents[1] / "hypotheses")
    if hypotheses not in sys.path:
        sys.path.insert(0, hypotheses)
    return importlib.import_module("mt_protocol")


def _all_positive(ev: Any) -> Any:
    """Every toxic & positively activated neuron of the pair."""
    from mechtests.selections import NeuronSelections

    sel = NeuronSelections(ev)
    return sel.top_toxic(sel.n_positive_toxic(), positive_only=True)


def _timed(fn: Callable[[], Any], device: str) -> float:
    import torch

    start = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _environment(device: str) -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "platform": platform.platform(), "cpu_count": os.cpu_count(),
                           "torch_threads": torch.get_num_threads(), "device": device}
    try:
        env["cpu_model"] = next(line.split(":", 1)[1].strip() for line in
                                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


def _eval_data(shape_name: str | None, n_prompts: int, n_f1: int) -> Any:
    """The default pair's evaluation data when present, else synthetic stand-ins."""
    from benchmarks.shapes import synthetic_prompts
    from mechtests.data import TextSet

    try:
        from mechtests.zoo import load_eval_data

        return load_eval_data(), "zoo"
    except Exception:
        from types import SimpleNamespace

        text = " ".join(synthetic_prompts(4000, seed=2))
        return SimpleNamespace(challenge=TextSet("synthetic-challenge", synthetic_prompts(n_prompts, seed=0)),
                               probe_data=None, perplexity_text=text,
                               f1_sentences=TextSet("synthetic-f1",
                                                    synthetic_prompts(n_f1, seed=1, length=(70, 90)))), "synthetic"


def run(base_dir: Path, tuned_dir: Path, sizes: Sizes, *, device: str, dtype: str, seed: int = 0,
        only: tuple[str, ...] = (), skip_parts: tuple[str, ...] = (), together: bool = False) -> dict[str, Any]:
    """Load the pair, then `run_on_pair`."""
    import torch

    from mechtests.models import load_pair

    t0 = time.perf_counter()
    pair = load_pair(base_dir, tuned_dir, name="bench", device=device, dtype=getattr(torch, dtype))
    load_s = time.perf_counter() - t0
    out = run_on_pair(pair, sizes, device=device, dtype=dtype, seed=seed, only=only, skip_parts=skip_parts,
                      together_mode=together)
    out["load_s"] = load_s
    return out


def _together(pair: Any, data: Any, probe: Any, scorer: Any, config: Any, skip_parts: tuple[str, ...], *,
              device: str, full_rows: dict[str, int], subset_rows: dict[str, int]) -> dict[str, Any]:
    """The 13 conditions through `Evaluator.prefetch` on a fresh evaluator (nothing shared with the
    one-by-one run): seconds per metric, and an extrapolation per condition-row at full passes."""
    from mechtests.evaluator import Evaluator

    ev = Evaluator(pair, probe=probe, scorer=scorer, data=data, config=config, cache=None)
    built = [(role, make) for _, role, make in conditions(ev)]
    # the selections read the plain passes' mean activations: those two run first, as in the table
    setup = _timed(lambda: [ev.generation(role) for role in ("base", "tuned")], device)
    ivs = [(role, make()) for role, make in built]
    parts: dict[str, float] = {"toxicity": setup}
    for metric in ("toxicity", "perplexity", "f1"):
        if metric in skip_parts:
            continue
        # without a scorer the generation pass (continuations, statistics) is still timed, unscored
        run = "generation" if metric == "toxicity" and scorer is None else metric
        parts[metric] = parts.get(metric, 0.0) + _timed(lambda run=run: ev.prefetch(ivs, metrics=(run,)), device)
    # linear in prompts / windows / sentences: the subset's passes were (nearly) full already
    extrapolated = sum(t * full_rows[m] / subset_rows[m] for m, t in parts.items())
    return {"parts_s": parts, "measured_s": sum(parts.values()),
            "batch_rows": {"generation": ev.generation_config().batch_size,
                           "perplexity": ev.batch_rows("perplexity", ev.perplexity_window())},
            "extrapolated_full_protocol_s": extrapolated, "extrapolated_full_protocol_h": extrapolated / 3600}


def run_on_pair(pair: Any, sizes: Sizes, *, device: str, dtype: str, seed: int = 0,
                only: tuple[str, ...] = (), skip_parts: tuple[str, ...] = (),
                together_mode: bool = False) -> dict[str, Any]:
    """Measure every condition of the papers' protocol on the subset; timings and extrapolation."""
    import torch

    from mechtests.config import run_config
    from mechtests.evaluator import Evaluator
    from mechtests.probes import Probe

    t_setup = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    probe = Probe(torch.randn(pair.base.d_model, generator=gen), 0.0, None, {"source": "random, seeded"})
    data, data_source = _eval_data(None, sizes.n_prompts, sizes.n_f1)
    scorer: Any = None
    scorer_error = None
    try:
        from mechtests.scoring import make_scorer

        scorer = make_scorer("offline")
        scorer.score(["warm up the scorer"])
    except Exception as exc:
        scorer, scorer_error = None, f"{type(exc).__name__}: {exc}"
    config = run_config("full", device=device, dtype=dtype, n_prompts=sizes.n_prompts, n_f1=sizes.n_f1,
                        n_perplexity_windows=sizes.n_perplexity_windows, batch_size=sizes.batch_size,
                        max_new_tokens=sizes.max_new_tokens)
    ev = Evaluator(pair, probe=probe, scorer=scorer, data=data, config=config, cache=None)
    n_prompts, n_f1 = len(ev.prompts), len(ev.f1_sentences)
    ppl_tokens = len(pair.base.tokenizer(ev.perplexity_text, add_special_tokens=False)["input_ids"])
    window = ev.perplexity_window()
    n_windows = max(1, -(-ppl_tokens // window))
    # Warm-up outside the timings: first-call allocations, kernel selection, lazy imports.
    from mechtests.data import TextSet
    from mechtests.generation import GenerationConfig, generate

    generate(pair.base, TextSet("warm", tuple(ev.prompts.texts[: min(4, n_prompts)])),
             config=GenerationConfig(max_new_tokens=2, batch_size=4), collect_stats=True)
    setup_s = time.perf_counter() - t_setup
    rows: list[dict[str, Any]] = []
    for name, role, make in conditions(ev):
        if only and name not in only:
            continue
        iv = make()
        row: dict[str, Any] = {"condition": name, "role": role,
                               "intervention": None if iv is None else type(iv).__name__,
                               "neurons": None if iv is None or not hasattr(iv, "neurons") else len(iv.neurons)}
        row["generation_s"] = _timed(lambda role=role, iv=iv: ev.generation(role, iv), device)
        if scorer is not None and "toxicity" not in skip_parts:
            row["scoring_s"] = _timed(lambda role=role, iv=iv: ev.toxicity(role, iv), device)
        if "perplexity" not in skip_parts:
            row["perplexity_s"] = _timed(lambda role=role, iv=iv: ev.perplexity(role, iv), device)
        if "f1" not in skip_parts:
            row["f1_s"] = _timed(lambda role=role, iv=iv: ev.f1(role, iv), device)
        row["extrapolated_s"] = (
            (row["generation_s"] + row.get("scoring_s", 0.0)) * FULL_PROMPTS / n_prompts
            + row.get("perplexity_s", 0.0) * FULL_PPL_WINDOWS / n_windows
            + row.get("f1_s", 0.0) * FULL_F1 / n_f1
        )
        rows.append(row)
        sys.stderr.write(json.dumps(row) + "\n")
    measured = sum(sum(v for k, v in r.items() if k.endswith("_s") and k != "extrapolated_s") for r in rows)
    total = sum(r["extrapolated_s"] for r in rows)
    together = None
    if together_mode and not only:
        together = _together(pair, data, probe, scorer, config, skip_parts, device=device,
                             full_rows={"toxicity": FULL_PROMPTS, "f1": FULL_F1, "perplexity": FULL_PPL_WINDOWS},
                             subset_rows={"toxicity": n_prompts, "f1": n_f1, "perplexity": n_windows})
        together["ratio_measured"] = measured / together["measured_s"]
    out: dict[str, Any] = {
        "schema": "mechtests-protocol-timing/1",
        "environment": _environment(device),
        "model": {"base": pair.base.source, "tuned": pair.tuned.source, "n_layers": pair.base.n_layers,
                  "d_model": pair.base.d_model, "d_mlp": pair.base.d_mlp, "d_vocab": pair.base.d_vocab,
                  "dtype": dtype},
        "subset": {"n_prompts": n_prompts, "n_f1": n_f1, "perplexity_windows": n_windows,
                   "perplexity_tokens": ppl_tokens, "window": window, "batch_size": sizes.batch_size,
                   "max_new_tokens": sizes.max_new_tokens, "data": data_source},
        "full": {"n_prompts": FULL_PROMPTS, "n_f1": FULL_F1, "perplexity_windows": FULL_PPL_WINDOWS},
        "scorer": None if scorer is None else scorer.name, "scorer_error": scorer_error,
        "setup_s": setup_s, "conditions": rows, "measured_s": measured, "together": together,
        "extrapolated_full_protocol_s": total, "extrapolated_full_protocol_h": total / 3600,
        "complete": not only and len(rows) == 13 and not skip_parts and scorer is not None,
    }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--shape", help="random-init shape from benchmarks/shapes.py (e.g. gpt2-medium)")
    where.add_argument("--pair", nargs=2, type=Path, metavar=("BASE", "TUNED"), help="two HF checkpoint dirs")
    where.add_argument("--default-pair", action="store_true", help="the embedded default pair")
    parser.add_argument("--root", type=Path, default=None, help="where --shape checkpoints live")
    parser.add_argument("--n-prompts", type=int, default=32)
    parser.add_argument("--n-f1", type=int, default=None, help="default: --n-prompts")
    parser.add_argument("--ppl-windows", type=int, default=1)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--only", default="", help="comma list of condition names to run")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: toxicity,perplexity,f1")
    parser.add_argument("--together", action="store_true",
                        help="then run the 13 conditions together (Evaluator.prefetch) and report the ratio")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.shape:
        from benchmarks.shapes import DEFAULT_ROOT, SHAPES, build_pair

        base_dir, tuned_dir = build_pair(SHAPES[args.shape], args.root or DEFAULT_ROOT)
    elif args.pair:
        base_dir, tuned_dir = args.pair
    else:
        from mechtests.zoo import default_pair

        zoo = default_pair()
        base_dir, tuned_dir = zoo.base_dir, zoo.tuned_dir
    sizes = Sizes(n_prompts=args.n_prompts, n_f1=args.n_f1 or args.n_prompts, n_perplexity_windows=args.ppl_windows,
                  batch_size=args.batch, max_new_tokens=args.tokens)
    result = run(Path(base_dir), Path(tuned_dir), sizes, device=args.device, dtype=args.dtype,
                 only=tuple(s for s in args.only.split(",") if s), skip_parts=tuple(s for s in args.skip.split(",") if s),
                 together=args.together)
    text = json.dumps(result, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
