"""mechtests.storage: content-addressed cache (round trips, atomicity, xdist safety), baselines."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mechtests.errors import UsageError
from mechtests.stats import Estimate
from mechtests.storage import (
    BaselineStore,
    Cache,
    PruneResult,
    Tolerance,
    claim_key,
    key_hash,
    load_report,
    parse_compare_fail,
    regressions,
)


def test_key_hash_is_canonical_and_content_sensitive() -> None:
    assert key_hash("k", {"a": 1, "b": [1, 2]}) == key_hash("k", {"b": (1, 2), "a": 1})
    assert key_hash("k", {"a": 1}) != key_hash("k", {"a": 2})
    assert key_hash("k", {"a": 1}) != key_hash("j", {"a": 1})
    assert len(key_hash("k", {})) == 64
    with pytest.raises(TypeError, match="JSON data"):
        key_hash("k", {"model": object()})
    with pytest.raises(TypeError, match="non-finite"):
        key_hash("k", {"x": float("nan")})


def test_round_trip_of_every_supported_value(tmp_path: Path) -> None:
    value = {
        "array": np.arange(6, dtype=np.float64).reshape(2, 3),
        "ints": np.array([1, 2, 3], dtype=np.int64),
        "tensor": torch.linspace(0, 1, 5),
        "bf16": torch.tensor([1.5, -2.25], dtype=torch.bfloat16),
        "texts": ("a", "b\nc"),
        "nested": [{"x": 1.5, "y": None, "z": True}],
        "estimate": Estimate(0.5, 0.4, 0.6, 0.95, 10, 0.01, "BCa", 0.05),
    }
    Cache(tmp_path).get_or_compute("demo", {"v": 1}, lambda: value)
    fresh = Cache(tmp_path)  # new process-equivalent: only the disk
    got = fresh.get_or_compute("demo", {"v": 1}, lambda: pytest.fail("recomputed"))
    assert fresh.stats.disk_hits == 1 and fresh.stats.computed == 0
    np.testing.assert_array_equal(got["array"], value["array"])
    assert got["ints"].dtype == np.int64
    torch.testing.assert_close(got["tensor"], value["tensor"], rtol=0, atol=0)
    assert got["bf16"].dtype == torch.bfloat16
    torch.testing.assert_close(got["bf16"], value["bf16"], rtol=0, atol=0)
    assert got["texts"] == ("a", "b\nc") and isinstance(got["texts"], tuple)
    assert got["nested"] == [{"x": 1.5, "y": None, "z": True}]
    assert got["estimate"] == value["estimate"]


def test_probe_dataclass_round_trip(tmp_path: Path) -> None:
    from mechtests.probes import Probe

    probe = Probe(torch.tensor([0.5, -1.0, 2.0]), 0.25, None, {"seed": 3})
    got = Cache(tmp_path).get_or_compute("probe", {"k": 1}, lambda: probe)
    again = Cache(tmp_path).get_or_compute("probe", {"k": 1}, lambda: pytest.fail("recomputed"))
    assert isinstance(again, Probe) and got is probe
    torch.testing.assert_close(again.weight, probe.weight)
    assert (again.bias, again.hook_name, dict(again.metadata)) == (0.25, None, {"seed": 3})


def test_memory_layer_and_memory_only_cache(tmp_path: Path) -> None:
    calls = []
    cache = Cache(tmp_path)
    for _ in range(3):
        cache.get_or_compute("k", {"a": 1}, lambda: calls.append(1) or np.ones(2))
    assert len(calls) == 1 and (cache.stats.computed, cache.stats.memory_hits) == (1, 2)
    mem = Cache(None)
    mem.get_or_compute("k", {"a": 1}, lambda: 5)
    assert mem.path_for("k", {"a": 1}) is None
    assert mem.get_or_compute("k", {"a": 1}, lambda: 6) == 5


def test_corrupt_entry_is_recomputed_and_replaced(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    path = cache.path_for("k", {"a": 1})
    assert path is not None
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an npz")
    assert cache.get_or_compute("k", {"a": 1}, lambda: [1, 2]) == [1, 2]
    assert Cache(tmp_path).get_or_compute("k", {"a": 1}, lambda: [9]) == [1, 2]
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # no temp files left


def test_refuses_uncacheable_values(tmp_path: Path) -> None:
    @dataclasses.dataclass
    class Foreign:
        x: int

    with pytest.raises(TypeError, match="mechtests dataclasses"):
        Cache(tmp_path).get_or_compute("k", {"a": 1}, lambda: Foreign(1))
    with pytest.raises(TypeError, match="cannot cache"):
        Cache(tmp_path).get_or_compute("k", {"a": 2}, lambda: {1, 2})
    with pytest.raises(UsageError, match="simple name"):
        Cache(tmp_path).get_or_compute("bad/kind", {"a": 1}, lambda: 1)


def test_concurrent_processes_compute_once_and_never_read_partial_files(tmp_path: Path) -> None:
    """Two processes (as two xdist workers) ask for the same entry at the same time."""
    script = textwrap.dedent(f"""
        import os, sys, time
        import numpy as np
        from pathlib import Path
        from mechtests.storage import Cache
        root = Path({str(tmp_path)!r})
        def compute():
            with open(root / "computed.log", "a") as fh:
                fh.write(str(os.getpid()) + "\\n")
            time.sleep(0.5)
            return np.arange(200_000, dtype=np.float64)
        v = Cache(root / "cache").get_or_compute("big", {{"n": 1}}, compute)
        assert v.shape == (200_000,) and v[-1] == 199_999.0
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert len((tmp_path / "computed.log").read_text().split()) == 1


def test_parse_size_known_answers_and_errors() -> None:
    from mechtests.storage import format_size, parse_size

    assert [parse_size(t) for t in ("0", "123", "1kb", "2GB", "1.5GiB", " 500 MB ")] == \
        [0, 123, 1000, 2 * 10**9, int(1.5 * 2**30), 500 * 10**6]
    assert format_size(2_500_000) == "2.5 MB" and format_size(999) == "999 B"
    for bad in ("", "lots", "-1GB", "1 PB", "1e9"):
        with pytest.raises(UsageError, match="is not a size"):
            parse_size(bad)


def _entry_sizes(cache: Cache) -> dict[str, int]:
    return {path.stem: size for _, size, path in cache._entries()}


def test_prune_drops_least_recently_used_first_and_keeps_this_runs_entries(tmp_path: Path) -> None:
    import os
    import time

    cache = Cache(tmp_path / "c")
    for i in range(4):
        cache.get_or_compute("demo", {"i": i}, lambda i=i: np.full(1000, float(i)))  # ~8 kB each
    paths = {i: cache.path_for("demo", {"i": i}) for i in range(4)}
    now = time.time()
    for i, age in ((0, 400), (1, 100), (2, 300), (3, 200)):  # least recently used: 0, 2, 3, 1
        os.utime(paths[i], (now - age, now - age))
    size = paths[0].stat().st_size
    total = cache.size_bytes()
    assert total == pytest.approx(4 * size, rel=0.01)

    # A fresh process reading entry 0 marks it used: it is no longer the oldest.
    Cache(tmp_path / "c").get_or_compute("demo", {"i": 0}, lambda: 1 / 0)
    sizes = {i: paths[i].stat().st_size for i in range(4)}
    result = cache.prune(2 * size)
    assert result.removed == 2 and result.freed_bytes == sizes[2] + sizes[3]
    assert not paths[2].exists() and not paths[3].exists() and paths[0].exists() and paths[1].exists()
    assert result.kept_bytes == cache.size_bytes() <= 2 * size

    # Entries used since a time are kept even past the limit, and said to be.
    kept = cache.prune(0, keep_used_since=now - 150)  # entry 1 (100 s old) and entry 0 (just read) stay
    assert kept.removed == 0 and kept.kept_bytes == cache.size_bytes() > 0
    assert cache.prune(0).removed == 2 and cache.size_bytes() == 0
    assert Cache(None).prune(0) == PruneResult(0, 0, 0)


def test_baseline_store_save_resolve_and_errors(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path / "baselines")
    doc = {"schema": "mechtests-report/1", "claims": []}
    path = store.save("main", doc)
    assert path == tmp_path / "baselines" / "main" / "0001.json"
    assert store.resolve("main") == path and store.names() == ["main"]
    assert load_report(path) == doc
    assert store.resolve(str(path)) == path
    with pytest.raises(UsageError, match="no baseline 'nope'.*Stored baselines in .*: main"):
        store.resolve("nope")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "other/9"}))
    with pytest.raises(UsageError, match="not a mechtests report .schema .other/9.; this mechtests reads "
                                         "mechtests-report/1, mechtests-report/2"):
        load_report(bad)
    bad.write_text("{")
    with pytest.raises(UsageError, match="not readable JSON"):
        load_report(bad)


@pytest.mark.writes_invalid_reports
def test_a_damaged_v2_baseline_is_refused_with_where_it_breaks(tmp_path: Path) -> None:
    from mechtests.report import build_report, environment

    doc = build_report(config={"profile": "smoke", "seed": 0, "confidence": 0.95, "n_resamples": 1000,
                               "multiplicity": "none"}, environment=environment("cpu", "float32"), pairs={}, claims=[])
    good = tmp_path / "good.json"
    good.write_text(json.dumps(doc))
    assert load_report(good) == doc
    doc["claims"] = [{"claim": "c"}]  # hand-edited or truncated by a merge tool
    good.write_text(json.dumps(doc))
    with pytest.raises(UsageError, match=r"is a damaged mechtests-report/2 document \(report.claims\[0\]: 'nodeid' is "
                                         r"a required property .*Fix: re-create it with --mt-save"):
        load_report(good)


def test_a_v1_baseline_still_compares_its_inputs(tmp_path: Path) -> None:
    """Baselines saved before /2 kept the inputs under config.inputs; they are still read there."""
    from mechtests.storage import input_differences

    data = {"challenge": {"sha256": "a" * 64}}
    v1 = {"schema": "mechtests-report/1", "config": {"inputs": {"acc": {"data": data}}}, "claims": []}
    v2 = {"schema": "mechtests-report/2", "pairs": {"x": {"inputs": {"data": {"challenge": {"sha256": "b" * 64}}}}}}
    assert input_differences(v1, v2) == [f"challenge data: baseline sha256 {'a' * 12}, now {'b' * 12}"]


def test_baseline_history_is_kept_and_addressable(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    first = store.save("acc", {"schema": "mechtests-report/1", "claims": [], "n": 1})
    second = store.save("acc", {"schema": "mechtests-report/1", "claims": [], "n": 2})
    assert (first.name, second.name) == ("0001.json", "0002.json")
    assert json.loads(first.read_text())["n"] == 1  # never overwritten
    assert store.resolve("acc") == second and store.resolve("acc@1") == first and store.resolve("acc@2") == second
    with pytest.raises(UsageError, match="has 2 save.*no number 3.*acc@1 .. acc@2"):
        store.resolve("acc@3")
    with pytest.raises(UsageError, match="after '@' comes a save number"):
        store.resolve("acc@latest")
    (tmp_path / "old.json").write_text("{}")  # a baseline saved by an older mechtests
    assert store.resolve("old") == tmp_path / "old.json" and "old" in store.names()
    assert store.save("old", {"schema": "mechtests-report/1", "claims": []}).name == "0001.json"
    assert store.resolve("old@1") == tmp_path / "old.json" and store.resolve("old") == tmp_path / "old" / "0001.json"


def _save_many(root: str, name: str, n: int) -> None:
    store = BaselineStore(Path(root))
    for i in range(n):
        store.save(name, {"schema": "mechtests-report/1", "claims": [], "pid": os.getpid(), "i": i})


@pytest.mark.slow  # a full plugin session (or several): > 10 s
def test_concurrent_saves_never_collide(tmp_path: Path) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_save_many, args=(str(tmp_path), "acc", 5)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    saves = BaselineStore(tmp_path).history("acc")
    assert [p.name for p in saves] == [f"{i:04d}.json" for i in range(1, 16)]
    assert len({(d["pid"], d["i"]) for d in (json.loads(p.read_text()) for p in saves)}) == 15  # none lost
    assert not list((tmp_path / "acc").glob(".staged-*"))


def test_parse_compare_fail() -> None:
    assert parse_compare_fail("estimate:0.05") == (Tolerance("estimate", 0.05, False),)
    assert parse_compare_fail("estimate:10%, verdict, ci_low:1e-2") == (
        Tolerance("estimate", pytest.approx(0.1), True), Tolerance("verdict"), Tolerance("ci_low", 0.01, False))


@pytest.mark.parametrize("expr", ["", "estimate", "estimate:", "estimate:abc", "p:0.1", "estimate:0.1,,verdict",
                                  "verdict:1", "estimate:-0.1", "estimate:5%%"])
def test_malformed_compare_fail_expressions(expr: str) -> None:
    with pytest.raises(UsageError, match="--mt-compare-fail"):
        parse_compare_fail(expr)


def test_regressions_follow_each_claims_direction() -> None:
    before = {"claim": "c", "pair": "p", "direction": ">", "threshold": 0.3, "estimate": 0.50, "ci_low": 0.40,
              "ci_high": 0.6, "verdict": "pass"}
    same = dict(before)
    worse = dict(before, estimate=0.40, ci_low=0.29, verdict="inconclusive")
    better = dict(before, estimate=0.60, ci_low=0.52, verdict="pass")
    tolerances = parse_compare_fail("estimate:0.05,ci_low:0.05,verdict")
    assert regressions(before, same, tolerances) == []
    assert regressions(before, better, tolerances) == []  # improving is never a regression
    msgs = regressions(before, worse, tolerances)
    assert msgs == [
        "claim c on pair p moved from 0.5 (CI [0.4, 0.6]) to 0.4 (CI [0.29, 0.6]), the wrong way for '> 0.3' "
        "(estimate: 0.05 absolute)",
        "claim c on pair p moved from 0.4 (CI [0.4, 0.6]) to 0.29 (CI [0.29, 0.6]), the wrong way for '> 0.3' "
        "(ci_low: 0.05 absolute)",
        "claim c on pair p moved from pass to inconclusive, a worse verdict (verdict: any worse verdict); "
        "estimate 0.5 (CI [0.4, 0.6]) -> 0.4 (CI [0.29, 0.6])"]
    assert regressions(before, worse, parse_compare_fail("estimate:25%")) == []
    assert len(regressions(before, worse, parse_compare_fail("estimate:10%"))) == 1
    # exactly at the tolerance is not a regression
    assert regressions(before, dict(before, estimate=0.45), parse_compare_fail("estimate:0.05")) == []
    # "<" claims regress upwards; "within" claims away from the middle of their interval
    low = dict(before, direction="<", threshold=0.75, estimate=0.4)
    assert regressions(low, dict(low, estimate=0.3), parse_compare_fail("estimate:0.05")) == []
    assert len(regressions(low, dict(low, estimate=0.5), parse_compare_fail("estimate:0.05"))) == 1
    inside = dict(before, direction="within", threshold=[0.0, 1.0], estimate=0.6)
    assert regressions(inside, dict(inside, estimate=0.45), parse_compare_fail("estimate:0.05")) == []
    assert len(regressions(inside, dict(inside, estimate=0.7), parse_compare_fail("estimate:0.05"))) == 1
    # a worse verdict, never a better one; fail -> pass is an improvement
    failing = dict(before, verdict="fail")
    assert regressions(failing, dict(failing, verdict="pass"), parse_compare_fail("verdict")) == []
    assert len(regressions(dict(before, verdict="inconclusive"), failing, parse_compare_fail("verdict"))) == 1


def test_claim_key_can_ignore_the_pair_name() -> None:
    a = {"nodeid": "h/t.py::test_x[accepted-100of98304]", "claim": "c", "pair": "accepted"}
    b = {"nodeid": "h/t.py::test_x[candidate-100of98304]", "claim": "c", "pair": "candidate"}
    assert claim_key(a) != claim_key(b)
    assert claim_key(a, ignore_pair=True) == claim_key(b, ignore_pair=True)
    only = {"nodeid": "h/t.py::test_y[my-pair]", "claim": "c", "pair": "my-pair"}
    assert claim_key(only, ignore_pair=True) == ("h/t.py::test_y[*]", "c")
    # a parameter that merely contains the pair's name is left alone
    assert claim_key({"nodeid": "t.py::t[p-pp]", "claim": "c", "pair": "p"}, ignore_pair=True) == ("t.py::t[*-pp]", "c")


_leaves = st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.floats(allow_nan=False) | st.text(max_size=8)
_values = st.recursive(_leaves, lambda kids: st.lists(kids, max_size=4) | st.tuples(kids, kids)
                       | st.dictionaries(st.text(max_size=5), kids, max_size=4), max_leaves=12)


@settings(max_examples=40, deadline=None)
@given(value=_values, arr=st.lists(st.floats(allow_nan=False, width=32), max_size=6))
def test_round_trip_property(tmp_path_factory: pytest.TempPathFactory, value: object, arr: list[float]) -> None:
    root = tmp_path_factory.mktemp("rt")
    payload = {"value": value, "array": np.asarray(arr, dtype=np.float32)}
    Cache(root).get_or_compute("rt", {"k": 1}, lambda: payload)
    got = Cache(root).get_or_compute("rt", {"k": 1}, lambda: pytest.fail("recomputed"))
    assert got["value"] == value and type(got["value"]) is type(value)
    np.testing.assert_array_equal(got["array"], payload["array"])
    assert got["array"].dtype == np.float32


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask_not_mkstemps_0600(tmp_path: Path, umask: int, mode: int) -> None:
    """Reports and baselines must be readable by a CI artifact server running as another user."""
    import os
    import stat

    from mechtests.storage import atomic_write_bytes

    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "report.json", b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "report.json").stat().st_mode) == mode
    assert (tmp_path / "report.json").read_bytes() == b"{}" and not list(tmp_path.glob(".*.tmp"))


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "emptied":
        path.write_bytes(b"")
    else:  # one flipped bit inside an array's bytes: the zip's CRC-32 catches it
        flipped = bytearray(data)
        flipped[len(flipped) // 3] ^= 0x01
        path.write_bytes(bytes(flipped))


@pytest.mark.parametrize("how", ["truncated", "emptied", "bit-flipped"])
def test_a_damaged_entry_is_dropped_recomputed_and_rewritten_with_one_note(tmp_path: Path, how: str) -> None:
    value = {"a": np.arange(4096, dtype=np.float64), "b": [1, 2, 3]}
    Cache(tmp_path).get_or_compute("k", {"x": 1}, lambda: value)
    path = Cache(tmp_path).path_for("k", {"x": 1})
    assert path is not None
    _damage(path, how)
    calls: list[int] = []
    cache = Cache(tmp_path)

    def compute() -> dict:
        calls.append(1)
        return value

    got = cache.get_or_compute("k", {"x": 1}, compute)
    np.testing.assert_array_equal(got["a"], value["a"])
    assert calls == [1] and len(cache.notes) == 1 and "unreadable" in cache.notes[0] and str(path) in cache.notes[0]
    again = Cache(tmp_path)  # rewritten: the next run reads it back without computing
    np.testing.assert_array_equal(again.get_or_compute("k", {"x": 1}, lambda: pytest.fail("recomputed"))["a"], value["a"])
    assert again.notes == []


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    """A 2 MB tmpfs the test makes (skipped where mounting is not allowed)."""
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_degrades_to_memory_with_one_note(small_tmpfs: Path) -> None:
    cache = Cache(small_tmpfs / "cache")
    big = np.zeros(400_000)  # 3.2 MB: cannot fit
    for i in range(3):
        np.testing.assert_array_equal(cache.get_or_compute("k", {"i": i}, lambda: big), big)
    assert cache.get_or_compute("k", {"i": 0}, lambda: pytest.fail("recomputed")) is not None  # memory still serves
    assert cache.disabled is not None and "No space left" in cache.disabled
    assert len(cache.notes) == 1 and "--mt-cache-dir" in cache.notes[0] and "memory only" in cache.notes[0]
    assert not list((small_tmpfs / "cache").rglob("*.tmp"))  # no half-written files left


def test_a_read_only_cache_degrades_to_memory(small_tmpfs: Path) -> None:
    import subprocess

    (small_tmpfs / "cache").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    cache = Cache(small_tmpfs / "cache")
    assert cache.get_or_compute("k", {"i": 1}, lambda: [1]) == [1]
    assert cache.disabled is not None and "Read-only" in cache.disabled and len(cache.notes) == 1


def test_prune_removes_orphans_of_killed_writers(tmp_path: Path) -> None:
    import os
    import time

    cache = Cache(tmp_path)
    cache.get_or_compute("k", {"i": 1}, lambda: [1])
    entry = cache.path_for("k", {"i": 1})
    assert entry is not None
    stale_tmp = entry.parent / f".{entry.name}.abc.tmp"
    stale_lock = entry.parent / ("0" * 64 + ".lock")  # a lock whose entry was never written
    fresh_tmp = entry.parent / f".{entry.name}.new.tmp"
    for path in (stale_tmp, stale_lock, fresh_tmp):
        path.write_bytes(b"x")
    old = time.time() - 7200
    for path in (stale_tmp, stale_lock):
        os.utime(path, (old, old))
    cache.prune(10**9)
    assert not stale_tmp.exists() and not stale_lock.exists()
    assert fresh_tmp.exists() and entry.exists() and entry.with_suffix(".lock").exists()  # live ones kept


def test_a_baseline_from_before_family_wise_verdicts_is_reported_as_decided_per_claim() -> None:
    """A /1 baseline has no multiplicity key; its verdicts were per claim at 95%. Comparing it with
    a family-wise run without a word would call every pass -> inconclusive a regression of the
    model, when it is a change of the rule."""
    from mechtests.storage import config_differences

    before = {"profile": "smoke", "seed": 0, "confidence": 0.95}
    assert config_differences(before, {**before, "multiplicity": "bonferroni"}) == [
        "multiplicity: baseline 'none', now 'bonferroni'"]
    assert config_differences(before, {**before, "multiplicity": "none"}) == []
