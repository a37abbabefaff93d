"""The README results table is rendered from a JSON report, never typed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mechtests import results
from mechtests.errors import DataError, UsageError

HYPOTHESES = Path(__file__).resolve().parents[1] / "hypotheses"


def report(**over: object) -> dict:
    claim = {"nodeid": "hypotheses/test_claims_toxicity.py::test_x[default]", "claim": "dpo_reduces_toxicity",
             "pair": "default", "params": {}, "metric": "1 - tox_tuned / tox_base", "direction": ">",
             "threshold": 0.3, "estimate": 0.61234, "ci_low": 0.5, "ci_high": 0.7, "confidence": 0.95, "n": 100,
             "p_value": 0.001, "p_adjusted": 0.002, "verdict": "pass", "outcome": "passed",
             "reference": {"source": "PAPER.md table 1", "value": 0.54}, "seconds": 1.0}
    claim.update(over)
    return {"schema": "mechtests-report/1", "created": "2026-11-26T18:00:00Z", "environment": {},
            "config": {"profile": "ci", "seed": 0, "confidence": 0.95, "n_resamples": 999},
            "pairs": {"default": {"base": {"source": "b", "sha256": "a" * 64}, "tuned": {"source": "t", "sha256": "b" * 64}}},
            "claims": [claim]}


def test_table_row_known_answer() -> None:
    table = results.render_table(report(params={"k": "frac100", "neurons": 4}), {"dpo_reduces_toxicity": 1})
    assert table.splitlines()[2] == ("| 1 | dpo_reduces_toxicity | k=frac100, neurons=4 | default | 1 - tox_tuned / tox_base "
                                     "| 0.612 | [0.500, 0.700] | > 0.300 | pass | 0.540 (PAPER.md table 1) |")


def test_fail_is_bold_missing_reference_and_within_threshold() -> None:
    row = results.render_table(report(verdict="fail", reference=None, direction="within",
                                      threshold=[0.1, 0.2], estimate=None)).splitlines()[2]
    assert "**FAIL**" in row and "within [0.100, 0.200]" in row and row.endswith("|  |")
    assert "| – |" in row


def test_small_numbers_use_scientific_notation() -> None:
    assert "3.00e-06" in results.render_table(report(estimate=3e-6))


def test_cli_writes_between_markers_and_is_idempotent(tmp_path: Path) -> None:
    (tmp_path / "r.json").write_text(json.dumps(report()))
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{results.START}\nstale\n{results.END}\nafter\n")
    assert results.main(["--json", str(tmp_path / "r.json"), "--readme", str(readme)]) == 0
    once = readme.read_text()
    assert "stale" not in once and once.startswith("# x\n\nbefore\n") and once.endswith(f"{results.END}\nafter\n")
    assert "1 pass, 0 fail, 0 inconclusive" in once and "dpo_reduces_toxicity" in once
    assert results.main(["--json", str(tmp_path / "r.json"), "--readme", str(readme)]) == 0
    assert readme.read_text() == once


def test_cli_prints_without_readme(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "r.json").write_text(json.dumps(report()))
    assert results.main(["--json", str(tmp_path / "r.json")]) == 0
    assert "| dpo_reduces_toxicity |" in capsys.readouterr().out


@pytest.mark.writes_invalid_reports  # a damaged /2 report, on purpose
def test_bad_inputs_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        results.load_report(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DataError, match="not readable JSON"):
        results.load_report(tmp_path / "bad.json")
    (tmp_path / "old.json").write_text(json.dumps({"schema": "mechtests-report/0", "claims": []}))
    with pytest.raises(DataError, match="this mechtests reads mechtests-report/1, mechtests-report/2"):
        results.load_report(tmp_path / "old.json")
    # a /2 report is checked against the shipped schema: a damaged one never renders a table
    (tmp_path / "damaged.json").write_text(json.dumps({"schema": "mechtests-report/2", "claims": []}))
    with pytest.raises(DataError, match="damaged mechtests-report/2 document"):
        results.load_report(tmp_path / "damaged.json")
    with pytest.raises(UsageError, match="exactly one"):
        results.replace_between_markers("no markers", "x")
    (tmp_path / "r.json").write_text(json.dumps(report()))
    (tmp_path / "README.md").write_text("no markers\n")
    assert results.main(["--json", str(tmp_path / "r.json"), "--readme", str(tmp_path / "README.md")]) == 2
    assert "results:start" in capsys.readouterr().err


def test_rows_follow_paper_numbering_and_natural_k_order() -> None:
    base = report()["claims"][0]
    claims = [dict(base, claim="my_own_claim", nodeid="t.py::test_own"),
              dict(base, claim="zero_ablation_not_enough", nodeid="a.py::test_z[default-1000of98304]"),
              dict(base, claim="zero_ablation_not_enough", nodeid="a.py::test_z[default-100of98304]"),
              dict(base, claim="weights_stay_close", nodeid="w.py::test_w[default]")]
    numbering = results.load_numbering(str(HYPOTHESES / "mt_reference.py") + ":PAPER_CLAIMS")
    rows = results.render_table(dict(report(), claims=claims), numbering).splitlines()[2:]
    assert [r.split(" | ")[1] for r in rows] == ["weights_stay_close", "zero_ablation_not_enough",
                                                 "zero_ablation_not_enough", "my_own_claim"]
    assert [r.split(" | ")[0] for r in rows] == ["| 3", "| 5", "| 5", "| "]
    assert "100of" in claims[2]["nodeid"]
    assert rows[1] == results.render_table(dict(report(), claims=[claims[2]]), numbering).splitlines()[2]
    # without a numbering: no "#", report order (the library knows no paper)
    plain = results.render_table(dict(report(), claims=claims)).splitlines()[2:]
    assert plain[0].split(" | ")[1] == "my_own_claim" and all(r.startswith("|  |") for r in plain)


def test_a_numbering_is_a_python_dict_or_json(tmp_path: Path) -> None:
    (tmp_path / "n.json").write_text(json.dumps({"a": 1}))
    assert results.load_numbering(str(tmp_path / "n.json")) == {"a": 1}
    (tmp_path / "bad.json").write_text(json.dumps({"a": "one"}))
    for bad, message in ((str(tmp_path / "bad.json"), "not a mapping"), ("nowhere.py:X", "no file"),
                         (str(HYPOTHESES / "mt_reference.py") + ":NO_SUCH", "not a mapping")):
        with pytest.raises(UsageError, match=message):
            results.load_numbering(bad)


def test_section_puts_a_blank_line_before_the_table() -> None:
    text = results.render_section(report())
    assert "inconclusive.\n\n| # | claim |" in text


def test_cli_writes_the_interventions_table_between_its_own_markers(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    cell = {"value": 0.77, "ci_low": 0.667, "ci_high": 0.873, "n": 64}
    rows = [{"pair": "default", "model": "base", "intervention": "none", "params": {}, "key": "none",
             "label": "no intervention", "toxicity": cell, "perplexity": {"value": 286.17, "ci_low": 244.41,
                                                                          "ci_high": 335.05, "n": 16},
             "f1": None, "paper": {"toxicity": 0.453, "perplexity": 21.7}, "confidence": 0.95, "note": None,
             "order": 0}]
    (tmp_path / "r.json").write_text(json.dumps(report() | {"interventions": rows}))
    readme = tmp_path / "README.md"
    readme.write_text(f"{results.START}\nclaims\n{results.END}\n{results.TABLE_START}\nstale\n{results.TABLE_END}\n")
    assert results.main(["--json", str(tmp_path / "r.json"), "--readme", str(readme), "--interventions"]) == 0
    text = readme.read_text()
    assert "stale" not in text and "claims" in text  # the claims' markers untouched
    assert ("| default | base | no intervention | 0.770 [0.667, 0.873] n=64 | 286.17 [244.41, 335.05] n=16 | - "
            "| tox 0.453 / PPL 21.70 |") in text
    (tmp_path / "old.json").write_text(json.dumps(report()))
    assert results.main(["--json", str(tmp_path / "old.json"), "--interventions"]) == 2
    assert "has no interventions table" in capsys.readouterr().err
