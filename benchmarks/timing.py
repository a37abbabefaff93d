"""Interleaved timing of two code paths, so a speed *ratio* is measured in one run.

Timing A and then B minutes apart on a shared 2-core machine mostly measures the machine's mood;
alternating A, B, A, B ... within one benchmark and comparing medians cancels slow drifts. The
``benchmark`` fixture of pytest-benchmark times the candidate (its table and JSON stay the
usual ones); the baseline runs in the fixture's untimed ``setup`` slot right before each round
and is timed here. Both are timed here too, so the ratio exists even under
``--benchmark-disable`` (one round).

Example:
    >>> pairing = Interleaved(baseline=lambda: sum(range(10)))
    >>> result = benchmark.pedantic(pairing.candidate(lambda: sum(range(10))),  # doctest: +SKIP
    ...                             setup=pairing.setup, rounds=3, warmup_rounds=1)
    >>> pairing.ratio()  # baseline median time / candidate median time   # doctest: +SKIP
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Interleaved:
    """Times a baseline in pytest-benchmark's setup slot and a candidate in its timed slot.

    Attributes:
        baseline: The reference code path (e.g. plain Hugging Face ``generate``).
        baseline_seconds: Wall time of every baseline call, warm-up rounds included.
        candidate_seconds: Wall time of every candidate call, warm-up rounds included.
        warmup_rounds: Leading calls of each list left out of the medians.
    """

    baseline: Callable[[], Any]
    baseline_seconds: list[float] = field(default_factory=list)
    candidate_seconds: list[float] = field(default_factory=list)
    warmup_rounds: int = 0
    last_baseline: Any = None
    last_candidate: Any = None

    def setup(self) -> None:
        """pytest-benchmark ``setup``: runs (and times) the baseline before each round."""
        start = time.perf_counter()
        self.last_baseline = self.baseline()
        self.baseline_seconds.append(time.perf_counter() - start)

    def candidate(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        """Wrap the candidate so its wall time is kept as well."""

        def run() -> Any:
            start = time.perf_counter()
            self.last_candidate = fn()
            self.candidate_seconds.append(time.perf_counter() - start)
            return self.last_candidate

        return run

    def _kept(self, values: list[float]) -> list[float]:
        kept = values[self.warmup_rounds :]
        return kept if kept else values

    def baseline_median(self) -> float:
        """Median baseline seconds (warm-up excluded)."""
        return statistics.median(self._kept(self.baseline_seconds))

    def candidate_median(self) -> float:
        """Median candidate seconds (warm-up excluded)."""
        return statistics.median(self._kept(self.candidate_seconds))

    def ratio(self) -> float:
        """Baseline time over candidate time: > 1 means the candidate is faster."""
        return self.baseline_median() / self.candidate_median()

    def info(self, prefix: str) -> dict[str, Any]:
        """Raw timings for ``benchmark.extra_info``."""
        return {
            f"{prefix}_baseline_s": [round(s, 4) for s in self.baseline_seconds],
            f"{prefix}_candidate_s": [round(s, 4) for s in self.candidate_seconds],
            f"{prefix}_warmup_rounds": self.warmup_rounds,
        }
