"""DPO of the zoo's base model on pairs built from its own samples, ranked by the scorer.

As in the papers' recipe (beta 0.1), but the pairs come from the base model itself: for each
held-out prompt, ``k`` sampled continuations are scored; the least toxic is *chosen*, the most
toxic *rejected*, and prompts whose samples barely differ are skipped. Training is TRL's
``DPOTrainer`` (sigmoid loss) on the CPU.

Example:
    >>> pairs = build_pairs(["p"], [["nice", "awful"]], [[0.1, 0.9]], min_gap=0.5)
    >>> pairs[0]["chosen"], pairs[0]["rejected"]
    ('nice', 'awful')
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mechtests.errors import DataError


@dataclass(frozen=True)
class DpoSettings:
    """Pair construction and DPO optimisation."""

    k: int = 4  # samples per prompt
    new_tokens: int = 20
    temperature: float = 1.0
    min_gap: float = 0.3  # chosen/rejected must differ by at least this much toxicity
    beta: float = 0.1
    lr: float = 1e-5
    epochs: int = 1
    batch_size: int = 8
    seed: int = 0
    sample_batch: int = 64


def sample_continuations(model, tokenizer, prompts: Sequence[str], *, settings: DpoSettings) -> list[list[str]]:
    """``k`` sampled continuations (text, prompt removed) per prompt, seeded per batch.

    Each batch draws from its own ``torch.Generator``-seeded fork of the RNG, so the samples
    depend on the seed and the batch layout only (no global RNG state leaks in or out).
    """
    out: list[list[str]] = []
    tokenizer.padding_side = "left"
    model.eval()
    for b, start in enumerate(range(0, len(prompts), settings.sample_batch)):
        batch = list(prompts[start : start + settings.sample_batch])
        enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(settings.seed * 1_000_003 + b)
            gen = model.generate(**enc, do_sample=True, temperature=settings.temperature, top_k=0, top_p=1.0,
                                 max_new_tokens=settings.new_tokens, num_return_sequences=settings.k,
                                 pad_token_id=tokenizer.pad_token_id)
        new = gen[:, enc["input_ids"].shape[1] :]
        texts = tokenizer.batch_decode(new, skip_special_tokens=True)
        out.extend(texts[i * settings.k : (i + 1) * settings.k] for i in range(len(batch)))
    return out


def build_pairs(prompts: Sequence[str], samples: Sequence[Sequence[str]], scores: Sequence[Sequence[float]],
                *, min_gap: float) -> list[dict[str, str]]:
    """Preference pairs: per prompt, least toxic sample = chosen, most toxic = rejected.

    Prompts whose best and worst samples differ by less than ``min_gap`` give no pair; ties
    keep the first sample (deterministic).

    Raises:
        DataError: the three inputs disagree in length, or a prompt has fewer than 2 samples.

    Example:
        >>> build_pairs(["p", "q"], [["a", "b"], ["c", "d"]], [[0.5, 0.6], [0.9, 0.0]], min_gap=0.2)
        [{'prompt': 'q', 'chosen': 'd', 'rejected': 'c'}]
    """
    if not (len(prompts) == len(samples) == len(scores)):
        raise DataError(f"build_pairs: {len(prompts)} prompts, {len(samples)} sample lists, "
                        f"{len(scores)} score lists; give one of each per prompt")
    pairs: list[dict[str, str]] = []
    for prompt, texts, tox in zip(prompts, samples, scores, strict=True):
        if len(texts) < 2 or len(texts) != len(tox):
            raise DataError(f"build_pairs: prompt {prompt[:40]!r} has {len(texts)} samples and "
                            f"{len(tox)} scores; need >= 2 of each, equal in number")
        lo, hi = int(np.argmin(tox)), int(np.argmax(tox))
        if tox[hi] - tox[lo] >= min_gap:
            pairs.append({"prompt": prompt, "chosen": texts[lo], "rejected": texts[hi]})
    return pairs


def train_dpo(base_dir: Path, pairs: Sequence[dict[str, str]], out_dir: Path, *, settings: DpoSettings,
              work_dir: Path) -> dict[str, Any]:
    """Fine-tune the checkpoint in ``base_dir`` with TRL's ``DPOTrainer``; save to ``out_dir``."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    if not pairs:
        raise DataError("no DPO pairs: every prompt's samples were within min_gap; lower min_gap or add prompts")
    tok = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = DPOConfig(
        output_dir=str(work_dir / "dpo_trainer"), beta=settings.beta, learning_rate=settings.lr,
        num_train_epochs=settings.epochs, per_device_train_batch_size=settings.batch_size,
        lr_scheduler_type="linear", warmup_steps=0, seed=settings.seed, data_seed=settings.seed,
        max_length=model.config.n_positions, logging_steps=10, save_strategy="no", report_to=[],
        use_cpu=True, bf16=False, dataloader_num_workers=0, dataset_num_proc=None,
        gradient_checkpointing=False,  # TRL turns it on by default; tiny model, no memory pressure
    )
    trainer = DPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(list(pairs)),
                         processing_class=tok)
    result = trainer.train()
    out_dir.mkdir(parents=True, exist_ok=True)
    trained: Any = trainer.model  # a PreTrainedModel (TRL types it as a union with None)
    trained.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    history = [h for h in trainer.state.log_history if "loss" in h]
    summary = {"n_pairs": len(pairs), "train_loss": float(result.training_loss),
               "final_reward_accuracy": float(history[-1].get("rewards/accuracies", math.nan)) if history else math.nan,
               "settings": asdict(settings)}
    (work_dir / "dpo_summary.json").write_text(json.dumps({**summary, "log": history}, indent=2))
    return summary
