"""Units of hypotheses/: the papers' reference numbers, k scaling, and the probe's held-out split."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

HYPOTHESES = Path(__file__).resolve().parents[1] / "hypotheses"


def load(name: str) -> ModuleType:
    if str(HYPOTHESES) not in sys.path:
        sys.path.insert(0, str(HYPOTHESES))  # how pytest imports them: rootdir-less modules
    spec = importlib.util.spec_from_file_location(f"hypotheses_{name}", HYPOTHESES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_paper_recovered_fractions_match_paper_table() -> None:
    ref = load("mt_reference")
    # PAPER.md: DPO 0.453 -> 0.208; zeroing top 100/200/1000 -> 0.403/0.405/0.436
    assert [ref.paper_recovered(ref.ZERO_TOX[k]) for k in (100, 200, 1000)] == [0.204, 0.196, 0.069]
    assert [ref.paper_recovered(ref.ZERO_POSITIVE_TOX[k]) for k in (100, 200, 1000, 2000)] == [0.282, 0.355, 0.543,
                                                                                               0.547]
    assert ref.paper_recovered(0.335) == 0.482  # TP↓ patch, "recovers 48%"


def test_k_scaling() -> None:
    ref = load("mt_reference")
    assert [k.resolve(98_304) for k in ref.ABLATION_KS] == [100, 200, 1000, 2000]
    assert [k.resolve(4_096) for k in ref.ABLATION_KS] == [4, 8, 42, 83]
    assert ref.frac(100).resolve(10) == 1  # never zero neurons
    assert ref.absolute(7).resolve(10) == 7 and ref.absolute(7).label == "abs7"
    assert len({k.label for k in ref.ABLATION_KS}) == len(ref.ABLATION_KS)


def test_unique_basenames_cannot_clash_with_tests() -> None:
    ours = {p.name for p in HYPOTHESES.glob("*.py")}
    theirs = {p.name for p in (HYPOTHESES.parent / "tests").glob("*.py")}
    assert ours & theirs <= {"conftest.py"}, ours & theirs


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory):
    from mechtests.models import load_model
    from mechtests.testing import make_tiny_checkpoint

    return load_model(str(make_tiny_checkpoint(tmp_path_factory.mktemp("m"), n_layers=1, d_model=16, d_mlp=32)))


def test_held_out_is_train_probes_test_split(tiny_model) -> None:
    from mechtests.data import TextSet
    from mechtests.probes import probe_correct, train_probe

    probe_module = load("test_claims_probe")
    texts = tuple(f"{'bad ' * (i % 3)}text number {i}" for i in range(40))
    data = TextSet("d", texts, tuple(int(i % 3 > 0) for i in range(40)))
    fit = train_probe(tiny_model, data, seed=5)
    held = probe_module.held_out(fit.probe, data)
    assert len(held) == fit.n_test == 4
    split = np.random.default_rng(5).permutation(40)[:4]  # train_probe's rule: first 10% of the seeded permutation
    assert held.texts == tuple(texts[i] for i in sorted(split.tolist()))
    assert probe_correct(tiny_model, fit.probe, held).mean() == pytest.approx(fit.test_accuracy, abs=1e-12)
    # a probe trained on other data: every example is held out
    other = TextSet("o", texts[:20], data.labels[:20])
    assert len(probe_module.held_out(fit.probe, other)) == 20


def test_papers_recovery_figure_is_drawn_from_claim_points() -> None:
    figs = load("mt_paper_figures")
    svg = figs.recovery_figure([{"family": "patch TP↓", "k": 40, "estimate": 0.4, "ci_low": -50.0, "ci_high": 0.6},
                                {"family": "zero top-k toxic", "k": 4, "estimate": 0.1, "ci_low": 0.0, "ci_high": 0.2}])
    assert "Fraction of DPO's toxicity reduction recovered" in svg and "clipped to [-1, 2]" in svg
    # two families of one point each: a whisker apiece, no line (the -50 bound clipped, not dropped)
    assert (svg.count("<polyline"), svg.count('class="whisker"')) == (0, 2)
    assert figs.RECOVERY_RENDER == "mt_paper_figures:recovery_figure"
    assert set(figs.RECOVERY_FAMILIES) <= {c for c in load("mt_reference").PAPER_CLAIMS}


# The papers' reported values (PAPER.md): none of them may be a constant of the library's code.
PAPER_VALUES = {0.453, 0.208, 0.318, 0.239, 0.373, 0.403, 0.405, 0.436, 0.384, 0.366, 0.319, 0.335, 0.482, 0.547}


def test_the_library_knows_nothing_of_the_papers() -> None:
    """Paper numbers, captions and claims live under hypotheses/ (issue 12 item 4): the library's code
    (docstrings aside, where an example may quote one) holds no paper value and no "Paper A/B" text."""
    import ast

    library = Path(__file__).resolve().parents[1] / "mechtests"
    found = []
    for path in sorted(library.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)
                      and isinstance(node.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Constant) or id(node) in docstrings:
                continue
            if isinstance(node.value, float) and round(node.value, 3) in PAPER_VALUES:
                found.append(f"{path.name}:{node.lineno} {node.value}")
            if isinstance(node.value, str) and ("Paper A" in node.value or "Paper B" in node.value):
                found.append(f"{path.name}:{node.lineno} {node.value[:60]!r}")
    assert not found, found
