"""The HTML report in a real headless browser (Chromium): layout measurements and screenshots.

Used by tests/test_hypotheses_run.py, and by hand to look at a report:

    python tests/browser.py report.html --out shots/     # shots/report-1280.png, report-900.png

`measure` opens a copy of the page with a measuring script appended (the report itself has no
scripts), lets Chromium lay it out at a given window width, and reads back what it measured from
the dumped DOM: whether anything overflows the page horizontally, where the claims table ends,
and every pair of overlapping text boxes inside each figure.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

_MEASURE = """
<script>
(function () {
  const out = {innerWidth: window.innerWidth, scrollWidth: document.scrollingElement.scrollWidth,
               scrollHeight: document.scrollingElement.scrollHeight};
  const table = document.querySelector("table.claims");
  out.tableRight = table ? table.getBoundingClientRect().right : null;
  out.figures = [];
  document.querySelectorAll("figure").forEach(function (fig) {
    const title = (fig.querySelector("h3") || {}).textContent || "";
    const svg = fig.querySelector("svg");
    const texts = svg ? Array.from(svg.querySelectorAll("text")).filter(t => t.textContent.trim()) : [];
    const boxes = texts.map(t => [t.textContent, t.getBoundingClientRect()]);
    const overlaps = [];
    for (let i = 0; i < boxes.length; i++) {
      for (let j = i + 1; j < boxes.length; j++) {
        const a = boxes[i][1], b = boxes[j][1];
        const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
        const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
        if (w > 0.5 && h > 0.5) overlaps.push([boxes[i][0], boxes[j][0]]);
      }
    }
    const r = svg ? svg.getBoundingClientRect() : {right: 0};
    out.figures.push({title: title, texts: boxes.length, overlaps: overlaps, right: r.right});
  });
  const pre = document.createElement("pre");
  pre.id = "mt-measure";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>
"""


def chromium() -> str | None:
    """The Chromium executable on PATH (Debian: ``apt-get install chromium``), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(args: list[str]) -> str:
    exe = chromium()
    if exe is None:
        raise FileNotFoundError("no Chromium on PATH (Debian/Ubuntu: apt-get install chromium)")
    done = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
                          capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"chromium failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def measure(html: Path, width: int = 1280, height: int = 900) -> dict[str, Any]:
    """Lay ``html`` out at ``width`` x ``height`` and return the measurements (see the module doc)."""
    page = Path(html).read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "measured.html"
        copy.write_text(page.replace("</body>", _MEASURE + "</body>"), encoding="utf-8")
        dom = _run([f"--window-size={width},{height}", "--virtual-time-budget=5000", "--dump-dom", copy.as_uri()])
    found = re.search(r'<pre id="mt-measure">(.*?)</pre>', dom, re.DOTALL)
    if found is None:
        raise RuntimeError("the measuring script did not run (no #mt-measure in the dumped DOM)")
    text = found.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return json.loads(text)


def screenshot(html: Path, out: Path, width: int = 1280) -> Path:
    """A full-page PNG of ``html`` at ``width`` (height from the page's own length, at most 12,000 px)."""
    height = 900
    try:
        height = min(max(int(measure(html, width)["scrollHeight"]), 900), 12000)
    except (KeyError, RuntimeError, ValueError):
        pass
    out.parent.mkdir(parents=True, exist_ok=True)
    _run([f"--window-size={width},{height}", f"--screenshot={out}", Path(html).resolve().as_uri()])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html", type=Path)
    parser.add_argument("--out", type=Path, default=Path("screenshots"))
    parser.add_argument("--widths", default="1280,900")
    args = parser.parse_args(argv)
    for width in (int(w) for w in args.widths.split(",")):
        m = measure(args.html, width)
        path = screenshot(args.html, args.out / f"{args.html.stem}-{width}.png", width)
        overlaps = sum(len(f["overlaps"]) for f in m["figures"])
        print(f"{path}: page {m['scrollWidth']}px wide in a {m['innerWidth']}px window, "
              f"table ends at {m['tableRight']:.0f}px, {len(m['figures'])} figures, {overlaps} overlapping labels")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
