"""Claims in JUnit XML: valid under both junit_family values, with direction, metric and n.

The schema (tests/data/junit.xsd) states what each family allows inside a ``<testcase>``; the
runs here validate pytest's whole output against it with xmlschema, so a claim written where a
family does not allow it (properties under xunit2, today's bug) fails the test.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import mechtests.claims
import mechtests.junit
import mechtests.stats

xmlschema = pytest.importorskip("xmlschema")
assert mechtests.claims and mechtests.stats and mechtests.junit

SCHEMA = Path(__file__).parent / "data" / "junit.xsd"

TESTS = """
import numpy as np
import pytest

def test_pass(claim):
    x = np.random.default_rng(0).normal(0.5, 0.1, 64)
    claim("above", metric="mean score", direction=">", threshold=0.3, samples=(x,))

def test_fail(claim):
    x = np.random.default_rng(1).normal(0.1, 0.1, 64)
    claim("refuted", metric="mean score", direction=">", threshold=0.3, samples=(x,))

@pytest.mark.mechtests_claims(2)
def test_two(claim):
    x = np.random.default_rng(2).normal(0.5, 0.1, 40)
    claim("first", metric="m1", direction=">", threshold=0.3, samples=(x,))
    claim("second", metric="m2", direction="within", threshold=(0.4, 0.6), samples=(x,))

def test_inconclusive(claim):
    x = np.random.default_rng(3).normal(0.32, 0.3, 16)
    claim("undecided", metric="mean score", direction=">", threshold=0.3, samples=(x,))

@pytest.fixture
def broken():
    raise RuntimeError("setup broke")

def test_setup_error(broken, claim):
    pass

def test_plain():
    print("hello")
"""


def _schema(family: str) -> object:
    text = SCHEMA.read_text().replace('type="TESTCASE"', f'type="testcase-{family}"')
    return xmlschema.XMLSchema(text)


def _run(pytester: pytest.Pytester, family: str, *extra: str) -> ET.Element:
    pytester.makepyfile(test_mtj=TESTS)
    pytester.makeini(f"[pytest]\njunit_family = {family}\n")
    result = pytester.runpytest("--junitxml=junit.xml", *extra)
    assert result.ret == 1  # test_fail and the setup error
    path = pytester.path / "junit.xml"
    _schema("xunit1" if family in ("xunit1", "legacy") else "xunit2").validate(str(path))
    return ET.parse(path).getroot()


def _case(root: ET.Element, name: str) -> ET.Element:
    return next(tc for tc in root.iter("testcase") if tc.get("name") == name)


@pytest.mark.parametrize("extra", [(), ("-o", "junit_logging=all"), ("-p", "xdist", "-n", "2")],
                         ids=["default", "junit_logging=all", "xdist"])
@pytest.mark.slow  # a full plugin session (or several): > 10 s
def test_xunit2_is_valid_and_carries_each_claim_in_system_out(pytester: pytest.Pytester, extra: tuple[str, ...]) -> None:
    if "xdist" in extra:
        pytest.importorskip("xdist")
    root = _run(pytester, "xunit2", *extra)
    assert not list(root.iter("properties"))
    texts = {name: "\n".join(el.text or "" for el in _case(root, name).iter("system-out"))
             for name in ("test_pass", "test_fail", "test_two", "test_inconclusive")}
    passed = texts["test_pass"]
    assert "mechtests claim above" in passed
    # six claims (test_two states two): each decided at the family-wise level 1 - 0.05/6
    for line in ("metric: mean score", "direction: >", "threshold: 0.3", "n: 64", "verdict: pass",
                 f"confidence: {1 - 0.05 / 6:.6g}"):
        assert f"  {line}\n" in passed
    low, est, high = (float(re.search(rf"  {k}: (\S+)", passed).group(1)) for k in ("ci_low", "estimate", "ci_high"))
    assert low < est < high and 0.45 < est < 0.55
    assert "verdict: fail" in texts["test_fail"] and _case(root, "test_fail").find("failure") is not None
    assert texts["test_two"].index("mechtests claim first") < texts["test_two"].index("mechtests claim second")
    assert "direction: within" in texts["test_two"] and "threshold: [0.4, 0.6]" in texts["test_two"]
    assert "verdict: inconclusive" in texts["test_inconclusive"] and "decisive_n: " in texts["test_inconclusive"]
    assert "mechtests claim" not in "".join(el.text or "" for el in _case(root, "test_plain").iter("system-out"))
    if "-o" in extra:  # pytest's own captured output is still there, beside the claims
        assert "hello" in "".join(el.text or "" for el in _case(root, "test_plain").iter("system-out"))


@pytest.mark.parametrize("family", ["xunit1", "legacy"])
def test_xunit1_is_valid_and_carries_each_claim_as_properties(pytester: pytest.Pytester, family: str) -> None:
    root = _run(pytester, family)
    props = [(p.get("name"), p.get("value")) for p in _case(root, "test_pass").iter("property")]
    as_dict = dict(props)
    assert as_dict["claim"] == "above" and as_dict["verdict"] == "pass" and as_dict["threshold"] == "0.3"
    assert as_dict["metric"] == "mean score" and as_dict["direction"] == ">" and as_dict["n"] == "64"
    assert float(as_dict["ci_low"]) < float(as_dict["estimate"]) < float(as_dict["ci_high"])
    two = [p.get("value") for p in _case(root, "test_two").iter("property") if p.get("name") == "claim"]
    assert two == ["first", "second"]
    assert not [p for p in _case(root, "test_plain").iter("property")]


def test_the_schema_rejects_per_test_properties_under_xunit2() -> None:
    """The check above can fail: what pytest wrote before (claims as <properties>) is invalid."""
    bad = ('<testsuites><testsuite name="pytest" tests="1" failures="0" errors="0"><testcase name="t">'
           '<properties><property name="claim" value="c"/></properties></testcase></testsuite></testsuites>')
    assert not _schema("xunit2").is_valid(bad)
    assert _schema("xunit1").is_valid(bad)
