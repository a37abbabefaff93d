"""The README's "Write your own claim" example runs, as written, on a tiny pair."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from tiny_project import CONFTEST, build_tiny_project, run_claims

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Write your own claim", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's 'Write your own claim' section has no python code block"
    return match.group(1)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    # module scope: built (torch imported) before pytester snapshots sys.modules
    return build_tiny_project(tmp_path_factory.mktemp("readme_project"))


@pytest.mark.slow  # a full plugin session (or several): > 10 s
def test_readme_example_is_a_real_claim(pytester: pytest.Pytester, project: dict[str, Path]) -> None:
    code = readme_example()
    assert "def test_" in code and "claim(" in code
    result = run_claims(pytester, project, {"test_my_claims.py": code}, "--mt-resamples", "400")
    report = json.loads((pytester.path / "r.json").read_text())
    (record,) = report["claims"]
    assert record["claim"] == "top20_ablation_recovers_little" and record["params"] == {"k": 20}
    assert record["verdict"] in ("pass", "fail", "inconclusive")
    assert record["ci_low"] <= record["estimate"] <= record["ci_high"]
    expected = {"pass": "passed", "fail": "failed", "inconclusive": "skipped"}[record["verdict"]]
    assert result.parseoutcomes().get(expected) == 1, result.stdout.str()[-2000:]


KIT_CLAIMS = '''
import pytest

import mechtests as mt


@pytest.mark.mechtests_claims(2)
def test_the_kit_outside_hypotheses(selections, attribution, claim):
    mt.require_change(attribution)
    top = selections.top_toxic(selections.k(5))
    assert len(top) == 5 and set(mt.GROUP_NAMES) <= set(selections.groups())
    assert len(selections.top_reduced(3)) == 3
    assert mt.NeuronSet.from_flat(top.flat(), n_layers=top.n_layers, d_mlp=top.d_mlp) == top
    claim("kit_share", metric="TP↓ share", direction="within", threshold=(-1e6, 1e6),
          samples=attribution.folds(), paired=False, statistic=attribution.share(("TP_down",)),
          plug_in=attribution.plug_in_share(("TP_down",)))
    claim("kit_dampened", metric="fraction of top-5 dampened", direction="within", threshold=(-0.5, 1.5),
          estimator=attribution.fraction_dampened(top.to_mask().numpy()))
'''


@pytest.mark.slow  # a full plugin session: > 10 s
def test_a_claim_author_gets_selections_attribution_and_premises_from_the_plugin(
        pytester: pytest.Pytester, project: dict[str, Path]) -> None:
    """No copy of hypotheses/conftest.py needed: the plugin gives the fixtures, mt the guards."""
    result = run_claims(pytester, project, {"test_kit.py": KIT_CLAIMS}, "--mt-inconclusive", "pass")
    assert result.ret == 0, result.stdout.str()[-3000:]
    report = json.loads((pytester.path / "r.json").read_text())
    assert [c["claim"] for c in report["claims"]] == ["kit_share", "kit_dampened"]
    assert report["claims"][0]["bias_allowance"] > 0 and report["claims"][1]["bias_allowance"] == 0
    assert report["config"]["family_size"] == 2


def readme_scorer() -> str:
    section = README.read_text(encoding="utf-8").split("## Write your own claim", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    (scorer,) = [b for b in blocks if "class CapsScorer" in b]
    return scorer


@pytest.mark.slow  # a full plugin session: > 10 s
def test_the_readme_scorer_plugin_scores_a_concept_as_written(pytester: pytest.Pytester,
                                                             project: dict[str, Path]) -> None:
    """--mt-scorer module:callable: the README's caps scorer, as written, scores the claims' texts."""
    (pytester.path / "caps_scorer.py").write_text(readme_scorer())
    claims = ("def test_caps(evaluator, claim):\n"
              "    base, tuned = evaluator.toxicity('base'), evaluator.toxicity('tuned')\n"
              "    assert ((0 <= base) & (base <= 1)).all()\n"
              "    claim('caps_between', metric='caps share', direction='within', threshold=(-1.0, 2.0), "
              "samples=(base,))\n")
    parts = CONFTEST.format(data=str(project["data"])).split("@pytest.fixture")
    no_scorer_fixture = parts[0] + "".join("@pytest.fixture" + part for part in parts[1:] if "def scorer" not in part)
    result = run_claims(pytester, project, {"test_caps.py": claims}, "-o", "pythonpath=.",
                        "--mt-scorer", "caps_scorer:CapsScorer", conftest=no_scorer_fixture)
    assert result.ret == 0, result.stdout.str()[-3000:]
    report = json.loads((pytester.path / "r.json").read_text())
    assert report["config"]["scorer"] == "caps_scorer:CapsScorer"
    bad = run_claims(pytester, project, {}, "-o", "pythonpath=.", "--mt-scorer", "caps_scorer:NoSuchScorer",
                     conftest=no_scorer_fixture)
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    assert "has no attribute 'NoSuchScorer'" in bad.stderr.str() + bad.stdout.str()
