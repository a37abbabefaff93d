"""The reference suite end to end: warm cache vs cold (benchmark (c)) and pytest-xdist equivalence.

Both run `pytest hypotheses/` in subprocesses on the default pair with the `smoke` profile
(`--mt-bench-suite-profile` to change it). They are slow (several suite runs), so they live here
and not in tests/.

* `test_suite_warm_vs_cold`: one cold run into an empty `--mt-cache-dir`, then a warm run on
  the same cache, timed by pytest-benchmark; `extra_info["speedup_warm_vs_cold"]`. Asserted:
  the warm run reproduces every verdict and number of the cold one.
* `test_xdist_matches_serial`: a serial cold run, a `-n 2` cold run whose two workers share one
  fresh cache directory, and a `-n 2` warm run reading what those workers wrote. Asserted: the
  same claims, verdicts, estimates and intervals in all three (the cache is shared safely and no
  result depends on which worker ran what).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from benchmarks.suite import differences, run_suite, verdicts

pytestmark = pytest.mark.skipif(os.environ.get("MT_BENCH_SUITE", "1") == "0", reason="MT_BENCH_SUITE=0")


@pytest.fixture
def suite_args(pytestconfig: pytest.Config) -> list[str]:
    profile = os.environ.get("MT_BENCH_SUITE_PROFILE", "smoke")
    device = pytestconfig.getoption("--mt-bench-device")
    return ["--mt-profile", profile, "--mt-device", device]


@pytest.mark.benchmark(group="c-suite-cache")
def test_suite_warm_vs_cold(benchmark: Any, tmp_path: Path, suite_args: list[str]) -> None:
    cache = tmp_path / "cache"
    cold = run_suite(suite_args, cache_dir=cache, report=tmp_path / "cold.json")
    warm_runs: list[Any] = []

    def warm() -> None:
        warm_runs.append(run_suite(suite_args, cache_dir=cache, report=tmp_path / f"warm{len(warm_runs)}.json"))

    benchmark.pedantic(warm, rounds=1, iterations=1)
    warm_run = warm_runs[-1]
    benchmark.extra_info.update({
        "args": suite_args, "cold_s": cold.seconds, "warm_s": warm_run.seconds,
        "speedup_warm_vs_cold": cold.seconds / warm_run.seconds,
        "claims": len(cold.report["claims"]),
        "cache_files": sum(1 for p in cache.rglob("*") if p.is_file()),
    })
    assert len(cold.report["claims"]) > 0
    assert differences(verdicts(cold.report), verdicts(warm_run.report)) == []


def test_xdist_matches_serial(tmp_path: Path, suite_args: list[str]) -> None:
    pytest.importorskip("xdist")
    serial = run_suite(suite_args, cache_dir=tmp_path / "serial-cache", report=tmp_path / "serial.json", threads=1)
    shared = tmp_path / "shared-cache"
    parallel = run_suite([*suite_args, "-n", "2"], cache_dir=shared, report=tmp_path / "n2-cold.json", threads=1)
    parallel_warm = run_suite([*suite_args, "-n", "2"], cache_dir=shared, report=tmp_path / "n2-warm.json", threads=1)
    reference = verdicts(serial.report)
    assert len(reference) > 0
    assert differences(reference, verdicts(parallel.report)) == []
    assert differences(reference, verdicts(parallel_warm.report)) == []
    # Record the timings next to the test result (docs/PERFORMANCE.md quotes them).
    print(f"serial {serial.seconds:.1f}s, -n 2 cold {parallel.seconds:.1f}s, -n 2 warm {parallel_warm.seconds:.1f}s")
