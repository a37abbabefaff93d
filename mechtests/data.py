"""Prompt sets, labelled corpora, left-padded tokenisation and padding-aware pooling.

Example:
    >>> prompts = TextSet("demo", ("Hello", "You are"))
    >>> len(prompts), prompts.head(1).texts
    (2, ('Hello',))
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

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


@dataclass(frozen=True)
class FileRecord:
    """What was read from one data file: the report's data provenance entry.

    Attributes:
        role: what the file serves (``challenge``, ``probe``, ``perplexity``, ``f1``).
        path: the file (or dataset directory) read.
        sha256: of its bytes (a directory: of every file's name and bytes).
        format: how it was read, e.g. ``"jsonl prompt.text (RealToxicityPrompts)"``.
        count: items used after filtering (prompts, labelled texts, F1 items; tokens are not counted).
        read: items in the file before filtering.
        note: what was assumed or filtered, in words (empty when nothing was).
    """

    role: str
    path: str
    sha256: str
    format: str
    count: int
    read: int
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "path": self.path, "sha256": self.sha256, "format": self.format,
                "count": self.count, "read": self.read, "note": self.note}


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, or of every file's relative name and bytes under a directory."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(f"{file.relative_to(path).as_posix()}\n".encode())
        with file.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _read_text(path: Path) -> str:
    """A data file's text exactly as written: UTF-8 (a leading byte-order mark, an encoding marker
    and not content, removed), line ends untouched (no universal-newline translation)."""
    if not path.exists():
        raise DataError(f"{path}: no such file. Fix: check the path given for the prompts/corpus")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a file. Fix: give the file itself")
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            return fh.read()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc}). Fix: re-encode the file as UTF-8") from exc


_LINE_END = re.compile(r"\r\n|\r|\n")


def _read_lines(path: Path) -> list[str]:
    """The file's lines, split at line ends only (``\\n``, ``\\r\\n``, ``\\r``). ``str.splitlines`` also
    splits at form feeds, U+2028 and other separators, which a prompt, a comment or a JSON string
    may hold: it would cut one prompt in two, or a valid JSON line into two invalid ones."""
    lines = _LINE_END.split(_read_text(path))
    return lines[:-1] if lines and lines[-1] == "" else lines


def _json_line(path: Path, number: int, line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{number}: not valid JSON ({exc.msg}). Fix: one JSON object per line") from exc
    if not isinstance(record, dict):
        raise DataError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
    return record


def _json_records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` of every non-blank line of a JSONL file."""
    return [(number, _json_line(path, number, line)) for number, line in enumerate(_read_lines(path), start=1)
            if line.strip()]


def _prompt_text(path: Path, number: int, record: Mapping[str, Any]) -> str:
    prompt = record.get("prompt")
    if isinstance(prompt, dict):
        prompt = prompt.get("text")
    if not isinstance(prompt, str):
        raise DataError(f'{path}:{number}: no prompt text; expected "prompt": "..." or "prompt": {{"text": "..."}} '
                        f"(keys on this line: {sorted(record)[:6]})")
    if not prompt.strip():
        raise DataError(f"{path}:{number}: the prompt is empty. Fix: remove the line (an empty prompt cannot be "
                        "continued)")
    return prompt


def read_prompts(path: str | os.PathLike[str], *, name: str | None = None, all_prompts: bool = False,
                 role: str = "challenge") -> tuple[TextSet, FileRecord]:
    """Read prompts and say how: JSONL ``"prompt": str`` (Lee et al.'s ``challenge_prompts.jsonl``),
    RealToxicityPrompts' ``"prompt": {"text": ...}``, or ``.txt`` (one per line).

    RealToxicityPrompts files carry ``"challenging": bool``: when any line has the field, only the
    challenging prompts are used (the papers' 1,199 of ``prompts.jsonl``), unless ``all_prompts``.

    Raises:
        DataError: missing file, malformed or empty line (named by file and line), no prompts.

    Example:
        >>> prompts, record = read_prompts(standins["rtp"])  # RealToxicityPrompts' prompts.jsonl layout
        >>> record.count, record.read, record.note  # the papers' file: (1199, 99442, ...)
        (14, 40, 'challenging == true only (14 of 40); --mt-all-prompts uses all')
    """
    file = Path(path)
    note = ""
    if file.suffix == ".txt":
        lines = [line for line in _read_lines(file) if line.strip()]
        texts, read, fmt = lines, len(lines), "txt, one prompt per line"
    else:
        records = _json_records(file)
        read = len(records)
        has_flag = any("challenging" in r for _, r in records)
        nested = any(isinstance(r.get("prompt"), dict) for _, r in records)
        fmt = "jsonl prompt.text (RealToxicityPrompts)" if nested else "jsonl prompt"
        for number, record in records:
            flag = record.get("challenging")
            if flag is not None and not isinstance(flag, bool):
                raise DataError(f'{file}:{number}: "challenging" must be true or false, got {flag!r}')
        if has_flag and not all_prompts:
            kept = [(n, r) for n, r in records if r.get("challenging") is True]
            note = (f"challenging == true only ({len(kept)} of {read}); --mt-all-prompts uses all")
            records = kept
        elif has_flag:
            note = f"all {read} prompts (--mt-all-prompts), challenging or not"
        texts = [_prompt_text(file, number, record) for number, record in records]
    if not texts:
        raise DataError(f"{file}: contains no prompts" + (f" ({note})" if note else ""))
    prompts = TextSet(name or file.stem, tuple(texts))
    return prompts, FileRecord(role, str(file), file_sha256(file), fmt, len(texts), read, note)


def load_prompts(path: str | os.PathLike[str], *, name: str | None = None, all_prompts: bool = False) -> TextSet:
    """The prompts of :func:`read_prompts` (without its record).

    Example:
        >>> len(load_prompts(standins["challenge_prompts"]))  # {"prompt": ...} per line
        40
    """
    return read_prompts(path, name=name, all_prompts=all_prompts)[0]


# Field names of labelled corpora: mechtests' own, Jigsaw's (comment_text, toxic) and
# Davidson / profanity-check's (text, is_offensive).
TEXT_FIELDS: tuple[str, ...] = ("text", "comment_text")
LABEL_FIELDS: tuple[str, ...] = ("label", "toxic", "is_offensive")


def _field(record: Mapping[str, Any], names: tuple[str, ...], where: str, what: str) -> str:
    present = [n for n in names if n in record]
    if not present:
        raise DataError(f"{where}: no {what} field; expected one of {list(names)} (keys here: {sorted(record)[:8]})")
    if len(present) > 1:
        raise DataError(f"{where}: more than one {what} field {present}; keep one so it is clear which is meant")
    return present[0]


def _label(value: Any, where: str, name: str) -> int:
    if isinstance(value, str) and value.strip() in ("0", "1"):
        value = int(value.strip())
    if isinstance(value, float) and value in (0.0, 1.0):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value not in (0, 1):
        raise DataError(f'{where}: "{name}" must be 0 or 1, got {value!r}')
    return value


def read_labelled(path: str | os.PathLike[str], *, name: str | None = None,
                  role: str = "probe") -> tuple[TextSet, FileRecord]:
    """Read a labelled corpus (1 = the probed class, e.g. toxic) and say how.

    JSONL lines or CSV rows with a text field (``text`` or Jigsaw's ``comment_text``) and a 0/1
    label (``label``, Jigsaw's ``toxic`` or ``is_offensive``). Both classes must be present.

    Raises:
        DataError: missing file, a line/row without the fields or with another label (named by
            file and line), no examples, or a single class.

    Example:
        >>> data, record = read_labelled(standins["jigsaw"])  # Jigsaw's train.csv layout
        >>> record.count, sorted(set(data.labels))
        (120, [0, 1])
    """
    file = Path(path)
    texts: list[str] = []
    labels: list[int] = []
    if file.suffix == ".csv":
        import csv

        # The csv module reads the text itself: a quoted field may span lines (Jigsaw's comments do),
        # and its line breaks are part of the text.
        reader = csv.DictReader(io.StringIO(_read_text(file), newline=""))
        if reader.fieldnames is None:
            raise DataError(f"{file}: empty CSV (no header). Fix: a header row naming the text and label columns")
        header = {n: n for n in reader.fieldnames}
        text_key = _field(header, TEXT_FIELDS, f"{file}:1 (header)", "text")
        label_key = _field(header, LABEL_FIELDS, f"{file}:1 (header)", "label")
        fmt = f"csv {text_key}/{label_key}"
        for row in reader:
            where = f"{file}:{reader.line_num}"
            text = row.get(text_key)
            if text is None:
                raise DataError(f"{where}: the row has fewer columns than the header")
            texts.append(text)
            labels.append(_label(row.get(label_key), where, label_key))
    else:
        fmt = ""
        for number, record in _json_records(file):
            where = f"{file}:{number}"
            text_key = _field(record, TEXT_FIELDS, where, "text")
            label_key = _field(record, LABEL_FIELDS, where, "label")
            fmt = fmt or f"jsonl {text_key}/{label_key}"
            if not isinstance(record[text_key], str):
                raise DataError(f'{where}: "{text_key}" must be a string')
            texts.append(record[text_key])
            labels.append(_label(record[label_key], where, label_key))
    if not texts:
        raise DataError(f"{file}: contains no examples")
    blank = [i for i, t in enumerate(texts) if not t.strip()]
    kept = [i for i in range(len(texts)) if texts[i].strip()]
    note = f"{len(blank)} blank text(s) dropped" if blank else ""
    classes = sorted({labels[i] for i in kept})
    if classes != [0, 1]:
        raise DataError(f"{file}: every example has label {classes} ({len(kept)} examples); a probe is trained and "
                        "scored on both classes. Fix: include examples of label 0 and label 1")
    data = TextSet(name or file.stem, tuple(texts[i] for i in kept), tuple(labels[i] for i in kept))
    positive = sum(data.labels or ())
    note = "; ".join(filter(None, [note, f"{positive} labelled 1, {len(data) - positive} labelled 0"]))
    return data, FileRecord(role, str(file), file_sha256(file), fmt, len(data), len(texts), note)


def load_labelled(path: str | os.PathLike[str], *, name: str | None = None) -> TextSet:
    """The corpus of :func:`read_labelled` (without its record).

    Example:
        >>> len(load_labelled(standins["jigsaw"]))
        120
    """
    return read_labelled(path, name=name)[0]


# Files whose text is markup around the data: never scored as held-out prose.
STRUCTURED_SUFFIXES: tuple[str, ...] = (".json", ".jsonl", ".csv", ".tsv")


def read_perplexity_text(path: str | os.PathLike[str], *, role: str = "perplexity") -> tuple[str, FileRecord]:
    """Held-out text for perplexity: a text file (``.txt``, Wikitext's ``wiki.test.raw``), a
    directory holding ``wiki.test.raw``, or a local ``datasets`` dataset directory (``save_to_disk``
    of wikitext-2-raw-v1; its ``test`` split's ``text`` rows joined with ``"\n\n"`` as the papers do).

    Raises:
        DataError: missing, unreadable or empty.

    Example:
        >>> text, record = read_perplexity_text(standins["wikitext"])  # the raw Wikitext directory layout
        >>> record.note
        '2,915 characters'
    """
    source = Path(path)
    if not source.exists():
        raise DataError(f"{source}: no such perplexity text. Fix: check --mt-perplexity-data")
    if source.is_dir() and (source / "wiki.test.raw").is_file():
        source = source / "wiki.test.raw"
    if source.is_dir():
        text, read, fmt = _dataset_text(source)
    elif source.suffix.lower() in STRUCTURED_SUFFIXES:
        # Read as text, its syntax (braces, quotes, field names, commas) would be scored as prose.
        raise DataError(f"{source}: a {source.suffix} file is structured data, not held-out text; its syntax would be "
                        "scored as text. Fix: give the plain text (e.g. wiki.test.raw or a .txt file), or a "
                        "`datasets` directory saved with save_to_disk (its test split's 'text' rows are joined)")
    else:
        text = _read_text(source)  # exactly as written: line ends and all
        read, fmt = 1, "text file"
    if not text.strip():
        raise DataError(f"{source}: the perplexity text is empty. Fix: give a held-out text (e.g. wiki.test.raw)")
    return text, FileRecord(role, str(source), file_sha256(source), fmt, 1, read,
                            f"{len(text):,} characters" + (f" from {read} rows joined with blank lines" if read > 1 else ""))


def _dataset_text(directory: Path) -> tuple[str, int, str]:
    try:
        import datasets
    except ImportError as exc:
        raise DataError(f"{directory}: a dataset directory needs the `datasets` package (pip install datasets); "
                        "or give a text file such as wiki.test.raw") from exc
    try:
        loaded = datasets.load_from_disk(str(directory))
    except Exception as exc:
        raise DataError(f"{directory}: not a dataset saved with save_to_disk ({type(exc).__name__}: {exc}). "
                        "Fix: give wiki.test.raw or a directory holding it") from exc
    split = "dataset"
    if isinstance(loaded, datasets.DatasetDict):
        if "test" not in loaded:
            raise DataError(f"{directory}: dataset has splits {sorted(loaded)}, no 'test'. Fix: save the test split")
        loaded, split = loaded["test"], "test split"
    if "text" not in loaded.column_names:
        raise DataError(f"{directory}: dataset has columns {loaded.column_names}, no 'text'")
    rows = list(loaded["text"])
    return "\n\n".join(rows), len(rows), f"datasets {split}, 'text' joined with \\n\\n (papers)"


@dataclass(frozen=True)
class F1Items:
    """F1 data: prompts and, where the file gives one, the true continuation (``gold``).

    With ``golds[i] is None`` the prompt is a whole sentence whose first ``prompt_tokens`` tokens
    are the prompt and whose next tokens are the truth (the embedded pair's ``f1.jsonl``);
    otherwise ``golds[i]`` is what truly follows ``prompts[i]`` (Lee et al.'s ``wiki_samples.jsonl``;
    a gold that repeats the prompt has it removed when read).

    Example:
        >>> items = F1Items("wiki", ("The cat",), (" sat on the mat",))
        >>> len(items), items.golds[0]
        (1, ' sat on the mat')
    """

    name: str
    prompts: tuple[str, ...]
    golds: tuple[str | None, ...]
    origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompts", tuple(self.prompts))
        object.__setattr__(self, "golds", tuple(self.golds))
        if len(self.golds) != len(self.prompts):
            raise DataError(f"F1 set {self.name!r}: {len(self.prompts)} prompts but {len(self.golds)} golds")
        object.__setattr__(self, "origins", tuple(self.origins) or tuple(f"item {i}" for i in range(len(self.prompts))))

    @classmethod
    def sentences(cls, data: TextSet) -> F1Items:
        """Whole sentences, no gold (prompt = first tokens, truth = the next ones)."""
        return cls(data.name, data.texts, (None,) * len(data))

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def texts(self) -> tuple[str, ...]:
        return self.prompts

    @cached_property
    def sha256(self) -> str:
        digest = hashlib.sha256()
        for prompt, gold in zip(self.prompts, self.golds, strict=True):
            for part in (prompt, "\x00none" if gold is None else gold):
                encoded = part.encode("utf-8")
                digest.update(len(encoded).to_bytes(8, "little") + encoded)
        return digest.hexdigest()

    def head(self, n: int) -> F1Items:
        return F1Items(self.name, self.prompts[:n], self.golds[:n], self.origins[:n])


def read_f1_items(path: str | os.PathLike[str], *, name: str | None = None,
                  role: str = "f1") -> tuple[F1Items, FileRecord]:
    """Read F1 data: JSONL ``{"prompt": sentence}`` or ``{"prompt": ..., "gold": ...}`` (Lee et al.).

    Raises:
        DataError: a line without a prompt, a gold that is not a string, or a gold with nothing
            after the prompt (named by file and line).

    Example:
        >>> items, record = read_f1_items(standins["wiki_samples"])  # {"prompt", "gold"} per line
        >>> len(items), record.count
        (40, 40)
    """
    file = Path(path)
    records = _json_records(file)
    prompts: list[str] = []
    golds: list[str | None] = []
    origins: list[str] = []
    repeated = 0
    for number, record in records:
        where = f"{file}:{number}"
        prompt = _prompt_text(file, number, record)
        gold = record.get("gold")
        if gold is not None:
            if not isinstance(gold, str):
                raise DataError(f'{where}: "gold" must be a string, got {type(gold).__name__}')
            if gold.startswith(prompt):  # a gold that repeats its prompt (prompt + continuation)
                gold, repeated = gold[len(prompt):], repeated + 1
            if not gold.strip():
                raise DataError(f'{where}: "gold" has no continuation after the prompt. Fix: give the true '
                                "continuation of the prompt, or drop the line")
        prompts.append(prompt)
        golds.append(gold)
        origins.append(where)
    if not prompts:
        raise DataError(f"{file}: contains no F1 items")
    with_gold = sum(g is not None for g in golds)
    if 0 < with_gold < len(golds):
        raise DataError(f'{file}: {with_gold} of {len(golds)} lines have "gold"; give it on every line or none')
    fmt = 'jsonl prompt + gold (truth = gold)' if with_gold else "jsonl prompt = sentence (truth = its next tokens)"
    note = f"{repeated} gold(s) repeated the prompt, which was removed" if repeated else ""
    items = F1Items(name or file.stem, tuple(prompts), tuple(golds), tuple(origins))
    return items, FileRecord(role, str(file), file_sha256(file), fmt, len(items), len(records), note)


Truncation = Literal["first", "last"]
TRUNCATIONS: tuple[str, ...] = ("first", "last")


def truncate(ids: Sequence[int], max_tokens: int, keep: Truncation = "first") -> list[int]:
    """The first (papers' tokenizer call: ``truncation=True``) or last ``max_tokens`` tokens.

    Example:
        >>> truncate([1, 2, 3], 2), truncate([1, 2, 3], 2, "last")
        ([1, 2], [2, 3])
    """
    if keep not in TRUNCATIONS:
        raise UsageError(f"truncation must be 'first' or 'last', got {keep!r}")
    return list(ids[:max_tokens] if keep == "first" else ids[-max_tokens:])


def start_tokens(tokenizer: Any) -> tuple[int, ...]:
    """The ids a tokenizer puts before every text by default: Llama's ``<s>``, Gemma's ``<bos>``;
    none for GPT-2 (the papers' tokenizer call adds nothing). A model trained with them expects
    them, so every batch starts with them; a trailing special token (an EOS some tokenizers append)
    is never added to a prompt.

    Example:
        >>> start_tokens(tok)  # GPT-2's byte-level BPE adds nothing
        ()
    """
    with_specials = list(tokenizer("a")["input_ids"])
    plain = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    for at in range(len(with_specials) - len(plain) + 1):
        if with_specials[at : at + len(plain)] == plain:
            return tuple(int(i) for i in with_specials[:at])
    return ()


def without_start_tokens(mask: torch.Tensor, n: int) -> torch.Tensor:
    """``mask [b, pos]`` with each row's first ``n`` real positions (its start tokens) cleared: pooling
    over a text's own tokens, not over a BOS whose residual is the same for every text.

    Example:
        >>> without_start_tokens(torch.tensor([[0, 1, 1, 1]]), 1)
        tensor([[0, 0, 1, 1]])
    """
    if n == 0:
        return mask
    first = (mask.cumsum(dim=1) <= n) & (mask > 0)
    return mask * (~first).to(mask.dtype)


def left_padded_batch(tokenizer: Any, texts: Sequence[str], *, max_tokens: int,
                      device: str | torch.device = "cpu", keep: Truncation = "first") -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenise ``texts``, keep each one's first (or, ``keep="last"``, last) ``max_tokens`` tokens, put
    the tokenizer's `start_tokens` (a BOS, where it adds one) before them, and left-pad to a batch.

    Returns:
        ``(input_ids [b, pos], attention_mask [b, pos])`` with real tokens flush right.

    Raises:
        UsageError: no texts, or ``max_tokens < 1``.
        DataError: a text with no tokens (an empty prompt cannot be continued or pooled).

    Example:
        >>> ids, mask = left_padded_batch(tok, ["a b", "a"], max_tokens=32)
    """
    if len(texts) == 0:
        raise UsageError("left_padded_batch got an empty list of texts; give at least one")
    if max_tokens < 1:
        raise UsageError(f"max_tokens must be >= 1, got {max_tokens}")
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    prefix = list(start_tokens(tokenizer))
    rows: list[list[int]] = []
    for i, ids in enumerate(encoded):
        if not ids:
            raise DataError(f"text {i} ({texts[i]!r}) has no tokens; remove empty prompts")
        rows.append(prefix + truncate(ids, max_tokens, keep))
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
