"""Prompt sets, labelled corpora, left-padded tokenisation and padding-aware pooling.

Example:
    >>> prompts = TextSet("demo", ("Hello", "You are"))
    >>> len(prompts), prompts.head(1).texts
    (2, ('Hello',))
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from mechtests.errors import DataError, UsageError


@dataclass(frozen=True)
class TextSet:
    """A named, immutable list of texts, optionally with integer labels (e.g. 1 = toxic).

    Attributes:
        name: a short name for reports.
        texts: the texts.
        labels: one label per text, or ``None``.
    """

    name: str
    texts: tuple[str, ...]
    labels: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.texts, tuple):
            object.__setattr__(self, "texts", tuple(self.texts))
        if self.labels is not None and not isinstance(self.labels, tuple):
            object.__setattr__(self, "labels", tuple(int(label) for label in self.labels))
        for i, text in enumerate(self.texts):
            if not isinstance(text, str):
                raise DataError(f"text set {self.name!r}: item {i} is {type(text).__name__}, not str")
        if self.labels is not None and len(self.labels) != len(self.texts):
            raise DataError(
                f"text set {self.name!r}: {len(self.texts)} texts but {len(self.labels)} labels; give one label per text"
            )

    def __len__(self) -> int:
        return len(self.texts)

    @cached_property
    def sha256(self) -> str:
        """Content hash (texts and labels, not the name) for cache keys."""
        digest = hashlib.sha256()
        for text in self.texts:
            encoded = text.encode("utf-8")
            digest.update(len(encoded).to_bytes(8, "little") + encoded)
        digest.update(b"labels:" + (json.dumps(list(self.labels)).encode() if self.labels is not None else b"none"))
        return digest.hexdigest()

    def head(self, n: int) -> TextSet:
        """The first ``n`` items (all of them when ``n >= len``)."""
        if n < 0:
            raise UsageError(f"head(n) needs n >= 0, got {n}")
        labels = None if self.labels is None else self.labels[:n]
        return TextSet(self.name, self.texts[:n], labels)

    def subset(self, indices: Sequence[int]) -> TextSet:
        """The items at ``indices``, in that order."""
        labels = None if self.labels is None else tuple(self.labels[i] for i in indices)
        return TextSet(self.name, tuple(self.texts[i] for i in indices), labels)


def _read_lines(path: Path) -> list[str]:
    if not path.exists():
        raise DataError(f"{path}: no such file. Fix: check the path given for the prompts/corpus")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc}). Fix: re-encode the file as UTF-8") from exc


def _json_line(path: Path, number: int, line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{number}: not valid JSON ({exc.msg}). Fix: one JSON object per line") from exc
    if not isinstance(record, dict):
        raise DataError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
    return record


def load_prompts(path: str | os.PathLike[str], *, name: str | None = None) -> TextSet:
    """Read prompts: JSONL with ``"prompt": str`` or ``"prompt": {"text": str}`` (RealToxicityPrompts), or ``.txt``.

    Raises:
        DataError: missing file, malformed line (named by file and line number), or no prompts.

    Example:
        >>> load_prompts("challenge.jsonl")  # doctest: +SKIP
    """
    file = Path(path)
    lines = _read_lines(file)
    texts: list[str] = []
    if file.suffix == ".txt":
        texts = [line for line in lines if line.strip()]
    else:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            record = _json_line(file, number, line)
            prompt = record.get("prompt")
            if isinstance(prompt, dict):
                prompt = prompt.get("text")
            if not isinstance(prompt, str):
                raise DataError(
                    f'{file}:{number}: no prompt text; expected "prompt": "..." or "prompt": {{"text": "..."}}'
                )
            texts.append(prompt)
    if not texts:
        raise DataError(f"{file}: contains no prompts")
    return TextSet(name or file.stem, tuple(texts))


def load_labelled(path: str | os.PathLike[str], *, name: str | None = None) -> TextSet:
    """Read a labelled corpus: JSONL lines ``{"text": str, "label": 0 | 1}``.

    Example:
        >>> load_labelled("probe_data.jsonl")  # doctest: +SKIP
    """
    file = Path(path)
    texts: list[str] = []
    labels: list[int] = []
    for number, line in enumerate(_read_lines(file), start=1):
        if not line.strip():
            continue
        record = _json_line(file, number, line)
        text, label = record.get("text"), record.get("label")
        if not isinstance(text, str):
            raise DataError(f'{file}:{number}: "text" must be a string')
        if isinstance(label, bool) or not isinstance(label, int) or label not in (0, 1):
            raise DataError(f'{file}:{number}: "label" must be 0 or 1, got {label!r}')
        texts.append(text)
        labels.append(label)
    if not texts:
        raise DataError(f"{file}: contains no examples")
    return TextSet(name or file.stem, tuple(texts), tuple(labels))


def left_padded_batch(tokenizer: Any, texts: Sequence[str], *, max_tokens: int,
                      device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenise ``texts``, keep each one's last ``max_tokens`` tokens, and left-pad to a batch.

    Returns:
        ``(input_ids [b, pos], attention_mask [b, pos])`` with real tokens flush right.

    Raises:
        UsageError: no texts, or ``max_tokens < 1``.
        DataError: a text with no tokens (an empty prompt cannot be continued or pooled).

    Example:
        >>> ids, mask = left_padded_batch(tok, ["a b", "a"], max_tokens=32)  # doctest: +SKIP
    """
    if len(texts) == 0:
        raise UsageError("left_padded_batch got an empty list of texts; give at least one")
    if max_tokens < 1:
        raise UsageError(f"max_tokens must be >= 1, got {max_tokens}")
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    rows: list[list[int]] = []
    for i, ids in enumerate(encoded):
        if not ids:
            raise DataError(f"text {i} ({texts[i]!r}) has no tokens; remove empty prompts")
        rows.append(list(ids[-max_tokens:]))
    width = max(len(row) for row in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids = torch.full((len(rows), width), int(pad), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return input_ids.to(device), mask.to(device)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x [b, pos, d]`` over the positions where ``mask [b, pos]`` is 1.

    Padding never enters: each row is divided by its own count of real tokens.

    Raises:
        DataError: a row with no real tokens.

    Example:
        >>> masked_mean(torch.ones(1, 3, 2), torch.tensor([[0, 1, 1]]))
        tensor([[1., 1.]])
    """
    if x.ndim != 3 or mask.shape != x.shape[:2]:
        raise UsageError(f"masked_mean needs x [b, pos, d] and mask [b, pos]; got {tuple(x.shape)} and {tuple(mask.shape)}")
    weights = mask.to(x.dtype)
    counts = weights.sum(dim=1, keepdim=True)
    if bool((counts == 0).any()):
        raise DataError("masked_mean: a row has no real tokens")
    # where() rather than multiply, so NaN/inf at padded positions cannot leak into the mean.
    summed = torch.where(weights.unsqueeze(-1) > 0, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(dim=1)
    return summed / counts
