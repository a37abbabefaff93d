"""mechtests.report: schema mechtests-report/2, terminal table, comparison, self-contained HTML."""

from __future__ import annotations

import re
from typing import Any

import pytest

from mechtests.claims import evaluate_claim
from mechtests.report import (
    CLAIM_KEYS,
    ENV_KEYS,
    TABLE_WIDTH,
    Figure,
    build_report,
    check_report,
    check_svg,
    comparison_lines,
    comparison_section,
    environment,
    fit_table,
    format_table,
    render_html,
    report_schema,
    table_rows,
)
from mechtests.stats import Estimate
from mechtests.storage import parse_compare_fail


def _records() -> list[dict[str, Any]]:
    a = evaluate_claim("b_claim", metric="m", direction=">", threshold=0.3, estimate=0.5, pair="default")
    b = evaluate_claim("a_claim", metric="m", direction="within", threshold=(0.1, 0.2), estimate=0.15)
    recs = [a.to_record(nodeid="t.py::z[default]", outcome="passed"), b.to_record(nodeid="t.py::a", outcome="passed")]
    recs[0]["_index"] = 0
    return recs


def _doc() -> dict[str, Any]:
    return build_report(config={"profile": "smoke", "seed": 0, "confidence": 0.95, "n_resamples": 1000,
                                "multiplicity": "none"},
                        environment=environment("cpu", "float32"),
                        pairs={"default": {"base": {"source": "b", "sha256": "1" * 64},
                                           "tuned": {"source": "t", "sha256": "2" * 64}}},
                        claims=_records(), created="2026-11-26T00:00:00+00:00")


def test_report_has_exactly_the_schema() -> None:
    doc = _doc()
    check_report(doc)
    # every key always written; "interventions" is optional in the schema only for older reports
    assert tuple(doc) == (*report_schema()["required"], "interventions") and tuple(doc["environment"]) == ENV_KEYS
    assert set(report_schema()["properties"]) == set(doc)
    assert [tuple(c) for c in doc["claims"]] == [CLAIM_KEYS, CLAIM_KEYS]  # helper keys (_index) dropped
    assert [c["nodeid"] for c in doc["claims"]] == ["t.py::a", "t.py::z[default]"]  # deterministic order
    assert doc["environment"]["device"] == "cpu" and doc["environment"]["torch"]
    assert doc["run"] == {"complete": True, "incomplete": None, "claims": 2, "deselected": 0}
    assert doc["figures"] == [] and doc["comparison"] is None and doc["pairs"]["default"]["inputs"] is None


def test_a_report_from_before_the_bias_allowance_still_reads_and_is_rewritten_with_it() -> None:
    doc = _doc()
    for c in doc["claims"]:
        del c["bias_allowance"]  # a baseline saved before the key existed
    check_report(doc)
    again = build_report(config=doc["config"], environment=doc["environment"], pairs=doc["pairs"],
                         claims=doc["claims"], created=doc["created"])
    assert [c["bias_allowance"] for c in again["claims"]] == [0.0, 0.0]
    doc["claims"][0]["bias_allowance"] = -0.1
    with pytest.raises(ValueError, match="bias_allowance"):
        check_report(doc)


def test_the_schema_ships_with_the_package() -> None:
    import importlib.resources

    text = importlib.resources.files("mechtests").joinpath("schemas/mechtests-report-2.schema.json").read_text()
    assert '"const": "mechtests-report/2"' in text


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d.pop("pairs"), "report: 'pairs' is a required property"),
    (lambda d: d["claims"][0].pop("p_adjusted"), "report.claims\\[0\\]: 'p_adjusted' is a required"),
    (lambda d: d["claims"][0].update(extra=1), "report.claims\\[0\\]: Additional properties .*'extra'"),
    (lambda d: d["claims"][0].update(verdict="maybe"), "report.claims\\[0\\].verdict: 'maybe' is not one of"),
    (lambda d: d.update(schema="mechtests-report/1"), "report.schema: 'mechtests-report/2' was expected"),
    (lambda d: d["environment"].pop("git_commit"), "report.environment: 'git_commit' is a required"),
    (lambda d: d["config"].pop("multiplicity"), "report.config: 'multiplicity' is a required"),
    (lambda d: d["claims"][1].update(p_value=1.5), "report.claims\\[1\\].p_value: 1.5 is greater than"),
    (lambda d: d.update(created="yesterday"), "report.created: 'yesterday' is not a 'date-time'"),
    (lambda d: d["pairs"]["default"]["base"].update(sha256="abc"), "sha256: 'abc' does not match"),
])
def test_check_report_names_the_problem(mutate: Any, match: str) -> None:
    doc = _doc()
    mutate(doc)
    with pytest.raises(ValueError, match=match):
        check_report(doc)


def test_table_rows_show_ci_threshold_verdict_and_deciding_n() -> None:
    r = evaluate_claim("near", metric="m", direction=">", threshold=0.3,
                       estimate=Estimate(0.35, 0.2, 0.5, 0.95, 40, 0.3))
    rec = r.to_record(nodeid="x", p_adjusted=0.6)
    assert rec["decisive_n"] == r.decisive_n and r.decisive_n
    rows = table_rows([rec])
    assert rows[0] == ["claim", "estimate", "CI", "holds if", "verdict", "p_adj", "n"]
    assert rows[1] == ["near", "0.35", "[0.2, 0.5]", "> 0.3", f"inconclusive (n~{r.decisive_n})", "0.6", "40"]
    verbose = table_rows([rec], verbose=True)
    assert verbose[0] == ["claim", "pair", "metric", "estimate", "CI", "holds if", "verdict", "p", "p_adj", "n"]
    assert verbose[1][1:3] == ["-", "m"] and verbose[1][7] == "0.3"
    lines = format_table(rows)
    assert len(lines) == 3 and set(lines[1]) <= {"-", " "}


def test_table_rows_tell_parametrized_claims_apart() -> None:
    r = evaluate_claim("ablation", metric="m", direction="<", threshold=0.75,
                       estimate=Estimate(0.2, 0.1, 0.3, 0.95, 40, 0.001), pair="default")
    recs = [r.to_record(nodeid=f"h/test_a.py::test_zero[default-{k}]", p_adjusted=0.002) for k in ("k100", "k200")]
    assert [row[0] for row in table_rows(recs)[1:]] == ["ablation[k100]", "ablation[k200]"]
    assert [row[0] for row in table_rows(recs, verbose=True)[1:]] == ["ablation[default-k100]", "ablation[default-k200]"]
    other = dict(recs[0], pair="other", nodeid="h/test_a.py::test_zero[other-k100]")
    two_pairs = table_rows([*recs, other])
    assert two_pairs[0][1] == "pair" and two_pairs[3][:2] == ["ablation[k100]", "other"]


def test_the_summary_of_the_reference_suite_fits_120_columns() -> None:
    """The widest rows the default pair's run produces (measured: 154 columns before)."""
    def rec(name: str, params: str, est: float, lo: float, hi: float, verdict: str, n_dec: int | None) -> dict[str, Any]:
        return {"claim": name, "pair": "default", "nodeid": f"h/t.py::t[default-{params}]", "metric": "m" * 60,
                "direction": "<", "threshold": 0.75, "estimate": est, "ci_low": lo, "ci_high": hi, "n": 64,
                "p_value": 0.000123456, "p_adjusted": 0.00169, "verdict": verdict, "decisive_n": n_dec}
    recs = [rec("zero_positive_ablation_not_enough", "2000of98304", -0.001628, -0.09668, 0.008003, "inconclusive", 145),
            rec("probe_subtraction_detoxifies", "ppl_cost_8.6pct", 0.002445, -0.00692, 0.4019, "fail", None)]
    lines = fit_table(table_rows(recs))
    assert max(map(len, lines)) <= TABLE_WIDTH
    assert "zero_positive_ablation_not_enough[2000of98304]" in lines[2]  # nothing had to be cut
    long = [dict(r, claim="c" * 150) for r in recs]
    lines = fit_table(table_rows(long))
    assert max(map(len, lines)) <= TABLE_WIDTH and "..." in lines[2]
    assert max(map(len, format_table(table_rows(recs, verbose=True)))) > TABLE_WIDTH  # -v shows everything


def test_comparison_judges_moves_new_and_missing_and_hides_unchanged_rows() -> None:
    base = _doc()
    now = [dict(c) for c in base["claims"]]
    now.append(dict(now[0], nodeid="t.py::new"))
    now[1] = dict(now[1], estimate=0.42, verdict="pass")
    base["claims"].append(dict(base["claims"][0], nodeid="t.py::gone"))
    section = comparison_section(now, base, name="acc", path="acc.json", gate=False,
                                 tolerances=parse_compare_fail("estimate:0.05"))
    status = {r["nodeid"]: r["status"] for r in section["claims"]}
    assert status == {"t.py::a": "unchanged", "t.py::z[default]": "regressed", "t.py::new": "new", "t.py::gone": "missing"}
    assert section["matched"] == 2 and section["regressed"] == 1 and section["tolerances"] == ["estimate: 0.05 absolute"]
    moved = next(r for r in section["claims"] if r["status"] == "regressed")
    assert moved["change"] == pytest.approx(-0.08) and "the wrong way for '> 0.3'" in moved["regressions"][0]
    text = "\n".join(comparison_lines(section))
    assert re.search(r"b_claim\s+0.5\s+0.42\s+-0.08\s+pass\s+regressed", text)
    assert re.search(r"a_claim\s+-\s+0.15\s+-\s+pass\s+new", text) and re.search(r"a_claim\s+0.15\s+-\s+-\s+pass\s+missing", text)
    assert "1 claim(s) unchanged against the baseline (-v lists them too)" in text
    assert text.count("\n") == 5  # header, rule, 3 moved rows, the count
    verbose = "\n".join(comparison_lines(section, verbose=True))
    assert re.search(r"a_claim\s+-\s+0.15\s+0.15\s+\+0\s+pass\s+unchanged", verbose)
    doc = dict(base, comparison=section)
    check_report(doc)


def test_html_is_self_contained_and_escaped() -> None:
    svg = '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="5" height="5"/></svg>'
    doc = _doc()
    doc["claims"][0]["claim"] = "<b>x</b>"
    page = render_html(doc, [Figure("shares <1>", svg, "caption & more")])
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert svg in page and "&lt;b&gt;x&lt;/b&gt;" in page and "shares &lt;1&gt;" in page
    assert "<script" not in page and not re.search(r"(src|href)=\"(http|//)", page)
    assert 'class="pass"' in page


@pytest.mark.parametrize("bad", ["<div></div>", "<svg><script>alert(1)</script></svg>",
                                 '<svg><image href="http://x/y.png"/></svg>'])
def test_check_svg_rejects_non_self_contained_figures(bad: str) -> None:
    with pytest.raises(ValueError):
        check_svg(bad)
