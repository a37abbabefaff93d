"""Render a JSON report's claims as the README's results table (beside the paper's values).

The table is generated, never typed: ``python -m mechtests.results --json report.json --readme
README.md`` replaces everything between ``<!-- results:start -->`` and ``<!-- results:end -->``
with a Markdown table built from a ``mechtests-report/2`` (or ``/1``) file.

Example:
    $ pytest hypotheses/ --mt-json report.json
    $ python -m mechtests.results --json report.json --readme README.md
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mechtests.errors import DataError, UsageError
from mechtests.stats import family_confidence, min_resamples
from mechtests.storage import REPORT_SCHEMA  # noqa: F401 (REPORT_SCHEMA: the doctest)

START, END = "<!-- results:start -->", "<!-- results:end -->"
# the interventions table (report section ``interventions``) has markers of its own
TABLE_START, TABLE_END = "<!-- interventions:start -->", "<!-- interventions:end -->"
VERDICT_MARK = {"pass": "pass", "fail": "**FAIL**", "inconclusive": "inconclusive"}
# A numbering of claims (claim name -> its number in the source the suite encodes), e.g. the
# reference suite's ``hypotheses/mt_reference.py:PAPER_CLAIMS``; the library knows none.
Numbering = Mapping[str, int]


def load_numbering(spec: str) -> dict[str, int]:
    """``PATH.py:NAME`` (a dict in a Python file, loaded without importing its package) or a JSON
    file: the ``#`` column and row order of the results table.

    Example:
        >>> load_numbering("hypotheses/mt_reference.py:PAPER_CLAIMS")["weights_stay_close"]  # doctest: +SKIP
        3
    """
    import importlib.util

    path_text, _, name = spec.partition(":")
    path = Path(path_text)
    if not path.is_file():
        raise UsageError(f"--numbering {spec!r}: no file {path_text!r}. Fix: PATH.py:NAME or a JSON file.")
    if path.suffix == ".json" and not name:
        value: Any = json.loads(path.read_text(encoding="utf-8"))
    else:
        module_spec = importlib.util.spec_from_file_location(f"_mechtests_numbering_{path.stem}", path)
        if module_spec is None or module_spec.loader is None or not name:
            raise UsageError(f"--numbering {spec!r}: expected PATH.py:NAME (a dict of claim -> number) or a JSON file.")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_spec.name] = module  # dataclasses there look their module up while it runs
        try:
            module_spec.loader.exec_module(module)
        finally:
            sys.modules.pop(module_spec.name, None)
        value = getattr(module, name, None)
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, int) for k, v in value.items()):
        raise UsageError(f"--numbering {spec!r} is not a mapping of claim name -> int.")
    return dict(value)


def load_report(path: Path) -> dict[str, Any]:
    """Read and validate a JSON report (`storage.load_report`: schema, and the shipped JSON Schema
    for ``/2``) that has a claims list; errors name the file and the fix."""
    from mechtests.storage import load_report as read_report

    if not Path(path).exists():
        raise UsageError(f"report {str(path)!r} does not exist. Fix: run pytest with --mt-json {path} first.")
    report = read_report(Path(path), kind="report", fix="write it with this version's pytest --mt-json")
    if not isinstance(report.get("claims"), list):
        raise DataError(f"report {str(path)!r} has no 'claims' list. Fix: write it with --mt-json.")
    return report


def _num(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, bool) or not isinstance(v, int | float):
        return str(v)
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
        return f"{v:.2e}"
    return f"{v:.3f}"


def _params(params: Mapping[str, Any] | None) -> str:
    if not params:
        return ""
    return ", ".join(f"{k}={v}" for k, v in params.items())


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _natural(text: str) -> list[Any]:
    """Sort key that orders embedded numbers numerically (``k=100`` before ``k=1000``)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def ordered_claims(claims: Sequence[Mapping[str, Any]], numbering: Numbering | None = None
                   ) -> list[Mapping[str, Any]]:
    """Numbered claims first, in the numbering's order; then any others in report order;
    parametrized variants in natural order of their test id."""
    order = dict(numbering or {})
    first_seen: dict[str, int] = {}
    for i, c in enumerate(claims):
        first_seen.setdefault(str(c.get("claim")), i)

    def key(c: Mapping[str, Any]) -> tuple[Any, ...]:
        name = str(c.get("claim"))
        rank = list(order).index(name) if name in order else len(order) + first_seen[name]
        return (rank, _natural(str(c.get("nodeid", ""))))

    return sorted(claims, key=key)


def render_table(report: Mapping[str, Any], numbering: Numbering | None = None) -> str:
    """The results table (Markdown) for every claim in ``report``, in report order.

    Example:
        >>> r = {"schema": REPORT_SCHEMA, "claims": [{"claim": "c", "pair": "p", "params": {"k": 4}, "metric": "m",
        ...      "direction": ">", "threshold": 0.3, "estimate": 0.5, "ci_low": 0.4, "ci_high": 0.6,
        ...      "verdict": "pass", "reference": {"source": "A", "value": 0.54}}]}
        >>> render_table(r).splitlines()[2]
        '|  | c | k=4 | p | m | 0.500 | [0.400, 0.600] | > 0.300 | pass | 0.540 (A) |'
    """
    lines = ["| # | claim | parameters | pair | metric | estimate | CI | asserts | verdict | paper (GPT-2 medium) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    order = dict(numbering or {})
    for c in ordered_claims(report["claims"], order):
        ref = c.get("reference") or None
        paper = "" if ref is None else f"{_num(ref.get('value'))} ({ref.get('source', '')})"
        threshold = c.get("threshold")
        if isinstance(threshold, list | tuple):
            asserts = f"{c.get('direction')} [{', '.join(_num(t) for t in threshold)}]"
        else:
            asserts = f"{c.get('direction')} {_num(threshold)}"
        row = [str(order.get(str(c.get("claim")), "")), str(c.get("claim", "")), _params(c.get("params")),
               str(c.get("pair", "")), str(c.get("metric", "")),
               _num(c.get("estimate")), f"[{_num(c.get('ci_low'))}, {_num(c.get('ci_high'))}]", asserts,
               VERDICT_MARK.get(str(c.get("verdict")), str(c.get("verdict"))), paper]
        lines.append("| " + " | ".join(_cell(x) for x in row) + " |")
    return "\n".join(lines)


def render_section(report: Mapping[str, Any], *, source: str = "report.json",
                   numbering: Numbering | None = None) -> str:
    """Header lines (pairs, profile, counts) plus the table: what goes between the markers."""
    claims: Sequence[Mapping[str, Any]] = report["claims"]
    counts = {v: sum(1 for c in claims if c.get("verdict") == v) for v in ("pass", "fail", "inconclusive")}
    cfg = report.get("config") or {}
    pairs = report.get("pairs") or {}
    pair_text = "; ".join(f"`{name}` (base {p.get('base', {}).get('sha256', '')[:12]}, "
                          f"tuned {p.get('tuned', {}).get('sha256', '')[:12]})" for name, p in pairs.items())
    family = int(cfg.get("family_size") or 0)
    if cfg.get("multiplicity") == "bonferroni" and family > 1:
        level = family_confidence(float(cfg.get("confidence", 0.95)), family)
        resamples = max(int(cfg.get("n_resamples", 0)), min_resamples(level))
        decided = (f"confidence {cfg.get('confidence', '?')} family-wise over {family} claims: each interval at "
                   f"{level * 100:.4g}%, on at least {resamples:,} bootstrap resamples")
    else:
        decided = f"confidence {cfg.get('confidence', '?')} per claim, {cfg.get('n_resamples', '?')} bootstrap resamples"
    head = [f"Generated by `python -m mechtests.results` from `{source}` (created {report.get('created', '?')}, "
            f"profile `{cfg.get('profile', '?')}`, {decided}). Do not edit by hand.",
            "",
            f"Pairs: {pair_text or '–'}. Verdicts: {counts['pass']} pass, {counts['fail']} fail, "
            f"{counts['inconclusive']} inconclusive.",
            "",
            ""]
    return "\n".join(head) + render_table(report, numbering)


def render_interventions(report: Mapping[str, Any], *, source: str = "report.json") -> str:
    """The report's interventions table (Markdown): condition, toxicity, perplexity, F1 with
    intervals and n, the paper's values beside them.

    Example:
        >>> cell = {"value": 0.3, "ci_low": 0.2, "ci_high": 0.4, "n": 64}
        >>> r = {"created": "x", "interventions": [{"pair": "p", "model": "base", "label": "none", "toxicity": cell,
        ...      "perplexity": None, "f1": None, "paper": {"toxicity": 0.453}, "note": None, "confidence": 0.95}]}
        >>> render_interventions(r).splitlines()[-1]
        '| p | base | none | 0.300 [0.200, 0.400] n=64 | - | - | tox 0.453 |'
    """
    from mechtests.conditions import format_cell, format_paper

    rows = report.get("interventions") or []
    if not rows:
        raise UsageError(f"report {source!r} has no interventions table. Fix: write it with this version's --mt-json "
                         "(e.g. pytest hypotheses/protocol_table.py --mt-json FILE).")
    level = f"{float(rows[0].get('confidence', 0.95)) * 100:.4g}%"
    lines = [f"Generated by `python -m mechtests.results --interventions` from `{source}` (created "
             f"{report.get('created', '?')}); {level} intervals per cell, n = prompts / windows / items. "
             "Do not edit by hand.", "",
             "| pair | model | condition | tox | PPL | F1 | paper (GPT-2 medium) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        label = str(r["label"]) + (f" ({r['note']})" if r.get("note") else "")
        cells = [str(r["pair"]), str(r["model"]), label, format_cell(r.get("toxicity"), "toxicity"),
                 format_cell(r.get("perplexity"), "perplexity"), format_cell(r.get("f1"), "f1"),
                 format_paper(r.get("paper"))]
        lines.append("| " + " | ".join(_cell(x) for x in cells) + " |")
    return "\n".join(lines)


def replace_between_markers(text: str, body: str, *, where: str = "README.md", start_marker: str = START,
                            end_marker: str = END) -> str:
    """Replace the text between the results markers (kept) with ``body``.

    Example:
        >>> replace_between_markers(f"a\\n{START}\\nold\\n{END}\\nb", "new")
        'a\\n<!-- results:start -->\\nnew\\n<!-- results:end -->\\nb'
    """
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < 0 or end < start or text.count(start_marker) != 1 or text.count(end_marker) != 1:
        raise UsageError(f"{where} must contain exactly one {start_marker} followed by one {end_marker}. "
                         "Fix: add the two marker lines where the table belongs.")
    return text[: start + len(start_marker)] + "\n" + body.strip("\n") + "\n" + text[end:]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print the table, or write it into a README between the markers."""
    parser = argparse.ArgumentParser(prog="python -m mechtests.results", description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, type=Path, help="a report written by pytest --mt-json")
    parser.add_argument("--readme", type=Path, help="file whose results markers to fill (default: print)")
    parser.add_argument("--numbering", metavar="PATH.py:NAME|FILE.json",
                        help="claim name -> number: the '#' column and row order (e.g. "
                             "hypotheses/mt_reference.py:PAPER_CLAIMS)")
    parser.add_argument("--interventions", action="store_true",
                        help=f"render the report's interventions table instead (markers {TABLE_START} ... {TABLE_END})")
    args = parser.parse_args(argv)
    try:
        report = load_report(args.json)
        if args.interventions:
            section = render_interventions(report, source=args.json.name)
            markers = {"start_marker": TABLE_START, "end_marker": TABLE_END}
        else:
            numbering = load_numbering(args.numbering) if args.numbering else None
            section, markers = render_section(report, source=args.json.name, numbering=numbering), {}
        if args.readme is None:
            print(section)
            return 0
        if not args.readme.exists():
            raise UsageError(f"{str(args.readme)!r} does not exist. Fix: pass the README to update.")
        text = args.readme.read_text(encoding="utf-8")
        args.readme.write_text(replace_between_markers(text, section, where=str(args.readme), **markers),
                               encoding="utf-8")
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
