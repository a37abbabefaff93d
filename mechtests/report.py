"""Reports: the `mechtests-report/1` JSON document, the terminal table and the HTML page.

The JSON document is what tools outside the project read (and what baselines store), so
`build_report` always emits every key of the schema in DESIGN.md, with null where a value does
not apply, and `check_report` verifies that. The HTML page is one self-contained file: inline
CSS, inline SVG figures, no scripts and no external assets.

Example:
    >>> doc = build_report(config={"profile": "smoke", "seed": 0, "confidence": 0.95, "n_resamples": 1000}, environment=environment("cpu", "float32"),
    ...                    pairs={}, claims=[], created="2026-01-01T00:00:00+00:00")
    >>> check_report(doc) is None and doc["schema"]
    'mechtests-report/1'
"""

from __future__ import annotations

import html
import importlib
import importlib.metadata
import json
import platform
import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mechtests.errors import UsageError
from mechtests.storage import REPORT_SCHEMA, BaselineStore, atomic_write_bytes

TOP_KEYS = ("schema", "created", "environment", "config", "pairs", "claims")
ENV_KEYS = ("mechtests", "python", "torch", "transformer_lens", "device", "dtype", "git_commit")
CONFIG_KEYS = ("profile", "seed", "confidence", "n_resamples")
PAIR_MODEL_KEYS = ("source", "sha256")
CLAIM_KEYS = ("nodeid", "claim", "pair", "params", "metric", "direction", "threshold", "estimate", "ci_low",
              "ci_high", "confidence", "n", "p_value", "p_adjusted", "verdict", "outcome", "reference", "seconds")
VERDICTS = ("pass", "fail", "inconclusive")


@dataclass(frozen=True)
class Figure:
    """One figure of the HTML report: a title, an inline ``<svg>`` and a caption."""

    title: str
    svg: str
    caption: str = ""
    nodeid: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "svg": self.svg, "caption": self.caption, "nodeid": self.nodeid}


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
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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
                 created: str | None = None) -> dict[str, Any]:
    """Assemble a ``mechtests-report/1`` document; claim records need every `CLAIM_KEYS` key."""
    out_claims = []
    for c in sort_claims(claims):
        out_claims.append({k: c.get(k) for k in CLAIM_KEYS})
    return {
        "schema": REPORT_SCHEMA,
        "created": created or now_iso(),
        "environment": {k: environment.get(k) for k in ENV_KEYS},
        "config": dict(config),
        "pairs": {name: {role: {k: (p.get(role) or {}).get(k) for k in PAIR_MODEL_KEYS} for role in ("base", "tuned")}
                  for name, p in sorted(pairs.items())},
        "claims": out_claims,
    }


def check_report(doc: Mapping[str, Any]) -> None:
    """Raise ValueError naming the first missing/extra key or bad value of a report document."""
    def exact(obj: Any, keys: Sequence[str], where: str) -> None:
        if not isinstance(obj, Mapping):
            raise ValueError(f"{where} must be an object")
        missing, extra = set(keys) - set(obj), set(obj) - set(keys)
        if missing or extra:
            raise ValueError(f"{where}: missing {sorted(missing)}, unexpected {sorted(extra)}")

    exact(doc, TOP_KEYS, "report")
    if doc["schema"] != REPORT_SCHEMA:
        raise ValueError(f"schema is {doc['schema']!r}, expected {REPORT_SCHEMA!r}")
    datetime.fromisoformat(doc["created"])
    exact(doc["environment"], ENV_KEYS, "environment")
    missing = set(CONFIG_KEYS) - set(doc["config"])
    if missing:
        raise ValueError(f"config: missing {sorted(missing)}")
    for name, pair in doc["pairs"].items():
        exact(pair, ("base", "tuned"), f"pairs.{name}")
        for role in ("base", "tuned"):
            exact(pair[role], PAIR_MODEL_KEYS, f"pairs.{name}.{role}")
    for i, c in enumerate(doc["claims"]):
        exact(c, CLAIM_KEYS, f"claims[{i}]")
        if c["verdict"] not in VERDICTS:
            raise ValueError(f"claims[{i}].verdict is {c['verdict']!r}")
        if c["reference"] is not None:
            exact(c["reference"], ("source", "value"), f"claims[{i}].reference")


# ---- terminal --------------------------------------------------------------------------------

def _num(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, (list, tuple)):
        return "(" + ", ".join(_num(x, digits) for x in v) + ")"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def _threshold_text(c: Mapping[str, Any]) -> str:
    t = c["threshold"]
    return f"within {_num(t)}" if c["direction"] == "within" else f"{c['direction']} {_num(t)}"


def claim_label(c: Mapping[str, Any]) -> str:
    """The claim's name plus its test's parameter id, so parametrized rows stay distinguishable.

    Example:
        >>> claim_label({"claim": "ablation", "nodeid": "h/test_a.py::test_zero[default-100of98304]"})
        'ablation[default-100of98304]'
    """
    nodeid = str(c.get("nodeid") or "")
    return str(c["claim"]) + ("[" + nodeid.split("[", 1)[1] if "[" in nodeid else "")


def table_rows(claims: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """Header + one row per claim: claim, pair, estimate, CI, threshold, verdict, p, p_adj, n."""
    rows = [["claim", "pair", "estimate", "CI", "threshold", "verdict", "p", "p_adj", "n"]]
    for c in claims:
        ci = "exact" if c["ci_low"] == c["ci_high"] and c["n"] is None else f"[{_num(c['ci_low'])}, {_num(c['ci_high'])}]"
        verdict = c["verdict"]
        if verdict == "inconclusive" and c.get("_n_to_decide"):
            verdict += f" (n~{c['_n_to_decide']})"
        rows.append([claim_label(c), str(c["pair"] or "-"), _num(c["estimate"]), ci, _threshold_text(c), verdict,
                     _num(c["p_value"], 3), _num(c["p_adjusted"], 3), _num(c["n"])])
    return rows


def format_table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def comparison_lines(claims: Sequence[Mapping[str, Any]], baseline: Mapping[str, Any], *,
                     ignore_pair: bool = False) -> list[str]:
    """Each claim's change against a baseline document: estimate before -> after, verdict flip."""
    from mechtests.storage import claim_key, index_claims

    before = index_claims(baseline, ignore_pair=ignore_pair)
    rows = [["claim", "pair", "baseline", "now", "change", "verdict"]]
    for c in claims:
        b = before.get(claim_key(c, ignore_pair=ignore_pair))
        if b is None:
            rows.append([claim_label(c), str(c["pair"] or "-"), "-", _num(c["estimate"]), "new", c["verdict"]])
            continue
        delta = (c["estimate"] - b["estimate"]) if None not in (c["estimate"], b["estimate"]) else None
        flip = c["verdict"] if b["verdict"] == c["verdict"] else f"{b['verdict']} -> {c['verdict']}"
        rows.append([claim_label(c), str(c["pair"] or "-"), _num(b["estimate"]), _num(c["estimate"]),
                     ("+" if delta is not None and delta >= 0 else "") + _num(delta), flip])
    now = {claim_key(c) for c in claims}
    for key, b in before.items():
        if key not in now:
            rows.append([claim_label(b), str(b["pair"] or "-"), _num(b["estimate"]), "-", "missing", b["verdict"]])
    return format_table(rows)


# ---- HTML ------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem;color:#222;max-width:1200px}
table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{border-bottom:1px solid #ddd;padding:.3rem .5rem;text-align:left}
th{background:#f4f4f4}.pass{color:#176f2c;font-weight:600}.fail{color:#b00020;font-weight:600}
.inconclusive{color:#8a6d00;font-weight:600}figure{margin:1.5rem 0;border:1px solid #eee;padding:.5rem}
figcaption{font-size:.85rem;color:#555}code{font-size:.85rem}dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}
"""


def render_html(doc: Mapping[str, Any], figures: Sequence[Figure] = ()) -> str:
    """A single self-contained HTML page: environment, claims table, figures (inline SVG)."""
    e = html.escape
    counts = {v: sum(1 for c in doc["claims"] if c["verdict"] == v) for v in VERDICTS}
    parts = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
             "<title>mechtests report</title>", f"<style>{_CSS}</style></head><body>",
             "<h1>mechtests report</h1>",
             f"<p>{e(doc['created'])} &middot; profile <code>{e(str(doc['config'].get('profile')))}</code> &middot; "
             + " &middot; ".join(f"<span class=\"{v}\">{counts[v]} {v}</span>" for v in VERDICTS) + "</p>",
             "<h2>Environment</h2><dl>"]
    for k, v in doc["environment"].items():
        parts.append(f"<dt>{e(k)}</dt><dd><code>{e(str(v))}</code></dd>")
    parts.append("</dl><h2>Pairs</h2><dl>")
    for name, p in doc["pairs"].items():
        parts.append(f"<dt>{e(name)}</dt><dd>base <code>{e(str(p['base']['source']))}</code> "
                     f"({e(str(p['base']['sha256'])[:12])}), tuned <code>{e(str(p['tuned']['source']))}</code> "
                     f"({e(str(p['tuned']['sha256'])[:12])})</dd>")
    parts.append("</dl><h2>Claims</h2><table><thead><tr>")
    rows = table_rows(doc["claims"])
    parts.extend(f"<th>{e(h)}</th>" for h in rows[0] + ["test"])
    parts.append("</tr></thead><tbody>")
    for c, row in zip(doc["claims"], rows[1:]):
        cells = [f"<td>{e(x)}</td>" for x in row]
        cells[5] = f"<td class=\"{e(c['verdict'])}\">{e(row[5])}</td>"
        parts.append("<tr>" + "".join(cells) + f"<td><code>{e(str(c['nodeid']))}</code></td></tr>")
    parts.append("</tbody></table>")
    if figures:
        parts.append("<h2>Figures</h2>")
        for f in figures:
            parts.append(f"<figure><h3>{e(f.title)}</h3>{f.svg}<figcaption>{e(f.caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def add_figure(figures: list[Figure], figure: Figure) -> None:
    """Append ``figure`` unless the same title and drawing is already there (two xdist workers
    drawing one figure from the same cached data)."""
    if not any(f.title == figure.title and f.svg == figure.svg for f in figures):
        figures.append(figure)


def resolve_renderer(render: str, title: str) -> Callable[[list[dict[str, Any]]], str]:
    """The function named ``"module:function"`` that draws a rows figure.

    Example:
        >>> resolve_renderer("mechtests.figures:recovery_figure", "t").__name__
        'recovery_figure'
    """
    module_name, _, function = str(render).partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), function) if function else None
    except (ImportError, AttributeError):
        fn = None
    if not callable(fn):
        raise UsageError(f"figure {title!r}: render={render!r} is not an importable 'module:function'. "
                         "Fix: e.g. render='mechtests.figures:recovery_figure'.")
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
        out.append(Figure(title, check_svg(resolve_renderer(spec["render"], title)(rows)), spec["caption"]))
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
                     rootdir: Path | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The session's report document and its records, sorted, with Holm-adjusted p-values.

    ``pairs`` lists only pairs that were loaded (sha256 known) or that a claim ran on, so a run
    of model-free claims lists none. ``run`` is the `RunConfig`.
    """
    from mechtests.stats import holm

    ordered = sort_claims(records)
    for rec, p_adj in zip(ordered, holm([r["p_value"] for r in ordered])):
        rec["p_adjusted"] = p_adj
    used = {r["pair"] for r in ordered} | {k for k, v in pairs.items() if v["base"]["sha256"] is not None}
    used_pairs = {k: v for k, v in pairs.items() if k in used}
    # What every pair's inputs were read as (model files and what loading assumed, the probe and
    # how its bias/hook were chosen, each data file's path, sha256 and counts). Under "config",
    # whose keys /1 leaves open; "pairs" keeps its exact /1 keys.
    config = {**run.to_dict(), "inputs": {k: v.get("inputs") for k, v in sorted(used_pairs.items())}}
    doc = build_report(config=config, environment=environment(run.device, run.dtype, rootdir=rootdir),
                       pairs=used_pairs, claims=ordered)
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
