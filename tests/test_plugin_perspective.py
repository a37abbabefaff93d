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


@pytest.mark.slow  # a plugin session over the papers' 13 conditions: > 10 s
def test_the_protocol_table_sends_each_distinct_text_once(pytester: pytest.Pytester, perspective: tuple[str, Any],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """13 conditions' continuations repeat a lot (several conditions are one on a tiny model, and
    many continuations agree): the score cache sends each distinct text once, and says so."""
    import re
    import shutil

    from tiny_project import HYPOTHESES, build_tiny_project

    url, server = perspective
    monkeypatch.setenv("PERSPECTIVE_API_KEY", KEY)
    project = build_tiny_project(pytester.path / "project")
    shutil.copytree(HYPOTHESES, pytester.path / "hypotheses", ignore=shutil.ignore_patterns("__pycache__", "results"))
    result = pytester.runpytest_subprocess(
        "hypotheses/protocol_table.py", f"--mt-base={project['base']}", f"--mt-tuned={project['tuned']}",
        f"--mt-data={project['data']}", f"--mt-probe={project['probe']}", "--mt-scorer=perspective",
        f"--mt-perspective-url={url}", "--mt-perspective-qps=1000", "--mt-cache-dir=cache", "--mt-json=r.json",
        "-p", "no:cacheprovider", "-q")
    assert result.ret == 0, result.stdout.str()[-3000:]
    out = result.stdout.str()
    rows = json.loads((pytester.path / "r.json").read_text())["interventions"]
    conditions = {(r["model"], r["key"]) for r in rows if r["intervention"] != "omitted"}
    found = re.search(r"(\d+) texts scored, (\d+) distinct; 0 from the score cache, (\d+) request\(s\) sent", out)
    assert found, out[-3000:]
    texts, distinct, requests = map(int, found.groups())
    assert texts == 40 * len(conditions)  # every prompt of every distinct condition, scored once per condition
    sent = [r["comment"]["text"] for r in server.requests]
    assert requests == distinct == len(sent) == len(set(sent)) < texts
