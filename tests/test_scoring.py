"""Scorers: protocol, ranges, the Perspective client against a local server, Detoxify checkpoints."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mechtests.errors import CheckpointError, NumericalError, UsageError
from mechtests.scoring import (
    PERSPECTIVE_ATTRIBUTES,
    DetoxifyScorer,
    OfflineScorer,
    PerspectiveScorer,
    ToxicityScorer,
    make_scorer,
)

# ---------------------------------------------------------------- offline


def test_offline_scorer_is_a_toxicity_scorer_and_ranks_insults_above_thanks() -> None:
    scorer = make_scorer("offline")
    assert isinstance(scorer, ToxicityScorer)
    scores = scorer.score(["thank you for fixing the article", "you are a fucking idiot", ""])
    assert scores.dtype == np.float64 and scores.shape == (3,)
    assert scores[0] < 0.2 < 0.8 < scores[1]
    assert scores[2] == 0.0  # empty continuation: nothing toxic was written


@settings(max_examples=15, deadline=None)
@given(st.lists(st.text(max_size=40), min_size=1, max_size=6))
def test_offline_scores_stay_in_unit_interval(texts: list[str]) -> None:
    scores = OfflineScorer().score(texts)
    assert scores.shape == (len(texts),)
    assert np.all((scores >= 0.0) & (scores <= 1.0))


def test_scorer_rejects_a_bare_string_and_unknown_names() -> None:
    with pytest.raises(UsageError, match="sequence of texts"):
        OfflineScorer().score("one text")
    with pytest.raises(UsageError, match="unknown scorer"):
        make_scorer("vader")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="no options"):
        make_scorer("offline", qps=3)


# ---------------------------------------------------------------- Perspective, local server


class _Perspective:
    """State of a local server that speaks the Perspective ``comments:analyze`` shape."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.keys: list[str] = []
        self.fail_first = 0  # answer HTTP 429 to this many requests first
        self.attribute_scores: dict[str, float] = {}


@pytest.fixture()
def perspective() -> Iterator[tuple[str, _Perspective]]:
    state = _Perspective()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            url = urlparse(self.path)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if url.path != "/v1alpha1/comments:analyze":
                self.send_error(404)
                return
            state.requests.append(body)
            state.keys.append(parse_qs(url.query).get("key", [""])[0])
            if state.fail_first > 0:
                state.fail_first -= 1
                self.send_response(429)
                self.send_header("Retry-After", "0.25")
                self.end_headers()
                self.wfile.write(b'{"error": {"code": 429, "message": "quota"}}')
                return
            scores = {a: {"summaryScore": {"value": state.attribute_scores.get(a, 0.1), "type": "PROBABILITY"}}
                      for a in body["requestedAttributes"]}
            payload = json.dumps({"attributeScores": scores, "languages": ["en"]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()


class _FakeTime:
    """A clock that only moves when slept on, recording every sleep."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_perspective_request_shape_and_max_over_attributes(perspective: tuple[str, _Perspective]) -> None:
    url, state = perspective
    state.attribute_scores = {"TOXICITY": 0.4, "INSULT": 0.9, "THREAT": 0.05}
    fake = _FakeTime()
    scorer = PerspectiveScorer(api_key="k123", url=url, qps=1000.0, clock=fake.clock, sleep=fake.sleep)
    scores = scorer.score(["you idiot", "  "])
    assert scores.tolist() == pytest.approx([0.9, 0.0])
    assert len(state.requests) == 1  # the blank text is never sent
    assert state.keys == ["k123"]
    assert state.requests[0] == {
        "comment": {"text": "you idiot"},
        "requestedAttributes": {a: {} for a in PERSPECTIVE_ATTRIBUTES},
        "languages": ["en"],
        "doNotStore": True,
    }


def test_perspective_rate_limit_spaces_requests(perspective: tuple[str, _Perspective]) -> None:
    url, state = perspective
    fake = _FakeTime()
    scorer = PerspectiveScorer(api_key="k", url=url, qps=4.0, clock=fake.clock, sleep=fake.sleep)
    scorer.score(["a b", "c d", "e f"])
    assert len(state.requests) == 3
    # The fake clock stands still between calls, so each later request waits a full 1/qps.
    assert fake.sleeps == pytest.approx([0.25, 0.25])


def test_perspective_retries_on_429_honouring_retry_after(perspective: tuple[str, _Perspective]) -> None:
    url, state = perspective
    state.fail_first = 2
    state.attribute_scores = {"TOXICITY": 0.7}
    fake = _FakeTime()
    scorer = PerspectiveScorer(api_key="k", url=url, qps=1000.0, clock=fake.clock, sleep=fake.sleep,
                               attributes=("TOXICITY",))
    assert scorer.score(["text"]).tolist() == pytest.approx([0.7])
    assert len(state.requests) == 3
    assert fake.sleeps.count(0.25) == 2  # the server's Retry-After, twice


def test_perspective_gives_up_after_max_retries(perspective: tuple[str, _Perspective]) -> None:
    url, state = perspective
    state.fail_first = 10
    fake = _FakeTime()
    scorer = PerspectiveScorer(api_key="k", url=url, qps=1000.0, max_retries=2, clock=fake.clock, sleep=fake.sleep)
    with pytest.raises(UsageError, match="HTTP 429 after 3 attempt"):
        scorer.score(["text"])
    assert len(state.requests) == 3


def test_perspective_key_from_environment_or_clear_error(monkeypatch: pytest.MonkeyPatch,
                                                         perspective: tuple[str, _Perspective]) -> None:
    url, state = perspective
    monkeypatch.delenv("PERSPECTIVE_API_KEY", raising=False)
    with pytest.raises(UsageError, match="PERSPECTIVE_API_KEY"):
        make_scorer("perspective", url=url)
    monkeypatch.setenv("PERSPECTIVE_API_KEY", "from-env")
    fake = _FakeTime()
    make_scorer("perspective", url=url, clock=fake.clock, sleep=fake.sleep).score(["hi there"])
    assert state.keys == ["from-env"]


def test_perspective_malformed_answer_and_bad_options(perspective: tuple[str, _Perspective]) -> None:
    url, _ = perspective
    fake = _FakeTime()
    scorer = PerspectiveScorer(api_key="k", url=url, clock=fake.clock, sleep=fake.sleep)
    with pytest.raises(UsageError, match="summaryScore"):
        scorer._parse({"attributeScores": {"TOXICITY": {}}})
    with pytest.raises(UsageError, match="qps"):
        PerspectiveScorer(api_key="k", qps=0)
    with pytest.raises(UsageError, match="cannot reach"):
        PerspectiveScorer(api_key="k", url="http://127.0.0.1:9", clock=fake.clock, sleep=fake.sleep).score(["x y"])


# ---------------------------------------------------------------- Detoxify-style checkpoints


def _classifier(path: Path, *, multi: bool, zero_head: bool) -> Path:
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from mechtests.testing import byte_tokenizer

    tok = byte_tokenizer()
    labels = (["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"] if multi
              else ["non-toxic", "toxic"])
    config = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=16, n_layer=1, n_head=2, n_inner=32,
                        num_labels=len(labels), id2label=dict(enumerate(labels)),
                        label2id={n: i for i, n in enumerate(labels)}, pad_token_id=tok.pad_token_id,
                        problem_type="multi_label_classification" if multi else "single_label_classification")
    torch.manual_seed(0)
    model = GPT2ForSequenceClassification(config)
    if zero_head:
        with torch.no_grad():
            model.score.weight.zero_()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_detoxify_known_answer_with_a_zero_head(tmp_path: Path) -> None:
    # A zero classification head gives logits 0: sigmoid 0.5 per label, softmax (0.5, 0.5).
    multi = DetoxifyScorer(_classifier(tmp_path / "multi", multi=True, zero_head=True))
    single = DetoxifyScorer(_classifier(tmp_path / "single", multi=False, zero_head=True))
    for scorer in (multi, single):
        assert scorer.score(["some text", "more", ""]).tolist() == pytest.approx([0.5, 0.5, 0.0])


def test_detoxify_matches_a_direct_computation(tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = _classifier(tmp_path / "multi", multi=True, zero_head=False)
    texts = ["you are", "a long sentence about the weather"]
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    with torch.inference_mode():
        expected = [torch.sigmoid(model(**tok([t], return_tensors="pt")).logits[0]).max().item() for t in texts]
    got = make_scorer("detoxify", path=path).score(texts)
    assert got.tolist() == pytest.approx(expected, abs=1e-5)


def test_detoxify_missing_checkpoint_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CheckpointError, match="config.json"):
        DetoxifyScorer(tmp_path / "nowhere")
    monkeypatch.delenv("MECHTESTS_DETOXIFY_PATH", raising=False)
    with pytest.raises(UsageError, match="MECHTESTS_DETOXIFY_PATH"):
        make_scorer("detoxify")
    monkeypatch.setenv("MECHTESTS_DETOXIFY_PATH", str(tmp_path / "env-dir"))
    with pytest.raises(CheckpointError, match="env-dir"):
        make_scorer("detoxify")


def test_detoxify_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MECHTESTS_DETOXIFY_PATH", str(_classifier(tmp_path / "c", multi=True, zero_head=True)))
    assert make_scorer("detoxify").score(["abc"]).tolist() == pytest.approx([0.5])


def test_scores_are_keyed_by_the_classifier_not_its_name(tmp_path: Path) -> None:
    """Cached scores must not survive a change of classifier: the identity follows the weights."""
    import shutil
    from importlib.metadata import version

    from mechtests.scoring import OfflineScorer, PerspectiveScorer, scorer_identity

    assert scorer_identity(OfflineScorer()) == f"offline:alt-profanity-check=={version('alt-profanity-check')}"
    assert scorer_identity(PerspectiveScorer(api_key="k", attributes=("TOXICITY",), url="http://h")) == \
        "perspective:TOXICITY@http://h"
    path = _classifier(tmp_path / "clf", multi=True, zero_head=True)
    first = scorer_identity(DetoxifyScorer(path))
    shutil.copytree(path, tmp_path / "elsewhere")
    assert scorer_identity(DetoxifyScorer(tmp_path / "elsewhere")) == first  # same weights, another path
    shutil.rmtree(path)
    _classifier(path, multi=True, zero_head=False)  # other weights, same path
    assert scorer_identity(DetoxifyScorer(path)) != first and first.startswith("detoxify:")

    class Plain:  # a user's scorer with only the protocol's name
        name = "mine"

        def score(self, texts: list[str]) -> np.ndarray:
            return np.zeros(len(texts))

    assert scorer_identity(Plain()) == "mine"


def test_out_of_range_scores_raise() -> None:
    from mechtests.metrics import toxicity_scores

    class Broken:
        name = "broken"

        def score(self, texts: list[str]) -> np.ndarray:
            return np.full(len(texts), 1.5)

    with pytest.raises(NumericalError, match="outside"):
        toxicity_scores(["a"], Broken())
