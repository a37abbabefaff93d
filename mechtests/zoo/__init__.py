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

from mechtests.errors import CheckpointError
from mechtests.eval_data import EvalData, resolve_sources

ZOO_DIR = Path(__file__).resolve().parent

__all__ = ["ZOO_DIR", "EvalData", "ZooPair", "default_pair", "load_eval_data"]


@dataclass(frozen=True)
class ZooPair:
    """Paths of the embedded pair's artifacts (inside the installed package)."""

    base_dir: Path
    tuned_dir: Path
    probe_path: Path
    data_dir: Path


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
    """The evaluation data of ``data_dir`` (default: the zoo's ``data/``), each file read on first use.

    Files (``mechtests.eval_data.DIRECTORY_NAMES``): ``challenge.jsonl`` and ``f1.jsonl``
    (``{"prompt": ...}`` per line), ``probe.jsonl`` (``{"text", "label"}``), ``perplexity.txt``; the
    papers' names (``challenge_prompts.jsonl``, ``wiki_samples.jsonl``, ``wiki.test.raw``) too.

    Raises:
        DataError: the directory is missing or ambiguous; a file, when read, is malformed.

    Example:
        >>> load_eval_data().f1_sentences.name
        'f1'
    """
    directory = ZOO_DIR / "data" if data_dir is None else Path(data_dir)
    where = "the embedded pair's data" if data_dir is None else "--mt-data"
    return EvalData(sources=resolve_sources({}, directory, directory_where=where, default_directory=None))
