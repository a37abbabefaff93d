"""The interventions table: every condition a session used, with toxicity, perplexity and F1.

Both papers' main output is one table, model x intervention -> toxicity, perplexity, F1
(PAPER.md). The :class:`~mechtests.evaluator.Evaluator` records each condition whose metrics it
served (computed or read from the cache) in a :class:`ConditionLog`; :func:`table_rows` turns it
into report rows, each cell a mean with its interval and ``n``. Torch-free: the rows are plain
data, so they travel from xdist workers to the controller and into the JSON report.

A condition gets a human label from whoever knows what it is (``ConditionLog.label``: the
reference suite names the papers' 13 conditions and gives the paper's values beside them);
otherwise the intervention's type and parameters describe it.

Example:
    >>> log = ConditionLog()
    >>> log.record("base", None, "toxicity", np.array([0.25, 0.5, 0.75]))
    >>> row = table_rows(log, pair="p")[0]
    >>> row["model"], row["intervention"], row["toxicity"]["value"], row["toxicity"]["n"]
    ('base', 'none', 0.5, 3)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mechtests.interventions import Intervention

METRICS = ("toxicity", "perplexity", "f1")
METRIC_LABELS = {"toxicity": "tox", "perplexity": "PPL", "f1": "F1"}


def intervention_key(intervention: Intervention | None) -> str:
    """The content identity a condition is filed under (``"none"`` for no intervention)."""
    return "none" if intervention is None else str(intervention.key())


def describe_intervention(intervention: Intervention | None) -> tuple[str, dict[str, Any]]:
    """``(type name, parameters)`` of an intervention, from its dataclass fields: neuron sets by
    their size, models by their source, numbers and strings as they are (tensors are in the key).

    Example:
        >>> describe_intervention(None)
        ('none', {})
    """
    if intervention is None or intervention_key(intervention) == "none":
        return "none", {}
    name = type(intervention).__name__
    params: dict[str, Any] = {}
    parts = getattr(intervention, "interventions", None)
    if parts is not None:  # Compose
        return name, {"of": [describe_intervention(p)[0] for p in parts]}
    if dataclasses.is_dataclass(intervention):
        for field in dataclasses.fields(intervention):
            value = getattr(intervention, field.name)
            if isinstance(value, bool):
                params[field.name] = value
            elif isinstance(value, (int, float, str)):
                params[field.name] = round(value, 6) if isinstance(value, float) else value
            elif hasattr(value, "to_mask") and hasattr(value, "__len__"):  # a NeuronSet
                params[field.name] = len(value)
            elif hasattr(value, "fingerprint") and hasattr(value, "source"):  # a LoadedModel
                params[field.name] = str(value.source)
    return name, params


@dataclasses.dataclass(frozen=True)
class ConditionLabel:
    """A name for a condition, the paper's values beside it and its place in the table."""

    text: str
    paper: dict[str, float]
    order: float


@dataclasses.dataclass
class ConditionEntry:
    """One condition's metrics as served this session (per-unit arrays) and its labels: several
    rows of a paper can be one condition on a smaller model (top 100 and top 200 of 98,304 are
    both 1 neuron of 128), and then each row is kept, saying so."""

    role: str
    key: str
    intervention: str
    params: dict[str, Any]
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    labels: list[ConditionLabel] = dataclasses.field(default_factory=list)
    note: str | None = None  # why a condition that was asked for has no metrics (e.g. too few neurons)


# Labels given without an order come after the ordered ones, in the order they were given.
_UNORDERED = 1e6


def _paper_values(paper: Mapping[str, float] | None) -> dict[str, float]:
    return {k: float(v) for k, v in (paper or {}).items() if v is not None}


class ConditionLog:
    """The conditions an evaluator served, in first-use order (see module docstring)."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], ConditionEntry] = {}

    def _entry(self, role: str, intervention: Intervention | None) -> ConditionEntry:
        key = intervention_key(intervention)
        if (role, key) not in self.entries:
            name, params = describe_intervention(intervention)
            self.entries[(role, key)] = ConditionEntry(role, key, name, params)
        return self.entries[(role, key)]

    def record(self, role: str, intervention: Intervention | None, metric: str,
               values: np.ndarray | tuple[np.ndarray, np.ndarray]) -> None:
        """Note that ``metric`` of the condition was served: per-prompt toxicity / per-item F1
        arrays, or ``(nll_sum, n_tokens)`` per perplexity window."""
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; one of {METRICS}")
        self._entry(role, intervention).metrics[metric] = values

    def label(self, role: str, intervention: Intervention | None, label: str, *, paper: Mapping[str, float] | None = None,
              order: float | None = None) -> None:
        """Name a condition (used or not yet: a label alone adds no row) and give the paper's
        values; a second, different label of the same condition is a second row.

        Example:
            >>> log = ConditionLog()
            >>> log.label("tuned", None, "DPO, no intervention", paper={"toxicity": 0.208})
            >>> log.entries[("tuned", "none")].labels[0].paper
            {'toxicity': 0.208}
        """
        entry = self._entry(role, intervention)
        given = [x for x in entry.labels if x.text != label]
        place = order if order is not None else _UNORDERED + sum(len(e.labels) for e in self.entries.values())
        entry.labels = [*given, ConditionLabel(label, _paper_values(paper), float(place))]

    def omit(self, label: str, reason: str, *, role: str = "base", paper: Mapping[str, float] | None = None,
             order: float | None = None) -> None:
        """A condition that was asked for but cannot run on this pair: a row without metrics that
        says why (never a silently shorter table).

        Example:
            >>> log = ConditionLog()
            >>> log.omit("zero top 2000 positive", "k=2000 exceeds the 40 such neurons")
            >>> table_rows(log, pair="p")[0]["note"]
            'not run: k=2000 exceeds the 40 such neurons'
        """
        entry = ConditionEntry(role, f"omitted:{label}", "omitted", {}, note=f"not run: {reason}")
        entry.labels = [ConditionLabel(label, _paper_values(paper), float(order if order is not None else _UNORDERED))]
        self.entries[(role, entry.key)] = entry

    def has(self, role: str, intervention: Intervention | None = None, metric: str = "toxicity") -> bool:
        """Whether the condition's ``metric`` was served this session."""
        entry = self.entries.get((role, intervention_key(intervention)))
        return entry is not None and metric in entry.metrics


def _cell(est: Any, n: int) -> dict[str, Any]:
    finite = est is not None and all(math.isfinite(v) for v in (est.ci_low, est.ci_high))
    return {"value": float(est.value), "ci_low": float(est.ci_low) if finite else None,
            "ci_high": float(est.ci_high) if finite else None, "n": int(n)}


def mean_cell(values: np.ndarray, confidence: float) -> dict[str, Any]:
    """A per-unit mean with Student's t interval (none below 2 units or without variation)."""
    from mechtests.stats import mean_estimate

    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(x) < 2 or float(np.ptp(x)) == 0.0:
        return {"value": float(x.mean()) if len(x) else None, "ci_low": None, "ci_high": None, "n": len(x)}
    return _cell(mean_estimate(x, confidence=confidence), len(x))


def perplexity_cell(nll_sum: np.ndarray, n_tokens: np.ndarray, confidence: float) -> dict[str, Any]:
    """``exp(sum nll / sum tokens)`` over windows, Fieller's interval of the per-token loss
    (windows are the units) mapped through ``exp``."""
    from mechtests.stats import ratio_estimate, transformed

    nll = np.asarray(nll_sum, dtype=np.float64).reshape(-1)
    tokens = np.asarray(n_tokens, dtype=np.float64).reshape(-1)
    value = float(np.exp(nll.sum() / tokens.sum()))
    if len(nll) < 2 or float(np.ptp(nll / tokens)) == 0.0:
        return {"value": value, "ci_low": None, "ci_high": None, "n": len(nll)}
    est = transformed(ratio_estimate(nll, tokens, confidence=confidence), math.exp)
    return {**_cell(est, len(nll)), "value": value}


def table_rows(log: ConditionLog, *, pair: str, confidence: float = 0.95) -> list[dict[str, Any]]:
    """The report's ``interventions`` rows for one pair's conditions that were used: one row per
    label in label order (the papers' table first), then unlabelled conditions by model and
    intervention. Each metric cell is ``{value, ci_low, ci_high, n}`` or ``None`` (not computed
    this session)."""
    rows = []
    for e in log.entries.values():
        if not (e.metrics or e.note):
            continue
        cells: dict[str, Any] = {}
        for metric in METRICS:
            values = e.metrics.get(metric)
            if values is None:
                cells[metric] = None
            elif metric == "perplexity":
                cells[metric] = perplexity_cell(values[0], values[1], confidence)
            else:
                cells[metric] = mean_cell(values, confidence)
        common = {"pair": pair, "model": e.role, "intervention": e.intervention, "params": dict(e.params),
                  "key": e.key, **cells, "confidence": confidence, "note": e.note}
        if not e.labels:
            rows.append({**common, "label": _generic_label(e), "paper": None, "order": None})
        for label in e.labels:
            rows.append({**common, "label": label.text, "paper": dict(label.paper) or None, "order": label.order})
    return merge_rows([], rows)


def sort_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows by pair, then labelled order (the papers' table first), then model and label."""
    def key(r: Mapping[str, Any]) -> tuple[Any, ...]:
        order = r.get("order")
        return (r["pair"], math.inf if order is None else float(order), r["model"], r["label"], r["key"])

    return [dict(r) for r in sorted(rows, key=key)]


def _generic_label(e: ConditionEntry) -> str:
    if e.intervention == "none":
        return "no intervention"
    params = ", ".join(f"{k}={v}" for k, v in e.params.items())
    return f"{e.intervention}({params})" if params else e.intervention


def merge_rows(existing: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows from several processes (xdist workers) as one table: the rows of one condition
    ``(pair, model, key)`` share every metric whichever process computed it; labelled rows
    (``order`` set) replace the generic one, one per distinct label, and when a condition carries
    several labels each row says how many others are the same condition on this pair (their
    ``key`` is the same)."""
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for row in [*existing, *new]:
        groups.setdefault((row["pair"], row["model"], row["key"]), []).append(row)
    out = []
    for rows in groups.values():
        cells = {m: next((r[m] for r in rows if r.get(m) is not None), None) for m in METRICS}
        labelled: dict[str, Mapping[str, Any]] = {}
        for r in rows:
            if r.get("order") is not None:
                labelled.setdefault(r["label"], r)
        variants = list(labelled.values()) or [rows[0]]
        for v in variants:
            row = {**v, **cells}
            if len(variants) > 1 and v["intervention"] != "omitted":
                row["note"] = f"the same condition as {len(variants) - 1} other row(s) on this pair"
            out.append(row)
    return sort_rows(out)


def _fmt(cell: Mapping[str, Any] | None, digits: int) -> str:
    if cell is None or cell.get("value") is None:
        return "-"
    text = f"{cell['value']:.{digits}f}"
    if cell.get("ci_low") is not None:
        text += f" [{cell['ci_low']:.{digits}f}, {cell['ci_high']:.{digits}f}]"
    return text + f" n={cell['n']}"


DIGITS = {"toxicity": 3, "perplexity": 2, "f1": 3}


def format_cell(cell: Mapping[str, Any] | None, metric: str) -> str:
    """``value [low, high] n=N`` for one table cell, ``-`` when not computed.

    Example:
        >>> format_cell({"value": 0.3, "ci_low": 0.2, "ci_high": 0.4, "n": 64}, "toxicity")
        '0.300 [0.200, 0.400] n=64'
    """
    return _fmt(cell, DIGITS[metric])


def format_paper(paper: Mapping[str, float] | None) -> str:
    """The paper's values of a row, ``tox 0.453 / PPL 21.70 / F1 0.193`` (``-`` when none)."""
    if not paper:
        return "-"
    return " / ".join(f"{METRIC_LABELS[m]} {paper[m]:.{DIGITS[m]}f}" for m in METRICS if m in paper)


def text_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The table as aligned text lines for the terminal summary."""
    header = ["pair", "model", "condition", "tox", "PPL", "F1", "paper"]
    body = [[r["pair"], r["model"], r["label"] + (f" ({r['note']})" if r.get("note") else ""),
             format_cell(r["toxicity"], "toxicity"),
             format_cell(r["perplexity"], "perplexity"), format_cell(r["f1"], "f1"), format_paper(r.get("paper"))]
            for r in rows]
    widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header))]
    return ["  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in [header, *body]]
