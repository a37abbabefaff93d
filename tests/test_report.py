"""mechtests.report: schema mechtests-report/1, terminal table, comparison, self-contained HTML."""

from __future__ import annotations

import re
from typing import Any

import pytest

from mechtests.claims import evaluate_claim
from mechtests.report import (
    CLAIM_KEYS,
    ENV_KEYS,
    TOP_KEYS,
    Figure,
    build_report,
    check_report,
    check_svg,
    comparison_lines,
    environment,
    format_table,
    render_html,
    table_rows,
)
from mechtests.stats import Estimate


def _records() -> list[dict[str, Any]]:
    a = evaluate_claim("b_claim", metric="m", direction=">", threshold=0.3, estimate=0.5, pair="default")
    b = evaluate_claim("a_claim", metric="m", direction="within", threshold=(0.1, 0.2), estimate=0.15)
    recs = [a.to_record(nodeid="t.py::z[default]", outcome="passed"), b.to_record(nodeid="t.py::a", outcome="passed")]
    recs[0]["_index"] = 0
    return recs


def _doc() -> dict[str, Any]:
    return build_report(config={"profile": "smoke", "seed": 0, "confidence": 0.95, "n_resamples": 1000},
                        environment=environment("cpu", "float32"),
                        pairs={"default": {"base": {"source": "b", "sha256": "1" * 64},
                                           "tuned": {"source": "t", "sha256": "2" * 64}}},
                        claims=_records(), created="2026-11-26T00:00:00+00:00")


def test_report_has_exactly_the_schema() -> None:
    doc = _doc()
    check_report(doc)
    assert tuple(doc) == TOP_KEYS and tuple(doc["environment"]) == ENV_KEYS
    assert [tuple(c) for c in doc["claims"]] == [CLAIM_KEYS, CLAIM_KEYS]  # helper keys (_index) dropped
    assert [c["nodeid"] for c in doc["claims"]] == ["t.py::a", "t.py::z[default]"]  # deterministic order
    assert doc["environment"]["device"] == "cpu" and doc["environment"]["torch"]


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d.pop("pairs"), "missing \\['pairs'\\]"),
    (lambda d: d["claims"][0].pop("p_adjusted"), "claims\\[0\\]: missing \\['p_adjusted'\\]"),
    (lambda d: d["claims"][0].update(extra=1), "unexpected \\['extra'\\]"),
    (lambda d: d["claims"][0].update(verdict="maybe"), "verdict"),
    (lambda d: d.update(schema="mechtests-report/2"), "schema"),
    (lambda d: d["environment"].pop("git_commit"), "environment"),
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
    rec["_n_to_decide"] = r.decisive_n
    rows = table_rows([rec])
    assert rows[0] == ["claim", "pair", "estimate", "CI", "threshold", "verdict", "p", "p_adj", "n"]
    assert rows[1] == ["near", "-", "0.35", "[0.2, 0.5]", "> 0.3", f"inconclusive (n~{r.decisive_n})", "0.3", "0.6", "40"]
    lines = format_table(rows)
    assert len(lines) == 3 and set(lines[1]) <= {"-", " "}


def test_table_rows_tell_parametrized_claims_apart() -> None:
    r = evaluate_claim("ablation", metric="m", direction="<", threshold=0.75,
                       estimate=Estimate(0.2, 0.1, 0.3, 0.95, 40, 0.001))
    recs = [r.to_record(nodeid=f"h/test_a.py::test_zero[default-{k}]", p_adjusted=0.002) for k in ("k100", "k200")]
    assert [row[0] for row in table_rows(recs)[1:]] == ["ablation[default-k100]", "ablation[default-k200]"]


def test_comparison_lines_show_moves_new_and_missing() -> None:
    base = _doc()
    now = [dict(c) for c in base["claims"]]
    now[1] = dict(now[1], estimate=0.42, verdict="pass")
    now[0] = dict(now[0], nodeid="t.py::new")
    text = "\n".join(comparison_lines(now, base))
    assert re.search(r"b_claim\[default\]\s+default\s+0.5\s+0.42\s+-0.08\s+pass", text)
    assert re.search(r"a_claim\s+-\s+-\s+0.15\s+new", text)
    assert re.search(r"a_claim\s+-\s+0.15\s+-\s+missing", text)


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
