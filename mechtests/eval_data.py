"""A pair's evaluation data, role by role: each file found, read on first use, and recorded as read.

Four roles, each needed only by the claims that use it:

| role | what | option | names in a ``--mt-data`` directory |
|---|---|---|---|
| challenge | prompts continued for toxicity | ``--mt-prompts`` | challenge.jsonl, challenge_prompts.jsonl (Lee |
|  |  |  | et al.), prompts.jsonl (RealToxicityPrompts) |
| probe | labelled texts for the probe | ``--mt-probe-data`` | probe.jsonl, probe.csv |
| perplexity | held-out text | ``--mt-perplexity-data`` | perplexity.txt, wiki.test.raw, wikitext-2/, wikitext-2-raw-v1/ |
| f1 | prompts with true continuations | ``--mt-f1-data`` | f1.jsonl, wiki_samples.jsonl (Lee et al.) |

A role's source is its option, else the data directory's file, else (only when no data
directory was given) the embedded pair's. A role with no source is an error when a claim needs
it, naming the option that provides it. Every file read leaves a
:class:`mechtests.data.FileRecord` (path, sha256, format, counts, what was filtered).

Example:
    >>> data = EvalData(challenge=TextSet("p", ("Hello",)))
    >>> data.challenge.texts, data.records()
    (('Hello',), [])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mechtests.data import F1Items, FileRecord, TextSet, read_f1_items, read_labelled, read_perplexity_text, read_prompts
from mechtests.errors import DataError

Role = Literal["challenge", "probe", "perplexity", "f1"]
ROLES: tuple[Role, ...] = ("challenge", "probe", "perplexity", "f1")
ROLE_OPTIONS: dict[str, str] = {"challenge": "--mt-prompts", "probe": "--mt-probe-data",
                                "perplexity": "--mt-perplexity-data", "f1": "--mt-f1-data"}
DIRECTORY_NAMES: dict[str, tuple[str, ...]] = {
    "challenge": ("challenge.jsonl", "challenge_prompts.jsonl", "prompts.jsonl"),
    "probe": ("probe.jsonl", "probe.csv"),
    "perplexity": ("perplexity.txt", "wiki.test.raw", "wikitext-2", "wikitext-2-raw-v1"),
    "f1": ("f1.jsonl", "wiki_samples.jsonl"),
}


@dataclass(frozen=True)
class DataSources:
    """Where each role's data comes from (``None``: not available) and why.

    Attributes:
        paths: role -> file or dataset directory.
        origins: role -> where that choice came from, in words (``"--mt-f1-data"``, ...).
        missing: role -> why it has no source (for the error when a claim needs it).
        all_prompts: use every RealToxicityPrompts prompt, not only the challenging ones.
    """

    paths: Mapping[str, Path] = field(default_factory=dict)
    origins: Mapping[str, str] = field(default_factory=dict)
    missing: Mapping[str, str] = field(default_factory=dict)
    all_prompts: bool = False


def files_in_directory(directory: Path) -> dict[str, Path]:
    """role -> the file of that role in ``directory`` (the names above).

    Raises:
        DataError: the directory does not exist, or holds two files for one role.
    """
    if not directory.is_dir():
        raise DataError(f"{directory}: no such data directory. Fix: check --mt-data")
    found: dict[str, Path] = {}
    for role, names in DIRECTORY_NAMES.items():
        present = [directory / n for n in names if (directory / n).exists()]
        if len(present) > 1:
            raise DataError(f"{directory}: holds {len(present)} files for the {role} data "
                            f"({', '.join(p.name for p in present)}). Fix: keep one, or name it with {ROLE_OPTIONS[role]}")
        if present:
            found[role] = present[0]
    return found


def resolve_sources(explicit: Mapping[str, Path | None], directory: Path | None, *, directory_where: str,
                    default_directory: Path | None, all_prompts: bool = False) -> DataSources:
    """Each role's source: its option > ``directory``'s file > ``default_directory``'s (only when no
    ``directory`` is given).

    Example:
        >>> s = resolve_sources({"f1": Path("w.jsonl")}, None, directory_where="--mt-data", default_directory=None)
        >>> s.paths["f1"].name, s.origins["f1"], "challenge" in s.missing
        ('w.jsonl', '--mt-f1-data', True)
    """
    paths: dict[str, Path] = {}
    origins: dict[str, str] = {}
    missing: dict[str, str] = {}
    in_dir = files_in_directory(directory) if directory is not None else {}
    in_default = files_in_directory(default_directory) if directory is None and default_directory is not None else {}
    for role in ROLES:
        given = explicit.get(role)
        if given is not None:
            paths[role], origins[role] = Path(given), ROLE_OPTIONS[role]
        elif role in in_dir:
            paths[role], origins[role] = in_dir[role], f"{directory_where} {directory}"
        elif role in in_default:
            paths[role], origins[role] = in_default[role], "the embedded pair's data (no --mt-data given)"
        elif directory is not None:
            missing[role] = (f"{directory_where} {directory} has none of {', '.join(DIRECTORY_NAMES[role])}, "
                             f"and {ROLE_OPTIONS[role]} is not given")
        else:
            missing[role] = f"{ROLE_OPTIONS[role]} is not given"
    return DataSources(paths, origins, missing, all_prompts)


class EvalData:
    """Held-out evaluation data of a pair (PAPER.md's protocol), each role read on first use.

    Values passed directly are used as they are (tests, notebooks); the others are read from
    ``sources`` the first time a claim asks for them.

    Attributes:
        challenge: toxic-eliciting prompts, continued greedily for toxicity.
        probe_data: labelled texts (1 = toxic) for the probe.
        perplexity_text: held-out text scored in non-overlapping windows.
        f1_sentences: F1 items (sentences, or prompts with a gold continuation).
    """

    def __init__(self, challenge: TextSet | None = None, probe_data: TextSet | None = None,
                 perplexity_text: str | None = None, f1_sentences: TextSet | F1Items | None = None, *,
                 sources: DataSources | None = None) -> None:
        self.sources = sources or DataSources()
        self._values: dict[str, Any] = {role: value for role, value in
                                        (("challenge", challenge), ("probe", probe_data),
                                         ("perplexity", perplexity_text), ("f1", f1_sentences)) if value is not None}
        self._records: dict[str, FileRecord] = {}

    def available(self, role: str) -> bool:
        """True when ``role`` has data (given, or a source to read it from)."""
        return role in self._values or role in self.sources.paths

    def load(self, role: str) -> Any:
        """The data of ``role`` (read and recorded on first use).

        Raises:
            DataError: no source for it, or its file is malformed (named, with the line).
        """
        if role not in self._values:
            path = self.sources.paths.get(role)
            if path is None:
                why = self.sources.missing.get(role, f"{ROLE_OPTIONS[role]} is not given")
                raise DataError(f"no {role} data for the claims that need it: {why}. Fix: pass "
                                f"{ROLE_OPTIONS[role]} FILE, or put {DIRECTORY_NAMES[role][0]} in the --mt-data directory")
            value, record = _READERS[role](path, self.sources)
            self._values[role] = value
            self._records[role] = record
        return self._values[role]

    @property
    def challenge(self) -> TextSet:
        return self.load("challenge")

    @property
    def probe_data(self) -> TextSet:
        return self.load("probe")

    @property
    def perplexity_text(self) -> str:
        return self.load("perplexity")

    @property
    def f1_sentences(self) -> TextSet | F1Items:
        return self.load("f1")

    def records(self) -> list[FileRecord]:
        """The files read so far, in role order."""
        return [self._records[r] for r in ROLES if r in self._records]

    def provenance(self) -> dict[str, Any]:
        """role -> what was read (path, sha256, format, counts, note, origin) or why there is none."""
        out: dict[str, Any] = {}
        for role in ROLES:
            if role in self._records:
                out[role] = {**self._records[role].to_dict(), "origin": self.sources.origins.get(role)}
            elif role in self._values:
                out[role] = {"role": role, "path": None, "origin": "given in code"}
            elif role in self.sources.paths:
                out[role] = {"role": role, "path": str(self.sources.paths[role]), "origin": self.sources.origins[role],
                             "note": "not read: no claim of this run needed it"}
        return out


def _challenge(path: Path, sources: DataSources) -> tuple[TextSet, FileRecord]:
    return read_prompts(path, all_prompts=sources.all_prompts)


def _probe(path: Path, _sources: DataSources) -> tuple[TextSet, FileRecord]:
    return read_labelled(path)


def _perplexity(path: Path, _sources: DataSources) -> tuple[str, FileRecord]:
    return read_perplexity_text(path)


def _f1(path: Path, _sources: DataSources) -> tuple[F1Items, FileRecord]:
    return read_f1_items(path)


_READERS: dict[str, Any] = {"challenge": _challenge, "probe": _probe, "perplexity": _perplexity, "f1": _f1}
