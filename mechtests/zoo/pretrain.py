"""Tokenizer training and causal-LM pretraining of the zoo's base model (GPT-2 architecture).

The length of pretraining is a number of optimizer steps (hence of tokens), never wall-clock
time, so the recipe is deterministic given the seed and the thread count.

Example:
    >>> cfg = PretrainConfig(steps=2, batch_size=2, n_layer=1, d_model=32, d_mlp=64, n_head=2, n_ctx=16)
    >>> cfg.tokens
    64
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

EOS = "<|endoftext|>"


@dataclass(frozen=True)
class PretrainConfig:
    """Architecture and optimisation of the base model."""

    vocab_size: int = 8192
    n_layer: int = 4
    d_model: int = 256
    d_mlp: int = 1024
    n_head: int = 4
    n_ctx: int = 128
    steps: int = 700
    batch_size: int = 32
    lr: float = 2e-3
    min_lr_fraction: float = 0.1
    warmup_steps: int = 60
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    bf16: bool = True  # bf16 autocast: ~1.5x faster on this CPU; master weights stay fp32
    seed: int = 0

    @property
    def tokens(self) -> int:
        """Training tokens seen: steps x batch x context."""
        return self.steps * self.batch_size * self.n_ctx


def train_tokenizer(texts: Sequence[str], out_dir: Path, *, vocab_size: int, n_ctx: int):
    """Train a byte-level BPE (GPT-2 style) on ``texts`` and save it as a GPT-2 tokenizer.

    Returns the loaded ``GPT2TokenizerFast`` (pad = eos, as GPT-2 has no pad token).
    """
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast  # type: ignore[attr-defined]  # v5: an alias of GPT2Tokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS],
                            show_progress=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = GPT2TokenizerFast(tokenizer_object=bpe._tokenizer, bos_token=EOS, eos_token=EOS,
                            unk_token=EOS, pad_token=EOS, model_max_length=n_ctx)
    tok.save_pretrained(out_dir)
    return GPT2TokenizerFast.from_pretrained(out_dir)


def pack(tokenizer, texts: Sequence[str], n_ctx: int) -> torch.Tensor:
    """Tokenize ``texts``, join them with EOS and cut the stream into ``[n_chunks, n_ctx]``."""
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    stream = np.fromiter((t for doc in ids for t in (*doc, eos)), dtype=np.int64)
    n = len(stream) // n_ctx
    return torch.from_numpy(stream[: n * n_ctx].reshape(n, n_ctx).copy())


def build_model(cfg: PretrainConfig, tokenizer):
    """A randomly initialised ``GPT2LMHeadModel`` of the configured size (seeded)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=cfg.n_ctx, n_embd=cfg.d_model, n_layer=cfg.n_layer,
        n_head=cfg.n_head, n_inner=cfg.d_mlp, activation_function="gelu_new", resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(cfg.seed)
    return GPT2LMHeadModel(config)


def lr_at(step: int, cfg: PretrainConfig) -> float:
    """Linear warmup then cosine decay to ``min_lr_fraction * lr``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    floor = cfg.min_lr_fraction
    return cfg.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def chunk_nll(model, chunks: torch.Tensor, *, batch_size: int = 64) -> tuple[float, int]:
    """Summed next-token NLL and token count over ``chunks`` (fp32, no grad)."""
    total, count = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(chunks), batch_size):
            x = chunks[i : i + batch_size]
            logits = model(input_ids=x).logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum")
            total += float(nll)
            count += x[:, 1:].numel()
    return total, count


def pretrain(cfg: PretrainConfig, tokenizer, train: torch.Tensor, held_out: torch.Tensor,
             out_dir: Path, *, log_every: int = 50) -> dict[str, float]:
    """Pretrain on shuffled packed chunks for ``cfg.steps`` steps and save the HF checkpoint.

    Chunks are reused (a new seeded permutation each epoch) if ``steps`` asks for more tokens
    than ``train`` holds. Returns summary numbers (held-out perplexity, throughput).
    """
    model = build_model(cfg, tokenizer)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8)
    gen = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(len(train), generator=gen)
    cursor, start = 0, time.perf_counter()
    model.train()
    for step in range(cfg.steps):
        if cursor + cfg.batch_size > len(order):
            order, cursor = torch.randperm(len(train), generator=gen), 0
        x = train[order[cursor : cursor + cfg.batch_size]]
        cursor += cfg.batch_size
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        if step % log_every == 0 or step == cfg.steps - 1:
            elapsed = time.perf_counter() - start
            rate = (step + 1) * cfg.batch_size * cfg.n_ctx / elapsed
            print(f"pretrain step {step}/{cfg.steps} loss {loss.item():.3f} lr {lr_at(step, cfg):.2e} "
                  f"{rate:.0f} tok/s {elapsed:.0f}s", flush=True)
    model.eval()
    nll, count = chunk_nll(model, held_out)
    elapsed = time.perf_counter() - start
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    summary = {"held_out_perplexity": math.exp(nll / count), "tokens": cfg.tokens,
               "seconds": elapsed, "tokens_per_second": cfg.tokens / elapsed,
               "n_parameters": sum(p.numel() for p in model.parameters())}
    (out_dir.parent / "pretrain_summary.json").write_text(
        json.dumps({"config": asdict(cfg), **summary}, indent=2))
    return summary
