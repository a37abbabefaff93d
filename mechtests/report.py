"""Reports: the `mechtests-report/2` JSON document, the terminal table and the HTML page.

The JSON document is what tools outside the project read (and what baselines store), so
`build_report` always emits every key of the schema, with null where a value does not apply, and
`check_report` validates a document against the JSON Schema that ships with the package
(``mechtests/schemas/mechtests-report-2.schema.json``, `SCHEMA_FILE`). The HTML page is one
self-contained file: inline CSS, inline SVG figures, no scripts and no external assets.

Example:
    >>> doc = build_report(config={"profile": "smoke", "seed": 0, "confidence": 0.95, "n_resamples": 1000,
    ...                            "multiplicity": "none"}, environment=environment("cpu", "float32"),
    ...                    pairs={}, claims=[], created="2026-01-01T00:00:00+00:00")
    >>> check_report(doc) is None and doc["schema"]
    'mechtests-report/2'
"""

from __future__ import annotations

import html
import importlib
import importlib.metadata
import json
import math
import platform
import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mechtests.errors import UsageError
from mechtests.storage import REPORT_SCHEMA, BaselineStore, atomic_write_bytes

ENV_KEYS = ("mechtests", "python", "torch", "transformer_lens", "device", "dtype", "git_commit")
PAIR_MODEL_KEYS = ("source", "sha256")
CLAIM_KEYS = ("nodeid", "claim", "pair", "params", "metric", "direction", "threshold", "estimate", "ci_low",
              "ci_high", "confidence", "n", "p_value", "p_bound", "bias_allowance", "p_adjusted", "verdict", "outcome",
              "reference", "seconds", "decisive_n", "reason")
VERDICTS = ("pass", "fail", "inconclusive")
# a record from before a key existed: p was not a bound, the interval not widened
_CLAIM_DEFAULTS = {"p_bound": False, "bias_allowance": 0.0}
#: The JSON Schema of `REPORT_SCHEMA` documents, shipped inside the package.
SCHEMA_FILE = Path(__file__).parent / "schemas" / "mechtests-report-2.schema.json"


@dataclass(frozen=True)
class Figure:
    """One figure of the HTML report: a title, an inline ``<svg>`` and a caption."""

    title: str
    svg: str
    caption: str = ""
    nodeid: str | None = None
    #: What the figure was drawn from (JSON-ready), so a reader of the JSON report can redraw it.
    data: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "svg": self.svg, "caption": self.caption, "nodeid": self.nodeid,
                "data": self.data}

    def report_entry(self) -> dict[str, Any]:
        """The figure's entry in the JSON report (its data, not its drawing)."""
        return {"title": self.title, "caption": self.caption, "nodeid": self.nodeid, "data": self.data}


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit(directory: Path | None = None) -> str | None:
    """HEAD of the git checkout holding ``directory`` (None outside git)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment(device: str, dtype: str, *, rootdir: Path | None = None) -> dict[str, Any]:
    """The report's ``environment`` section (versions read from metadata: no heavy imports)."""
    return {
        "mechtests": _version("mechtests"),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "transformer_lens": _version("transformer-lens") or _version("transformer_lens"),
        "device": device,
        "dtype": dtype,
        "git_commit": git_commit(rootdir),
    }


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key reading digit runs as numbers: ``100of98304`` before ``1000of98304``.

    Example:
        >>> sorted(["k1000", "k100", "k20"], key=natural_key)
        ['k20', 'k100', 'k1000']
    """
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", text) if part)


def sort_claims(claims: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Deterministic order (node id read naturally, then order within the test) so serial and
    xdist runs match."""
    return [dict(c) for c in sorted(claims, key=lambda c: (natural_key(str(c["nodeid"])), int(c.get("_index", 0))))]


def build_report(*, config: Mapping[str, Any], environment: Mapping[str, Any],
                 pairs: Mapping[str, Mapping[str, Any]], claims: Sequence[Mapping[str, Any]],
                 run: Mapping[str, Any] | None = None, figures: Sequence[Figure] = (),
                 comparison: Mapping[str, Any] | None = None, created: str | None = None,
                 interventions: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """Assemble a ``mechtests-report/2`` document; claim records need every `CLAIM_KEYS` key
    (``decisive_n`` may be absent: null). ``run`` defaults to a complete run. ``interventions``:
    the interventions table's rows (`mechtests.conditions.table_rows`)."""
    out_claims = [{k: c.get(k, _CLAIM_DEFAULTS.get(k)) for k in CLAIM_KEYS} for c in sort_claims(claims)]
    run_section = {"complete": True, "incomplete": None, "deselected": 0, **(run or {})}
    run_section["claims"] = len(out_claims)
    return {
        "schema": REPORT_SCHEMA,
        "created": created or now_iso(),
        "environment": {k: environment.get(k) for k in ENV_KEYS},
        "config": dict(config),
        "run": {k: run_section[k] for k in ("complete", "incomplete", "claims", "deselected")},
        "pairs": {name: {**{role: {k: (p.get(role) or {}).get(k) for k in PAIR_MODEL_KEYS} for role in ("base", "tuned")},
                         "inputs": p.get("inputs")}
                  for name, p in sorted(pairs.items())},
        "claims": out_claims,
        "figures": [f.report_entry() for f in sorted(figures, key=lambda f: f.title)],
        "comparison": dict(comparison) if comparison is not None else None,
        "interventions": [dict(r) for r in interventions],
    }


def report_schema() -> dict[str, Any]:
    """The shipped JSON Schema of ``mechtests-report/2`` (`SCHEMA_FILE`)."""
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def check_report(doc: Mapping[str, Any]) -> None:
    """Raise ValueError naming where ``doc`` breaks the shipped JSON Schema (first error, by path).

    Example:
        >>> check_report({"schema": "mechtests-report/2"})
        Traceback (most recent call last):
        ...
        ValueError: report: 'created' is a required property (and 7 more)
    """
    import jsonschema

    validator = jsonschema.Draft202012Validator(report_schema(), format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "report" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first.absolute_path)
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ValueError(f"{where}: {first.message}{more}")
    try:  # "format": "date-time" is only checked by jsonschema when rfc3339-validator is installed
        datetime.fromisoformat(str(doc["created"]))
    except ValueError:
        raise ValueError(f"report.created: {doc['created']!r} is not a 'date-time' (ISO-8601)") from None


# ---- terminal --------------------------------------------------------------------------------

def _num(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, (list, tuple)):
        return "(" + ", ".join(_num(x, digits) for x in v) + ")"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def _p(v: Any) -> str:
    """A p-value for the summary: 2 significant digits, ``<0.001`` below that.

    Example:
        >>> _p(0.0294), _p(0.00017), _p(1.0), _p(None)
        ('0.029', '<0.001', '1', '-')
    """
    if v is None:
        return "-"
    return "<0.001" if v < 0.001 else f"{v:.2g}"


def _threshold_text(c: Mapping[str, Any], digits: int = 4) -> str:
    t = c["threshold"]
    return f"within {_num(t, digits)}" if c["direction"] == "within" else f"{c['direction']} {_num(t, digits)}"


def claim_label(c: Mapping[str, Any], *, with_pair: bool = True) -> str:
    """The claim's name plus its test's parameter id, so parametrized rows stay distinguishable;
    ``with_pair=False`` leaves the pair's part of the id out (the table shows the pair elsewhere).

    Example:
        >>> c = {"claim": "ablation", "pair": "default", "nodeid": "h/test_a.py::test_zero[default-100of98304]"}
        >>> claim_label(c), claim_label(c, with_pair=False)
        ('ablation[default-100of98304]', 'ablation[100of98304]')
    """
    from mechtests.storage import replace_pair_id

    nodeid = str(c.get("nodeid") or "")
    if "[" not in nodeid or not nodeid.endswith("]"):
        return str(c["claim"])
    params = nodeid[:-1].split("[", 1)[1]
    if not with_pair and c.get("pair"):
        params = replace_pair_id(params, str(c["pair"]))
    return str(c["claim"]) + (f"[{params}]" if params else "")


#: The terminal summary's width limit (without -v): CI logs and 120-column terminals.
TABLE_WIDTH = 120


def _pairs_of(claims: Sequence[Mapping[str, Any]]) -> list[str]:
    return sorted({str(c["pair"]) for c in claims if c.get("pair")})


def summary_title(claims: Sequence[Mapping[str, Any]]) -> str:
    """The summary's heading; one pair is named here instead of in a column, and under family-wise
    decisions the level each claim's interval is at.

    Example:
        >>> summary_title([{"pair": "default"}]), summary_title([{"pair": "a"}, {"pair": "b"}])
        ('mechtests claims (pair default)', 'mechtests claims')
    """
    pairs = _pairs_of(claims)
    parts = [f"pair {pairs[0]}"] if len(pairs) == 1 else []
    family = max((int(c.get("_family_size") or 1) for c in claims), default=1)
    levels = {c.get("confidence") for c in claims if c.get("n") is not None}
    if family > 1 and len(levels) == 1:
        level = float(next(iter(levels)))  # type: ignore[arg-type]
        parts.append(f"{family} claims, each CI at {level * 100:.4g}%")
    return "mechtests claims" + (f" ({'; '.join(parts)})" if parts else "")


def table_rows(claims: Sequence[Mapping[str, Any]], *, verbose: bool = False) -> list[list[str]]:
    """Header + one row per claim.

    Default (fits `TABLE_WIDTH` with `fit_table`): claim, [pair when several], estimate, CI, holds if,
    verdict, p_adj (2 digits), n, at 3 significant digits. ``verbose``: also pair, metric and the raw p, at 4.
    """
    digits = 4 if verbose else 3
    show_pair = verbose or len(_pairs_of(claims)) > 1
    header = ["claim"] + (["pair"] if show_pair else []) + (["metric"] if verbose else []) + \
        ["estimate", "CI", "holds if", "verdict"] + (["p"] if verbose else []) + ["p_adj", "n"]
    rows = [header]
    for c in claims:
        ci = ("exact" if c["ci_low"] == c["ci_high"] and c["n"] is None
              else f"[{_num(c['ci_low'], digits)}, {_num(c['ci_high'], digits)}]")
        verdict = c["verdict"]
        if verdict == "inconclusive" and c.get("decisive_n"):
            verdict += f" (n~{c['decisive_n']})"
        elif verdict == "inconclusive" and c.get("reason"):
            verdict += " (undecidable)"
        row = [claim_label(c, with_pair=verbose)] + ([str(c["pair"] or "-")] if show_pair else []) + \
            ([str(c.get("metric") or "-")] if verbose else []) + \
            [_num(c["estimate"], digits), ci, _threshold_text(c, digits), verdict] + \
            ([_num(c["p_value"], 3)] if verbose else []) + [_num(c["p_adjusted"], 3) if verbose else _p(c["p_adjusted"]),
                                                             _num(c["n"])]
        rows.append(row)
    return rows


def format_table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def fit_table(rows: Sequence[Sequence[str]], width: int = TABLE_WIDTH) -> list[str]:
    """`format_table` within ``width`` columns: the first column's longest cells are shortened in
    the middle (``abc...xyz``) as far as needed (never below 12 characters).

    Example:
        >>> lines = fit_table([["claim", "v"], ["a_very_long_claim_name[with-parameters]", "pass"]], width=30)
        >>> max(map(len, lines)) <= 30, lines[2]
        (True, 'a_very_lon...rameters]  pass')
    """
    lines = format_table(rows)
    over = max(map(len, lines)) - width
    if over <= 0:
        return lines
    first = max(len(r[0]) for r in rows)
    limit = max(first - over, 12)

    def shorten(text: str) -> str:
        if len(text) <= limit:
            return text
        keep = limit - 3
        return text[: (keep + 1) // 2] + "..." + text[len(text) - keep // 2:]

    return format_table([[shorten(r[0]), *r[1:]] for r in rows])


def _side(c: Mapping[str, Any]) -> dict[str, Any]:
    return {k: c.get(k) for k in ("estimate", "ci_low", "ci_high", "verdict")}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def comparison_section(claims: Sequence[Mapping[str, Any]], baseline: Mapping[str, Any], *, name: str, path: str,
                       gate: bool, tolerances: Sequence[Any] = (), ignore_pair: bool = False,
                       notes: Sequence[str] = ()) -> dict[str, Any]:
    """The report's ``comparison``: each claim against its baseline entry (unchanged, moved,
    regressed in the claim's own direction past a tolerance, new, missing), in run order.

    Example:
        >>> c = {"nodeid": "t.py::t", "claim": "c", "pair": "p", "direction": ">", "threshold": 0.3,
        ...      "estimate": 0.5, "ci_low": 0.4, "ci_high": 0.6, "verdict": "pass"}
        >>> base = {"claims": [{**c, "estimate": 0.45}]}
        >>> comparison_section([c], base, name="acc", path="acc.json", gate=False)["claims"][0]["status"]
        'moved'
    """
    from mechtests.storage import claim_key, index_claims, regressions

    before = index_claims(baseline, ignore_pair=ignore_pair)
    rows, seen = [], set()
    for c in claims:
        key = claim_key(c, ignore_pair=ignore_pair)
        seen.add(key)
        b = before.get(key)
        row: dict[str, Any] = {"nodeid": str(c["nodeid"]), "claim": str(c["claim"]), "pair": c.get("pair"), "baseline": None,
               "now": _side(c), "change": None, "regressions": []}
        if b is None:
            rows.append({**row, "status": "new"})
            continue
        found = regressions(b, c, tuple(tolerances)) if tolerances else []
        moved = not all(_same(b.get(k), c.get(k)) for k in ("estimate", "ci_low", "ci_high", "verdict"))
        change = (c["estimate"] - b["estimate"]) if None not in (c.get("estimate"), b.get("estimate")) else None
        rows.append({**row, "baseline": _side(b), "change": change, "regressions": found,
                     "status": "regressed" if found else "moved" if moved else "unchanged"})
    for key, b in before.items():
        if key not in seen:
            rows.append({"nodeid": str(b["nodeid"]), "claim": str(b["claim"]), "pair": b.get("pair"), "status": "missing",
                         "baseline": _side(b), "now": None, "change": None, "regressions": []})
    order = ("nodeid", "claim", "pair", "status", "baseline", "now", "change", "regressions")
    return {"baseline": name, "path": path, "gate": gate, "tolerances": [t.describe() for t in tolerances],
            "matched": sum(r["status"] not in ("new", "missing") for r in rows),
            "regressed": sum(r["status"] == "regressed" for r in rows),
            "claims": [{k: r[k] for k in order} for r in rows], "notes": list(notes)}


def comparison_lines(section: Mapping[str, Any], *, verbose: bool = False) -> list[str]:
    """The terminal's comparison table: rows that moved (all rows with ``verbose``), then a count
    of the unchanged ones left out."""
    show_pair = verbose or len(_pairs_of(section["claims"])) > 1
    rows = [["claim"] + (["pair"] if show_pair else []) + ["baseline", "now", "change", "verdict", "status"]]
    hidden = 0
    for r in section["claims"]:
        if r["status"] == "unchanged" and not verbose:
            hidden += 1
            continue
        b, now = r["baseline"] or {}, r["now"] or {}
        if r["status"] == "missing":
            verdict = str(b.get("verdict"))
        elif r["status"] == "new" or b.get("verdict") == now.get("verdict"):
            verdict = str(now.get("verdict"))
        else:
            verdict = f"{b.get('verdict')} -> {now.get('verdict')}"
        change = r["change"]
        rows.append([claim_label(r, with_pair=verbose)] + ([str(r["pair"] or "-")] if show_pair else []) +
                    [_num(b.get("estimate")), _num(now.get("estimate")),
                     ("+" if change is not None and change >= 0 else "") + _num(change) if change is not None else "-",
                     verdict, r["status"]])
    lines = (format_table(rows) if verbose else fit_table(rows)) if len(rows) > 1 else []
    if hidden:
        lines.append(f"{hidden} claim(s) unchanged against the baseline (-v lists them too)")
    return lines


# ---- HTML ------------------------------------------------------------------------------------

# The claims table fits the page: the metric (the one long free text) wraps, labels and numbers
# never do; the wrapper only scrolls on a window too narrow for those columns themselves.
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;padding:0 1rem;color:#222;max-width:1200px}
.scroll{overflow-x:auto}table.claims{border-collapse:collapse;width:100%;font-size:.85rem}
th,td{border-bottom:1px solid #ddd;padding:.2rem .3rem;text-align:left;vertical-align:top}
td{white-space:nowrap}td.metric{white-space:normal;min-width:8rem;color:#555;font-size:.8rem}
td.verdict{white-space:normal}td.label{white-space:normal}
td.label{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.8rem}
th{background:#f4f4f4}.pass{color:#176f2c;font-weight:600}.fail{color:#b00020;font-weight:600}
.inconclusive{color:#8a6d00;font-weight:600}figure{margin:1.5rem 0;border:1px solid #eee;padding:.5rem}
figure svg{max-width:100%;height:auto}
figcaption{font-size:.85rem;color:#555}code{font-size:.85rem;overflow-wrap:anywhere}
dl{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:.2rem 1rem}
"""


def _decisions_text(config: Mapping[str, Any]) -> str:
    """How the verdicts were decided, in words (the HTML report's second line).

    Example:
        >>> _decisions_text({"multiplicity": "bonferroni", "family_size": 32, "confidence": 0.95})
        'Verdicts family-wise at 95% over 32 claims (Bonferroni): each interval at 99.84%.'
    """
    from mechtests.stats import family_confidence

    c, m = float(config.get("confidence", 0.95)), int(config.get("family_size") or 0)
    if config.get("multiplicity") == "bonferroni" and m > 1:
        return (f"Verdicts family-wise at {c * 100:.4g}% over {m} claims (Bonferroni): each interval at "
                f"{family_confidence(c, m) * 100:.4g}%.")
    return f"Each verdict at {c * 100:.4g}% on its own (p_adj: Holm, reported only)."


def render_html(doc: Mapping[str, Any], figures: Sequence[Figure] = ()) -> str:
    """A single self-contained HTML page: environment, claims table, figures (inline SVG)."""
    e = html.escape
    counts = {v: sum(1 for c in doc["claims"] if c["verdict"] == v) for v in VERDICTS}
    parts = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
             "<title>mechtests report</title>", f"<style>{_CSS}</style></head><body>",
             "<h1>mechtests report</h1>",
             f"<p>{e(doc['created'])} &middot; profile <code>{e(str(doc['config'].get('profile')))}</code> &middot; "
             + " &middot; ".join(f"<span class=\"{v}\">{counts[v]} {v}</span>" for v in VERDICTS) + "</p>",
             f"<p>{e(_decisions_text(doc['config']))}</p>",
             "<h2>Environment</h2><dl>"]
    for k, v in doc["environment"].items():
        parts.append(f"<dt>{e(k)}</dt><dd><code>{e(str(v))}</code></dd>")
    parts.append("</dl><h2>Pairs</h2><dl>")
    for name, p in doc["pairs"].items():
        parts.append(f"<dt>{e(name)}</dt><dd>base <code>{e(str(p['base']['source']))}</code> "
                     f"({e(str(p['base']['sha256'])[:12])}), tuned <code>{e(str(p['tuned']['source']))}</code> "
                     f"({e(str(p['tuned']['sha256'])[:12])})</dd>")
    parts.append("</dl><h2>Claims</h2><div class=\"scroll\"><table class=\"claims\"><thead><tr>")
    rows = table_rows(doc["claims"], verbose=True)
    one_pair = len(_pairs_of(doc["claims"])) <= 1  # named under "Pairs" above: no column for it
    keep = [i for i, h in enumerate(rows[0]) if not (one_pair and h == "pair")]
    parts.extend(f"<th>{e(rows[0][i])}</th>" for i in keep)
    parts.append("</tr></thead><tbody>")
    verdict_col, metric_col = rows[0].index("verdict"), rows[0].index("metric")
    for c, row in zip(doc["claims"], rows[1:], strict=True):
        cells = [f"<td>{e(x)}</td>" for x in row]
        # the label may break before its parameters, the verdict before "(n~...)"; nothing else
        label = claim_label(c, with_pair=not one_pair)
        cells[0] = f"<td class=\"label\" title=\"{e(str(c['nodeid']))}\">{e(label).replace('[', '<wbr>[', 1)}</td>"
        cells[metric_col] = f"<td class=\"metric\">{e(row[metric_col])}</td>"
        cells[verdict_col] = (f"<td class=\"{e(c['verdict'])} verdict\">"
                              f"{e(row[verdict_col]).replace(' (', '<wbr> (', 1)}</td>")
        parts.append("<tr>" + "".join(cells[i] for i in keep) + "</tr>")
    parts.append("</tbody></table></div>")
    parts.extend(_interventions_html(doc.get("interventions") or []))
    if figures:
        parts.append("<h2>Figures</h2>")
        for f in figures:
            parts.append(f"<figure><h3>{e(f.title)}</h3>{f.svg}<figcaption>{e(f.caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _interventions_html(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The interventions table's section of the HTML report (nothing when no condition ran)."""
    from mechtests.conditions import format_cell, format_paper

    if not rows:
        return []
    e = html.escape
    one_pair = len({r["pair"] for r in rows}) <= 1
    level = f"{float(rows[0]['confidence']) * 100:.4g}%"
    out = ["<h2>Interventions</h2>",
           f"<p>Every condition this run used: mean toxicity per prompt, perplexity over windows, F1 per item, each "
           f"with its {level} interval (per cell, not family-wise) and n; the paper's value where it has one.</p>",
           '<div class="scroll"><table class="interventions"><thead><tr>'
           + ("" if one_pair else "<th>pair</th>")
           + "<th>model</th><th>condition</th><th>tox</th><th>PPL</th><th>F1</th><th>paper</th></tr></thead><tbody>"]
    for r in rows:
        cells = [] if one_pair else [r["pair"]]
        label = r["label"] + (f" ({r['note']})" if r.get("note") else "")
        cells += [r["model"], label, format_cell(r["toxicity"], "toxicity"),
                  format_cell(r["perplexity"], "perplexity"), format_cell(r["f1"], "f1"), format_paper(r.get("paper"))]
        title = e(f"{r['intervention']} {r['params']} key={r['key']}")
        label_col = len(cells) - 5  # the condition: its type, parameters and key on hover
        out.append("<tr>" + "".join(f'<td title="{title}">{e(str(c))}</td>' if i == label_col
                                    else f"<td>{e(str(c)).replace(' n=', '<wbr> n=')}</td>"
                                    for i, c in enumerate(cells)) + "</tr>")
    out.append("</tbody></table></div>")
    return out


def add_figure(figures: list[Figure], figure: Figure) -> None:
    """Append ``figure`` unless the same title and drawing is already there (two xdist workers
    drawing one figure from the same cached data)."""
    if not any(f.title == figure.title and f.svg == figure.svg for f in figures):
        figures.append(figure)


def resolve_renderer(render: str, title: str) -> Callable[[list[dict[str, Any]]], str]:
    """The function named ``"module:function"`` that draws a rows figure.

    Example:
        >>> resolve_renderer("mechtests.figures:family_lines", "t").__name__
        'family_lines'
    """
    module_name, _, function = str(render).partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), function) if function else None
    except (ImportError, AttributeError):
        fn = None
    if not callable(fn):
        raise UsageError(f"figure {title!r}: render={render!r} is not an importable 'module:function'. "
                         "Fix: e.g. render='mechtests.figures:family_lines'.")
    return fn


def merge_figure_rows(into: dict[str, dict[str, Any]], new: Mapping[str, Mapping[str, Any]]) -> None:
    """Add ``new``'s rows figures (``{title: {"render", "caption", "rows"}}``) into ``into``."""
    for title, spec in new.items():
        have = into.setdefault(title, {"render": spec["render"], "caption": spec["caption"], "rows": []})
        if have["render"] != spec["render"]:
            raise UsageError(f"figure {title!r}: rows added with two renderers, {have['render']!r} and "
                             f"{spec['render']!r}. Fix: one render function per figure title.")
        have["rows"].extend(spec["rows"])


def draw_row_figures(figure_rows: Mapping[str, Mapping[str, Any]]) -> list[Figure]:
    """Draw each rows figure once, from its rows in a canonical order (so a parallel run's
    figure equals a serial run's)."""
    out = []
    for title, spec in sorted(figure_rows.items()):
        rows = sorted(spec["rows"], key=lambda row: json.dumps(row, sort_keys=True))
        out.append(Figure(title, check_svg(resolve_renderer(spec["render"], title)(rows)), spec["caption"],
                          data={"render": spec["render"], "rows": rows}))
    return out


def check_svg(svg: str) -> str:
    """Accept only an inline ``<svg>`` element without scripts or external references."""
    text = str(svg).strip()
    lower = text.lower()
    if not lower.startswith("<svg") or not lower.endswith("</svg>"):
        raise ValueError("a figure must be one inline <svg>...</svg> element")
    if "<script" in lower or "href=\"http" in lower or "href='http" in lower:
        raise ValueError("a figure must be self-contained: no <script>, no external links")
    return text


# ---- a session's outputs ---------------------------------------------------------------------

def session_document(records: Sequence[Mapping[str, Any]], pairs: Mapping[str, Mapping[str, Any]], run: Any, *,
                     rootdir: Path | None = None, figures: Sequence[Figure] = (),
                     status: Mapping[str, Any] | None = None,
                     interventions: Sequence[Mapping[str, Any]] = ()) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The session's report document and its records, sorted, with Holm-adjusted p-values.

    ``pairs`` lists only pairs that were loaded (sha256 known) or that a claim ran on, so a run
    of model-free claims lists none; each pair's ``inputs`` is what its files were read as.
    ``run`` is the `RunConfig`; ``status`` the report's ``run`` section (complete or why not,
    tests deselected).
    """
    from mechtests.stats import holm

    ordered = sort_claims(records)
    if run.multiplicity == "none":  # verdicts per claim at `confidence`; Holm's adjustment is reported
        for rec, p_adj in zip(ordered, holm([r["p_value"] for r in ordered]), strict=True):
            rec["p_adjusted"] = p_adj
    used = {r["pair"] for r in ordered} | {k for k, v in pairs.items() if v["base"]["sha256"] is not None}
    used_pairs = {k: v for k, v in pairs.items() if k in used}
    # bonferroni: each claim's interval (and p_adjusted = m p) is at the family-wise level
    config = {**run.to_dict(), "family_size": max((int(r.get("_family_size") or 1) for r in ordered), default=0)}
    doc = build_report(config=config, environment=environment(run.device, run.dtype, rootdir=rootdir),
                       pairs=used_pairs, claims=ordered, run=status, figures=figures, interventions=interventions)
    return doc, ordered


def write_session_outputs(doc: Mapping[str, Any], figures: Sequence[Figure], *, json_path: Path | None,
                          html_path: Path | None, save: str | None, baselines: Path) -> list[str]:
    """Write the JSON report, the HTML report (figures sorted by title) and the baseline (``save``
    None: not asked, or refused by the caller); one message per file written."""
    written = []
    if json_path is not None:
        atomic_write_bytes(json_path, (json.dumps(doc, indent=2) + "\n").encode())
        written.append(f"mechtests: JSON report written to {json_path}")
    if html_path is not None:
        atomic_write_bytes(html_path, render_html(doc, sorted(figures, key=lambda f: f.title)).encode())
        written.append(f"mechtests: HTML report written to {html_path}")
    if save is not None:
        path = BaselineStore(baselines).save(save, doc)
        written.append(f"mechtests: baseline {save!r} saved to {path}")
    return written
