"""The reference the engine is measured against: plain Hugging Face `generate`.

Same checkpoint, same prompts, same tokenisation (`mechtests.data.left_padded_batch`: last 32
tokens, left padding), same batch size, greedy, exactly `max_new_tokens` new tokens per prompt
(EOS does not stop it, as it does not stop the engine), prompt removed and decoded — but a model
object of its own that no `TransformerBridge` has wrapped and no hook touches.

Example:
    >>> hf = load_plain_hf(ckpt_dir, device="cpu", dtype=torch.float32)   # doctest: +SKIP
    >>> texts, tokens = hf_generate(hf, tokenizer, prompts, max_new_tokens=20,  # doctest: +SKIP
    ...                             max_prompt_tokens=32, batch_size=16)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch


def load_plain_hf(hf_dir: Path, *, device: str, dtype: torch.dtype) -> Any:
    """A fresh, unwrapped `AutoModelForCausalLM` in eval mode that never stops at EOS."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=dtype).to(device).eval()
    # This object is ours alone: clearing EOS makes HF produce exactly max_new_tokens per row,
    # like the engine, instead of stopping (and padding) early.
    model.generation_config.eos_token_id = None
    return model


def hf_generate(model: Any, tokenizer: Any, texts: Sequence[str], *, max_new_tokens: int,
                max_prompt_tokens: int, batch_size: int) -> tuple[tuple[str, ...], torch.Tensor]:
    """Greedy continuations of `texts` with `model.generate`, batched as the engine batches.

    Returns:
        (continuations, new_tokens [N, max_new_tokens] on the CPU).
    """
    from mechtests.data import left_padded_batch

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    texts_out: list[str] = []
    tokens_out: list[torch.Tensor] = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            ids, mask = left_padded_batch(tokenizer, texts[start : start + batch_size],
                                          max_tokens=max_prompt_tokens, device=device)
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=pad)
            new = out[:, ids.shape[1] :].cpu()
            if new.shape[1] != max_new_tokens:
                raise RuntimeError(f"HF generate returned {new.shape[1]} new tokens, expected {max_new_tokens}")
            tokens_out.append(new)
            texts_out.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    return tuple(texts_out), torch.cat(tokens_out)


# The papers zero the top 100 of GPT-2 medium's 98,304 neurons (PAPER.md); other shapes scale it.
PAPERS_K, PAPERS_NEURONS = 100, 24 * 4096


def ablation_neurons(model: Any, *, seed: int = 0) -> Any:
    """A papers'-sized, seeded random `NeuronSet` spread over all layers (every layer hooked)."""
    from mechtests.neurons import NeuronSet

    n_total = model.n_layers * model.d_mlp
    k = max(1, round(PAPERS_K * n_total / PAPERS_NEURONS))
    gen = torch.Generator().manual_seed(seed)
    flat = torch.randperm(n_total, generator=gen)[:k]
    mask = torch.zeros(n_total, dtype=torch.bool)
    mask[flat] = True
    return NeuronSet.from_mask(mask.view(model.n_layers, model.d_mlp))
