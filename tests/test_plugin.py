"""The pytest plugin, driven through pytester: options, validation, outcomes, reports.

Inner test files state claims on synthetic per-prompt samples, so no model is needed here;
tests/test_plugin_models.py covers the model fixtures on tiny checkpoints.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Import every module the inner runs load lazily *before* pytester's in-process runs: pytester
# restores sys.modules after each inner run, a C extension (numpy.fft via scipy) cannot be
# imported twice in one process, and re-importing (and assertion-rewriting) hypothesis for every
# inner run would cost seconds each.
import hypothesis.strategies
import pytest

import mechtests.claims
import mechtests.data  # imports torch, which cannot be imported twice in one process
import mechtests.stats
import mechtests.storage
from mechtests.report import CLAIM_KEYS, check_report

assert hypothesis.strategies and mechtests.claims and mechtests.data and mechtests.stats and mechtests.storage

CLAIMS = """
import numpy as np

def test_pass(claim):
    x = np.random.default_rng(0).normal(0.5, 0.1, 64)
    claim("above", metric="mean score", direction=">", threshold=0.3, samples=(x,),
          reference=("paper A", 0.54), params={"k": 7})

def test_fail(claim):
    x = np.random.default_rng(1).normal(0.1, 0.1, 64)
    claim("refuted", metric="mean score", direction=">", threshold=0.3, samples=(x,))

def test_inconclusive(claim):
    x = np.random.default_rng(2).normal(0.32, 0.3, 16)
    claim("undecided", metric="mean score", direction=">", threshold=0.3, samples=(x,))

def test_exact(claim):
    claim("identity", metric="relative residual", direction="<", threshold=1e-4, estimate=2e-7)
"""


def _json(pytester: pytest.Pytester, name: str = "r.json") -> dict[str, Any]:
    doc = json.loads((pytester.path / name).read_text())
    check_report(doc)
    return doc


def _by_claim(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["claim"]: c for c in doc["claims"]}


# ---- registration and options ------------------------------------------------------------------

ALL_FLAGS = ["--mt-base", "--mt-tuned", "--mt-pair", "--mt-profile", "--mt-device", "--mt-dtype", "--mt-backend", "--mt-seed",
             "--mt-json", "--mt-html", "--mt-save", "--mt-compare", "--mt-compare-fail", "--mt-inconclusive",
             "--mt-cache-dir", "--mt-no-cache", "--mt-probe", "--mt-prompts", "--mt-scorer", "--mt-confidence",
             "--mt-resamples", "--mt-data", "--mt-detoxify-path", "--mt-cache-max-size"]


def test_help_lists_every_option_in_one_group_with_ini_keys(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    out = result.stdout.str()
    group = out[out.index("mechtests: mechanistic claims"):]
    group = group[:group.index("\n\n")]
    for flag in ALL_FLAGS:
        assert flag in group, flag
        assert f"  mt_{flag[5:].replace('-', '_')} " in out  # the matching ini key
    assert "{smoke,ci,full}" in group and "{fail,skip,pass}" in group


@pytest.mark.parametrize("args, message", [
    (["--mt-profile", "huge"], "--mt-profile: 'huge' is not one of smoke, ci, full"),
    (["--mt-confidence", "1.5"], "--mt-confidence: '1.5' is outside (0.0, 1.0)"),
    (["--mt-confidence", "0"], "--mt-confidence: '0' is outside (0.0, 1.0)"),
    (["--mt-confidence", "high"], "--mt-confidence: 'high' is not a valid float"),
    (["--mt-resamples", "0"], "--mt-resamples: '0' is outside"),
    (["--mt-resamples", "1"], "--mt-resamples: 1 bootstrap resamples are too few for verdicts at confidence 0.95"),
    (["--mt-confidence", "0.99"], ("profile 'smoke': 1000 bootstrap resamples are too few for verdicts at confidence "
                                   "0.99 (each tail beyond an interval needs at least 10 replicates). Fix: "
                                   "--mt-resamples 2000 or more")),
    (["--mt-resamples", "2.5"], "--mt-resamples: '2.5' is not a valid int"),
    (["--mt-seed", "-3"], "--mt-seed: '-3' is outside"),
    (["--mt-batch-size", "big"], "--mt-batch-size: 'big' is not a batch size. Fix: a positive int, or auto"),
    (["--mt-batch-size", "0"], "--mt-batch-size: '0' is outside"),
    (["--mt-base", "gpt2"], "--mt-tuned is required together with --mt-base"),
    (["--mt-tuned", "gpt2"], "--mt-base is required together with --mt-tuned"),
    (["--mt-base", "./nowhere", "--mt-tuned", "gpt2"], "nowhere': no such directory or file (given as --mt-base)"),
    (["--mt-base", "models/bse", "--mt-tuned", "gpt2"], "no such directory or file (given as --mt-base); in"),
    (["--mt-tuned", "conftest.py", "--mt-base", "gpt2"], "is a file but not a weight file"),
    (["--mt-base", "a.pt", "--mt-tuned", "b.pt"], "both models are state-dict files"),
    (["--mt-config-from", "gpt2"], "--mt-config-from applies to a state-dict --mt-base/--mt-tuned"),
    (["--mt-data", "conftest.py"], "--mt-data: "),
    (["--mt-probe-hook", "middle"], "--mt-probe-hook: 'middle' is not a probe hook"),
    (["--mt-probe-bias", "tiny"], "--mt-probe-bias: 'tiny' is not a valid float"),
    (["--mt-prompt-truncation", "middle"], "--mt-prompt-truncation: 'middle' is not one of first, last"),
    (["--mt-perspective-qps", "2"], "--mt-perspective-qps is only read by the perspective scorer"),
    (["--mt-scorer", "perspective", "--mt-perspective-qps", "0"], "--mt-perspective-qps: '0' is outside"),
    (["--mt-scorer", "perspective", "--mt-perspective-url", "ftp://x"], "is not an http(s) URL"),
    (["--mt-probe", "missing.pt"], "--mt-probe: path"),
    (["--mt-prompts", "missing.jsonl"], "--mt-prompts: path"),
    (["--mt-data", "nodata"], "--mt-data: path"),
    (["--mt-pair", "nosuch"], "--mt-pair: unknown pair 'nosuch'"),
    (["--mt-inconclusive", "maybe"], "--mt-inconclusive: 'maybe' is not one of fail, skip, pass"),
    (["--mt-scorer", "gpt4"], "--mt-scorer: unknown scorer 'gpt4': choose one of detoxify, offline, perspective"),
    (["--mt-dtype", "int8"], "--mt-dtype: 'int8' is not one of"),
    (["--mt-backend", "fast"], "--mt-backend: 'fast' is not one of auto, bridge"),
    (["--mt-scorer", "detoxify", "--mt-detoxify-path", "no/such/dir"], "--mt-detoxify-path: path"),
    (["--mt-detoxify-path", "."], "--mt-detoxify-path is only read by the detoxify scorer"),
    (["--mt-device", "gpu0"], "--mt-device: 'gpu0' is not a device"),
    (["--mt-device", "cuda:99"], "--mt-device: 'cuda:99' is not available"),
    (["--mt-json", "no/such/dir/r.json"], "--mt-json: directory"),
    (["--mt-save", "a/b"], "--mt-save: 'a/b' is not a valid name"),
    (["--mt-compare", "nobaseline"], "--mt-compare: no baseline 'nobaseline'"),
    (["--mt-compare-fail", "estimate:0.1"], "--mt-compare-fail needs --mt-compare"),
])
def test_bad_option_values_are_usage_errors_at_startup(pytester: pytest.Pytester, args: list[str],
                                                       message: str) -> None:
    pytester.makepyfile(test_mti_never="def test_never():\n    raise AssertionError('must not run')\n")
    (pytester.path / "models" / "base").mkdir(parents=True)
    for name in ("a.pt", "b.pt"):
        (pytester.path / name).write_bytes(b"")
    pytester.makeconftest("")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "ERROR: mechtests: " in err and message in err
    assert "Traceback" not in err + result.stdout.str()


def test_malformed_compare_fail_expression(pytester: pytest.Pytester) -> None:
    (pytester.path / "base.json").write_text(json.dumps({"schema": "mechtests-report/1", "claims": []}))
    result = pytester.runpytest("--mt-compare", "base.json", "--mt-compare-fail", "estimate:lots")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--mt-compare-fail: cannot parse 'estimate:lots'" in result.stderr.str()


@pytest.mark.parametrize("pyproject, message", [
    ('[tool.mechtests]\nprofil = "ci"\n', "unknown key(s) ['profil'] in [tool.mechtests]"),
    ('[tool.mechtests]\nprofile = "turbo"\n', "[tool.mechtests] profile: 'turbo' is not one of"),
    ('[tool.mechtests.thresholds]\nmy_claim = [0.6, 0.3]\n', "impossible threshold [0.6, 0.3]"),
    ('[tool.mechtests.thresholds]\nmy_claim = nan\n', "[tool.mechtests.thresholds].my_claim: threshold nan is not finite"),
    ('[tool.mechtests.pairs.mine]\nbase = "gpt2"\n', "[tool.mechtests.pairs].mine: missing tuned"),
    ('[tool.mechtests.pairs.default]\nbase = "a"\ntuned = "b"\n', "reserved"),
    ('[tool.mechtests.pairs.mine]\nbase = "gpt2"\ntuned = "gpt2"\nprobe = "nope.pt"\n', "mine.probe: path"),
    ('[tool.mechtests.pairs.mine]\nbase = "gpt2"\ntuned = "gpt2"\ncolour = 1\n', "unknown key(s) ['colour']"),
])
def test_bad_pyproject_values_are_usage_errors(pytester: pytest.Pytester, pyproject: str, message: str) -> None:
    pytester.makefile(".toml", pyproject=pyproject)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


def test_bad_ini_value_names_the_ini_key(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmt_confidence = 2\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "ini key mt_confidence: '2' is outside" in result.stderr.str()


def test_option_precedence_cli_over_ini_over_pyproject(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml('[tool.mechtests]\nprofile = "full"\nseed = 5\nresamples = 400\nconfidence = 0.8\n'
                               '[tool.pytest.ini_options]\nmt_seed = "6"\n')
    pytester.makepyfile(test_mti_cfg="""
        def test_cfg(mt_config):
            print("CFG", mt_config.profile, mt_config.seed, mt_config.n_resamples, mt_config.confidence,
                  mt_config.inconclusive, mt_config.n_prompts)
    """)
    out = pytester.runpytest("-s").stdout.str()
    assert "CFG full 6 400 0.8 fail None" in out
    out = pytester.runpytest("-s", "--mt-seed", "9", "--mt-profile", "smoke").stdout.str()
    assert "CFG smoke 9 400 0.8 skip 64" in out
    assert "mechtests: profile smoke, pairs default, seed 9, confidence 0.8, resamples 400" in out


# ---- outcomes ------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, outcomes", [
    ([], {"passed": 2, "failed": 1, "skipped": 1}),                                  # smoke: skip
    (["--mt-profile", "ci", "--mt-resamples", "500"], {"passed": 2, "failed": 2}),  # ci: fail
    (["--mt-inconclusive", "pass"], {"passed": 3, "failed": 1}),
    (["--mt-inconclusive", "fail"], {"passed": 2, "failed": 2}),
    (["--mt-inconclusive", "skip", "--mt-profile", "ci"], {"passed": 2, "failed": 1, "skipped": 1}),
])
def test_verdicts_map_to_outcomes(pytester: pytest.Pytester, args: list[str], outcomes: dict[str, int]) -> None:
    pytester.makepyfile(test_mti_claims=CLAIMS)
    result = pytester.runpytest(*args, "--mt-json", "r.json")
    result.assert_outcomes(**outcomes)
    doc = _json(pytester)
    claims = _by_claim(doc)
    assert {k: v["verdict"] for k, v in claims.items()} == {
        "above": "pass", "refuted": "fail", "undecided": "inconclusive", "identity": "pass"}
    expected_inconclusive = {"passed": "passed", "failed": "failed", "skipped": "skipped"}
    assert claims["undecided"]["outcome"] in expected_inconclusive
    assert claims["refuted"]["outcome"] == "failed" and claims["above"]["outcome"] == "passed"


def test_failure_and_skip_messages_explain_the_verdict(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mti_claims=CLAIMS)
    result = pytester.runpytest("-rs")
    result.stdout.re_match_lines([
        r"refuted: mean score = 0.09\d+ \(98.75% CI 0.0\d+ to 0.1\d+, n=64, p=\S+\) > 0.3 -> fail",
        r"the whole interval lies on the other side of the threshold: the claim is refuted.",
        # 0.317 against 0.3 with a standard error of ~0.09: within noise, so no n is promised
        r"SKIPPED .*undecided: .* -> inconclusive; .*the interval contains the threshold.*no sample size can be "
        r"promised to decide it: the estimate sits within noise of the threshold",
    ], consecutive=False)


def test_nan_samples_fail_with_numerical_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mti_nan="""
        import numpy as np
        def test_nan(claim):
            claim("broken", metric="m", direction=">", threshold=0.1, samples=(np.array([0.2, np.nan, 0.3]),))
    """)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*NumericalError: samples[[]0[]] contains 1 non-finite value(s) (first at index 1*"])


def test_terminal_summary_table(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mti_claims=CLAIMS)
    result = pytester.runpytest()
    result.stdout.re_match_lines([
        r"=+ mechtests claims \(4 claims, each CI at 98.75%\) =+",
        r"claim\s+estimate\s+CI\s+holds if\s+verdict\s+p_adj\s+n$",
        r"identity\s+2e-07\s+exact\s+< 0.0001\s+pass\s+-\s+-$",   # ordered by node id
        r"refuted\s+0.09\d*\s+\[.*\]\s+> 0.3\s+fail",
        r"undecided\s+0.317\s+.*inconclusive\s+1\s+16$",
        r"above\s+0.5\d*\s+\[0.4\d*, 0.5\d*\]\s+> 0.3\s+pass\s+\S+\s+64$",
    ], consecutive=False)
    assert not re.search(r"^above .*mean score", result.stdout.str(), re.MULTILINE)  # the metric: only with -v
    verbose = pytester.runpytest("-v")
    verbose.stdout.re_match_lines([r"claim\s+pair\s+metric\s+estimate\s+CI\s+holds if\s+verdict\s+p\s+p_adj\s+n$",
                                   r"above\s+-\s+mean score\s+0.5\d*\s+\[0.4\d*, 0.5\d*\]\s+> 0.3\s+pass\s+\S+\s+\S+\s+64$"],
                                  consecutive=False)


def test_report_section_per_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mti_claims=CLAIMS)
    result = pytester.runpytest("-rA", "-k", "test_pass")
    result.stdout.re_match_lines([r"-+ mechtests claims -+",
                                  r"above: mean score = 0.5\d* \(\d+(\.\d+)?% CI .*, n=64, p<\S+ "
                                  r"\(threshold beyond every resample\)\) "
                                  r"> 0.3 -> pass",
                                  r"reference: paper A = 0.54"], consecutive=False)


def test_a_failing_claims_explanation_is_printed_once(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mti_claims=CLAIMS)
    result = pytester.runpytest("-rA", "-k", "test_fail or test_inconclusive")
    # pytest's own short summary may repeat the message (in full when CI is set): count above it.
    out = result.stdout.str().split("short test summary info", 1)[0]
    # The failure / skip message carries the explanation; the report section no longer repeats it.
    assert out.count("the whole interval lies on the other side of the threshold") == 1, out
    assert result.stdout.str().count("the interval contains the threshold") == 1  # the skip reason, once
    assert "mechtests claims -" not in out.replace("= mechtests claims =", "")


def test_parameter_ids_sort_naturally() -> None:
    from mechtests.report import sort_claims

    ids = ["h.py::t[p-2000of98304]", "h.py::t[p-100of98304]", "h.py::t[p-1000of98304]", "h.py::t[p-200of98304]"]
    ordered = [c["nodeid"] for c in sort_claims([{"nodeid": i} for i in ids])]
    assert ordered == ["h.py::t[p-100of98304]", "h.py::t[p-200of98304]", "h.py::t[p-1000of98304]",
                       "h.py::t[p-2000of98304]"]


def test_json_report_schema_holm_and_content(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mti_claims=CLAIMS + """
import pytest

@pytest.mark.mechtests_claims(2)
def test_two_claims_one_test(claim):
    import numpy as np
    x = np.random.default_rng(9).normal(1.0, 0.2, 40)
    claim("first", metric="m", direction=">", threshold=0.5, samples=(x,))
    claim("second", metric="m", direction="within", threshold=(0.8, 1.2), samples=(x,))
""")
    pytester.runpytest("--mt-json", "r.json", "--mt-seed", "3", "--mt-confidence", "0.9", "--mt-resamples", "400",
                       "--mt-multiplicity", "none")
    doc = _json(pytester)
    assert doc["config"]["multiplicity"] == "none" and doc["config"]["family_size"] == 6
    assert doc["config"]["seed"] == 3 and doc["config"]["confidence"] == 0.9 and doc["config"]["n_resamples"] == 400
    assert doc["pairs"] == {}  # no model was loaded, no claim ran on a pair
    claims = _by_claim(doc)
    assert [c["claim"] for c in doc["claims"]] == ["identity", "refuted", "undecided", "above", "first", "second"]
    above = claims["above"]
    assert tuple(above) == CLAIM_KEYS
    assert above["params"] == {"k": 7} and above["reference"] == {"source": "paper A", "value": 0.54}
    assert above["confidence"] == 0.9 and above["n"] == 64 and above["seconds"] >= 0
    assert above["nodeid"] == "test_mti_claims.py::test_pass" and above["pair"] is None
    assert claims["identity"]["p_value"] is None and claims["identity"]["p_adjusted"] is None
    raw = [c["p_value"] for c in doc["claims"] if c["p_value"] is not None]
    m = len(raw)
    assert m == 5
    order = sorted(range(m), key=lambda i: raw[i])
    adjusted = [c["p_adjusted"] for c in doc["claims"] if c["p_value"] is not None]
    running = 0.0
    for rank, i in enumerate(order):  # Holm step-down by hand
        running = max(running, min(1.0, (m - rank) * raw[i]))
        assert adjusted[i] == pytest.approx(running)

    # the default: each of the 6 claims decided at 1 - 0.1/6, p_adjusted = 6 p (Bonferroni)
    pytester.runpytest("--mt-json", "b.json", "--mt-seed", "3", "--mt-confidence", "0.9")
    doc = _json(pytester, "b.json")
    assert doc["config"]["multiplicity"] == "bonferroni" and doc["config"]["family_size"] == 6
    for c in doc["claims"]:
        if c["p_value"] is not None:
            assert c["confidence"] == pytest.approx(1 - 0.1 / 6)
            assert c["p_adjusted"] == pytest.approx(min(1.0, 6 * c["p_value"]))
            assert (c["verdict"] == "pass") == (c["p_adjusted"] < 0.05) or c["direction"] == "within"


def test_family_wise_verdicts_control_false_passes_across_a_session() -> None:
    """40 sessions of 10 claims whose truth sits exactly at the threshold: per-claim decisions
    pass at least one false claim in most sessions; Bonferroni decisions in few (<= 5% + noise)."""
    import numpy as np

    from mechtests.claims import evaluate_claim
    from mechtests.stats import family_confidence, min_resamples

    rng = np.random.default_rng(11)
    m, sessions = 10, 40
    level = family_confidence(0.9, m)
    any_false = {"none": 0, "bonferroni": 0}
    for _ in range(sessions):
        data = [rng.normal(0.0, 1.0, 48) for _ in range(m)]
        for method, conf in (("none", 0.9), ("bonferroni", level)):
            verdicts = [evaluate_claim(f"c{j}", metric="m", direction=">", threshold=0.0, samples=(x,), confidence=conf,
                                       n_resamples=min_resamples(conf), seed=1).verdict for j, x in enumerate(data)]
            any_false[method] += "pass" in verdicts
    assert any_false["none"] >= 0.25 * sessions  # ~1 - 0.95^10 = 40% expected
    assert any_false["bonferroni"] <= 0.125 * sessions  # <= 5% expected


def test_a_second_claim_without_its_budget_is_refused(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mti_two="""
import numpy as np
def test_two(claim):
    x = np.random.default_rng(0).normal(1.0, 0.2, 40)
    claim("first", metric="m", direction=">", threshold=0.5, samples=(x,))
    claim("second", metric="m", direction=">", threshold=0.5, samples=(x,))
""")
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*claim 'second' is claim 2 of test_mti_two.py::test_two, which may state 1*"
                                 "@pytest.mark.mechtests_claims(2)*"])
    assert pytester.runpytest("--mt-multiplicity", "none").ret == 0


def test_same_seed_same_numbers_different_seed_different_numbers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mti_claims=CLAIMS)
    pytester.runpytest("--mt-json", "a.json")
    pytester.runpytest("--mt-json", "b.json")
    pytester.runpytest("--mt-json", "c.json", "--mt-seed", "1")
    a, b, c = (_by_claim(_json(pytester, n))["above"] for n in ("a.json", "b.json", "c.json"))
    assert (a["ci_low"], a["ci_high"], a["p_value"]) == (b["ci_low"], b["ci_high"], b["p_value"])
    assert a["ci_low"] != c["ci_low"] and a["estimate"] == c["estimate"]


# ---- thresholds from pyproject ---------------------------------------------------------------------

THRESHOLD_TEST = """
import numpy as np
def test_t(claim):
    x = np.random.default_rng(0).normal(0.5, 0.05, 64)
    r = claim("tunable", metric="m", direction=">", threshold=0.3, samples=(x,))
    print("THRESHOLD", r.threshold)
"""


@pytest.mark.parametrize("toml, threshold, outcome", [
    ("", "0.3", "passed"),
    ("[tool.mechtests.thresholds]\ntunable = 0.45\n", "0.45", "passed"),
    ("[tool.mechtests.thresholds]\ntunable = 0.6\n", "0.6", "failed"),
    ('[tool.mechtests.thresholds.tunable]\n"*" = 0.2\nother = 0.9\n', "0.2", "passed"),
])
def test_threshold_overrides(pytester: pytest.Pytester, toml: str, threshold: str, outcome: str) -> None:
    pytester.makepyprojecttoml(toml)
    pytester.makepyfile(test_mti_t=THRESHOLD_TEST)
    result = pytester.runpytest("-s", "--mt-json", "r.json")
    result.assert_outcomes(**{outcome: 1})
    assert _json(pytester)["claims"][0]["threshold"] == float(threshold)
    if outcome == "passed":
        assert f"THRESHOLD {threshold}" in result.stdout.str()


def test_threshold_override_of_the_wrong_shape_is_a_clear_error(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml("[tool.mechtests.thresholds]\ntunable = [0.1, 0.2]\n")
    pytester.makepyfile(test_mti_t=THRESHOLD_TEST)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*needs one number*(threshold (0.1, 0.2) comes from [[]tool.mechtests.thresholds[]])*"])


# ---- figures and HTML ------------------------------------------------------------------------------

FIGURES = """
SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="20" height="20"><circle r="{r}"/></svg>'
def test_fig_a(mt_figures, claim):
    mt_figures.add("figure A", SVG.format(r=3), caption="first")
    claim("c_a", metric="m", direction=">", threshold=0.0, estimate=1.0)
def test_fig_b(mt_figures):
    mt_figures.add("figure B", SVG.format(r=4))
"""


def test_html_report_with_figures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mti_figs=FIGURES)
    result = pytester.runpytest("--mt-html", "r.html")
    result.assert_outcomes(passed=2)
    page = (pytester.path / "r.html").read_text()
    assert '<circle r="3"/>' in page and '<circle r="4"/>' in page and "figure A" in page and "first" in page
    assert "<script" not in page and "c_a" in page
    result.stdout.fnmatch_lines(["mechtests: HTML report written to *r.html"])


def test_bad_figure_is_rejected(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mti_bad="def test_bad(mt_figures):\n    mt_figures.add('x', '<img src=\"http://a/b.png\">')\n")
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*figure 'x': a figure must be one inline <svg>...</svg> element*"])


# ---- cache -----------------------------------------------------------------------------------------

CACHE_TEST = """
def test_cache(mt_cache):
    print("ROOT", mt_cache.root)
    print("VALUE", mt_cache.get_or_compute("demo", {"x": 1}, lambda: [1, 2, 3]), mt_cache.stats.computed)
"""


def test_an_unwritable_cache_is_one_note_in_the_summary_not_a_failure(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mti_cache=CACHE_TEST)
    (pytester.path / "afile").write_text("not a directory")
    result = pytester.runpytest("-s", "--mt-cache-dir", "afile/cache")  # under a file: cannot be created
    result.assert_outcomes(passed=1)
    out = result.stdout.str()
    assert "VALUE [1, 2, 3] 1" in out
    assert out.count("cannot be written") == 1 and "memory only" in out and "--mt-cache-dir" in out


def test_cache_dir_and_no_cache(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mti_cache=CACHE_TEST)
    out = pytester.runpytest("-s").stdout.str()
    assert f"ROOT {pytester.path / '.mechtests' / 'cache'}" in out and "VALUE [1, 2, 3] 1" in out
    out = pytester.runpytest("-s").stdout.str()
    assert "VALUE [1, 2, 3] 0" in out  # served from disk by a new session
    out = pytester.runpytest("-s", "--mt-cache-dir", "elsewhere").stdout.str()
    assert f"ROOT {pytester.path / 'elsewhere'}" in out and "VALUE [1, 2, 3] 1" in out
    out = pytester.runpytest("-s", "--mt-no-cache").stdout.str()
    assert "ROOT None" in out and "VALUE [1, 2, 3] 1" in out


# ---- pairs -----------------------------------------------------------------------------------------

PAIRS_TOML = """
[tool.mechtests.pairs.alpha]
base = "ckpt/a_base"
tuned = "ckpt/a_tuned"
prompts = "prompts.txt"
thresholds = {tunable = 0.4}

[tool.mechtests.pairs.beta]
base = "org/base-model"
tuned = "org/tuned-model"
"""

PAIRS_TEST = """
import numpy as np
def test_on_pair(mt_pair, claim):
    x = np.random.default_rng(0).normal(0.5, 0.05, 64)
    r = claim("tunable", metric="m", direction=">", threshold=0.3, samples=(x,))
    print("PAIR", mt_pair.name, mt_pair.base.location, mt_pair.prompts is not None, r.threshold)

def test_without_pair(claim):
    claim("plain", metric="m", direction=">", threshold=0.0, estimate=1.0)
"""


def _pairs_project(pytester: pytest.Pytester) -> None:
    for d in ("ckpt/a_base", "ckpt/a_tuned"):
        (pytester.path / d).mkdir(parents=True)
    (pytester.path / "prompts.txt").write_text("a prompt\n")
    pytester.makepyprojecttoml(PAIRS_TOML)
    pytester.makepyfile(test_mti_pairs=PAIRS_TEST)


def test_pairs_parametrize_tests_that_need_them(pytester: pytest.Pytester) -> None:
    _pairs_project(pytester)
    result = pytester.runpytest("-v", "-s", "--mt-pair", "alpha,beta", "--mt-json", "r.json")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*test_on_pair[[]alpha[]]*", "*test_on_pair[[]beta[]]*"], consecutive=False)
    out = result.stdout.str()
    assert f"PAIR alpha {pytester.path / 'ckpt/a_base'} True 0.4" in out  # pair-specific threshold
    assert "PAIR beta org/base-model False 0.3" in out
    assert "test_without_pair[" not in out
    doc = _json(pytester)
    assert {(c["claim"], c["pair"]) for c in doc["claims"]} == {("tunable", "alpha"), ("tunable", "beta"), ("plain", None)}
    assert doc["pairs"]["beta"] == {"base": {"source": "org/base-model", "sha256": None},
                                    "tuned": {"source": "org/tuned-model", "sha256": None}, "inputs": None}


@pytest.mark.parametrize("args, ids", [
    ([], ["default"]),
    (["--mt-pair", "beta"], ["beta"]),
    (["--mt-pair", "beta", "--mt-pair", "alpha"], ["beta", "alpha"]),
    (["--mt-pair", "all"], ["default", "alpha", "beta"]),
    (["--mt-base", "org/x", "--mt-tuned", "org/y"], ["custom"]),
    (["--mt-base", "org/x", "--mt-tuned", "org/y", "--mt-pair", "custom,alpha"], ["custom", "alpha"]),
])
def test_pair_selection(pytester: pytest.Pytester, args: list[str], ids: list[str]) -> None:
    _pairs_project(pytester)
    result = pytester.runpytest("--collect-only", "-q", *args)
    lines = [ln for ln in result.stdout.lines if "test_on_pair[" in ln]
    assert lines == [f"test_mti_pairs.py::test_on_pair[{i}]" for i in ids]


def test_unused_threshold_override_is_reported(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml("[tool.mechtests.thresholds]\ntunabel = 0.4\n")
    pytester.makepyfile(test_mti_t=THRESHOLD_TEST)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["mechtests: threshold override(s) for claim(s) that did not run: tunabel *"])


MANY_CLAIMS = """
import numpy as np
import pytest

@pytest.mark.mechtests_claims(3)
def test_three(claim):
    rng = np.random.default_rng(0)
    claim("low_one", metric="m", direction=">", threshold=0.3, samples=(rng.normal(0.1, 0.1, 64),))
    claim("fine", metric="m", direction=">", threshold=0.3, samples=(rng.normal(0.5, 0.1, 64),))
    claim("low_two", metric="m", direction=">", threshold=0.3, samples=(rng.normal(0.0, 0.1, 64),))

@pytest.mark.mechtests_claims(2)
def test_undecided_then_refuted(claim):
    rng = np.random.default_rng(1)
    claim("undecided", metric="m", direction=">", threshold=0.3, samples=(rng.normal(0.32, 0.3, 16),))
    claim("refuted", metric="m", direction=">", threshold=0.3, samples=(rng.normal(0.1, 0.1, 64),))

@pytest.mark.mechtests_claims(2)
def test_undecided_twice(claim):
    rng = np.random.default_rng(2)
    claim("maybe_a", metric="m", direction=">", threshold=0.3, samples=(rng.normal(0.32, 0.3, 16),))
    claim("maybe_b", metric="m", direction=">", threshold=0.3, samples=(rng.normal(0.31, 0.3, 16),))

def test_body_error_after_a_failed_claim(claim):
    claim("refuted_first", metric="m", direction=">", threshold=0.3,
          samples=(np.random.default_rng(3).normal(0.1, 0.1, 64),))
    raise RuntimeError("the body broke")
"""


def test_every_claim_of_a_test_is_evaluated_and_the_test_fails_once_listing_all(pytester: pytest.Pytester) -> None:
    """A failing claim used to stop its test: the claims after it were never evaluated or reported."""
    pytester.makepyfile(test_many=MANY_CLAIMS)
    result = pytester.runpytest("--mt-json", "r.json", "--mt-resamples", "400", "-p", "no:cacheprovider", "-rs")
    doc = _json(pytester)
    verdicts = {c["claim"]: c["verdict"] for c in doc["claims"]}
    assert verdicts == {"low_one": "fail", "fine": "pass", "low_two": "fail", "undecided": "inconclusive",
                        "refuted": "fail", "maybe_a": "inconclusive", "maybe_b": "inconclusive",
                        "refuted_first": "fail"}
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed") == 3 and outcomes.get("skipped") == 1, outcomes
    out = result.stdout.str()
    assert "2 of 3 claims failed" in out and "low_one" in out and "low_two" in out
    assert "RuntimeError: the body broke" in out  # the body's own error wins, its claim is still reported
    result.stdout.re_match_lines([r"SKIPPED .*maybe_a.*\| .*maybe_b"])
