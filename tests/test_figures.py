"""SVG figures: valid XML, known coordinates, edge cases and a property over random data."""

from __future__ import annotations

import itertools
import json
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mechtests import figures
from mechtests.evaluator import BlockAttribution

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == SVG + "svg"
    return root


def test_nice_ticks_known_answers() -> None:
    assert figures.nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert figures.nice_ticks(0.0, 37.0) == [0.0, 10.0, 20.0, 30.0, 40.0]
    assert figures.nice_ticks(-1.0, 1.0) == [-1.0, -0.5, 0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="finite"):
        figures.nice_ticks(0.0, float("nan"))


@settings(max_examples=40, deadline=None)
@given(st.floats(-1e6, 1e6), st.floats(1e-6, 1e6))
def test_nice_ticks_cover_the_range(lo: float, width: float) -> None:
    ticks = figures.nice_ticks(lo, lo + width)
    assert ticks[0] <= lo + 1e-9 * max(1.0, abs(lo)) and ticks[-1] >= lo + width - 1e-9 * max(1.0, abs(lo + width))
    assert ticks == sorted(ticks) and 2 <= len(ticks) <= 12


def test_bar_chart_heights_are_proportional() -> None:
    root = parse(figures.bar_chart(["a", "b"], [0.2, 0.8], title="t & <x>"))
    rects = root.findall(f"{SVG}rect")
    assert len(rects) == 2
    heights = [float(r.get("height")) for r in rects]
    assert heights[1] == pytest.approx(4 * heights[0], rel=1e-2)
    assert root.find(f"{SVG}title").text == "t & <x>"  # escaped in the SVG, intact when parsed


def test_bar_chart_negative_bar_hangs_below_zero_and_error_bars_drawn() -> None:
    root = parse(figures.bar_chart(["up", "down"], [0.5, -0.5], lows=[0.4, -0.6], highs=[0.6, -0.4]))
    up, down = root.findall(f"{SVG}rect")
    assert float(up.get("y")) + float(up.get("height")) == pytest.approx(float(down.get("y")), abs=0.2)
    whiskers = [ln for ln in root.findall(f"{SVG}line") if ln.get("stroke") == "#000"]
    assert len(whiskers) == 2


def test_bar_chart_rejects_mismatched_input() -> None:
    with pytest.raises(ValueError, match="one value per label"):
        figures.bar_chart(["a"], [1.0, 2.0])


def test_line_chart_band_and_reference_line() -> None:
    s = figures.Series("zero", (4.0, 8.0, 42.0), (0.1, 0.2, 0.3), (0.0, 0.1, 0.2), (0.2, 0.3, 0.4))
    root = parse(figures.line_chart([s], log_x=True, hline=0.75, hline_label="threshold"))
    assert len(root.findall(f"{SVG}circle")) == 3
    assert len(root.findall(f"{SVG}polygon")) == 1
    xs = [float(c.get("cx")) for c in root.findall(f"{SVG}circle")]
    # log scale: 4 -> 8 is one doubling, 8 -> 42 is log2(5.25) doublings
    assert (xs[2] - xs[1]) / (xs[1] - xs[0]) == pytest.approx(np.log(42 / 8) / np.log(2), rel=1e-2)
    with pytest.raises(ValueError):
        figures.line_chart([])


def test_scatter_subsamples_reproducibly() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=5000), rng.normal(size=5000)
    cats = ["a" if v > 0 else "b" for v in x]
    a = figures.scatter_chart(x, y, cats, max_points=300, seed=3)
    assert a == figures.scatter_chart(x, y, cats, max_points=300, seed=3)
    assert len(parse(a).findall(f"{SVG}circle")) == 300
    with pytest.raises(ValueError):
        figures.scatter_chart(x[:3], y[:2], cats[:3])


def test_cumulative_share_known_answer() -> None:
    assert figures.cumulative_share(np.array([1.0, 3.0, -1.0])).tolist() == pytest.approx([1.0, 4 / 3, 1.0])
    with pytest.raises(ValueError, match="sum to zero"):
        figures.cumulative_share(np.array([1.0, -1.0]))


def _random_attribution(seed: int, n_blocks: int, n_layers: int, d_mlp: int) -> BlockAttribution:
    rng = np.random.default_rng(seed)
    n = n_layers * d_mlp
    return BlockAttribution(
        base_sum=rng.normal(size=(n_blocks, n)), tuned_sum=rng.normal(size=(n_blocks, n)),
        base_count=np.full(n_blocks, 10.0), tuned_count=np.full(n_blocks, 10.0),
        cosines=rng.normal(size=n), base_alignment=rng.normal(size=n), tuned_alignment=rng.normal(size=n),
        n_layers=n_layers)


def test_attribution_figures_from_block_statistics() -> None:
    L, d = 2, 8
    attr = _random_attribution(1, 6, L, d)
    figs = figures.attribution_figures(attr, n_resamples=50)
    titles = [t for t, _, _, _ in figs]
    assert titles[:3] == ["Share of the probe-projected reduction per group", "Reduction per layer",
                          "Activation change vs cosine"]
    for _, svg, caption, data in figs:
        parse(svg)
        assert caption and json.loads(json.dumps(data, allow_nan=False)) == data
    assert len(parse(figs[2][1]).findall(f"{SVG}circle")) == L * d
    shares = figs[0][3]
    assert shares["group"] == ["TP↓", "TN↓", "AP↑", "AN↑"] and len(shares["share"]) == 4
    assert all(lo <= hi for lo, hi in zip(shares["ci_low"], shares["ci_high"], strict=True))
    assert len(figs[2][3]["cosine"]) == len(figs[2][3]["group"]) == L * d


def _fills(svg: str, tag: str) -> list[str]:
    return [el.get("fill") for el in parse(svg).iter(f"{SVG}{tag}")]


def test_one_palette_a_group_has_one_colour_in_every_figure() -> None:
    attr = _random_attribution(2, 6, 2, 200)
    figs = {t: (svg, data) for t, svg, _, data in figures.attribution_figures(attr, n_resamples=20)}
    bars = [f for f in _fills(figs["Share of the probe-projected reduction per group"][0], "rect")]
    assert bars == [figures.GROUP_COLORS[g] for g in ("TP↓", "TN↓", "AP↑", "AN↑")]
    svg, data = figs["Activation change vs cosine"]
    points = _fills(svg, "circle")
    assert [figures.GROUP_COLORS[g] for g in data["group"]] == points  # each point in its group's colour
    patch = figures.family_lines([{"family": "patch TP↓", "k": 40, "estimate": 0.4, "ci_low": 0.2, "ci_high": 0.6},
                                  {"family": "zero top-k", "k": 4, "estimate": 0.1, "ci_low": 0.0, "ci_high": 0.2}])
    assert figures.GROUP_COLORS["TP↓"] in _fills(patch, "circle")
    assert not set(figures.SERIES_COLORS) & set(figures.GROUP_COLORS.values())


def test_every_point_with_an_interval_has_a_whisker_even_a_lone_one() -> None:
    """Patch families are one point each: a band needs two points, a whisker does not."""
    svg = figures.family_lines([{"family": "patch all four groups", "k": 300, "estimate": 0.57,
                                 "ci_low": 0.30, "ci_high": 0.84}])
    root = parse(svg)
    whiskers = [el for el in root.iter(f"{SVG}path") if el.get("class") == "whisker"]
    assert len(whiskers) == 1 and not root.findall(f"{SVG}polygon")
    ys = [float(v) for v in re.findall(r"[MV][\d.]+,?([\d.]+)?", whiskers[0].get("d")) if v]
    cy = float(root.find(f"{SVG}circle").get("cy"))
    assert min(ys) < cy < max(ys)  # the whisker spans the point


def _tick_labels(svg: str) -> list[tuple[float, str]]:
    y_axis = figures.HEIGHT - figures.MARGIN_BOTTOM + 16
    return [(float(t.get("x")), t.text or "") for t in parse(svg).iter(f"{SVG}text")
            if t.get("text-anchor") == "middle" and abs(float(t.get("y")) - y_axis) < 0.01]


@pytest.mark.parametrize("n", [60, 98304])
def test_log_axis_tick_labels_never_overlap(n: int) -> None:
    """The cumulative-share figure drew one label per point (60 on a log axis): a smear."""
    x = tuple(float(v) for v in np.unique(np.geomspace(1, n, 60).astype(int)))
    svg = figures.line_chart([figures.Series("s", x, tuple(np.linspace(0, 1, len(x))))], log_x=True)
    labels = _tick_labels(svg)
    assert 3 <= len(labels) <= 10
    for (x0, a), (x1, b) in itertools.pairwise(labels):
        assert x1 - x0 >= (len(a) + len(b)) * figures.CHAR_WIDTH / 2  # boxes apart
    assert labels[0][1] == "1" and labels[-1][1] == ("50" if n == 60 else "10k")


def test_log_ticks_and_thinning_known_answers() -> None:
    assert figures.log_ticks(100, 2000) == [100, 200, 500, 1000, 2000]
    assert figures.log_ticks(4, 4) == [4]
    assert figures.thin_labels([(0.0, "1"), (5.0, "2"), (30.0, "3")]) == [(0.0, "1"), (30.0, "3")]


def test_family_lines_one_series_per_family() -> None:
    pts = [{"family": f, "k": k, "estimate": 0.1 * k, "ci_low": 0.0, "ci_high": 0.5}
           for f in ("zero top-k", "zero top-k positive") for k in (4, 8)]
    root = parse(figures.family_lines(pts))
    assert len(root.findall(f"{SVG}polyline")) == 2


def test_family_lines_clip_exploding_intervals() -> None:
    pts = [{"family": "f", "k": 4, "estimate": 0.2, "ci_low": -8811.0, "ci_high": 0.9},
           {"family": "f", "k": 8, "estimate": 0.3, "ci_low": 0.1, "ci_high": 0.5}]
    root = parse(figures.family_lines(pts, clip=(-1.0, 2.0)))
    ticks = [float(t.text) for t in root.findall(f"{SVG}text") if t.get("text-anchor") == "end" and t.text
             and t.text.lstrip("-").replace(".", "").isdigit()]
    assert min(ticks) >= -1.0 and max(ticks) <= 2.0
