"""Peak memory of one statistics-collecting generation pass, measured in a fresh process.

`tracemalloc` does not see torch's allocations, so the measure is the process's peak resident
set size (`getrusage(RUSAGE_SELF).ru_maxrss`, a high-water mark) — which is why every N needs a
process of its own — plus `torch.cuda.max_memory_allocated` on a GPU. The process loads the
model, runs one warm-up batch (so lazily allocated buffers exist in both runs), then the timed
pass over N prompts, and prints one JSON line.

    python -m benchmarks.memory_probe --shape gpt2-medium --n 64 --tokens 20
    python -m benchmarks.memory_probe --source path/to/hf_checkpoint --n 1199

`--hoard` is the negative control: it additionally keeps every step's last-position activations
(what a non-streaming implementation would store), so the measurement can be seen to detect
memory that grows with N.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any


def _rss_peak_mib() -> float:
    # Linux reports ru_maxrss in KiB (macOS in bytes; this tool targets Linux CI and GPU hosts).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _rss_now_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def measure(source: Path, *, n: int, tokens: int, batch: int, device: str, dtype: str, hoard: bool,
            seed: int = 0, prompt_words: tuple[int, int] = (8, 40)) -> dict[str, Any]:
    """Load `source`, warm up on one batch, run `n` prompts with statistics; report memory."""
    import torch

    from benchmarks.shapes import synthetic_prompts
    from mechtests.data import TextSet
    from mechtests.generation import GenerationConfig, generate
    from mechtests.models import load_model

    model = load_model(source, device=device, dtype=getattr(torch, dtype))
    rss_loaded = _rss_now_mib()
    prompts = TextSet("memory-probe", synthetic_prompts(n, seed=seed, length=prompt_words))
    cfg = GenerationConfig(max_new_tokens=tokens, max_prompt_tokens=32, batch_size=batch)
    # Warm-up on the batch of longest prompts, so the per-batch working set is at its largest
    # before the high-water mark is read.
    longest = sorted(prompts.texts, key=len)[-batch:]
    generate(model, TextSet("warm-up", tuple(longest)), config=cfg, collect_stats=True)
    peak_warm = _rss_peak_mib()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    kept: list[Any] = []
    hooks = []
    if hoard:
        hooks = [(model.neuron_hook(layer), lambda a: kept.append(a[:, -1, :].detach().clone()))
                 for layer in range(model.n_layers)]
    start = time.perf_counter()
    with model.hooks(hooks):
        result = generate(model, prompts, config=cfg, collect_stats=True)
    seconds = time.perf_counter() - start
    peak = _rss_peak_mib()
    out: dict[str, Any] = {
        "source": str(source), "n": n, "tokens": tokens, "batch": batch, "device": device, "dtype": dtype,
        "prompt_words": list(prompt_words), "hoard": hoard,
        "hoarded_mib": sum(t.numel() * t.element_size() for t in kept) / 2**20,
        "rss_after_load_mib": rss_loaded, "peak_after_warmup_mib": peak_warm, "peak_rss_mib": peak,
        "growth_after_warmup_mib": peak - peak_warm, "seconds": seconds,
        "tokens_per_s": n * tokens / seconds,
        "stats_shape": list(result.stats.activation_sum.shape) if result.stats is not None else None,
    }
    if device.startswith("cuda"):
        out["cuda_peak_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--source", type=Path, help="a Hugging Face checkpoint directory")
    where.add_argument("--shape", help="a random-init shape from benchmarks/shapes.py (built once)")
    parser.add_argument("--root", type=Path, default=None, help="where --shape checkpoints live")
    parser.add_argument("--n", type=int, required=True, help="number of prompts")
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--hoard", action="store_true", help="negative control: keep every activation")
    parser.add_argument("--prompt-words", default="8,40", help="min,max words per synthetic prompt (default 8,40: "
                        "most reach the 32-token cut); shorter prompts make a CPU run of large N affordable")
    args = parser.parse_args(argv)
    source = args.source
    if args.shape is not None:
        from benchmarks.shapes import DEFAULT_ROOT, SHAPES, build_pair

        source, _ = build_pair(SHAPES[args.shape], args.root or DEFAULT_ROOT)
    result = measure(source, n=args.n, tokens=args.tokens, batch=args.batch, device=args.device,
                     dtype=args.dtype, hoard=args.hoard,
                     prompt_words=tuple(int(w) for w in args.prompt_words.split(",")))  # type: ignore[arg-type]
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
