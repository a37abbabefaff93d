"""Count the aten operators each generation path dispatches per decoding step (machine-independent).

Wall-clock ratios on a busy 2-core machine wobble; the number of operators the engine issues per
generated token does not, and on a GPU, where each operator is a kernel launch of a few
microseconds, it bounds tokens/s at generation batch sizes. The model is a 24-layer, narrow
GPT-2 (the papers' depth; operator counts do not depend on width), so the numbers hold for the
GPT-2-medium shape.

    python -m benchmarks.op_counts              # prints JSON: ops per step, per path, and the diff

The engine runs on its default backend (a plain Hugging Face twin with routed hooks) and, for
comparison, on ``backend="bridge"`` (every step through ``TransformerBridge``).
"""

from __future__ import annotations

import collections
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch


def count_ops(fn: Any, steps: int) -> collections.Counter[str]:
    """Top-level aten ops of one call of `fn`, divided by `steps` later by the caller."""
    from torch.profiler import ProfilerActivity, profile

    fn()  # warm-up: lazy initialisation is not per-step work
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    names = [e.name for e in prof.events()
             if e.name.startswith("aten::") and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))]
    return collections.Counter(names)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.baseline import ablation_neurons, hf_generate, load_plain_hf
    from benchmarks.shapes import synthetic_prompts
    from mechtests.data import TextSet
    from mechtests.generation import GenerationConfig, generate
    from mechtests.interventions import ZeroAblation
    from mechtests.models import load_model
    from mechtests.testing import make_tiny_checkpoint

    steps, n_layers = 10, 24
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = make_tiny_checkpoint(Path(tmp) / "deep", n_layers=n_layers, d_model=64, d_mlp=256, n_heads=2, n_ctx=128)
        model = load_model(ckpt)  # backend "auto": the plain twin runs the routed hooks
        bridged = load_model(ckpt, backend="bridge")
        hf = load_plain_hf(ckpt, device="cpu", dtype=torch.float32)
        prompts = TextSet("ops", synthetic_prompts(4))
        cfg = GenerationConfig(batch_size=4, max_new_tokens=steps)
        ablation = ZeroAblation(ablation_neurons(model))
        paths = {
            "hf_generate": lambda: hf_generate(hf, model.tokenizer, list(prompts.texts), max_new_tokens=steps,
                                               max_prompt_tokens=32, batch_size=4),
            "engine": lambda: generate(model, prompts, config=cfg),
            "engine_zero_ablation": lambda: generate(model, prompts, config=cfg, intervention=ablation),
            "engine_collect_stats": lambda: generate(model, prompts, config=cfg, collect_stats=True),
            "engine_bridge_backend": lambda: generate(bridged, prompts, config=cfg),
            "engine_bridge_backend_zero_ablation": lambda: generate(bridged, prompts, config=cfg, intervention=ablation),
        }
        counts = {name: count_ops(fn, steps) for name, fn in paths.items()}
    per_step = {name: sum(c.values()) / steps for name, c in counts.items()}
    base = counts["hf_generate"]
    diff = {op: round((counts["engine"][op] - base[op]) / steps / n_layers, 2)
            for op in set(counts["engine"]) | set(base) if abs(counts["engine"][op] - base[op]) >= steps}
    result = {
        "layers": n_layers, "steps": steps, "ops_per_step": per_step,
        "relative_to_hf_generate": {k: v / per_step["hf_generate"] for k, v in per_step.items()},
        "engine_minus_hf_per_layer_per_step": dict(sorted(diff.items(), key=lambda kv: -abs(kv[1]))),
    }
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
