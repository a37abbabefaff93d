"""Scorers: protocol, ranges, the Perspective client against a local server, Detoxify checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def _client(url: str, fake: _FakeTime, **kw: object) -> PerspectiveScorer:
    return PerspectiveScorer(api_key=kw.pop("api_key", "k123"), url=url, clock=fake.clock, sleep=fake.sleep,
                             **{"qps": 1000.0, **kw})  # type: ignore[arg-type]


def test_perspective_request_shape_key_in_a_header_and_max_over_attributes(
        perspective: tuple[str, Any]) -> None:
    url, state = perspective
    state.attribute_scores = {"TOXICITY": 0.4, "INSULT": 0.9, "THREAT": 0.05}
    scorer = _client(url, _FakeTime())
    scores = scorer.score(["you idiot", "  "])
    assert scores.tolist() == pytest.approx([0.9, 0.0])
    assert len(state.requests) == 1 and scorer.requests_sent == 1  # the blank text is never sent
    assert state.keys == ["k123"] and state.queries == [""]  # a header, never the URL
    assert state.requests[0] == {
        "comment": {"text": "you idiot"},
        "requestedAttributes": {a: {} for a in PERSPECTIVE_ATTRIBUTES},
        "languages": ["en"],
        "doNotStore": True,
    }


def test_perspective_key_is_never_shown(perspective: tuple[str, Any]) -> None:
    import pickle

    url, state = perspective
    scorer = _client(url, _FakeTime(), api_key="SECRET-KEY-42")
    assert "SECRET-KEY-42" not in repr(scorer) + str(scorer) + repr(vars(scorer))
    state.script = ["403"]  # the server echoes the key in its error body
    with pytest.raises(UsageError) as info:
        scorer.score(["some text"])
    assert "HTTP 403" in str(info.value) and "SECRET-KEY-42" not in str(info.value) and "<redacted>" in str(info.value)
    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(scorer.api_key)


def test_perspective_rate_limit_spaces_requests(perspective: tuple[str, Any]) -> None:
    url, state = perspective
    fake = _FakeTime()
    scorer = _client(url, fake, qps=4.0)
    scorer.score(["a b", "c d", "e f"])
    assert len(state.requests) == 3
    # The fake clock stands still between calls, so each later request waits a full 1/qps.
    assert fake.sleeps == pytest.approx([0.25, 0.25])


def test_perspective_rate_file_is_one_budget_for_every_process(tmp_path: Path) -> None:
    """Two limiters on one file (two xdist workers) draw from one budget (deterministic clock) ..."""
    from mechtests.perspective import _RateLimiter

    fake = _FakeTime()
    a = _RateLimiter(10.0, fake.clock, fake.sleep, tmp_path / "rate")
    b = _RateLimiter(10.0, fake.clock, fake.sleep, tmp_path / "rate")
    for limiter in (a, b, a, b):
        limiter.wait()
    assert fake.sleeps == pytest.approx([0.1, 0.1, 0.1])


def _stamps(path: str, n: int, out: str) -> None:
    import time

    from mechtests.perspective import _RateLimiter

    limiter = _RateLimiter(25.0, time.time, time.sleep, Path(path))
    Path(out).write_text(json.dumps([limiter.wait() for _ in range(n)]))  # the slots granted


def test_perspective_rate_file_spaces_requests_across_real_processes(tmp_path: Path) -> None:
    """... and real processes do too: the slots granted to either are >= 1/qps apart."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_stamps, args=(str(tmp_path / "rate"), 6, str(tmp_path / f"s{i}.json")))
             for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    stamps = sorted(t for i in range(2) for t in json.loads((tmp_path / f"s{i}.json").read_text()))
    gaps = np.diff(stamps)
    assert len(stamps) == 12 and gaps.min() >= 1 / 25 - 1e-6, gaps


@pytest.mark.parametrize("step, expected_sleep", [("429", 0.25), ("429-date", 3.0), ("500", 1.0),
                                                   ("badjson", 1.0)])
def test_perspective_retries_transient_failures(perspective: tuple[str, Any], step: str,
                                                expected_sleep: float) -> None:
    url, state = perspective
    state.script = [step, step]
    state.attribute_scores = {"TOXICITY": 0.7}
    fake = _FakeTime()
    # The wall clock (an HTTP-date Retry-After is read against it), sleeps recorded, not slept.
    scorer = PerspectiveScorer(api_key="k", url=url, qps=1000.0, attributes=("TOXICITY",), sleep=fake.sleep,
                               backoff_s=1.0)
    assert scorer.score(["text"]).tolist() == pytest.approx([0.7])
    assert len(state.requests) == 3
    waits = [w for w in fake.sleeps if w > 0.01]  # the backoffs (the rate limiter's gaps are 1 ms)
    if step == "429-date":  # an HTTP date: the seconds until then (whole seconds in the header)
        assert all(1.0 <= w <= 3.0 for w in waits), waits
    elif step == "429":
        assert waits == pytest.approx([0.25, 0.25])
    else:  # no Retry-After: exponential backoff
        assert waits == pytest.approx([1.0, 2.0])


def test_perspective_timeout_is_retried_then_one_clear_error(perspective: tuple[str, Any]) -> None:
    url, state = perspective
    state.script = ["slow", "slow", "slow"]
    fake = _FakeTime()
    scorer = _client(url, fake, timeout_s=0.2, max_retries=2)
    with pytest.raises(UsageError, match=r"no answer within 0.2 s, after 3 attempt\(s\).*--mt-perspective-timeout"):
        scorer.score(["text"])


def test_perspective_gives_up_after_max_retries(perspective: tuple[str, Any]) -> None:
    url, state = perspective
    state.script = ["429"] * 10
    fake = _FakeTime()
    scorer = _client(url, fake, max_retries=2)
    with pytest.raises(UsageError, match=r"HTTP 429.*after 3 attempt"):
        scorer.score(["text"])
    assert len(state.requests) == 3


def test_perspective_key_from_environment_or_clear_error(monkeypatch: pytest.MonkeyPatch,
                                                         perspective: tuple[str, Any]) -> None:
    url, state = perspective
    monkeypatch.delenv("PERSPECTIVE_API_KEY", raising=False)
    with pytest.raises(UsageError, match="PERSPECTIVE_API_KEY"):
        make_scorer("perspective", url=url)
    monkeypatch.setenv("PERSPECTIVE_API_KEY", "from-env")
    fake = _FakeTime()
    make_scorer("perspective", url=url, clock=fake.clock, sleep=fake.sleep).score(["hi there"])
    assert state.keys == ["from-env"]


def test_perspective_malformed_answer_and_bad_options(perspective: tuple[str, Any]) -> None:
    url, _ = perspective
    fake = _FakeTime()
    scorer = _client(url, fake)
    with pytest.raises(UsageError, match="summaryScore"):
        scorer._parse({"attributeScores": {"TOXICITY": {}}})
    for bad in ({"qps": 0}, {"max_retries": -1}, {"timeout_s": 0}):
        with pytest.raises(UsageError):
            PerspectiveScorer(api_key="k", **bad)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="cannot reach"):
        _client("http://127.0.0.1:9", fake, max_retries=1).score(["x y"])


def test_text_score_cache_sends_each_distinct_text_once_and_survives_a_failure(
        perspective: tuple[str, Any], tmp_path: Path) -> None:
    from mechtests.scoring import TextScoreCache

    url, state = perspective
    fake = _FakeTime()
    texts = [f"text {i % 7}" for i in range(20)] + ["", "text 0"]  # 7 distinct non-blank texts
    first = TextScoreCache(_client(url, fake, max_retries=0), tmp_path / "scores.jsonl")
    state.script = ["ok"] * 4 + ["500"]  # the 5th distinct text fails
    with pytest.raises(UsageError, match="HTTP 500"):
        first.score(texts)
    assert len(state.requests) == 5
    rerun = TextScoreCache(_client(url, fake), tmp_path / "scores.jsonl")  # a new process, same file
    scores = rerun.score(texts)
    assert len(state.requests) == 5 + 3  # only the 3 texts without a stored score are sent again
    assert scores.shape == (22,) and scores[20] == 0.0 and np.all(scores[:20] == pytest.approx(0.1))
    assert (rerun.texts_scored, rerun.distinct, rerun.from_cache, rerun.requests) == (22, 7, 4, 3)
    assert "22 texts scored, 7 distinct; 4 from the score cache, 3 request(s) sent" in rerun.summary()
    with (tmp_path / "scores.jsonl").open("a") as fh:
        fh.write('{"sha256": "torn')  # a writer killed mid-line is ignored
    again = TextScoreCache(_client(url, fake), tmp_path / "scores.jsonl")
    np.testing.assert_array_equal(again.score(texts), scores)
    assert len(state.requests) == 8


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


class _Shouty:
    name = "shouty"

    def __init__(self, scores=None):
        self.scores = scores

    def score(self, texts):
        return self.scores if self.scores is not None else [0.5 for _ in texts]


def _broken():
    return _Shouty([2.0, 0.1])


def test_a_plugin_scorer_is_resolved_checked_and_keyed_by_its_spec() -> None:
    from mechtests.scoring import PluginScorer, make_scorer, resolve_scorer

    spec = f"{__name__}:_Shouty"
    scorer = make_scorer(spec)
    assert isinstance(scorer, PluginScorer) and scorer.name == "shouty" and scorer.identity == f"plugin:{spec}:shouty"
    assert scorer.score(["A", ""]).tolist() == [0.5, 0.0]  # empty texts score 0, like every scorer
    with pytest.raises(NumericalError):
        make_scorer(f"{__name__}:_broken").score(["a", "b"])  # 2.0 is outside [0, 1]
    with pytest.raises(UsageError, match="not a scorer"):
        make_scorer("builtins:object")
    with pytest.raises(UsageError, match="expected module:callable"):
        resolve_scorer(":x")
    with pytest.raises(UsageError, match="takes no options"):
        make_scorer(spec, path="x")
