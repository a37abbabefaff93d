"""Prototype of the fix proposed in docs/PERFORMANCE.md: hooks on a weight-sharing plain-HF twin.

Why: `TransformerBridge.boot_transformers` wraps the Hugging Face modules in place; the wrapped
model re-implements LayerNorm in Python (~10 ops instead of 1, twice per block), attention as
matmul/softmax instead of SDPA, and splits GPT-2's fused QKV projection into three linears:
~1.55x the aten ops of plain HF per decoding step. Where per-op launch/Python overhead
dominates (a GPU at generation batch sizes, small models on a CPU) that caps the engine far
below plain `generate`.

The prototype builds a plain HF model on the meta device and `load_state_dict(..., assign=True)`s
the checkpoint's tensors into it (no second copy of the weights), installs the same
interventions as plain `torch` forward hooks on `transformer.h[L].mlp.act` (the neuron
activations `a` = the bridge's `blocks.L.mlp.hook_post`), and runs the engine's own greedy loop
(`mechtests.generation.generate`) on it. It prints the tokens/s ratios against plain HF
`generate` for both paths and checks that both paths produce the same tokens.

    python -m benchmarks.prototype_plain_hooks --shape gpt2-medium --prompts 8 --batch 8
    python -m benchmarks.prototype_plain_hooks --checkpoint DIR --prompts 32 --batch 32 --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch


def plain_twin(hf_dir: Path, *, device: str, dtype: torch.dtype) -> Any:
    """A plain HF model whose parameters are the tensors of one load (meta init + assign)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    source = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=dtype).to(device).eval()
    with torch.device("meta"):
        twin = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(hf_dir), dtype=dtype)
    twin.load_state_dict(source.state_dict(), assign=True)  # the same tensor objects: no copy
    twin.eval()
    return twin


@contextmanager
def zero_neurons(twin: Any, by_layer: dict[int, torch.Tensor]) -> Iterator[None]:
    """ZeroAblation as torch forward hooks on GPT-2's `mlp.act` (always removed)."""
    handles = []
    for layer, idx in by_layer.items():
        idx = idx.to(next(twin.parameters()).device)

        def hook(_module: Any, _inputs: Any, out: torch.Tensor, idx: torch.Tensor = idx) -> torch.Tensor:
            out[..., idx] = 0.0
            return out

        handles.append(twin.transformer.h[layer].mlp.act.register_forward_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def main(argv: list[str] | None = None) -> int:
    from benchmarks.baseline import ablation_neurons, hf_generate, load_plain_hf
    from benchmarks.shapes import DEFAULT_ROOT, SHAPES, build_pair, synthetic_prompts
    from mechtests.data import TextSet
    from mechtests.generation import GenerationConfig, generate
    from mechtests.interventions import ZeroAblation
    from mechtests.models import LoadedModel, load_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--shape")
    where.add_argument("--checkpoint", type=Path)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args(argv)
    hf_dir = args.checkpoint or build_pair(SHAPES[args.shape], DEFAULT_ROOT)[0]
    dtype = getattr(torch, args.dtype)
    bridged = load_model(hf_dir, device=args.device, dtype=dtype)
    hf = load_plain_hf(hf_dir, device=args.device, dtype=dtype)
    twin = plain_twin(hf_dir, device=args.device, dtype=dtype)
    # The engine's loop over the twin: LoadedModel.forward calls the model it was given.
    on_twin = LoadedModel(bridged.bridge, twin, bridged.tokenizer, bridged.source, bridged.fingerprint)
    prompts = TextSet("proto", synthetic_prompts(args.prompts))
    cfg = GenerationConfig(batch_size=args.batch)
    neurons = ablation_neurons(bridged)
    by_layer = neurons.by_layer()

    def twin_run() -> Any:
        with zero_neurons(twin, by_layer):
            return generate(on_twin, prompts, config=cfg)

    runs: dict[str, Callable[[], Any]] = {
        "hf_generate": lambda: hf_generate(hf, bridged.tokenizer, list(prompts.texts), max_new_tokens=20,
                                           max_prompt_tokens=32, batch_size=args.batch),
        "engine_bridge_ablation": lambda: generate(bridged, prompts, config=cfg, intervention=ZeroAblation(neurons)),
        "engine_plain_twin_ablation": twin_run,
    }
    seconds: dict[str, list[float]] = {k: [] for k in runs}
    outputs: dict[str, Any] = {}
    for _ in range(args.rounds + 1):  # interleaved; the first round is a warm-up
        for name, fn in runs.items():
            start = time.perf_counter()
            outputs[name] = fn()
            seconds[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v[1:]) for k, v in seconds.items()}
    result = {
        "checkpoint": str(hf_dir), "device": args.device, "dtype": args.dtype, "prompts": args.prompts,
        "batch": args.batch, "median_s": med,
        "ratio_bridge_vs_hf": med["hf_generate"] / med["engine_bridge_ablation"],
        "ratio_plain_twin_vs_hf": med["hf_generate"] / med["engine_plain_twin_ablation"],
        "same_tokens_bridge_vs_twin": bool(torch.equal(outputs["engine_bridge_ablation"].new_tokens,
                                                       outputs["engine_plain_twin_ablation"].new_tokens)),
        "seconds": seconds,
    }
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
