"""Claims in pytest's JUnit XML (``--junitxml``), valid under both ``junit_family`` values.

The two families allow different things inside a ``<testcase>``: xunit1 (pytest's legacy family)
takes ``<properties>``, so each claim becomes properties (``claim``, ``pair``, ``metric``,
``direction``, ``threshold``, ``estimate``, ``ci_low``, ``ci_high``, ``confidence``, ``n``,
``p_value``, ``verdict``; a test stating several claims repeats them in order). xunit2 (pytest's
default) rejects per-test properties, so the claims go in a ``<system-out>`` element as
``key: value`` lines, which CI servers (GitLab, Jenkins) show beside the test. Nothing is written
through ``user_properties``, which pytest would turn into properties under either family.

Example:
    >>> print(claims_text([{"claim": "c", "pair": "p", "metric": "m", "direction": ">", "threshold": 0.3,
    ...     "estimate": 0.5, "ci_low": 0.4, "ci_high": 0.6, "confidence": 0.95, "n": 64,
    ...     "p_value": 0.001, "verdict": "pass", "decisive_n": None}]).splitlines()[:3])
    ['mechtests claim c', '  pair: p', '  metric: m']
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

#: The fields each claim carries into JUnit, in this order.
JUNIT_FIELDS = ("claim", "pair", "metric", "direction", "threshold", "estimate", "ci_low", "ci_high",
                "confidence", "n", "p_value", "p_bound", "bias_allowance", "verdict")


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_text(v) for v in value) + "]"
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def claims_text(records: Sequence[Mapping[str, Any]]) -> str:
    """The ``<system-out>`` text: one block of ``key: value`` lines per claim."""
    blocks = []
    for r in records:
        lines = [f"mechtests claim {r['claim']}"]
        lines += [f"  {key}: {_text(r.get(key))}" for key in JUNIT_FIELDS[1:]]
        if r.get("decisive_n"):
            lines.append(f"  decisive_n: {r['decisive_n']}")
        if r.get("reason"):
            lines.append(f"  undecided: {r['reason']}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def add_claims_to_junit(config: pytest.Config, report: pytest.TestReport, records: Sequence[Mapping[str, Any]]) -> None:
    """Put ``records`` (the claims of ``report``'s test) into its JUnit test case, if --junitxml is on.

    Called from a ``tryfirst`` teardown ``pytest_runtest_logreport``, before junitxml closes the case.
    """
    try:  # the LogXML object is pytest's own; a pytest without it simply gets no claims in JUnit
        from _pytest.junitxml import bin_xml_escape, xml_key
    except ImportError:  # pragma: no cover
        return
    xml = config.stash.get(xml_key, None)
    if xml is None or not records:
        return
    reporter = xml.node_reporter(report)
    if xml.family in ("xunit1", "legacy"):
        for r in records:
            for key in JUNIT_FIELDS:
                reporter.add_property(key, _text(r.get(key)))
        return
    element = ET.Element("system-out")
    element.text = bin_xml_escape(claims_text(records))
    reporter.append(element)
