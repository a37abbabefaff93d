"""Content-addressed cache of computed results, and the baseline store with its comparisons.

`Cache` keys a value by the sha256 of the canonical JSON of ``(kind, key)``; values live in an
in-memory layer and, unless the cache is memory-only, in ``ROOT/KIND/ab/abcdef....npz``: one
``.npz`` holding the value's structure as JSON plus its arrays/tensors (never pickle). Writes go
to a temporary file that is then ``os.replace``d, so a reader (another pytest-xdist worker) sees
either nothing or a complete file; a per-entry lock file keeps two workers from computing the
same entry twice. Reading an entry refreshes its modification time, so ``Cache.prune`` can drop
the least recently used entries when the cache outgrows ``--mt-cache-max-size``.

Baselines are whole `mechtests-report/2` documents under ``.mechtests/baselines/NAME/NNNN.json``
(every save kept; ``--mt-baseline-dir`` moves the store); baselines saved as ``/1`` still load.

Example:
    >>> cache = Cache(None)                         # memory only (--mt-no-cache)
    >>> cache.get_or_compute("demo", {"n": 3}, lambda: [1, 2, 3])
    [1, 2, 3]
    >>> cache.get_or_compute("demo", {"n": 3}, lambda: 1 / 0)  # not recomputed
    [1, 2, 3]
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import io
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np

from mechtests.errors import DataError, UsageError

try:  # POSIX advisory locks; without them (Windows) workers may just compute twice.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

T = TypeVar("T")
FORMAT_VERSION = 1
REPORT_SCHEMA = "mechtests-report/2"
#: Report versions a baseline or report file may have: /1 files (before data provenance and the
#: comparison moved into their own sections) are still read.
READABLE_SCHEMAS = ("mechtests-report/1", REPORT_SCHEMA)


def _canonical(obj: Any, where: str = "key") -> Any:
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise TypeError(f"cache {where} contains non-finite float {obj}")
        return obj
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return _canonical(obj.item(), where)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise TypeError(
        f"cache {where} has a value of type {type(obj).__name__}; keys must be JSON data "
        "(use fingerprints, hashes and .key() strings, not objects)"
    )


def key_hash(kind: str, key: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``(format, kind, key)``.

    Example:
        >>> key_hash("x", {"a": 1, "b": 2}) == key_hash("x", {"b": 2, "a": 1})
        True
    """
    doc = {"format": FORMAT_VERSION, "kind": kind, "key": _canonical(key)}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


# ---- value encoding: a JSON tree whose leaves point at arrays stored next to it -------------

def _encode(value: Any, arrays: list[np.ndarray]) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError("cannot cache an object-dtype array")
        arrays.append(np.ascontiguousarray(value))
        return {"t": "nd", "i": len(arrays) - 1}
    if type(value).__module__ == "torch" and type(value).__name__ in ("Tensor", "Parameter"):
        t = value.detach().cpu()
        dtype = str(t.dtype).removeprefix("torch.")
        # numpy has no bfloat16: store float32, restore the dtype on load (exact round trip).
        arr = t.float().numpy() if dtype == "bfloat16" else t.numpy()
        arrays.append(np.ascontiguousarray(arr))
        return {"t": "pt", "i": len(arrays) - 1, "dtype": dtype}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        if not cls.__module__.startswith("mechtests"):
            raise TypeError(f"only mechtests dataclasses can be cached, not {cls.__module__}.{cls.__qualname__}")
        fields = {f.name: _encode(getattr(value, f.name), arrays) for f in dataclasses.fields(value) if f.init}
        return {"t": "dc", "cls": f"{cls.__module__}:{cls.__qualname__}", "f": fields}
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("cached mappings need str keys")
        return {"t": "dict", "v": {k: _encode(v, arrays) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        return {"t": "tuple" if isinstance(value, tuple) else "list", "v": [_encode(v, arrays) for v in value]}
    raise TypeError(f"cannot cache a value of type {type(value).__name__}")


def _decode(node: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    if not isinstance(node, dict):
        return node
    t = node["t"]
    if t == "nd":
        return arrays[f"a{node['i']}"]
    if t == "pt":
        import torch

        return torch.from_numpy(np.array(arrays[f"a{node['i']}"])).to(getattr(torch, node["dtype"]))
    if t == "dc":
        module, qualname = node["cls"].split(":")
        if not module.startswith("mechtests"):
            raise TypeError(f"refusing to rebuild {module}.{qualname} from the cache")
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        return obj(**{k: _decode(v, arrays) for k, v in node["f"].items()})
    if t == "dict":
        return {k: _decode(v, arrays) for k, v in node["v"].items()}
    items = [_decode(v, arrays) for v in node["v"]]
    return tuple(items) if t == "tuple" else items


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers never see a partial file.

    The file gets the mode a plain ``open()`` would give it (``0o666`` less the umask: 0644 by
    default), not mkstemp's 0600, so a CI artifact server running as another user can read it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str, *, where: str = "--mt-cache-max-size") -> int:
    """Bytes in a size such as ``500MB``, ``2GB``, ``1.5GiB`` or ``0`` (plain numbers are bytes).

    Example:
        >>> parse_size("2GB"), parse_size("1KiB"), parse_size("0")
        (2000000000, 1024, 0)
    """
    match = _SIZE.match(str(text))
    if match is None:
        raise UsageError(f"{where}: {text!r} is not a size. Fix: a number with an optional unit, "
                         "e.g. 500MB, 2GB, 1.5GiB (plain numbers are bytes).")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "B").lower()])


def format_size(n_bytes: float) -> str:
    """``1234567`` -> ``'1.2 MB'`` (decimal units, as ``parse_size`` reads them)."""
    for unit, factor in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n_bytes >= factor:
            return f"{n_bytes / factor:.1f} {unit}"
    return f"{int(n_bytes)} B"


@dataclass(frozen=True)
class PruneResult:
    """What `Cache.prune` did: entries removed, bytes freed, bytes left in the cache."""

    removed: int
    freed_bytes: int
    kept_bytes: int


@dataclass
class CacheStats:
    """Counters, for tests and the report: where each `get_or_compute` was answered."""

    memory_hits: int = 0
    disk_hits: int = 0
    computed: int = 0


class Cache:
    """Content-addressed cache with an in-memory layer; ``root=None`` keeps it in memory only.

    Values: None, bool, int, float, str, numpy arrays, torch tensors (restored on the CPU),
    lists, tuples, str-keyed dicts and mechtests dataclasses built from those.
    """

    def __init__(self, root: Path | None) -> None:
        self.root = Path(root) if root is not None else None
        self._memory: dict[str, Any] = {}
        self.stats = CacheStats()
        # Said once each, for the run summary: bad entries dropped, and why the disk layer stopped.
        self.notes: list[str] = []
        self.disabled: str | None = None  # set when the directory cannot be written: memory only from then on

    def path_for(self, kind: str, key: Mapping[str, Any]) -> Path | None:
        """Where the entry lives on disk (None for a memory-only cache)."""
        if self.root is None:
            return None
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", kind):
            raise UsageError(f"cache kind {kind!r} must be a simple name (letters, digits, _ . -).")
        h = key_hash(kind, key)
        return self.root / kind / h[:2] / f"{h}.npz"

    def _read(self, path: Path) -> tuple[bool, Any]:
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}  # the zip's CRC-32 catches flipped bits here
            tree = json.loads(arrays.pop("__tree__").tobytes().decode())
            return True, _decode(tree, arrays)
        except FileNotFoundError:
            return False, None
        except Exception as exc:
            self._note(f"cache entry {path} was unreadable ({type(exc).__name__}: {str(exc)[:80]}); dropped, "
                       "recomputed and rewritten")
            with contextlib.suppress(OSError):
                path.unlink()
            return False, None

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def _disable(self, exc: OSError) -> None:
        """The disk layer failed to write: keep going in memory, and say so once."""
        if self.disabled is None:
            self.disabled = f"{type(exc).__name__}: {exc.strerror or exc}"
            self._note(f"cache {self.root} cannot be written ({self.disabled}); this run keeps its results in memory "
                       "only. Fix: --mt-cache-dir DIR on a writable disk with room, or --mt-cache-max-size to "
                       "keep it small")

    def _write(self, path: Path, value: Any) -> None:
        arrays: list[np.ndarray] = []
        tree = _encode(value, arrays)
        buf = io.BytesIO()
        payload = {f"a{i}": a for i, a in enumerate(arrays)}
        payload["__tree__"] = np.frombuffer(json.dumps(tree).encode(), dtype=np.uint8)
        np.savez(buf, **payload)  # type: ignore[arg-type]  # numpy's stubs type **kwds as allow_pickle
        atomic_write_bytes(path, buf.getvalue())

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        if fcntl is None:
            yield
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def contains(self, kind: str, key: Mapping[str, Any]) -> bool:
        """Whether ``(kind, key)`` is held (in memory, or an entry file on disk), without reading it.

        Example:
            >>> c = Cache(None); _ = c.get_or_compute("sq", {"x": 4}, lambda: 16); c.contains("sq", {"x": 4})
            True
        """
        if f"{kind}/{key_hash(kind, key)}" in self._memory:
            return True
        path = self.path_for(kind, key)
        return path is not None and path.is_file()

    def get_or_compute(self, kind: str, key: Mapping[str, Any], compute: Callable[[], T]) -> T:
        """The cached value for ``(kind, key)``, computing and storing it on a miss.

        Example:
            >>> Cache(None).get_or_compute("sq", {"x": 4}, lambda: 16)
            16
        """
        h = key_hash(kind, key)
        mem_key = f"{kind}/{h}"
        if mem_key in self._memory:
            self.stats.memory_hits += 1
            return self._memory[mem_key]
        path = self.path_for(kind, key)
        found = False
        if path is not None:
            found, value = self._read(path)
            if found:
                self.stats.disk_hits += 1
                with contextlib.suppress(OSError):
                    os.utime(path)  # recently used: the last to be pruned
        if not found and (path is None or self.disabled is not None):
            value = compute()
            self.stats.computed += 1
        elif not found:
            assert path is not None
            with contextlib.ExitStack() as stack:
                locked = True
                try:
                    stack.enter_context(self._locked(path))
                except OSError as exc:  # read-only or gone: degrade to memory, never fail a test
                    self._disable(exc)
                    locked = False
                if locked:
                    found, value = self._read(path)  # another worker may have just written it
                if found:
                    self.stats.disk_hits += 1
                else:
                    value = compute()  # its own errors propagate: only the cache's are caught
                    self.stats.computed += 1
                    if locked:
                        try:
                            self._write(path, value)
                        except OSError as exc:  # full or read-only disk
                            self._disable(exc)
        self._memory[mem_key] = value
        return value

    def size_bytes(self) -> int:
        """Bytes the cache's entries take on disk (0 for a memory-only cache)."""
        return sum(size for _, size, _ in self._entries())

    def _entries(self) -> list[tuple[float, int, Path]]:
        """``(mtime, size, path)`` of every stored entry, least recently used first."""
        if self.root is None or not self.root.is_dir():
            return []
        out = []
        for path in self.root.glob("*/*/*.npz"):
            with contextlib.suppress(FileNotFoundError):  # another process may be pruning
                info = path.stat()
                out.append((info.st_mtime, info.st_size, path))
        return sorted(out)

    def _remove_orphans(self, *, older_than_s: float = 3600.0) -> int:
        """Delete what killed writers leave behind: ``.tmp`` files, and ``.lock`` files without an
        entry, untouched for ``older_than_s`` (a live writer's are seconds old). Returns how many."""
        if self.root is None or not self.root.is_dir():
            return 0
        cutoff, removed = time.time() - older_than_s, 0
        for path in list(self.root.glob("*/*/.*.tmp")) + list(self.root.glob("*/*/*.lock")):
            with contextlib.suppress(OSError):
                if path.suffix == ".lock" and path.with_suffix(".npz").exists():
                    continue
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
        return removed

    def prune(self, max_bytes: int, *, keep_used_since: float | None = None) -> PruneResult:
        """Delete least recently used entries until the cache holds at most ``max_bytes``.

        Entries read or written at or after ``keep_used_since`` (a ``time.time()``, e.g. the
        session's start) are kept even when that leaves the cache above the limit: they are
        what the current run stands on.

        Example:
            >>> Cache(None).prune(0)
            PruneResult(removed=0, freed_bytes=0, kept_bytes=0)
        """
        entries = self._entries()
        self._remove_orphans()
        total = sum(size for _, size, _ in entries)
        removed = freed = 0
        for mtime, size, path in entries:
            if total <= max_bytes:
                break
            if keep_used_since is not None and mtime >= keep_used_since:
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
                freed += size
            total -= size
            with contextlib.suppress(OSError):
                path.with_suffix(".lock").unlink()
        return PruneResult(removed, freed, total)


# ---- baselines -----------------------------------------------------------------------------

class BaselineStore:
    """Named baselines with history: ``root/NAME/0001.json``, ``0002.json``, ... (never overwritten).

    ``NAME`` resolves to its latest save, ``NAME@N`` to save N, a path to that file. A baseline
    saved by an older mechtests as ``root/NAME.json`` still resolves (as ``NAME``). Saves are safe
    under concurrent runs and xdist: each claims its number with an exclusive create.

    Example:
        >>> store = BaselineStore(tmp_path / "baselines")
        >>> store.save("accepted", doc).name, store.save("accepted", doc).name
        ('0001.json', '0002.json')
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def history(self, name: str) -> list[Path]:
        """Every save of ``name``, oldest first (a legacy ``NAME.json`` first of all)."""
        saves = sorted((self.root / name).glob("[0-9][0-9][0-9][0-9].json")) if (self.root / name).is_dir() else []
        legacy = self.root / f"{name}.json"
        return ([legacy] if legacy.is_file() else []) + saves

    def path(self, name: str) -> Path:
        """The latest save of ``name`` (where it would be, when there is none yet)."""
        saves = self.history(name)
        return saves[-1] if saves else self.root / name / "0001.json"

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        dirs = {p.name for p in self.root.iterdir() if p.is_dir() and self.history(p.name)}
        return sorted(dirs | {p.stem for p in self.root.glob("*.json")})

    def resolve(self, value: str, *, where: str = "--mt-compare", base: Path | None = None) -> Path:
        """A stored baseline's path from ``NAME``, ``NAME@N`` or ``PATH``; UsageError when there is none."""
        candidates: list[Path] = []
        if value.endswith(".json") or os.sep in value or "/" in value:
            p = Path(os.path.expanduser(value))
            candidates.append(p if p.is_absolute() or base is None else base / p)
        name, _, number = value.partition("@")
        if number:
            if not number.isdigit():
                raise UsageError(f"{where}: {value!r}: after '@' comes a save number, e.g. {name}@2")
            saves = self.history(name)
            if 1 <= int(number) <= len(saves):
                return saves[int(number) - 1]
            raise UsageError(f"{where}: baseline {name!r} has {len(saves)} save(s), no number {number}. "
                             f"Fix: {name}@1 .. {name}@{len(saves)}, or {name} for the latest.")
        if self.history(name):
            candidates.append(self.path(name))
        for c in candidates:
            if c.is_file():
                return c
        known = ", ".join(self.names()) or "none yet"
        looked = ", ".join(str(c) for c in candidates) or str(self.root / name)
        raise UsageError(
            f"{where}: no baseline {value!r} (looked for {looked}). "
            f"Stored baselines in {self.root}: {known}. Fix: create one with --mt-save NAME, or give a report path."
        )

    def save(self, name: str, doc: Mapping[str, Any]) -> Path:
        """Store ``doc`` as the next save of ``name``; earlier saves are kept."""
        directory = self.root / name
        directory.mkdir(parents=True, exist_ok=True)
        data = (json.dumps(doc, indent=2, sort_keys=False) + "\n").encode()
        number = len([p for p in self.history(name) if p.parent == directory]) + 1
        staged = directory / f".staged-{os.getpid()}-{time.time_ns()}.json"
        atomic_write_bytes(staged, data)
        try:
            while True:
                path = directory / f"{number:04d}.json"
                try:  # a hard link claims the number atomically, with the whole file already in place
                    os.link(staged, path)
                    return path
                except FileExistsError:  # another run saved this number a moment ago
                    number += 1
        finally:
            with contextlib.suppress(FileNotFoundError):
                staged.unlink()


def load_report(path: Path, *, kind: str = "baseline", fix: str = "re-create it with --mt-save") -> dict[str, Any]:
    """Read a report/baseline document: a ``/2`` one must match the shipped JSON Schema, a ``/1``
    one (older mechtests) is read as it is; anything else is a `DataError` naming the file
    (``kind``: what it is called in the message) and ``fix``. The one reader of reports
    (baselines, --mt-compare, ``python -m mechtests.results``)."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{kind} {str(path)!r} is not readable JSON: {exc}. Fix: {fix}.") from exc
    found = doc.get("schema") if isinstance(doc, dict) else None
    if found not in READABLE_SCHEMAS:
        raise DataError(f"{kind} {str(path)!r} is not a mechtests report (schema {found!r}; this mechtests reads "
                        f"{', '.join(READABLE_SCHEMAS)}). Fix: {fix}.")
    if found == REPORT_SCHEMA:
        from mechtests.report import check_report

        try:
            check_report(doc)
        except ValueError as exc:
            raise DataError(f"{kind} {str(path)!r} is a damaged {REPORT_SCHEMA} document ({exc}). "
                            f"Fix: {fix}, or restore the file.") from None
    return doc


def report_inputs(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Each pair's recorded inputs (/2: ``pairs.NAME.inputs``; /1: ``config.inputs``)."""
    if doc.get("schema") == REPORT_SCHEMA:
        return {name: pair.get("inputs") for name, pair in (doc.get("pairs") or {}).items()}
    return dict((doc.get("config") or {}).get("inputs") or {})


Field = Literal["estimate", "ci_low", "ci_high", "verdict"]


@dataclass(frozen=True)
class Tolerance:
    """One term of ``--mt-compare-fail``: how far ``field`` may move before a test fails."""

    field: Field
    amount: float | None = None  # None for "verdict": any flip
    relative: bool = False

    def describe(self) -> str:
        if self.field == "verdict":
            return "verdict: any worse verdict"
        return f"{self.field}: {self.amount * 100:g}% relative" if self.relative else f"{self.field}: {self.amount:g} absolute"  # type: ignore[operator]


_TERM = re.compile(r"^(estimate|ci_low|ci_high)\s*:\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(%?)$")


def parse_compare_fail(expr: str, *, where: str = "--mt-compare-fail") -> tuple[Tolerance, ...]:
    """Parse e.g. ``"estimate:0.05,verdict"`` or ``"estimate:10%"``; UsageError when malformed.

    Example:
        >>> parse_compare_fail("estimate:10%, verdict")[0].relative
        True
    """
    terms = [t.strip() for t in str(expr).split(",")]
    if not terms or any(not t for t in terms):
        raise UsageError(f"{where}: empty term in {expr!r}. Fix: e.g. 'estimate:0.05', 'estimate:10%', 'verdict'.")
    out: list[Tolerance] = []
    for term in terms:
        if term == "verdict":
            out.append(Tolerance("verdict"))
            continue
        m = _TERM.match(term)
        if not m:
            raise UsageError(
                f"{where}: cannot parse {term!r} in {expr!r}. Fix: comma-separated terms "
                "FIELD:AMOUNT (FIELD in estimate, ci_low, ci_high; AMOUNT absolute like 0.05 or "
                "relative like 10%) or 'verdict' (fail on any verdict change)."
            )
        amount = float(m.group(2))
        out.append(Tolerance(m.group(1), amount / 100 if m.group(3) else amount, bool(m.group(3))))  # type: ignore[arg-type]
    return tuple(out)


def claim_key(record: Mapping[str, Any], *, ignore_pair: bool = False) -> tuple[str, str]:
    """Identity of a claim across runs: (test node id, claim name).

    With ``ignore_pair`` the pair's name is taken out of the node id's parameter part, so one pair
    compared with a baseline of one pair matches whatever either is called.

    Example:
        >>> claim_key({"nodeid": "t.py::t[acc-100of98304]", "claim": "c", "pair": "acc"}, ignore_pair=True)
        ('t.py::t[*-100of98304]', 'c')
    """
    nodeid = str(record["nodeid"])
    pair = record.get("pair")
    if ignore_pair and pair and "[" in nodeid and nodeid.endswith("]"):
        head, params = nodeid[:-1].split("[", 1)
        nodeid = f"{head}[{replace_pair_id(params, str(pair), '*')}]"
    return (nodeid, str(record["claim"]))


def replace_pair_id(params: str, pair: str, replacement: str = "") -> str:
    """A test's parameter id with the pair's part replaced (or, with ``""``, removed).

    Example:
        >>> replace_pair_id("acc-100of98304", "acc", "*"), replace_pair_id("acc-100of98304", "acc")
        ('*-100of98304', '100of98304')
    """
    if params == pair:
        return replacement
    if params.startswith(pair + "-"):
        return replacement + params[len(pair):] if replacement else params[len(pair) + 1:]
    if params.endswith("-" + pair):
        return params[: -len(pair)] + replacement if replacement else params[: -len(pair) - 1]
    if f"-{pair}-" in params:
        return params.replace(f"-{pair}-", f"-{replacement}-" if replacement else "-", 1)
    return params


def index_claims(doc: Mapping[str, Any], *, ignore_pair: bool = False) -> dict[tuple[str, str], Mapping[str, Any]]:
    return {claim_key(r, ignore_pair=ignore_pair): r for r in doc.get("claims", [])}


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _ci(record: Mapping[str, Any]) -> str:
    return f"CI [{_fmt(record.get('ci_low'))}, {_fmt(record.get('ci_high'))}]"


VERDICT_RANK = {"pass": 0, "inconclusive": 1, "fail": 2}


def _worse(direction: str, threshold: Any, a: float, b: float, limit: float) -> bool:
    """Whether moving from ``a`` to ``b`` goes the wrong way for the claim by more than ``limit``."""
    if direction == ">":
        return b < a - limit
    if direction == "<":
        return b > a + limit
    low, high = threshold  # within: farther from the middle of the interval is worse
    middle = (float(low) + float(high)) / 2
    return abs(b - middle) > abs(a - middle) + limit


def regressions(before: Mapping[str, Any], after: Mapping[str, Any], tolerances: tuple[Tolerance, ...]) -> list[str]:
    """Messages for each tolerance ``after`` exceeds *in the claim's wrong direction* vs ``before``.

    A number (estimate, CI bound) regresses when it moves past the tolerance the wrong way for the
    claim (down for ``>``, up for ``<``, away from the middle for ``within``); the verdict when it
    gets worse (pass -> inconclusive -> fail). Improving is never a regression. Each message names
    the claim, the pair, both values with their intervals, and the tolerance.

    Example:
        >>> before = {"claim": "c", "pair": "p", "direction": ">", "threshold": 0.3, "estimate": 0.5,
        ...           "ci_low": 0.4, "ci_high": 0.6}
        >>> regressions(before, {**before, "estimate": 0.4}, parse_compare_fail("estimate:0.05"))[0][:51]
        'claim c on pair p moved from 0.5 (CI [0.4, 0.6]) to'
        >>> regressions(before, {**before, "estimate": 0.6}, parse_compare_fail("estimate:0.05"))
        []
    """
    out = []
    direction, threshold = str(after.get("direction") or before.get("direction") or ">"), after.get("threshold")
    on = f" on pair {after['pair']}" if after.get("pair") else ""
    for tol in tolerances:
        a, b = before.get(tol.field), after.get(tol.field)
        if tol.field == "verdict":
            if VERDICT_RANK.get(str(b), 0) > VERDICT_RANK.get(str(a), 0):
                out.append(f"claim {after['claim']}{on} moved from {a} to {b}, a worse verdict ({tol.describe()}); "
                           f"estimate {_fmt(before.get('estimate'))} ({_ci(before)}) -> "
                           f"{_fmt(after.get('estimate'))} ({_ci(after)})")
            continue
        if a is None:
            continue  # nothing to regress from
        if b is None:
            worse = True  # the claim's number became undefined
        else:
            amount = float(tol.amount or 0.0)  # set for every field but "verdict" (handled above)
            limit = amount * abs(a) if tol.relative else amount
            worse = _worse(direction, threshold if threshold is not None else before.get("threshold"),
                           float(a), float(b), limit + 1e-12)
        if worse:
            out.append(f"claim {after['claim']}{on} moved from {_fmt(a)} ({_ci(before)}) to {_fmt(b)} ({_ci(after)}), "
                       f"the wrong way for '{direction} {_fmt(threshold)}' ({tol.describe()})")
    return out


# What two runs must share for their claims to be compared as like with like.
COMPARED_CONFIG = ("profile", "seed", "confidence", "n_resamples", "n_prompts", "scorer", "prompt_truncation",
                   "max_new_tokens", "max_prompt_tokens", "multiplicity")


# What a baseline saved before a setting existed was run with.
_BEFORE_THE_SETTING = {"multiplicity": "none"}


def config_differences(baseline: Mapping[str, Any], run: Mapping[str, Any]) -> list[str]:
    """``"KEY: baseline X, now Y"`` for each run setting that differs (keys the baseline lacks are
    skipped, except those whose old behaviour is known: a baseline without ``multiplicity`` was
    decided per claim).

    Example:
        >>> config_differences({"seed": 0}, {"seed": 0, "multiplicity": "bonferroni"})
        ["multiplicity: baseline 'none', now 'bonferroni'"]
    """
    out = []
    for key in COMPARED_CONFIG:
        before = baseline.get(key, _BEFORE_THE_SETTING.get(key))
        if (key in baseline or key in _BEFORE_THE_SETTING) and before != run.get(key):
            out.append(f"{key}: baseline {before!r}, now {run.get(key)!r}")
    return out


def input_differences(baseline: Mapping[str, Any], run: Mapping[str, Any]) -> list[str]:
    """Differences in the data files and probe two reports record (by sha256)."""
    out = []
    before, after = report_inputs(baseline), report_inputs(run)
    if len(before) == 1 and len(after) == 1:  # one pair each: compare whatever they are called
        before, after = {"*": next(iter(before.values()))}, {"*": next(iter(after.values()))}
    for pair in sorted(set(before) & set(after)):
        b, a = before[pair] or {}, after[pair] or {}
        for role in ("challenge", "probe", "perplexity", "f1"):
            sb = ((b.get("data") or {}).get(role) or {}).get("sha256")
            sa = ((a.get("data") or {}).get(role) or {}).get("sha256")
            if sb and sa and sb != sa:
                out.append(f"{role} data: baseline sha256 {sb[:12]}, now {sa[:12]}")
        pb, pa = (b.get("probe") or {}).get("sha256"), (a.get("probe") or {}).get("sha256")
        if pb and pa and pb != pa:
            out.append(f"probe file: baseline sha256 {pb[:12]}, now {pa[:12]}")
    return out
