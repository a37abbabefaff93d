"""The plugin across runs and processes: baselines, comparisons, pytest-xdist parity."""

from __future__ import annotations

import json
import re
from typing import Any

import hypothesis.strategies  # noqa: F401  (pre-import: see tests/test_plugin.py)
import pytest
import transformers.models.gpt2.modeling_gpt2  # noqa: F401  (the xdist controller's pre-flight builds one on meta)

import mechtests.claims
import mechtests.preflight
import mechtests.stats
import mechtests.storage  # noqa: F401
from mechtests.report import check_report

MOVING = """
import numpy as np
from pathlib import Path

def test_moving(claim):
    effect = float(Path(__file__).with_name("effect.txt").read_text())
    x = np.random.default_rng(0).normal(0.0, 0.02, 64)
    x = x - x.mean() + effect          # sample mean exactly `effect`
    claim("moving", metric="m", direction=">", threshold=0.3, samples=(x,))

def test_stable(claim):
    claim("stable", metric="m", direction="<", threshold=1.0, estimate=0.5)
"""


def _run(pytester: pytest.Pytester, effect: float, *args: str) -> pytest.RunResult:
    (pytester.path / "effect.txt").write_text(str(effect))
    return pytester.runpytest(*args)


def test_save_then_compare_prints_each_change(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mti_moving=MOVING)
    result = _run(pytester, 0.5, "--mt-save", "main")
    result.assert_outcomes(passed=2)
    stored = pytester.path / ".mechtests" / "baselines" / "main" / "0001.json"
    result.stdout.fnmatch_lines([f"mechtests: baseline 'main' saved to {stored}"])
    doc = json.loads(stored.read_text())
    check_report(doc)
    assert doc["environment"]["python"] and doc["environment"]["torch"]
    assert {c["claim"]: c["estimate"] for c in doc["claims"]} == {"moving": pytest.approx(0.5), "stable": 0.5}

    result = _run(pytester, 0.45, "--mt-compare", "main")
    result.assert_outcomes(passed=2)  # comparing alone never fails a test
    result.stdout.re_match_lines([r"-+ mechtests: change against baseline main \(.*main/0001.json\) -+",
                                  r"claim\s+baseline\s+now\s+change\s+verdict\s+status$",
                                  r"moving\s+0.5\s+0.45\s+-0.05\s+pass\s+moved$",
                                  r"1 claim\(s\) unchanged against the baseline \(-v lists them too\)"], consecutive=False)
    assert not re.search(r"^stable\s.*unchanged$", result.stdout.str(), re.M)  # unmoved rows only with -v
    verbose = _run(pytester, 0.45, "--mt-compare", "main", "-v", "--mt-json", "r.json")
    verbose.stdout.re_match_lines([r"stable\s+-\s+0.5\s+0.5\s+\+0\s+pass\s+unchanged$"], consecutive=False)
    comparison = json.loads((pytester.path / "r.json").read_text())["comparison"]
    assert comparison["baseline"] == "main" and comparison["path"] == str(stored) and comparison["gate"] is False
    assert {r["claim"]: r["status"] for r in comparison["claims"]} == {"moving": "moved", "stable": "unchanged"}
    assert comparison["matched"] == 2 and comparison["regressed"] == 0


@pytest.mark.parametrize("effect, expr, message", [
    (0.45, "estimate:0.02", "claim moving moved from 0.5 (CI [*]) to 0.45 (CI [*]), the wrong way for '> 0.3' "
                            "(estimate: 0.02 absolute)"),
    (0.45, "estimate:5%", "claim moving moved from 0.5 (CI [*]) to 0.45 (CI [*]), the wrong way for '> 0.3' "
                          "(estimate: 5% relative)"),
    (0.301, "verdict", "claim moving moved from pass to inconclusive, a worse verdict (verdict: any worse verdict)*"),
])
def test_compare_fail_fails_only_the_moved_claims_test(pytester: pytest.Pytester, effect: float, expr: str,
                                                       message: str) -> None:
    pytester.makepyfile(test_mti_moving=MOVING)
    _run(pytester, 0.5, "--mt-save", "main").assert_outcomes(passed=2)
    result = _run(pytester, effect, "--mt-compare", "main", "--mt-compare-fail", expr, "--mt-json", "r.json")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["FAILED test_mti_moving.py::test_moving - Failed: claim moving moved from*"])
    result.stdout.fnmatch_lines(["*" + message.replace("[", "[[]").replace("[[]*]", "[[]*]")])
    doc = json.loads((pytester.path / "r.json").read_text())
    assert {c["claim"]: c["outcome"] for c in doc["claims"]} == {"moving": "failed", "stable": "passed"}


def test_compare_within_tolerance_passes_and_accepts_a_report_path(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mti_moving=MOVING)
    _run(pytester, 0.5, "--mt-json", "first.json").assert_outcomes(passed=2)
    result = _run(pytester, 0.49, "--mt-compare", "first.json", "--mt-compare-fail", "estimate:0.02,verdict")
    result.assert_outcomes(passed=2)


GATED = """
import numpy as np
from pathlib import Path

def test_moving(claim):
    effect = float(Path(__file__).with_name("effect.txt").read_text())
    x = np.random.default_rng(0).normal(0.0, 0.02, 64)
    claim("moving", metric="m", direction=">", threshold=0.3, samples=(x - x.mean() + effect,))

def test_refuted(claim):
    # A claim the accepted model already refutes: a gate must not fail it again.
    claim("refuted", metric="m", direction=">", threshold=0.9, estimate=0.1)
"""


def test_gate_is_green_against_its_own_baseline_and_red_exactly_on_a_regression(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mti_gated=GATED)
    first = _run(pytester, 0.5, "--mt-save", "accepted")
    first.assert_outcomes(passed=1, failed=1)  # without a gate, a refuted claim fails as always
    same = _run(pytester, 0.5, "--mt-gate", "accepted", "--mt-json", "same.json")
    same.assert_outcomes(passed=2)
    assert same.ret == 0
    doc = json.loads((pytester.path / "same.json").read_text())
    assert {c["claim"]: c["verdict"] for c in doc["claims"]} == {"moving": "pass", "refuted": "fail"}  # still reported
    better = _run(pytester, 0.8, "--mt-gate", "accepted", "--mt-compare-fail", "estimate:0.05,verdict")
    better.assert_outcomes(passed=2)  # improving is not a regression
    worse = _run(pytester, 0.2, "--mt-gate", "accepted", "--mt-compare-fail", "estimate:0.05,verdict")
    worse.assert_outcomes(passed=1, failed=1)
    assert worse.ret == 1
    out = worse.stdout.str()
    assert "claim moving moved from 0.5 (CI [" in out and "to 0.2 (CI [" in out and "'> 0.3'" in out
    assert "claim moving moved from pass to fail, a worse verdict" in out


def test_gate_with_nothing_matched_is_an_error_not_green(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mti_gated=GATED)
    _run(pytester, 0.5, "--mt-save", "accepted").assert_outcomes(passed=1, failed=1)
    pytester.makepyfile(test_mti_gated="def test_other(claim):\n    claim('other', metric='m', direction='>', "
                                       "threshold=0, estimate=1.0)\n")
    result = _run(pytester, 0.5, "--mt-gate", "accepted")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    out = result.stdout.str()
    assert "ERROR: no claim of this run matches baseline" in out and "A comparison of nothing is not a green gate" in out
    assert "in the baseline but not run (2): moving, refuted" in out and "new since the baseline (1): other" in out


def test_a_partial_run_lists_what_it_did_not_compare(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mti_gated=GATED)
    _run(pytester, 0.5, "--mt-save", "accepted").assert_outcomes(passed=1, failed=1)
    result = _run(pytester, 0.5, "--mt-gate", "accepted", "-k", "moving")
    result.assert_outcomes(passed=1)
    assert "in the baseline but not run (1): refuted" in result.stdout.str()


def test_comparing_other_settings_warns_and_strict_refuses(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mti_gated=GATED)
    _run(pytester, 0.5, "--mt-save", "accepted").assert_outcomes(passed=1, failed=1)
    warned = _run(pytester, 0.5, "--mt-gate", "accepted", "--mt-confidence", "0.9")
    warned.assert_outcomes(passed=2)
    assert "setting differs from the baseline: confidence: baseline 0.95, now 0.9" in warned.stdout.str()
    refused = _run(pytester, 0.5, "--mt-gate", "accepted", "--mt-confidence", "0.9", "--mt-compare-strict")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    assert "--mt-compare-strict: this run's settings differ from baseline" in refused.stderr.str()


def test_gate_matching_ignores_the_pair_name_for_one_pair_each(pytester: pytest.Pytester) -> None:
    from mechtests.report import build_report, environment

    claim = {"nodeid": "test_mti_pair.py::test_x[accepted]", "claim": "x", "pair": "accepted", "params": {},
             "metric": "m", "direction": ">", "threshold": 0.3, "estimate": 0.5, "ci_low": 0.4, "ci_high": 0.6,
             "confidence": 0.95, "n": 64, "p_value": 0.001, "p_adjusted": 0.001, "verdict": "pass",
             "outcome": "passed", "reference": None, "seconds": 0.1}
    doc = build_report(config={"profile": "smoke", "seed": 0, "confidence": 0.95, "n_resamples": 1000,
                               "multiplicity": "none"},
                       environment=environment("cpu", "float32"),
                       pairs={"accepted": {"base": {"source": "a", "sha256": None}, "tuned": {"source": "b", "sha256": None}}},
                       claims=[claim])
    (pytester.path / "accepted.json").write_text(json.dumps(doc))
    pytester.makepyfile(test_mti_pair="def test_x(mt_pair, claim):\n"
                                      "    claim('x', metric='m', direction='>', threshold=0.3, estimate=0.1)\n")
    result = pytester.runpytest("--mt-gate", "accepted.json")  # the default pair now, 'accepted' then
    result.assert_outcomes(failed=1)
    assert "claim x on pair default moved from pass to fail, a worse verdict" in result.stdout.str()


def test_a_partial_run_never_replaces_a_fuller_baseline_unless_asked(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mti_gated=GATED)
    store = pytester.path / "store"
    _run(pytester, 0.5, "--mt-save", "acc", f"--mt-baseline-dir={store}").assert_outcomes(passed=1, failed=1)
    assert (store / "acc" / "0001.json").is_file() and not (pytester.path / ".mechtests" / "baselines").exists()
    partial = _run(pytester, 0.5, "--mt-save", "acc", f"--mt-baseline-dir={store}", "-k", "moving")
    partial.assert_outcomes(passed=1)
    assert partial.ret == pytest.ExitCode.USAGE_ERROR  # asked to save and did not: never silently green
    out = partial.stdout.str()
    assert "ERROR: baseline 'acc' not saved: this run is partial (1 test(s) deselected" in out
    assert "--mt-save-partial" in out and not (store / "acc" / "0002.json").exists()
    forced = _run(pytester, 0.5, "--mt-save", "acc", f"--mt-baseline-dir={store}", "-k", "moving", "--mt-save-partial")
    assert forced.ret == 0 and (store / "acc" / "0002.json").is_file()
    # the gate still reads the fuller save when asked for it by number
    _run(pytester, 0.5, "--mt-gate", "acc@1", f"--mt-baseline-dir={store}").assert_outcomes(passed=2)


@pytest.mark.slow  # a full plugin session (or several): > 10 s
def test_an_interrupted_run_never_saves_and_its_report_says_incomplete(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mti_stop="""
def test_a(claim):
    claim("a", metric="m", direction=">", threshold=0, estimate=1.0)

def test_b():
    raise KeyboardInterrupt

def test_c(claim):
    claim("c", metric="m", direction=">", threshold=0, estimate=1.0)
""")
    # A subprocess: an in-process KeyboardInterrupt would stop this outer session too.
    result = pytester.runpytest_subprocess("--mt-save", "acc", "--mt-json", "r.json", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert "not saved: the run is incomplete (interrupted)" in result.stdout.str()
    assert not (pytester.path / ".mechtests" / "baselines" / "acc").exists()
    doc = json.loads((pytester.path / "r.json").read_text())
    assert doc["run"]["complete"] is False and doc["run"]["incomplete"] == "interrupted"
    assert [c["claim"] for c in doc["claims"]] == ["a"]
    pytester.makepyfile(test_mti_stop="def test_a(claim):\n    claim('a', metric='m', direction='>', threshold=0, "
                                      "estimate=1.0)\n")
    pytester.runpytest("--mt-json", "ok.json").assert_outcomes(passed=1)
    assert json.loads((pytester.path / "ok.json").read_text())["run"]["complete"] is True


# ---- pytest-xdist ---------------------------------------------------------------------------------

XDIST_PROJECT = """
import numpy as np
import pytest

SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"><text>{}</text></svg>'

@pytest.mark.parametrize("k", [4, 8, 16, 32, 64, 128])
def test_ladder(k, claim, mt_figures):
    mt_figures.add(f"figure k={k}", SVG.format(k))
    x = np.random.default_rng(k).normal(0.35, 0.2, k)
    claim("ladder", metric="m", direction=">", threshold=0.3, samples=(x,), params={"k": k})

@pytest.mark.parametrize("i", range(6))
@pytest.mark.mechtests_claims(2)
def test_pairs_of_claims(i, claim):
    rng = np.random.default_rng(100 + i)
    b = rng.uniform(0.2, 0.8, 50)
    t = b * (0.5 + 0.1 * i) + rng.normal(0, 0.05, 50)
    claim("reduction", metric="1 - t/b", direction=">", threshold=0.3, samples=(b, t),
          statistic=lambda b, t, axis=-1: 1 - t.mean(axis=axis) / b.mean(axis=axis), params={"i": i})
    claim("cost", metric="t/b", direction="within", threshold=(0.0, 0.9), samples=(b, t),
          statistic=lambda b, t: float(t.mean() / b.mean()), params={"i": i})

def test_shared_cache(mt_cache, tmp_path_factory):
    import os, time
    from pathlib import Path
    log = Path(__file__).with_name("computed.log")
    def compute():
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()}\\n")
        time.sleep(0.3)
        return np.arange(10.0)
    assert mt_cache.get_or_compute("shared", {"v": 1}, compute).sum() == 45.0

test_shared_cache_2 = test_shared_cache
"""


def _comparable(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in c.items() if k != "seconds"} for c in doc["claims"]]


@pytest.mark.slow  # a full plugin session (or several): > 10 s
def test_xdist_report_equals_serial_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mti_project=XDIST_PROJECT)
    serial = pytester.runpytest("--mt-json", "serial.json", "--mt-html", "serial.html", "--mt-inconclusive", "pass")
    (pytester.path / "computed.log").unlink()
    (pytester.path / ".mechtests" / "cache").rename(pytester.path / "serial-cache")
    parallel = pytester.runpytest("-n", "2", "--mt-json", "xdist.json", "--mt-html", "xdist.html",
                                  "--mt-inconclusive", "pass", "--mt-save", "par")
    outcomes = serial.parseoutcomes()
    assert parallel.parseoutcomes() == outcomes and outcomes["passed"] + outcomes.get("failed", 0) == 14
    s_doc = json.loads((pytester.path / "serial.json").read_text())
    x_doc = json.loads((pytester.path / "xdist.json").read_text())
    check_report(x_doc)
    assert len(x_doc["claims"]) == len(s_doc["claims"]) >= 14
    assert _comparable(x_doc) == _comparable(s_doc)  # verdicts, CIs, p and Holm-adjusted p alike
    assert {c["verdict"] for c in x_doc["claims"]} == {"pass", "fail", "inconclusive"}  # a real mix
    baseline = json.loads((pytester.path / ".mechtests" / "baselines" / "par" / "0001.json").read_text())
    assert _comparable(baseline) == _comparable(s_doc)
    # figures made on the workers reach the controller's HTML report, in the same order
    s_html, x_html = ((pytester.path / n).read_text() for n in ("serial.html", "xdist.html"))
    positions = [x_html.index(f"figure k={k}") for k in (128, 16, 32, 4, 64, 8)]  # sorted by title
    assert positions == sorted(positions)
    assert s_html.count("<figure>") == x_html.count("<figure>") == 6
    # the two cache users ran on different workers and still computed once
    assert len((pytester.path / "computed.log").read_text().split()) == 1


FIGURES_PROJECT = """
import pytest

SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"><text>{}</text></svg>'

@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6])
def test_points(k, mt_figures):
    # drawn from shared data: every test (on every worker) adds the same figure
    mt_figures.add("shared drawing", SVG.format("same"))
    # one point per test: the figure must hold all six, whichever worker ran which test
    mt_figures.add_rows("gathered", [{"family": "zero", "k": k, "estimate": k / 10,
                                      "ci_low": k / 10 - 0.05, "ci_high": k / 10 + 0.05}],
                        render="mechtests.figures:family_lines", caption="six points")
"""


@pytest.mark.slow  # a full plugin session (or several): > 10 s
def test_xdist_figures_are_merged_once_not_repeated_or_split(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mti_figs=FIGURES_PROJECT)
    pytester.runpytest("--mt-html", "serial.html").assert_outcomes(passed=6)
    pytester.runpytest("-n", "2", "--mt-html", "xdist.html").assert_outcomes(passed=6)
    serial, xdist = ((pytester.path / n).read_text() for n in ("serial.html", "xdist.html"))
    for html in (serial, xdist):
        assert html.count("<figure>") == 2  # "shared drawing" once, "gathered" once
        assert html.count(">shared drawing<") == 1 and html.count(">gathered<") == 1
    # the gathered figure is drawn from all six rows in a fixed order: byte-identical across runs
    figure = serial[serial.index(">gathered<"):]
    assert figure[:figure.index("</figure>")] in xdist


@pytest.mark.parametrize("render, message", [
    ("mechtests.figures", "is not an importable 'module:function'"),
    ("mechtests.nosuch:draw", "is not an importable 'module:function'"),
])
def test_add_rows_rejects_a_bad_renderer(pytester: pytest.Pytester, render: str, message: str) -> None:
    pytester.makepyfile(test_mti_bad=f"""
def test_bad(mt_figures):
    mt_figures.add_rows("t", [{{"k": 1}}], render={render!r})
""")
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*{message}*"])


def test_add_rows_rejects_rows_that_are_not_json(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mti_bad="""
def test_bad(mt_figures):
    mt_figures.add_rows("t", [{"k": float("nan")}], render="mechtests.figures:family_lines")
""")
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*rows must be JSON-serialisable*"])


CACHE_PROJECT = """
import os
import numpy as np

def test_uses_the_cache(mt_cache):
    key = {"run": os.environ["MT_TEST_RUN"]}
    assert mt_cache.get_or_compute("demo", key, lambda: np.zeros(1000)).shape == (1000,)
"""


@pytest.mark.slow  # a full plugin session (or several): > 10 s
def test_cache_max_size_prunes_old_entries_and_keeps_this_runs(pytester: pytest.Pytester,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    pytester.makepyfile(test_mti_cache=CACHE_PROJECT)
    monkeypatch.setenv("MT_TEST_RUN", "first")
    pytester.runpytest().assert_outcomes(passed=1)
    (old,) = (pytester.path / ".mechtests" / "cache").glob("demo/*/*.npz")
    os.utime(old, (1_000_000_000, 1_000_000_000))  # used long ago
    monkeypatch.setenv("MT_TEST_RUN", "second")
    result = pytester.runpytest("-n", "2", "--mt-cache-max-size", "0")
    result.assert_outcomes(passed=1)
    remaining = list((pytester.path / ".mechtests" / "cache").glob("demo/*/*.npz"))
    assert not old.exists() and len(remaining) == 1  # this run's entry stays, even past the limit
    result.stdout.fnmatch_lines(["*cache * pruned: 1 least recently used entries removed*this run's own entries "
                                 "alone exceed 0 B*"])
    bad = pytester.runpytest("--mt-cache-max-size", "lots")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--mt-cache-max-size: 'lots' is not a size*"])
