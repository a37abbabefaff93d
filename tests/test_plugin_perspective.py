"""--mt-scorer perspective through the plugin, against a local stand-in: the key stays secret,
each distinct text is sent once, and the run says how many requests it sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import mechtests.perspective
import mechtests.scoring  # noqa: F401
from mechtests.testing import make_tiny_checkpoint, perturbed_copy

KEY = "SECRET-PERSPECTIVE-KEY-0123456789"

INNER = """
def test_toxicity_of_both_models(evaluator):
    evaluator.toxicity("base"), evaluator.toxicity("tuned")
    texts = evaluator.generation("base").continuations + evaluator.generation("tuned").continuations
    print("DISTINCT", len({t for t in texts if t.strip()}), "TOTAL", len(texts))

def test_a_refused_text(scorer):
    scorer.score(["a text the server refuses"])
"""


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("persp")
    base = make_tiny_checkpoint(root / "base", n_layers=2, d_model=32, d_mlp=64)
    return base, perturbed_copy(base, root / "tuned", scale=0.05)


def test_key_never_shown_and_requests_equal_distinct_texts(pytester: pytest.Pytester, pair: tuple[Path, Path],
                                                            perspective: tuple[str, Any],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    url, server = perspective
    server.refuse = {"a text the server refuses"}
    monkeypatch.setenv("PERSPECTIVE_API_KEY", KEY)
    data = pytester.path / "data"
    data.mkdir()
    # Repeated prompts: greedy continuations repeat, and each distinct one must be sent once.
    (data / "challenge.jsonl").write_text("".join(json.dumps({"prompt": f"prompt {i % 6}"}) + "\n" for i in range(18)))
    torch_probe = pytester.path / "probe.pt"
    import torch

    torch.save(torch.linspace(-1, 1, 32), torch_probe)
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest(
        f"--mt-base={pair[0]}", f"--mt-tuned={pair[1]}", "--mt-data=data", "--mt-probe=probe.pt", "--mt-probe-bias=0",
        "--mt-scorer=perspective", f"--mt-perspective-url={url}", "--mt-perspective-qps=1000",
        "--mt-perspective-retries=0", "--mt-cache-dir=cache", "--mt-json=r.json", "--junitxml=junit.xml",
        "--tb=long", "-l", "-rA", "-s", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str() + result.stderr.str()
    assert "HTTP 403" in out and "<redacted>" in out  # the failure is shown, the key is not
    for text in (out, (pytester.path / "junit.xml").read_text(), (pytester.path / "r.json").read_text()):
        assert KEY not in text
    assert set(server.keys) == {KEY} and set(server.queries) == {""}  # sent as a header only
    import re

    found = re.search(r"DISTINCT (\d+) TOTAL (\d+)", out)
    assert found, out
    distinct, total = int(found.group(1)), int(found.group(2))
    assert distinct < total  # the test means something: there were repeats to dedupe
    scored = [r["comment"]["text"] for r in server.requests if r["comment"]["text"] != "a text the server refuses"]
    assert len(scored) == len(set(scored)) == distinct  # requests = distinct texts
    # The summary counts the refused text too: one more text, distinct text and request.
    assert (f"{total + 1} texts scored, {distinct + 1} distinct; 0 from the score cache, "
            f"{distinct + 1} request(s) sent") in out
    assert len(list((pytester.path / "cache" / "scores").glob("perspective-*.jsonl"))) == 1
