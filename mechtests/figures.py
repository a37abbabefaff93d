"""Self-contained SVG figures for the HTML report (no plotting dependency).

Each chart function returns one ``<svg>`` element as a string that an HTML page can inline.
Coordinates are computed here with a linear scale and "nice" ticks; text is XML-escaped.
:func:`attribution_figures` draws any pair's `mechtests.effects.BlockAttribution` (group shares with the
claims' own interval method, reduction per layer, change vs cosine, cumulative share);
:func:`family_lines` draws recorded claim results as one line per family (a rows renderer for
``mt_figures.add_rows``). Nothing here knows a paper: the reference suite's figures, captions and
values live in ``hypotheses/`` (``mt_paper_figures.py``, ``mt_reference.py``).

Example:
    >>> svg = bar_chart(["a", "b"], [0.3, 0.7], title="shares")
    >>> svg.startswith("<svg") and svg.count("<rect") >= 2
    True
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

import numpy as np

from mechtests.effects import GROUP_LABELS, GROUP_NAMES, group_masks

if TYPE_CHECKING:
    from mechtests.effects import BlockAttribution

WIDTH, HEIGHT = 560, 320
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 64, 16, 32, 56
FONT_SIZE = 11
#: Width of one character of a tick label at FONT_SIZE, generously (sans-serif digits are ~0.55 em),
#: so labels placed at least this far apart per character never touch.
CHAR_WIDTH = 7.0

# One palette for every figure of a report: a neuron group has the same colour wherever it is
# drawn (the four groups of the attribution, their mirror groups in a lighter shade of the same
# hue); lines that are not groups (recovery families) take colours no group uses.
GROUP_COLORS = {"TP↓": "#d62728", "TN↓": "#ff7f0e", "AP↑": "#2ca02c", "AN↑": "#1f77b4",
                "TP↑": "#f2a0a1", "TN↑": "#ffc58f", "AP↓": "#9cd79c", "AN↓": "#9dc3e6", "other": "#bdbdbd"}
SERIES_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#393b79", "#637939")
NEUTRAL = "#4c72b0"  # single-series bars (reduction per layer)
PALETTE = SERIES_COLORS  # colours given to bars/lines by position when none are named


@dataclasses.dataclass(frozen=True)
class Series:
    """One line of a line chart, optionally with a confidence band (``low``/``high``)."""

    name: str
    x: tuple[float, ...]
    y: tuple[float, ...]
    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering ``[lo, hi]`` (1, 2, 5 x 10^k steps).

    Example:
        >>> nice_ticks(0.0, 1.0)
        [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    """
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"tick range must be finite, got [{lo}, {hi}]")
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step)
    last = math.ceil(hi / step)
    # round away binary noise (0.6000000000000001) so tick labels and tests stay exact
    return [round(k * step, 12) for k in range(first, last + 1)]


@dataclasses.dataclass(frozen=True)
class _Scale:
    lo: float
    hi: float
    out_lo: float
    out_hi: float

    def __call__(self, v: float) -> float:
        return self.out_lo + (v - self.lo) / (self.hi - self.lo) * (self.out_hi - self.out_lo)


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _frame(title: str, xlabel: str, ylabel: str, y_ticks: list[float], ys: _Scale,
           x_ticks: list[tuple[float, str]], xs: _Scale) -> list[str]:
    """Axes, ticks, grid lines and labels shared by every chart."""
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
              f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="{FONT_SIZE}">'),
             f'<title>{escape(title)}</title>',
             f'<text x="{WIDTH / 2:.1f}" y="18" text-anchor="middle" font-size="13">{escape(title)}</text>']
    x0, x1 = MARGIN_LEFT, WIDTH - MARGIN_RIGHT
    y0, y1 = HEIGHT - MARGIN_BOTTOM, MARGIN_TOP
    for t in y_ticks:
        y = ys(t)
        parts.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        parts.append(f'<text x="{x0 - 4}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    for value, label in thin_labels([(xs(v), lab) for v, lab in x_ticks]):
        parts.append(f'<line x1="{value:.1f}" y1="{y0}" x2="{value:.1f}" y2="{y0 + 4}" stroke="#333"/>')
        parts.append(f'<text x="{value:.1f}" y="{y0 + 16}" text-anchor="middle">{escape(label)}</text>')
    parts.append(f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#333"/>')
    parts.append(f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#333"/>')
    parts.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{HEIGHT - 10}" text-anchor="middle">{escape(xlabel)}</text>')
    parts.append(f'<text x="14" y="{(y0 + y1) / 2:.1f}" text-anchor="middle" '
                 f'transform="rotate(-90 14 {(y0 + y1) / 2:.1f})">{escape(ylabel)}</text>')
    return parts


def thin_labels(ticks: Sequence[tuple[float, str]], *, gap: float = 6.0) -> list[tuple[float, str]]:
    """Keep tick labels (``(x, label)``, centred at x) that do not overlap the last one kept.

    Example:
        >>> thin_labels([(0.0, "100"), (10.0, "200"), (40.0, "1000")])
        [(0.0, '100'), (40.0, '1000')]
    """
    kept: list[tuple[float, str]] = []
    for x, label in sorted(ticks):
        if kept:
            px, plabel = kept[-1]
            if x - px < (len(plabel) + len(label)) * CHAR_WIDTH / 2 + gap:
                continue
        kept.append((x, label))
    return kept


def _si(v: float) -> str:
    """Compact tick text: 1, 20, 500, 1k, 20k, 1M."""
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:g}{unit}"
    return f"{v:g}"


def log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks of a log axis over ``[lo, hi]`` (> 0): 1-2-5 per decade when that gives few, else decades.

    Example:
        >>> log_ticks(3, 2000)
        [5, 10, 20, 50, 100, 200, 500, 1000, 2000]
        >>> log_ticks(1, 98304)
        [1, 10, 100, 1000, 10000]
    """
    if not (lo > 0 and hi >= lo):
        raise ValueError(f"a log axis needs 0 < lo <= hi, got [{lo}, {hi}]")
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    dense = [m * 10 ** e for e in range(first, last + 1) for m in (1, 2, 5) if lo <= m * 10 ** e <= hi]
    if len(dense) <= 10:
        return dense or [lo]
    return [10 ** e for e in range(first, last + 1) if lo <= 10 ** e <= hi]


def _y_scale(values: Sequence[float], include_zero: bool = True) -> tuple[list[float], _Scale]:
    finite = [v for v in values if math.isfinite(v)] or [0.0, 1.0]
    lo, hi = min(finite), max(finite)
    if include_zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    ticks = nice_ticks(lo, hi)
    return ticks, _Scale(ticks[0], ticks[-1], HEIGHT - MARGIN_BOTTOM, MARGIN_TOP)


def bar_chart(labels: Sequence[str], values: Sequence[float], *, lows: Sequence[float] | None = None,
              highs: Sequence[float] | None = None, title: str = "", xlabel: str = "", ylabel: str = "",
              colors: Sequence[str] | None = None) -> str:
    """Vertical bars, one per label, with optional error bars (``lows``/``highs``).

    Example:
        >>> "<rect" in bar_chart(["TP↓"], [0.32], lows=[0.3], highs=[0.35])
        True
    """
    if len(labels) != len(values) or not labels:
        raise ValueError(f"bar_chart needs one value per label, got {len(labels)} labels and {len(values)} values")
    extra = [v for v in list(lows or []) + list(highs or []) if math.isfinite(v)]  # a NaN bound: no whisker
    ticks, ys = _y_scale(list(values) + extra)
    n = len(labels)
    slot = (WIDTH - MARGIN_LEFT - MARGIN_RIGHT) / n
    xs = _Scale(0, n, MARGIN_LEFT, WIDTH - MARGIN_RIGHT)
    parts = _frame(title, xlabel, ylabel, ticks, ys, [(i + 0.5, str(lab)) for i, lab in enumerate(labels)], xs)
    zero = ys(0.0)
    for i, v in enumerate(values):
        color = (colors or PALETTE)[i % len(colors or PALETTE)]  # named colours first (one palette)
        top, bottom = sorted((ys(v), zero))
        x = MARGIN_LEFT + i * slot + slot * 0.15
        parts.append(f'<rect x="{x:.1f}" y="{top:.1f}" width="{slot * 0.7:.1f}" height="{bottom - top:.1f}" '
                     f'fill="{color}"><title>{escape(str(labels[i]))}: {_fmt(v)}</title></rect>')
        if lows is not None and highs is not None and math.isfinite(lows[i]) and math.isfinite(highs[i]):
            cx = MARGIN_LEFT + (i + 0.5) * slot
            parts.append(f'<line x1="{cx:.1f}" y1="{ys(lows[i]):.1f}" x2="{cx:.1f}" y2="{ys(highs[i]):.1f}" '
                         'stroke="#000" stroke-width="1.5"/>')
    parts.append("</svg>")
    return "\n".join(parts)


def line_chart(series: Sequence[Series], *, title: str = "", xlabel: str = "", ylabel: str = "",
               log_x: bool = False, hline: float | None = None, hline_label: str = "",
               colors: Sequence[str] | None = None) -> str:
    """Lines with markers, shaded confidence bands and a whisker at every point that has an
    interval; optional horizontal reference line. A log x axis gets 1-2-5 or decade ticks.

    Example:
        >>> s = Series("zero top-k", (4.0, 8.0), (0.1, 0.2), (0.0, 0.1), (0.2, 0.3))
        >>> svg = line_chart([s], log_x=True, hline=0.75)
        >>> svg.count("<circle"), svg.count('class="whisker"')
        (2, 2)
    """
    if not series or not any(s.x for s in series):
        raise ValueError("line_chart needs at least one non-empty series")
    if log_x and any(v <= 0 for s in series for v in s.x):
        raise ValueError("line_chart: a log x axis needs x > 0")
    tx = (lambda v: math.log10(v)) if log_x else (lambda v: v)
    all_x = [tx(v) for s in series for v in s.x]
    all_y = [v for s in series for v in s.y] + [v for s in series for v in (s.low or ()) + (s.high or ())]
    if hline is not None:
        all_y.append(hline)
    ticks, ys = _y_scale(all_y)
    lo_x, hi_x = min(all_x), max(all_x)
    pad = (hi_x - lo_x) * 0.05 or 0.5
    xs = _Scale(lo_x - pad, hi_x + pad, MARGIN_LEFT, WIDTH - MARGIN_RIGHT)
    if log_x:
        raw = [v for s in series for v in s.x]
        x_ticks = [(tx(v), _si(v)) for v in log_ticks(min(raw), max(raw))]
    else:
        x_ticks = [(v, _fmt(v)) for v in sorted({v for s in series for v in s.x})]
    parts = _frame(title, xlabel, ylabel, ticks, ys, x_ticks, xs)
    if hline is not None:
        y = ys(hline)
        parts.append(f'<line x1="{MARGIN_LEFT}" y1="{y:.1f}" x2="{WIDTH - MARGIN_RIGHT}" y2="{y:.1f}" '
                     'stroke="#555" stroke-dasharray="4 3"/>')
        if hline_label:
            parts.append(f'<text x="{WIDTH - MARGIN_RIGHT - 2}" y="{y - 3:.1f}" text-anchor="end">'
                         f'{escape(hline_label)}</text>')
    palette = colors or PALETTE
    for i, s in enumerate(series):
        color = palette[i % len(palette)]
        pts = [(xs(tx(x)), ys(y)) for x, y in zip(s.x, s.y, strict=True)]
        has_ci = s.low is not None and s.high is not None
        if has_ci and len(pts) > 1:
            upper = [(xs(tx(x)), ys(h)) for x, h in zip(s.x, s.high or (), strict=True)]
            lower = [(xs(tx(x)), ys(lo)) for x, lo in zip(s.x, s.low or (), strict=True)]
            poly = " ".join(f"{a:.1f},{b:.1f}" for a, b in upper + lower[::-1])
            parts.append(f'<polygon points="{poly}" fill="{color}" fill-opacity="0.15" stroke="none"/>')
        if len(pts) > 1:
            parts.append(f'<polyline points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in pts)}" fill="none" '
                         f'stroke="{color}" stroke-width="2"/>')
        if has_ci:
            for (a, _), low, high in zip(pts, s.low or (), s.high or (), strict=True):
                y_low, y_high = ys(low), ys(high)
                parts.append(f'<path class="whisker" d="M{a - 4:.1f},{y_low:.1f}H{a + 4:.1f}M{a:.1f},{y_low:.1f}'
                             f'V{y_high:.1f}M{a - 4:.1f},{y_high:.1f}H{a + 4:.1f}" stroke="{color}" '
                             'stroke-width="1.3" fill="none"/>')
        for j, ((a, b), x, y) in enumerate(zip(pts, s.x, s.y, strict=True)):
            ci = f" [{_fmt(s.low[j])}, {_fmt(s.high[j])}]" if has_ci and s.low and s.high else ""
            parts.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3.2" fill="{color}">'
                         f'<title>{escape(s.name)}: {_fmt(x)} → {_fmt(y)}{ci}</title></circle>')
        parts.append(f'<text x="{MARGIN_LEFT + 8}" y="{MARGIN_TOP + 12 + 14 * i}" fill="{color}">{escape(s.name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def subsample(n: int, max_points: int, seed: int) -> np.ndarray:
    """The indices a scatter draws: all ``n``, or a seeded sorted random ``max_points`` of them.

    Example:
        >>> subsample(3, 10, 0).tolist(), len(subsample(100, 10, 0))
        ([0, 1, 2], 10)
    """
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def scatter_chart(x: np.ndarray, y: np.ndarray, categories: Sequence[str], *, title: str = "",
                  xlabel: str = "", ylabel: str = "", max_points: int = 2000, seed: int = 0,
                  colors: Mapping[str, str] | None = None) -> str:
    """Points coloured by category; at most ``max_points`` drawn (a seeded random subsample).

    Example:
        >>> scatter_chart(np.array([0.1, -0.2]), np.array([1.0, 2.0]), ["a", "b"]).count("<circle")
        2
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.shape[0] != len(categories) or x.size == 0:
        raise ValueError(f"scatter_chart needs equal, non-empty x, y, categories; got {x.shape}, {y.shape}, {len(categories)}")
    keep = subsample(x.size, max_points, seed)
    ticks, ys = _y_scale(y[keep].tolist())
    xt = nice_ticks(float(x[keep].min()), float(x[keep].max()))
    xs = _Scale(xt[0], xt[-1], MARGIN_LEFT, WIDTH - MARGIN_RIGHT)
    parts = _frame(title, xlabel, ylabel, ticks, ys, [(t, _fmt(t)) for t in xt], xs)
    names = sorted(set(categories))
    color_of = {name: (colors or {}).get(name) or PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
    for i in keep:
        parts.append(f'<circle cx="{xs(float(x[i])):.1f}" cy="{ys(float(y[i])):.1f}" r="1.8" '
                     f'fill="{color_of[categories[i]]}" fill-opacity="0.6"/>')
    for j, name in enumerate(names):
        parts.append(f'<text x="{WIDTH - MARGIN_RIGHT - 4}" y="{MARGIN_TOP + 12 + 13 * j}" text-anchor="end" '
                     f'fill="{color_of[name]}">{escape(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def cumulative_share(values: np.ndarray) -> np.ndarray:
    """Cumulative share of the total carried by the largest values first.

    Example:
        >>> cumulative_share(np.array([1.0, 3.0, -1.0])).tolist()
        [1.0, 1.3333333333333333, 1.0]
    """
    v = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))[::-1]
    total = v.sum()
    if total == 0:
        raise ValueError("cumulative_share: the values sum to zero, shares are undefined")
    return np.cumsum(v) / total


GROUP_DISPLAY = GROUP_LABELS  # one definition: mechtests.effects


def _rounded(values: Any, digits: int = 6) -> list[float | None]:
    """Floats at ``digits`` significant digits for a figure's data in the JSON report (None where
    the value is undefined: JSON has no NaN)."""
    return [float(f"{float(v):.{digits}g}") if math.isfinite(v) else None
            for v in np.asarray(values, dtype=np.float64).reshape(-1)]


def attribution_figures(attr: BlockAttribution, *, confidence: float = 0.95, n_resamples: int = 500,
                        seed: int = 0, notes: Mapping[str, str] | None = None
                        ) -> list[tuple[str, str, str, dict[str, Any]]]:
    """The attribution figures as ``(title, svg, caption, data)`` from a ``BlockAttribution``;
    ``data`` is what the figure draws (JSON-ready), for the report. ``notes``: a sentence to add to
    a figure's caption, by title (the reference suite gives the papers' values there).

    Group shares are the claims' cross-fitted shares (`BlockAttribution.share`) with the claims'
    interval: `stats.bootstrap_estimate` (BCa) of each half of the blocks resampled within itself,
    widened by the bootstrap's bias estimate (``plug_in``), at ``confidence`` per bar.

    Example:
        >>> figs = attribution_figures(attr)
        >>> [title for title, *_ in figs][:2]
        ['Share of the probe-projected reduction per group', 'Reduction per layer']
    """
    from mechtests.errors import NumericalError
    from mechtests.stats import bootstrap_estimate

    point = attr.crossfit_shares()  # the claims' statistic: sorted on one half, summed on the other
    def interval(group: str) -> tuple[float, float]:
        try:
            e = bootstrap_estimate(attr.folds(), attr.share((group,)), paired=False, confidence=confidence,
                                   n_resamples=n_resamples, seed=seed, plug_in=attr.plug_in_share((group,)))
        except NumericalError:  # a resample with no reduction in the four groups: the bar has no whisker
            return math.nan, math.nan
        return e.ci_low, e.ci_high

    lows, highs = (np.array(bounds) for bounds in zip(*(interval(g) for g in GROUP_NAMES), strict=True))
    labels = [GROUP_DISPLAY[g] for g in GROUP_NAMES]
    values = [float(point[g]) for g in GROUP_NAMES]
    figs = [("Share of the probe-projected reduction per group",
             bar_chart(labels, values, lows=lows.tolist(), highs=highs.tolist(), title="Group shares of the reduction",
                       ylabel="share", colors=[GROUP_COLORS[label] for label in labels]),
             (f"Bars: share of the four groups' total reduction; whiskers: {confidence:.0%} block-bootstrap "
              "interval (BCa with the bias allowance, as the claims'); neurons sorted into groups on one half of the "
              "prompts, their reduction summed on the other."),
             {"group": labels, "share": _rounded(values), "ci_low": _rounded(lows), "ci_high": _rounded(highs),
              "confidence": confidence, "n_resamples": n_resamples, "n_blocks": int(attr.n_blocks)})]
    red, base, tuned = attr.reduction()
    per_layer = red.reshape(attr.n_layers, -1).sum(axis=1)
    figs.append(("Reduction per layer",
                 bar_chart([str(i) for i in range(attr.n_layers)], per_layer.tolist(), title="Net reduction per layer",
                           xlabel="layer", ylabel="sum of proj_base - proj_tuned", colors=[NEUTRAL]),
                 "Sum over each layer's neurons of the probe-projected reduction (mean activations, all prompts).",
                 {"layer": list(range(attr.n_layers)), "net_reduction": _rounded(per_layer)}))
    masks = group_masks(attr.cosines, base, tuned)
    cats = np.full(red.size, "other", dtype=object)
    for name, mask in masks.items():
        cats[mask] = GROUP_DISPLAY[name]
    change = tuned - base
    max_points = 2000
    drawn = subsample(red.size, max_points, seed)
    figs.append(("Activation change vs cosine",
                 scatter_chart(attr.cosines, change, [str(c) for c in cats], seed=seed, max_points=max_points,
                               title="Activation change vs cos(value vector, probe)",
                               xlabel="cos(w_i, probe)", ylabel="tuned - base mean activation", colors=GROUP_COLORS),
                 f"One point per neuron (random subsample of at most {max_points:,}), coloured by group.",
                 {"neuron": drawn.tolist(), "cosine": _rounded(np.asarray(attr.cosines)[drawn]),
                  "change": _rounded(change[drawn]), "group": [str(c) for c in cats[drawn]], "n_neurons": int(red.size)}))
    positive = red[red > 0]
    if positive.size:
        cum = cumulative_share(red)
        n = cum.size
        idx = np.unique(np.geomspace(1, n, num=min(n, 60)).astype(int)) - 1
        figs.append(("Cumulative share over ranked neurons",
                     line_chart([Series("cumulative share of net reduction", tuple(float(i + 1) for i in idx),
                                        tuple(float(cum[i]) for i in idx))],
                                title="Cumulative share of the net reduction", xlabel="top-n neurons by reduction",
                                ylabel="share of net", log_x=True, hline=1.0, colors=[NEUTRAL]),
                     "Neurons ranked by reduction: the share of the net reduction the top n carry.",
                     {"top_n": [int(i + 1) for i in idx], "share": _rounded(cum[idx])}))
    extra = dict(notes or {})
    return [(title, svg, f"{caption} {extra[title]}" if title in extra else caption, data)
            for title, svg, caption, data in figs]


def family_lines(points: Sequence[Mapping[str, Any]], *, title: str = "", xlabel: str = "k", ylabel: str = "estimate",
                 clip: tuple[float, float] | None = None, log_x: bool = True, hline: float | None = None,
                 hline_label: str = "") -> str:
    """One line per ``family`` of claim results (x: ``k``, y: ``estimate`` with its
    ``ci_low``/``ci_high`` band or whisker), e.g. a recovered fraction vs the number of neurons.
    Usable as a rows renderer (``mt_figures.add_rows(..., render="mechtests.figures:family_lines")``).

    ``clip``: the y range drawn — a ratio's interval can explode when its denominator is small
    on some resamples, and one wild band must not flatten the figure (the axis label says so).

    Example:
        >>> svg = family_lines([{"family": "zero", "k": 4, "estimate": 0.2, "ci_low": 0.1, "ci_high": 0.3}])
        >>> svg.startswith("<svg")
        True
    """
    lo, hi = clip if clip is not None else (-math.inf, math.inf)

    def c(v: Any) -> float:
        return float(min(max(float(v), lo), hi))

    fams: dict[str, list[Mapping[str, Any]]] = {}
    for p in points:
        fams.setdefault(str(p["family"]), []).append(p)
    series = []
    for fam, ps in sorted(fams.items()):
        ps = sorted(ps, key=lambda p: p["k"])
        series.append(Series(fam, tuple(float(p["k"]) for p in ps), tuple(c(p["estimate"]) for p in ps),
                             tuple(c(p["ci_low"]) for p in ps), tuple(c(p["ci_high"]) for p in ps)))
    shown = f"{ylabel} (clipped to [{lo:g}, {hi:g}])" if clip is not None else ylabel
    return line_chart(series, title=title, xlabel=xlabel, ylabel=shown, log_x=log_x, hline=hline,
                      hline_label=hline_label, colors=series_colors([s.name for s in series]))


def series_colors(names: Sequence[str]) -> list[str]:
    """One colour per series name: a name that ends in a group label gets that group's colour
    (the palette every figure shares), the others the non-group colours in order.

    Example:
        >>> series_colors(["patch TP↓", "zero top-k"]) == [GROUP_COLORS["TP↓"], SERIES_COLORS[0]]
        True
    """
    out, others = [], iter(SERIES_COLORS * (len(names) // len(SERIES_COLORS) + 1))
    for name in names:
        group = next((label for label in GROUP_COLORS if str(name).endswith(label)), None)
        out.append(GROUP_COLORS[group] if group else next(others))
    return out
