"""The embedded default pair: a GPT-2-architecture base model, its DPO twin, probe and data.

Both models are ordinary Hugging Face checkpoint directories inside the installed package, so
they load through exactly the path a user's checkpoint does (``mechtests.models.load_pair``).
``python -m mechtests.zoo.build`` rebuilds everything from the raw comments; see ``README.md``
in this directory (the model card) for the recipe, data provenance and measured numbers.

Example:
    >>> zoo = default_pair()
    >>> (zoo.base_dir / "config.json").is_file()
    True
    >>> data = load_eval_data()
    >>> len(data.challenge) >= 500
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mechtests.data import TextSet, load_labelled, load_prompts
from mechtests.errors import CheckpointError, DataError

ZOO_DIR = Path(__file__).resolve().parent

__all__ = ["EvalData", "ZooPair", "default_pair", "load_eval_data", "ZOO_DIR"]


@dataclass(frozen=True)
class ZooPair:
    """Paths of the embedded pair's artifacts (inside the installed package)."""

    base_dir: Path
    tuned_dir: Path
    probe_path: Path
    data_dir: Path


@dataclass(frozen=True)
class EvalData:
    """Held-out evaluation data of a pair (PAPER.md's protocol, scaled to the zoo pair).

    Attributes:
        challenge: toxic-eliciting prompts (<= 32 tokens), continued greedily for toxicity.
        probe_data: labelled texts (1 = offensive) for the probe.
        perplexity_text: held-out text scored in non-overlapping windows.
        f1_sentences: sentences whose first 32 tokens prompt a 20-token continuation.
    """

    challenge: TextSet
    probe_data: TextSet
    perplexity_text: str
    f1_sentences: TextSet


def default_pair(root: Path | None = None) -> ZooPair:
    """Paths of the embedded default pair; raises ``CheckpointError`` if an artifact is missing.

    Example:
        >>> default_pair().tuned_dir.name
        'tuned'
    """
    root = ZOO_DIR if root is None else Path(root)
    pair = ZooPair(root / "base", root / "tuned", root / "probe.pt", root / "data")
    for path in (pair.base_dir / "config.json", pair.base_dir / "model.safetensors",
                 pair.tuned_dir / "config.json", pair.tuned_dir / "model.safetensors", pair.probe_path):
        if not path.is_file():
            raise CheckpointError(path, "the embedded default pair is incomplete (file missing)",
                                  "reinstall mechtests, or rebuild it with `python -m mechtests.zoo.build`, "
                                  "or point --mt-base/--mt-tuned at your own checkpoints")
    return pair


def load_eval_data(data_dir: Path | None = None) -> EvalData:
    """Load the held-out evaluation sets of ``data_dir`` (default: the zoo's ``data/``).

    Files: ``challenge.jsonl`` and ``f1.jsonl`` (``{"prompt": ...}`` per line), ``probe.jsonl``
    (``{"text", "label"}``), ``perplexity.txt``.

    Raises:
        DataError: a file is missing or malformed (named, with the line).

    Example:
        >>> load_eval_data().f1_sentences.name
        'zoo-f1'
    """
    data_dir = ZOO_DIR / "data" if data_dir is None else Path(data_dir)
    ppl = data_dir / "perplexity.txt"
    if not ppl.is_file():
        raise DataError(f"{ppl}: missing perplexity text. Fix: rebuild with `python -m mechtests.zoo.build` "
                        "or pass a directory holding challenge.jsonl, probe.jsonl, perplexity.txt, f1.jsonl")
    return EvalData(
        challenge=load_prompts(data_dir / "challenge.jsonl", name="zoo-challenge"),
        probe_data=load_labelled(data_dir / "probe.jsonl", name="zoo-probe"),
        perplexity_text=ppl.read_text(encoding="utf-8"),
        f1_sentences=load_prompts(data_dir / "f1.jsonl", name="zoo-f1"),
    )
