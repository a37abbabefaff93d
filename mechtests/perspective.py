"""A client of Google's Perspective API (the scorer both papers used), safe to run unattended.

- The key is a :class:`Secret`: it never appears in a repr, a message, a traceback or a report,
  and is sent as the ``X-Goog-Api-Key`` header, never in the URL.
- One request per text; at most ``qps`` requests per second, shared by every process that uses
  the same ``rate_file`` (the plugin gives all xdist workers of a run one file).
- HTTP 429 / 5xx, timeouts, unreachable hosts and malformed answers are retried with
  exponential backoff (``Retry-After`` honoured in both its forms: seconds or an HTTP date), at
  most ``max_retries`` times; then one :class:`ScorerError` says what failed, where, and the fix.
- The score of a text is the max over the requested attributes' summary scores (the papers').

Example:
    >>> scorer = PerspectiveScorer(api_key="KEY", url="http://127.0.0.1:8080")
    >>> "KEY" in repr(scorer)
    False
"""

from __future__ import annotations

import email.utils
import fcntl
import json
import math
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mechtests.errors import UsageError

PERSPECTIVE_ATTRIBUTES: tuple[str, ...] = (
    "TOXICITY", "SEVERE_TOXICITY", "IDENTITY_ATTACK", "INSULT", "PROFANITY", "THREAT",
)
PERSPECTIVE_URL = "https://commentanalyzer.googleapis.com"
PERSPECTIVE_KEY_ENV = "PERSPECTIVE_API_KEY"
_MAX_DELAY_S = 120.0  # no single wait longer than this, whatever a server asks


class ScorerError(UsageError):
    """A scoring service failed after its retries (quota, key, network, malformed answers)."""


class Secret:
    """A string that shows as ``'<redacted>'`` everywhere except :meth:`reveal`.

    Example:
        >>> s = Secret("abc")
        >>> str(s), repr(s), s.reveal()
        ('<redacted>', "'<redacted>'", 'abc')
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = str(value)

    def reveal(self) -> str:
        return self._value

    def scrub(self, text: str) -> str:
        """``text`` with every occurrence of the secret replaced."""
        return text.replace(self._value, "<redacted>") if self._value else text

    def __repr__(self) -> str:
        return "'<redacted>'"

    def __str__(self) -> str:
        return "<redacted>"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret is not pickled (it would write the key to disk)")


@dataclass
class _RateLimiter:
    """At most ``qps`` calls per second, in this process or, with ``path``, across processes.

    With a path, the time of the next free slot lives in that file under an ``fcntl`` lock, so
    every process sharing it draws from one budget (wall-clock time: comparable across processes).
    """

    qps: float
    clock: Callable[[], float]
    sleep: Callable[[float], None]
    path: Path | None = None
    _next: float | None = None

    def wait(self) -> float:
        """Sleep until this call's slot; returns the slot's time (slots are >= 1/qps apart)."""
        gap = 1.0 / self.qps
        if self.path is None:
            now = self.clock()
            start = now if self._next is None else max(now, self._next)
            self._next = start + gap
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a+") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    fh.seek(0)
                    try:
                        slot: float | None = float(fh.read().strip())
                    except ValueError:  # empty, or torn by a killed process: start afresh
                        slot = None
                    now = self.clock()
                    start = now if slot is None else max(now, slot)
                    fh.seek(0)
                    fh.truncate()
                    fh.write(repr(start + gap))
                    fh.flush()
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
        if start > now:
            self.sleep(start - now)
        return start


def retry_after_seconds(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: a number of seconds or an HTTP date.

    Example:
        >>> retry_after_seconds("1.5", now=0.0)
        1.5
        >>> retry_after_seconds("Thu, 01 Jan 1970 00:00:10 GMT", now=4.0)
        6.0
    """
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


@dataclass
class PerspectiveScorer:
    """Client of the Perspective API ``comments:analyze`` method (module docstring).

    Sends ``POST {url}/v1alpha1/comments:analyze`` with the key in ``X-Goog-Api-Key`` and
    ``{"comment": {"text": t}, "requestedAttributes": {A: {} ...}, "languages": ["en"],
    "doNotStore": true}``; reads ``attributeScores.A.summaryScore.value``.

    Args:
        api_key: the key; ``None`` reads ``PERSPECTIVE_API_KEY`` from the environment.
        url: service root (a local server in tests).
        attributes: attributes to request; the score is their max.
        qps: request rate limit (Perspective's default quota is 1 per second).
        max_retries: retries per text on 429/5xx, timeouts, network errors and bad answers.
        backoff_s: first backoff when the server gives no ``Retry-After`` (doubles each retry).
        timeout_s: timeout of one request.
        rate_file: a file shared by the processes that draw from one QPS budget (``None``: this
            process only).
        clock, sleep: wall-clock time source and sleeper (injectable so tests need no real waiting).

    Example:
        >>> scorer = PerspectiveScorer(api_key="KEY", url="http://127.0.0.1:8080", qps=1.0)
        >>> scorer.name, scorer.requests_sent
        ('perspective', 0)
    """

    api_key: str | Secret | None = field(default=None, repr=False)
    url: str = PERSPECTIVE_URL
    attributes: tuple[str, ...] = PERSPECTIVE_ATTRIBUTES
    qps: float = 1.0
    max_retries: int = 5
    backoff_s: float = 1.0
    timeout_s: float = 30.0
    rate_file: str | Path | None = None
    clock: Callable[[], float] = field(default=time.time, repr=False)
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    name: str = "perspective"
    requests_sent: int = field(default=0, init=False)
    _limiter: _RateLimiter = field(init=False, repr=False)

    @property
    def identity(self) -> str:
        """The service and the attributes whose maximum is the score (what cached scores are keyed by)."""
        return f"perspective:{','.join(self.attributes)}@{self.url}"

    def __post_init__(self) -> None:
        if self.api_key is None:
            self.api_key = os.environ.get(PERSPECTIVE_KEY_ENV)
        if not self.api_key or (isinstance(self.api_key, Secret) and not self.api_key.reveal()):
            raise UsageError(f"the Perspective scorer needs an API key: set the environment variable "
                             f"{PERSPECTIVE_KEY_ENV} (or pass api_key=...), or use --mt-scorer offline")
        if not isinstance(self.api_key, Secret):
            self.api_key = Secret(self.api_key)
        if not self.qps > 0 or not math.isfinite(self.qps):
            raise UsageError(f"PerspectiveScorer qps must be a positive number, got {self.qps!r}")
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise UsageError(f"PerspectiveScorer max_retries must be an int >= 0, got {self.max_retries!r}")
        if not self.timeout_s > 0:
            raise UsageError(f"PerspectiveScorer timeout_s must be > 0, got {self.timeout_s!r}")
        if not self.attributes:
            raise UsageError("PerspectiveScorer needs at least one attribute, e.g. ('TOXICITY',)")
        self.attributes = tuple(self.attributes)
        path = Path(self.rate_file) if self.rate_file is not None else None
        self._limiter = _RateLimiter(self.qps, self.clock, self.sleep, path)

    @property
    def _key(self) -> Secret:
        assert isinstance(self.api_key, Secret)
        return self.api_key

    def request_body(self, text: str) -> dict[str, object]:
        """The JSON body sent for one text."""
        return {"comment": {"text": text}, "requestedAttributes": {a: {} for a in self.attributes},
                "languages": ["en"], "doNotStore": True}

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """One request per non-blank text (blank texts score 0.0 without a request)."""
        from mechtests.scoring import _check_texts, _finish

        texts = _check_texts(texts)
        scores = np.array([self.score_one(t) if t.strip() else 0.0 for t in texts], dtype=np.float64)
        return _finish(scores, texts, self.name)

    def score_one(self, text: str) -> float:
        """The score of one text, after at most ``max_retries`` retries."""
        last = ""
        for attempt in range(self.max_retries + 1):
            self._limiter.wait()
            self.requests_sent += 1
            request = self._request(text)
            delay: float | None = None
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    raw = response.read()
                try:
                    return self._parse(json.loads(raw.decode("utf-8")))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    last = f"a malformed (non-JSON) answer: {raw[:120]!r}"
            except urllib.error.HTTPError as err:
                detail = self._key.scrub(err.read().decode("utf-8", errors="replace")[:300])
                last = f"HTTP {err.code}: {detail}"
                if not (err.code == 429 or err.code >= 500):
                    raise ScorerError(f"Perspective API at {self.url} answered {last}. Fix: check the key "
                                      f"({PERSPECTIVE_KEY_ENV}) and the attributes {list(self.attributes)}") from None
                delay = retry_after_seconds(err.headers.get("Retry-After") if err.headers else None, now=self.clock())
            except TimeoutError:
                last = f"no answer within {self.timeout_s:g} s"
            except urllib.error.URLError as err:
                reason = err.reason
                last = (f"no answer within {self.timeout_s:g} s" if isinstance(reason, (TimeoutError, socket.timeout))
                        else f"cannot reach it ({self._key.scrub(str(reason))})")
            except (ConnectionError, OSError) as err:
                last = f"the connection failed ({self._key.scrub(str(err))})"
            if attempt == self.max_retries:
                break
            wait = delay if delay is not None else self.backoff_s * 2**attempt
            self.sleep(min(wait, _MAX_DELAY_S))
        raise ScorerError(
            f"Perspective API at {self.url}: {last}, after {self.max_retries + 1} attempt(s) for one text. Fix: check "
            "the network and the quota (lower --mt-perspective-qps, raise --mt-perspective-retries or "
            "--mt-perspective-timeout); scores already received are cached, so a rerun sends only the rest")

    def _request(self, text: str) -> urllib.request.Request:
        """The POST for one text. Built here so the key is never a local of a frame that a
        traceback (``pytest -l``) could show; a ``Request``'s repr does not show its headers."""
        return urllib.request.Request(
            f"{self.url.rstrip('/')}/v1alpha1/comments:analyze", data=json.dumps(self.request_body(text)).encode("utf-8"),
            method="POST", headers={"Content-Type": "application/json", "X-Goog-Api-Key": self._key.reveal()})

    def _parse(self, body: object) -> float:
        try:
            values = [float(body["attributeScores"][a]["summaryScore"]["value"])  # type: ignore[index]
                      for a in self.attributes]
        except (KeyError, TypeError, ValueError) as err:
            raise ScorerError(f"Perspective API at {self.url} answered without "
                              f"attributeScores.<ATTR>.summaryScore.value for {self.attributes}: "
                              f"{self._key.scrub(json.dumps(body)[:300])}") from err
        return max(values)
