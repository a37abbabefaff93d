"""Fixtures shared by the reference claims (PAPER.md claims 1-13).

The plugin provides ``model_pair``, ``evaluator``, ``claim``, ``probe``, ``eval_data`` and
``mt_config``; this file adds what several claim families share: neuron selections made the
papers' way, the block-bootstrap attribution inputs, the paper's reference numbers, and a
session recorder that turns recovered-fraction results into the HTML report's figures.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from mt_reference import KSpec

from mechtests.evaluator import BlockAttribution, Evaluator


class Selections:
    """Neuron selections the papers make, computed once per evaluator (memoised there)."""

    def __init__(self, ev: Evaluator) -> None:
        self.ev = ev
        base = ev.model("base")
        self.n_neurons = base.n_layers * base.d_mlp

    def k(self, spec: KSpec) -> int:
        """Resolve ``spec``; skip the test when the model has fewer neurons than asked for."""
        k = spec.resolve(self.n_neurons)
        if k > self.n_neurons:
            pytest.skip(f"k={k} ({spec.label}) exceeds the model's {self.n_neurons} MLP neurons")
        return k

    def top_toxic(self, k: int, *, positive_only: bool = False) -> Any:
        """Top-k neurons by cos(value vector, probe); ``positive_only``: among cos > 0 and
        mean base activation > 0 (A's "toxic & positively activated")."""
        from mechtests.neurons import top_k_by_cosine

        def compute() -> Any:
            among = None
            if positive_only:
                act = torch.from_numpy(self.ev.mean_activation("base"))
                among = (self.ev.cosines() > 0) & (act > 0)
            return top_k_by_cosine(self.ev.cosines(), k, among=among)

        return self.ev.memo(f"top_toxic:{k}:{positive_only}", compute)

    def n_positive_toxic(self) -> int:
        """How many neurons are toxic-aligned and positively activated (A: 5,770 of 98,304)."""
        act = torch.from_numpy(self.ev.mean_activation("base"))
        return int(((self.ev.cosines() > 0) & (act > 0)).sum())

    def groups(self) -> dict[str, Any]:
        """The eight groups (PAPER.md) from the base and tuned passes' mean activations."""
        from mechtests.neurons import classify_neurons

        def compute() -> dict[str, Any]:
            return classify_neurons(self.ev.cosines(), torch.from_numpy(self.ev.mean_activation("base")),
                                    torch.from_numpy(self.ev.mean_activation("tuned")))

        return self.ev.memo("groups", compute)


@pytest.fixture
def selections(evaluator: Evaluator) -> Selections:
    """Neuron selections (top-k toxic, positively activated, the eight groups)."""
    return Selections(evaluator)


@pytest.fixture
def attribution(evaluator: Evaluator) -> BlockAttribution:
    """Per-block base/tuned activation sums for a bootstrap over NeuronStats blocks."""
    return BlockAttribution.from_evaluator(evaluator)


@dataclasses.dataclass
class FigureRecorder:
    """Collects recovered-fraction results across tests, for the recovery-vs-k figure."""

    points: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    attributions: dict[str, BlockAttribution] = dataclasses.field(default_factory=dict)

    def recovery(self, pair: str, family: str, k: int, claim: Any) -> None:
        """Record the latest claim the ``claim`` fixture stated in this test (pass or fail: it
        keeps its results before it fails a test)."""
        if not claim.results:
            return
        e = claim.results[-1].estimate
        if all(math.isfinite(v) for v in (e.value, e.ci_low, e.ci_high)):
            self.points.append({"pair": pair, "family": family, "k": k, "estimate": e.value,
                                "ci_low": e.ci_low, "ci_high": e.ci_high})


@pytest.fixture(scope="session")
def figure_recorder(mt_figures: Any) -> Iterator[FigureRecorder]:
    """Session recorder; at the end it adds the papers' figures to the ``--mt-html`` report
    (teardown runs before the plugin writes the report at session finish)."""
    recorder = FigureRecorder()
    yield recorder
    from mechtests import figures

    add = mt_figures.add

    for pair, attr in sorted(recorder.attributions.items()):
        for title, svg, caption, data in figures.attribution_figures(attr):
            add(f"{title} ({pair})", svg, caption, data={"pair": pair, **data})
    # Under pytest-xdist each worker saw some of the points: hand over rows, drawn once at the end.
    for pair in sorted({p["pair"] for p in recorder.points}):
        pts = [p for p in recorder.points if p["pair"] == pair]
        mt_figures.add_rows(
            f"Recovered fraction vs k ({pair})", pts, render="mechtests.figures:recovery_figure",
            caption="Fraction of DPO's toxicity reduction reproduced by zeroing the top-k toxic neurons (all, or "
            "positively activated only) and by patching groups to the tuned model's activations (k = group "
            "size); bands: claim CIs. Paper A: ablation 0.07-0.55, TP↓ patch 0.48.")


def per_prompt(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-prompt arrays as the float64 tuple ``claim(samples=...)`` expects."""
    return tuple(np.asarray(a, dtype=np.float64) for a in arrays)
