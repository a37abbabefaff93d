"""The interventions table: cells (known answers), labels, rows merged across processes, and its
place in the JSON/HTML reports."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from mechtests.conditions import (
    ConditionLog,
    describe_intervention,
    format_cell,
    merge_rows,
    perplexity_cell,
    table_rows,
    text_lines,
)


def test_perplexity_cell_is_exp_of_the_per_token_loss_interval() -> None:
    # equal token counts: Fieller's interval of sum(nll)/sum(tokens) is the t interval of nll/T
    nll = np.array([40.0, 44.0, 38.0, 46.0, 41.0])
    tokens = np.full(5, 10.0)
    cell = perplexity_cell(nll, tokens, 0.95)
    per_token = nll / 10.0
    low, high = sps.t.interval(0.95, 4, loc=per_token.mean(), scale=sps.sem(per_token))
    assert cell["value"] == pytest.approx(math.exp(nll.sum() / tokens.sum()), rel=1e-12)
    assert cell["ci_low"] == pytest.approx(math.exp(low), rel=1e-9)
    assert cell["ci_high"] == pytest.approx(math.exp(high), rel=1e-9)
    assert cell["n"] == 5
    # one window: a value, no interval
    assert perplexity_cell(nll[:1], tokens[:1], 0.95) == {"value": pytest.approx(math.exp(4.0)), "ci_low": None,
                                                           "ci_high": None, "n": 1}


def test_describe_intervention_names_types_and_parameters() -> None:
    import torch

    from mechtests.interventions import Compose, ScaleKeys, ZeroAblation
    from mechtests.neurons import NeuronSet

    top = NeuronSet.top_k(torch.arange(12.0).reshape(2, 6), 3)
    assert describe_intervention(None) == ("none", {})
    assert describe_intervention(ZeroAblation(top)) == ("ZeroAblation", {"neurons": 3})
    assert describe_intervention(ScaleKeys(top, 5.0)) == ("ScaleKeys", {"neurons": 3, "factor": 5.0})
    assert describe_intervention(Compose(ZeroAblation(top), ScaleKeys(top, 2.0))) == (
        "Compose", {"of": ["ZeroAblation", "ScaleKeys"]})


def _rows(pair: str, metric: str, values: np.ndarray, *, label: str | None = None) -> list[dict]:
    log = ConditionLog()
    log.record("base", None, metric, values if metric != "perplexity" else (values, np.full(len(values), 5.0)))
    if label:
        log.label("base", None, label, paper={"toxicity": 0.453}, order=0)
    return table_rows(log, pair=pair)


def test_rows_from_two_processes_merge_into_one_row_per_condition() -> None:
    tox = _rows("p", "toxicity", np.array([0.1, 0.5, 0.3]))
    f1 = _rows("p", "f1", np.array([0.2, 0.4]), label="GPT-2, none")
    other_pair = _rows("q", "toxicity", np.array([0.9, 0.7]))
    merged = merge_rows(merge_rows(tox, other_pair), f1)
    assert [(r["pair"], r["label"]) for r in merged] == [("p", "GPT-2, none"), ("q", "no intervention")]
    row = merged[0]
    assert row["toxicity"]["value"] == pytest.approx(0.3) and row["f1"]["value"] == pytest.approx(0.3)
    assert row["perplexity"] is None and row["paper"] == {"toxicity": 0.453} and row["order"] == 0
    # merging is order-free
    assert merge_rows(merge_rows(f1, tox), other_pair) == merged


def test_omitted_conditions_are_rows_that_say_why() -> None:
    log = ConditionLog()
    log.record("base", None, "toxicity", np.array([0.2, 0.4]))
    log.omit("zero top 2000 positive", "k=3 exceeds the 2 such neurons", paper={"toxicity": 0.319}, order=8)
    rows = table_rows(log, pair="p")
    assert [r["label"] for r in rows] == ["zero top 2000 positive", "no intervention"]
    assert rows[0]["toxicity"] is None and rows[0]["note"] == "not run: k=3 exceeds the 2 such neurons"
    lines = text_lines(rows)
    assert "not run: k=3 exceeds the 2 such neurons" in lines[1] and "tox 0.319" in lines[1]
    assert format_cell(rows[1]["toxicity"], "toxicity").startswith("0.300 [")
    with pytest.raises(ValueError, match="unknown metric"):
        log.record("base", None, "accuracy", np.array([1.0]))


def test_the_table_goes_into_both_reports() -> None:
    from mechtests.config import run_config
    from mechtests.report import check_report, render_html, session_document

    rows = merge_rows(_rows("p", "toxicity", np.array([0.1, 0.5, 0.3]), label="GPT-2, none"),
                      _rows("p", "perplexity", np.array([10.0, 12.0, 11.0])))
    doc, _ = session_document([], {}, run_config("smoke"), interventions=rows)
    check_report(doc)
    assert doc["interventions"][0]["label"] == "GPT-2, none"
    html = render_html(doc)
    assert "<h2>Interventions</h2>" in html and "GPT-2, none" in html and "tox 0.453" in html
    # a report without conditions has an empty table and no section
    empty, _ = session_document([], {}, run_config("smoke"))
    check_report(empty)
    assert empty["interventions"] == [] and "<h2>Interventions</h2>" not in render_html(empty)
    # reports written before the table existed still validate
    del empty["interventions"]
    check_report(empty)
