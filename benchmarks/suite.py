"""Run the reference suite (`pytest hypotheses/`) in a subprocess and read back its verdicts.

Used by the warm-vs-cold cache benchmark and the pytest-xdist equivalence check. Each run gets
its own `--mt-json` report; `verdicts()` reduces it to what must not depend on how the suite
was run (serially, with `-n 2`, with a warm cache): per claim, the verdict and the numbers.

Example:
    >>> run = run_suite(["--mt-profile", "smoke"], cache_dir=tmp / "cache", report=tmp / "a.json")  # doctest: +SKIP
    >>> run.seconds, len(verdicts(run.report))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.shapes import REPO_ROOT

# pytest exit codes that still mean "the suite ran": 0 all passed, 1 some tests failed (a claim
# that fails is a result, not a broken run).
_RAN = (0, 1)


@dataclass(frozen=True)
class SuiteRun:
    """One subprocess run of the suite."""

    seconds: float
    returncode: int
    report: dict[str, Any]
    output: str


def run_suite(extra: Sequence[str], *, cache_dir: Path, report: Path, timeout: float = 1800,
              threads: int | None = None) -> SuiteRun:
    """`python -m pytest hypotheses/ --mt-cache-dir CACHE --mt-json REPORT *extra` from the repo root.

    Args:
        extra: more pytest arguments (e.g. `["--mt-profile", "smoke", "-n", "2"]`).
        cache_dir: the mechtests cache folder (empty = a cold run).
        report: where the JSON report goes.
        timeout: seconds before the run is abandoned.
        threads: OMP/MKL threads per process (None: inherit).

    Raises:
        RuntimeError: the run did not complete (usage error, crash, no report).
    """
    cmd = [sys.executable, "-m", "pytest", "hypotheses/", "-q", "-p", "no:cacheprovider",
           "--mt-cache-dir", str(cache_dir), "--mt-json", str(report), *extra]
    env = dict(os.environ)
    env.setdefault("WANDB_MODE", "disabled")
    env["TOKENIZERS_PARALLELISM"] = "false"
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    seconds = time.perf_counter() - start
    output = done.stdout + done.stderr
    if done.returncode not in _RAN or not report.is_file():
        raise RuntimeError(f"{' '.join(cmd)} -> exit {done.returncode}, report written: {report.is_file()}\n"
                           f"{output[-4000:]}")
    return SuiteRun(seconds, done.returncode, json.loads(report.read_text()), output)


def verdicts(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per claim (nodeid + claim name): verdict, pytest outcome and the estimate with its CI."""
    out: dict[str, dict[str, Any]] = {}
    for c in report["claims"]:
        key = f"{c['nodeid']}::{c['claim']}"
        if key in out:
            raise RuntimeError(f"claim {key} reported twice")
        out[key] = {f: c.get(f) for f in ("verdict", "outcome", "estimate", "ci_low", "ci_high", "n", "p_value")}
    return out


def differences(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]], *, rel: float = 1e-9) -> list[str]:
    """Human-readable differences between two `verdicts()` maps (empty list: the same results)."""
    problems = [f"only in first: {k}" for k in sorted(set(a) - set(b))]
    problems += [f"only in second: {k}" for k in sorted(set(b) - set(a))]
    for key in sorted(set(a) & set(b)):
        for field, x in a[key].items():
            y = b[key][field]
            if isinstance(x, float) and isinstance(y, float):
                same = x == y or (x != x and y != y) or abs(x - y) <= rel * max(abs(x), abs(y))
            else:
                same = x == y
            if not same:
                problems.append(f"{key}: {field} {x!r} != {y!r}")
    return problems
