"""hypotheses/ end to end through the plugin, on a tiny pair with a known toxicity drop.

The "toxic" attribute is the share of vowels (a deterministic scorer that the project's
conftest substitutes for the offline classifier). The base model's embedding rows of the
vowels are pushed so greedy decoding prefers them; the tuned twin is the unpushed model with
small noise. So the tuned model is far less "toxic", the weights of the vowel rows moved a lot
(claim 3 only passes through the pair's threshold override), and every number can be checked against a direct computation.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from tiny_project import CONFTEST, HYPOTHESES, build_tiny_project, vowel_share


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_tiny_project(tmp_path_factory.mktemp("tiny_project"))


def run_hypotheses(pytester: pytest.Pytester, project: dict[str, Path], *args: str, target: str = "hypotheses") -> Any:
    if not (pytester.path / "hypotheses").exists():
        shutil.copytree(HYPOTHESES, pytester.path / "hypotheses",
                        ignore=shutil.ignore_patterns("__pycache__", "results"))
    pytester.makeconftest(CONFTEST.format(data=str(project["data"])))
    return pytester.runpytest_subprocess(
        target, "--mt-base", str(project["base"]), "--mt-tuned", str(project["tuned"]),
        "--mt-probe", str(project["probe"]), "--mt-profile", "smoke", "--mt-resamples", "400",
        "--mt-cache-dir", str(pytester.path / "cache"), "-p", "no:cacheprovider", "-q", *args)


@pytest.mark.slow  # a full plugin session (or several): > 10 s
def test_suite_on_a_tiny_pair_reports_every_claim_and_exit_code_follows_verdicts(
        pytester: pytest.Pytester, tiny_project: dict[str, Path]) -> None:
    from mechtests.data import load_prompts
    from mechtests.generation import GenerationConfig, generate
    from mechtests.models import load_pair

    # a per-pair threshold override (claim 3's default 0.99 would fail this pair)
    pytester.makepyprojecttoml("[tool.mechtests.thresholds]\nweights_stay_close = { custom = 0.5 }\n")
    result = run_hypotheses(pytester, tiny_project, "--mt-json", "report.json", "--mt-html", "report.html")
    report = json.loads((pytester.path / "report.json").read_text())
    claims = {(c["nodeid"], c["claim"]): c for c in report["claims"]}
    names = {c["claim"] for c in report["claims"]}
    outcomes = result.parseoutcomes()

    # every claim family reached a verdict, with estimate and CI
    expected = {"dpo_reduces_toxicity", "dpo_perplexity_cost", "dpo_f1_cost", "probe_separates_toxic_text",
                "weights_stay_close", "top_toxic_neurons_dampened", "tp_down_is_a_minority", "every_group_contributes",
                "anti_toxic_promotion_matters", "adjustments_are_noisy_fraction", "adjustments_are_noisy_gross",
                "reduction_in_later_layers", "attribution_is_complete", "probe_subtraction_detoxifies"}
    assert expected <= names, sorted(expected - names)
    for c in report["claims"]:
        assert c["verdict"] in ("pass", "fail", "inconclusive") and c["estimate"] is not None
        assert c["ci_low"] <= c["estimate"] + 1e-9 and c["estimate"] <= c["ci_high"] + 1e-9
        assert c["reference"] is not None and c["reference"]["source"].startswith("PAPER.md")
        # pytest outcome follows the verdict (smoke profile: inconclusive -> skip)
        assert c["outcome"] == {"pass": "passed", "fail": "failed", "inconclusive": "skipped"}[c["verdict"]], c

    # exit code follows the verdicts: 1 exactly when a test failed
    assert result.ret == (1 if outcomes.get("failed", 0) else 0)
    assert outcomes.get("errors", 0) == 0, result.stdout.str()[-3000:]

    # known answers: the vowel rows moved (below the paper's 0.99, above the pair's override 0.5),
    # completeness is an identity
    weights = next(c for c in report["claims"] if c["claim"] == "weights_stay_close")
    assert 0.5 < weights["estimate"] < 0.99 and weights["threshold"] == 0.5 and weights["verdict"] == "pass"
    complete = next(c for c in report["claims"] if c["claim"] == "attribution_is_complete")
    assert complete["verdict"] == "pass" and complete["estimate"] < 1e-4

    # claim 1's estimate equals a direct computation on the same prompts
    pair = load_pair(str(tiny_project["base"]), str(tiny_project["tuned"]), name="check")
    prompts = load_prompts(tiny_project["data"] / "challenge.jsonl")
    cfg = GenerationConfig(max_new_tokens=20, max_prompt_tokens=32, batch_size=32, n_blocks=20)
    tox_b = vowel_share(generate(pair.base, prompts, config=cfg).continuations)
    tox_t = vowel_share(generate(pair.tuned, prompts, config=cfg).continuations)
    reduce = next(c for c in report["claims"] if c["claim"] == "dpo_reduces_toxicity")
    assert reduce["estimate"] == pytest.approx(1 - tox_t.mean() / tox_b.mean(), rel=1e-9)
    assert reduce["verdict"] == "pass"

    # the HTML report carries the papers' figures, and the JSON report the data each was drawn from
    html = (pytester.path / "report.html").read_text()
    for title in ("Share of the probe-projected reduction per group", "Reduction per layer",
                  "Activation change vs cosine", "Recovered fraction vs k"):
        assert title in html, title
        entry = next(f for f in report["figures"] if f["title"].startswith(title))
        assert entry["data"], title
    recovery = next(f for f in report["figures"] if f["title"].startswith("Recovered fraction"))["data"]
    assert recovery["render"] == "mt_paper_figures:recovery_figure"  # the papers' figure: hypotheses/
    assert {r["family"] for r in recovery["rows"]} >= {"zero top-k toxic", "patch TP↓"}
    assert len(claims) == len(report["claims"])

    # the interventions table: every condition the claims used, the papers' ones named, with their values
    rows = {(r["model"], r["label"]): r for r in report["interventions"]}
    base_row = rows[("base", "no intervention")]
    assert base_row["toxicity"]["value"] == pytest.approx(tox_b.mean(), rel=1e-9)
    assert base_row["toxicity"]["n"] == len(prompts) and base_row["paper"]["toxicity"] == 0.453
    assert base_row["perplexity"] is not None and base_row["f1"] is not None
    assert rows[("tuned", "no intervention (DPO)")]["toxicity"]["value"] == pytest.approx(tox_t.mean(), rel=1e-9)
    assert any(label.startswith("patch TP↓ to the tuned model's activations (") for _, label in rows)
    assert ("tuned", "scale top-7 toxic key vectors x5 (7 neurons here)") in rows
    assert all(r["toxicity"] or r["perplexity"] or r["f1"] for r in report["interventions"])
    assert "<h2>Interventions</h2>" in html
    _html_lays_out_in_a_browser(pytester.path / "report.html")


@pytest.mark.slow  # three plugin sessions: > 10 s
def test_the_protocol_table_shares_the_claims_cache_both_ways(
        pytester: pytest.Pytester, tiny_project: dict[str, Path]) -> None:
    """``pytest hypotheses/protocol_table.py``: the papers' 13 conditions, printed without -v, in
    the JSON report; a condition a claim computed is a cache hit for it, and the other way round."""
    cache = pytester.path / "cache"

    def generations() -> int:
        return len(list((cache / "generation").rglob("*.npz")))

    claims = run_hypotheses(pytester, tiny_project, "-k", "tp_down", target="hypotheses/test_claims_patching.py")
    assert claims.ret in (0, 1), claims.stdout.str()[-2000:]
    assert generations() == 3  # base, tuned, TP↓ patched
    protocol = run_hypotheses(pytester, tiny_project, "--mt-json", "protocol.json",
                              target="hypotheses/protocol_table.py")
    assert protocol.ret == 0, protocol.stdout.str()[-3000:]
    out = protocol.stdout.str()
    assert "mechtests: interventions table (" in out and "scale top-7 toxic key vectors x10" in out
    rows = json.loads((pytester.path / "protocol.json").read_text())["interventions"]
    papers = [r for r in rows if r["paper"]]
    assert len(papers) == 13  # + rows the claims label too, when one is the same condition here
    ran = [r for r in rows if r["intervention"] != "omitted"]
    for r in ran:
        assert r["toxicity"]["n"] == 40 and r["perplexity"]["n"] >= 1 and r["f1"]["n"] == 12, r
    for r in rows:
        if r["intervention"] == "omitted":  # e.g. more toxic & positively activated neurons than the model has
            assert r["note"].startswith("not run: ") and "exceeds" in r["note"] and r["toxicity"] is None
    distinct = {(r["model"], r["key"]) for r in ran}
    assert len(distinct) < len(ran)  # top 100 / 200 of 98,304 are one neuron of 128 here: one condition, two rows
    for r in ran:
        twins = [o["label"] for o in ran if (o["model"], o["key"]) == (r["model"], r["key"]) and o is not r]
        assert (r["note"] == f"the same condition as {len(twins)} other row(s) on this pair") == bool(twins), r
    assert generations() == len(distinct)  # the claims' three conditions were not computed again
    # the other way: the ablation claims on the protocol's conditions compute nothing new
    ablation = run_hypotheses(pytester, tiny_project, "-k", "100of or 200of or 1000of", "-n", "2",
                              "--mt-json", "ablation.json", target="hypotheses/test_claims_ablation.py")
    assert ablation.ret in (0, 1), ablation.stdout.str()[-2000:]
    assert generations() == len(distinct)
    merged = json.loads((pytester.path / "ablation.json").read_text())["interventions"]
    labels = [r["label"] for r in merged]
    assert labels[:2] == ["no intervention", "no intervention (DPO)"] and len(labels) == len(set(labels))
    assert "zero top 100/98,304 toxic value vectors (1 neurons here)" in labels


def _html_lays_out_in_a_browser(html: Path) -> None:
    """In headless Chromium: the page never overflows sideways, the claims table fits a 1024 px
    window, and no two texts of a figure overlap (the log-axis labels were a smear)."""
    import browser  # tests/browser.py: also a script for screenshots (README)

    if browser.chromium() is None:
        pytest.skip("no Chromium on PATH for the layout check (apt-get install chromium)")
    for width in (1280, 1024, 900):
        m = browser.measure(html, width)
        assert m["scrollWidth"] <= m["innerWidth"], (width, m)
        if width >= 1024:
            assert m["tableRight"] <= m["innerWidth"], (width, m["tableRight"])
        assert len(m["figures"]) >= 4
        for figure in m["figures"]:
            assert figure["texts"] > 5 and not figure["overlaps"], (width, figure)


@pytest.mark.slow  # two plugin sessions: > 10 s
def test_a_post_sublayer_norm_pair_decides_only_the_claims_that_apply(
        pytester: pytest.Pytester, tiny_project: dict[str, Path], tmp_path: Path) -> None:
    """On a Gemma-2 pair (MLP output normed before the residual stream) every claim resting on
    value vectors — toxic-neuron rankings and what ablates, patches or scales them, the groups,
    the attribution, completeness — is undefined with the reason, never decided; the claims on
    outputs are decided as on any pair, the report records the architecture, and the papers' table
    says why the neuron rows did not run."""
    from mechtests.testing import make_tiny_checkpoint, perturbed_copy

    base = make_tiny_checkpoint(tmp_path / "gemma2-base", arch="gemma2", n_ctx=64)
    project = {**tiny_project, "base": base, "tuned": perturbed_copy(base, tmp_path / "gemma2-tuned", scale=0.05)}
    result = run_hypotheses(pytester, project, "--mt-json", "report.json")
    out = result.stdout.str()
    sections = out.split("short test summary info")[0]  # the summary repeats messages when the terminal is wide
    report = json.loads((pytester.path / "report.json").read_text())
    decided = {c["claim"] for c in report["claims"]}
    assert decided == {"dpo_perplexity_cost", "dpo_f1_cost", "probe_separates_toxic_text", "weights_stay_close"}, \
        sorted(decided)
    # this random pair's continuations hold no vowels: the two relative reductions say so, not NaN
    assert sections.count("undefined: the base model's mean toxicity is 0 over these 40 prompts") == 2
    # 32 claims - the 6 above: each says why once (25 at fixture set-up, completeness in its body)
    assert sections.count("undefined: a claim on neurons' value vectors is undefined on Gemma2ForCausalLM") == 26, \
        out[-4000:]
    assert result.parseoutcomes()["errors"] == 25
    assert "FAILED hypotheses/test_claims_attribution.py::test_attribution_is_complete[custom]" in out
    inputs = report["pairs"]["custom"]["inputs"]
    assert inputs["base"]["post_sublayer_norms"] is True and inputs["base"]["architecture"] == "Gemma2ForCausalLM"

    table = run_hypotheses(pytester, project, "--mt-json", "protocol.json", target="hypotheses/protocol_table.py")
    assert table.ret == 0, table.stdout.str()[-3000:]
    rows = json.loads((pytester.path / "protocol.json").read_text())["interventions"]
    ran = [r["label"] for r in rows if r["intervention"] != "omitted"]
    assert ran == ["no intervention", "no intervention (DPO)"]
    for r in rows[2:]:
        assert r["note"].startswith("not run: undefined on Gemma2ForCausalLM: its MLP output passes a norm"), r
