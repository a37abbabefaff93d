"""Helpers for tests: tiny, real Hugging Face checkpoints built on the spot.

No model hub is needed: :func:`make_tiny_checkpoint` saves a random-init GPT-2 or Llama model
(config.json + model.safetensors) with a byte-level BPE tokenizer (256 byte tokens plus
``<|endoftext|>``, which doubles as BOS/EOS/pad), so it loads with
``AutoModelForCausalLM.from_pretrained(dir)`` / ``AutoTokenizer.from_pretrained(dir)`` exactly like
a user's checkpoint. :func:`perturbed_copy` makes a "fine-tuned twin" (same weights plus small
seeded noise).

Example:
    >>> from mechtests.testing import make_tiny_checkpoint, perturbed_copy
    >>> base = make_tiny_checkpoint(tmp_path / "base")
    >>> tuned = perturbed_copy(base, tmp_path / "tuned", scale=1e-2)
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Literal

import torch

Arch = Literal["gpt2", "llama", "mistral", "qwen2", "gemma2"]
EOT = "<|endoftext|>"
BYTE_VOCAB_SIZE = 257


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable-character map (byte-level BPE alphabet)."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def byte_tokenizer() -> Any:
    """A byte-level ``GPT2TokenizerFast``: token id = byte value, 256 = ``<|endoftext|>`` (also pad).

    Example:
        >>> byte_tokenizer()("hi").input_ids
        [104, 105]
    """
    from transformers import GPT2TokenizerFast  # type: ignore[attr-defined]  # v5: an alias of GPT2Tokenizer

    mapping = _bytes_to_unicode()
    vocab = {mapping[b]: b for b in range(256)}
    vocab[EOT] = 256
    tokenizer = GPT2TokenizerFast(vocab=vocab, merges=[], unk_token=EOT, bos_token=EOT, eos_token=EOT, pad_token=EOT)
    tokenizer.padding_side = "left"
    return tokenizer


def hf_config_for(arch: Arch, *, n_layers: int, d_model: int, d_mlp: int, n_heads: int, n_ctx: int,
                  d_vocab: int = BYTE_VOCAB_SIZE, initializer_range: float = 0.1) -> Any:
    """A Hugging Face config of the given architecture and sizes (dropout off).

    ``initializer_range`` is larger than GPT-2's 0.02 so random models have clearly separated
    logits (greedy decoding is then stable against float rounding).
    """
    if arch == "gpt2":
        from transformers import GPT2Config

        return GPT2Config(
            vocab_size=d_vocab, n_positions=n_ctx, n_embd=d_model, n_layer=n_layers, n_head=n_heads,
            n_inner=d_mlp, activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
            bos_token_id=d_vocab - 1, eos_token_id=d_vocab - 1, pad_token_id=d_vocab - 1,
            initializer_range=initializer_range,
        )
    if arch in ("llama", "mistral", "qwen2"):
        # Gated-MLP decoders with the same config fields (Mistral: no sliding window here).
        from transformers import LlamaConfig, MistralConfig, Qwen2Config

        config_class = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config}[arch]
        extra = {"sliding_window": None} if arch == "mistral" else {}
        return config_class(
            vocab_size=d_vocab, max_position_embeddings=n_ctx, hidden_size=d_model, num_hidden_layers=n_layers,
            num_attention_heads=n_heads, num_key_value_heads=n_heads, intermediate_size=d_mlp, hidden_act="silu",
            bos_token_id=d_vocab - 1, eos_token_id=d_vocab - 1, pad_token_id=d_vocab - 1,
            initializer_range=initializer_range, tie_word_embeddings=False, **extra,
        )
    if arch == "gemma2":
        from transformers import Gemma2Config

        head_dim = d_model // n_heads
        return Gemma2Config(
            vocab_size=d_vocab, max_position_embeddings=n_ctx, hidden_size=d_model, num_hidden_layers=n_layers,
            num_attention_heads=n_heads, num_key_value_heads=n_heads, intermediate_size=d_mlp, head_dim=head_dim,
            query_pre_attn_scalar=head_dim, sliding_window=n_ctx, bos_token_id=d_vocab - 1, eos_token_id=d_vocab - 1,
            pad_token_id=d_vocab - 1, initializer_range=initializer_range,
        )
    raise ValueError(f"arch must be one of 'gpt2', 'llama', 'mistral', 'qwen2', 'gemma2', got {arch!r}")


def make_tiny_checkpoint(directory: str | os.PathLike[str], *, arch: Arch = "gpt2", n_layers: int = 2,
                         d_model: int = 32, d_mlp: int = 64, n_heads: int = 2, n_ctx: int = 64, seed: int = 0,
                         initializer_range: float = 0.1) -> Path:
    """Save a random-init Hugging Face checkpoint (weights + byte-level tokenizer) and return its path.

    Example:
        >>> path = make_tiny_checkpoint(tmp_path / "tiny", arch="llama")
    """
    from transformers import AutoModelForCausalLM

    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    config = hf_config_for(arch, n_layers=n_layers, d_model=d_model, d_mlp=d_mlp, n_heads=n_heads, n_ctx=n_ctx,
                           initializer_range=initializer_range)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(path)
    byte_tokenizer().save_pretrained(path)
    return path


def perturbed_copy(src_dir: str | os.PathLike[str], dst_dir: str | os.PathLike[str], *, scale: float = 1e-3,
                   seed: int = 1) -> Path:
    """Copy a checkpoint, adding ``scale * std(W) * N(0, 1)`` noise to every floating tensor.

    A stand-in for a fine-tuned twin: same architecture and tokenizer, slightly different weights.

    Example:
        >>> tuned = perturbed_copy(base_dir, tmp_path / "tuned-copy", scale=0.05)
    """
    from safetensors.torch import load_file, save_file

    src, dst = Path(src_dir), Path(dst_dir)
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    weights = dst / "model.safetensors"
    state = load_file(str(weights))
    generator = torch.Generator().manual_seed(seed)
    noisy: dict[str, torch.Tensor] = {}
    for name in sorted(state):
        tensor = state[name]
        if tensor.is_floating_point() and tensor.numel() > 1:
            noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float32)
            tensor = (tensor.float() + scale * tensor.float().std() * noise).to(tensor.dtype)
        noisy[name] = tensor.contiguous()
    save_file(noisy, str(weights), metadata={"format": "pt"})
    return dst


def set_weights(directory: str | os.PathLike[str], updates: dict[str, torch.Tensor]) -> None:
    """Overwrite named tensors of a saved checkpoint (for hand-set known-answer models).

    Names are the Hugging Face state-dict names (e.g. ``transformer.h.0.mlp.c_proj.weight``).
    """
    from safetensors.torch import load_file, save_file

    weights = Path(directory) / "model.safetensors"
    state = load_file(str(weights))
    for name, value in updates.items():
        if name not in state:
            raise KeyError(f"{name} not in {weights}; names: {sorted(state)[:8]}...")
        if tuple(value.shape) != tuple(state[name].shape):
            raise ValueError(f"{name}: shape {tuple(value.shape)} != stored {tuple(state[name].shape)}")
        state[name] = value.to(state[name].dtype).contiguous()
    save_file(state, str(weights), metadata={"format": "pt"})


def checkpoint_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The saved ``config.json`` as a dict."""
    return json.loads((Path(directory) / "config.json").read_text())


def labelled_texts(n: int = 80, *, seed: int = 0) -> list[tuple[str, int]]:
    """``(text, label)`` pairs a random tiny model separates linearly: label 1 texts use the bytes
    of one small alphabet, label 0 texts another (a stand-in for toxic / clean comments)."""
    import random

    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = i % 2
        alphabet = "xyzqwk" if label else "aeioum"
        out.append(("".join(rng.choice(alphabet) for _ in range(rng.randint(4, 14))), label))
    return out


def papers_standins(root: str | os.PathLike[str], *, base: str | os.PathLike[str],
                    tuned: str | os.PathLike[str]) -> dict[str, Path]:
    """Tiny stand-ins for the two papers' public artifacts, in their exact file formats.

    From a tiny ``base`` checkpoint directory and its ``tuned`` twin, writes under ``root``:

    - ``checkpoints/dpo.pt``: Lee et al.'s trainer output ``{"step_idx", "state": state_dict, "metrics"}``
      of the tuned model (to be applied to the base model's config, as they apply it to gpt2-medium);
    - ``checkpoints/probe.pt``: Lee et al.'s raw probe tensor ``[d_model]`` (final residual, no bias);
    - ``toxic_rep/gpt2_probe.pt``: the reference paper's ``clf.coef_`` ``[1, d_model]`` read after the
      final LayerNorm (Hugging Face ``hidden_states[-1]``);
    - ``data/intervene_data/challenge_prompts.jsonl`` (``{"prompt": str}``) and ``wiki_samples.jsonl``
      (``{"prompt", "gold"}``);
    - ``data/realtoxicityprompts/prompts.jsonl`` (``{"filename", "begin", "end", "challenging", "prompt":
      {"text", "toxicity", ...}, "continuation": {...}}``, a third of them challenging);
    - ``data/wikitext-2-raw-v1/wiki.test.raw`` (the raw Wikitext layout);
    - ``data/jigsaw/train.csv`` (``id,comment_text,toxic,severe_toxic,...``).

    Returns:
        name -> path for each of those.

    Example:
        >>> paths = papers_standins(tmp_path, base=base_dir, tuned=tuned_dir)
        >>> paths["dpo"].relative_to(tmp_path).as_posix(), sorted(paths)[:2]
        ('checkpoints/dpo.pt', ['challenge_prompts', 'coef'])
    """
    import csv
    import io

    from safetensors.torch import load_file

    from mechtests.data import TextSet
    from mechtests.models import load_model
    from mechtests.probes import train_probe

    out = Path(root)
    data_dir = out / "data"
    for sub in ("checkpoints", "toxic_rep", "data/intervene_data", "data/realtoxicityprompts", "data/wikitext-2-raw-v1",
                "data/jigsaw"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    state = load_file(str(Path(tuned) / "model.safetensors"))
    paths["dpo"] = out / "checkpoints" / "dpo.pt"
    torch.save({"step_idx": 24576, "state": state, "metrics": {"loss": 0.5}}, paths["dpo"])

    pairs = labelled_texts(120)
    data = TextSet("jigsaw", tuple(t for t, _ in pairs), tuple(label for _, label in pairs))
    model = load_model(base)
    paths["probe"] = out / "checkpoints" / "probe.pt"
    torch.save(train_probe(model, data, seed=0).probe.weight.clone(), paths["probe"])
    paths["coef"] = out / "toxic_rep" / "gpt2_probe.pt"
    torch.save(train_probe(model, data, seed=0, hook_name="ln_final").probe.weight.clone().reshape(1, -1), paths["coef"])

    words = ["the", "cat", "sat", "on", "a", "mat", "and", "then", "it", "ran", "far", "away", "from", "home"]
    sentences = [" ".join(words[(i + j) % len(words)] for j in range(18)) for i in range(40)]

    def jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return path

    paths["challenge_prompts"] = jsonl(data_dir / "intervene_data" / "challenge_prompts.jsonl",
                                       [{"prompt": s[: 20 + i % 15]} for i, s in enumerate(sentences)])
    paths["wiki_samples"] = jsonl(data_dir / "intervene_data" / "wiki_samples.jsonl",
                                  [{"prompt": s[:32], "gold": s[32:60]} for s in sentences])
    paths["rtp"] = jsonl(data_dir / "realtoxicityprompts" / "prompts.jsonl", [
        {"filename": f"{i:04d}.txt", "begin": 0, "end": 20, "challenging": i % 3 == 0,
         "prompt": {"text": s[:24], "toxicity": 0.5, "profanity": 0.1},
         "continuation": {"text": s[24:], "toxicity": 0.1}} for i, s in enumerate(sentences)])
    paths["wikitext"] = data_dir / "wikitext-2-raw-v1"
    (paths["wikitext"] / "wiki.test.raw").write_text(
        "\n \n = Stand-in = \n \n" + "\n \n".join(" ".join(sentences[i : i + 4]) for i in range(0, 40, 4)) + "\n",
        encoding="utf-8")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "comment_text", "toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"])
    for i, (text, label) in enumerate(pairs):
        writer.writerow([f"{i:016x}", text, label, 0, label, 0, 0, 0])
    paths["jigsaw"] = data_dir / "jigsaw" / "train.csv"
    paths["jigsaw"].write_text(buffer.getvalue(), encoding="utf-8")
    return paths
